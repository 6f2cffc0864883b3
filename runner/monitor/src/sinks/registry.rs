//! The one list of sink types. A sink type is a folder under `sinks/` that
//! owns its config (a `Raw` struct of its keys and a `read` function), and
//! its delivery; adding one means that folder and three lines here: its
//! [`SinkKind`] variant, its entry in [`REGISTRY`] and its arm in [`build`].

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    Deliver, DeliverError, Exposed, alertmanager, jsonl, otlp, pretty, prometheus, webhook,
};
use crate::spans::{Reader, Size};

/// One `[[sink]]`: where it sends, and its name (spool files are kept by name).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Unique name; default: the type (with a number when repeated).
    pub name: String,
    /// Records waiting in memory before new ones spill to the disk spool.
    pub queue: usize,
    /// Bytes the sink's spool may hold; beyond that the oldest spooled
    /// records are dropped (and counted).
    pub spool_max: u64,
    /// What kind, with its own settings.
    pub kind: SinkKind,
}

/// Records waiting in memory per sink unless `queue` says otherwise.
pub const DEFAULT_QUEUE: usize = 10_000;

/// A sink's spool on disk unless `spool_max` says otherwise: 1 GiB.
pub const DEFAULT_SPOOL_MAX: u64 = 1 << 30;

/// Below this a spool could not keep even one large record.
const MIN_SPOOL_MAX: u64 = 1 << 20;

/// The kinds of sink, each with the config its folder defines.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// The waterfall of each run, on standard output.
    Pretty,
    /// The record, one JSON line per attempt.
    Jsonl(jsonl::JsonlConfig),
    /// A JSON POST on state changes (and optionally every failure or run).
    Webhook(webhook::WebhookConfig),
    /// Traces and metrics over OTLP/HTTP (protobuf).
    Otlp(otlp::OtlpConfig),
    /// Alerts to Alertmanager's v2 API while a journey fails.
    Alertmanager(alertmanager::AlertmanagerConfig),
    /// `/metrics` in the Prometheus exposition format, and remote write.
    Prometheus(prometheus::PrometheusConfig),
}

type ReadFn = fn(&mut SinkReader<'_, '_>, &Spanned<DeValue<'_>>) -> Option<SinkKind>;

/// Each type's name in `type = "…"` and how its keys are read.
const REGISTRY: &[(&str, ReadFn)] = &[
    ("pretty", |s, v| {
        keys(s, v, pretty::read).map(|()| SinkKind::Pretty)
    }),
    ("jsonl", |s, v| keys(s, v, jsonl::read).map(SinkKind::Jsonl)),
    ("webhook", |s, v| {
        keys(s, v, webhook::read).map(SinkKind::Webhook)
    }),
    ("otlp", |s, v| keys(s, v, otlp::read).map(SinkKind::Otlp)),
    ("alertmanager", |s, v| {
        keys(s, v, alertmanager::read).map(SinkKind::Alertmanager)
    }),
    ("prometheus", |s, v| {
        keys(s, v, prometheus::read).map(SinkKind::Prometheus)
    }),
];

/// The running delivery of a sink; prometheus sinks register into `exposed`.
pub(crate) fn build(
    kind: &SinkKind,
    exposed: &mut Exposed,
) -> Result<Box<dyn Deliver>, DeliverError> {
    Ok(match kind {
        SinkKind::Pretty => Box::new(pretty::Pretty),
        SinkKind::Jsonl(c) => Box::new(jsonl::Jsonl::open(&c.path, c.max_size, c.keep)?),
        SinkKind::Webhook(c) => Box::new(webhook::Webhook::new(c.clone())),
        SinkKind::Otlp(c) => Box::new(otlp::Otlp::new(c.clone(), exposed.telemetry.clone())),
        SinkKind::Alertmanager(c) => Box::new(alertmanager::Alertmanager::new(c.clone())),
        SinkKind::Prometheus(c) => {
            let m = exposed
                .metrics
                .get_or_insert_with(|| Arc::new(prometheus::Metrics::new()))
                .clone();
            Box::new(prometheus::Updater::new(
                m,
                c.remote_write.clone(),
                c.push_interval,
            ))
        }
    })
}

/// What a sink type's `read` gets: the file's error collector, the sink's
/// label for messages (`sink #2 (webhook)`), and where relative paths start.
pub(crate) struct SinkReader<'r, 'a> {
    r: &'r mut Reader<'a>,
    base: &'r Path,
    label: String,
    kind: &'r str,
    at: Range<usize>,
}

impl SinkReader<'_, '_> {
    /// The directory of the config file.
    pub(crate) fn base(&self) -> &Path {
        self.base
    }

    fn key(&self, k: &str) -> String {
        format!("{} → {k}", self.label)
    }

    /// A problem with the value of `key`.
    pub(crate) fn error(&mut self, span: Range<usize>, key: &str, message: impl std::fmt::Display) {
        let key = self.key(key);
        self.r.error(span, key, message);
    }

    /// A required key is absent: reported at the sink's table.
    pub(crate) fn missing(&mut self, message: impl std::fmt::Display) {
        let at = self.at.start..self.at.start;
        self.r.error(at, self.label.clone(), message);
    }

    pub(crate) fn duration(&mut self, v: &Spanned<String>, key: &str) -> Option<Duration> {
        let key = self.key(key);
        self.r.duration(v, &key)
    }

    pub(crate) fn http_url(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        let key = self.key(key);
        self.r.http_url(v, &key)
    }

    pub(crate) fn size(&mut self, v: &Spanned<Size>, key: &str) -> Option<u64> {
        let key = self.key(key);
        self.r.size(v, &key)
    }

    pub(crate) fn count(&mut self, v: &Spanned<i64>, key: &str, min: i64, max: i64) -> Option<i64> {
        let key = self.key(key);
        self.r.count(v, &key, min, max)
    }
}

/// The keys every sink has, whatever its type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    name: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
    spool_max: Option<Spanned<Size>>,
}

/// Reads the keys of one sink type: keys it does not have are reported as
/// such ("a webhook sink takes no 'listen'"), then the rest is read into its
/// `Raw` with serde and handed to its `read`.
fn keys<'de, R, C>(
    s: &mut SinkReader<'_, '_>,
    table: &Spanned<DeValue<'de>>,
    read: fn(&mut SinkReader<'_, '_>, R) -> Option<C>,
) -> Option<C>
where
    R: for<'x> Deserialize<'x>,
{
    let DeValue::Table(t) = table.get_ref() else {
        return None;
    };
    let known = fields_of::<R>();
    let mut own = DeTable::new();
    for (k, v) in t.iter() {
        let name: &str = k.get_ref().as_ref();
        if known.contains(&name) {
            own.insert(k.clone(), v.clone());
        } else {
            let msg = format!("a {} sink takes no '{name}'", s.kind);
            s.error(v.span(), name, msg);
        }
    }
    let own = Spanned::new(table.span(), DeValue::Table(own));
    let label = s.label.clone();
    let raw = s.r.section::<R>(&own, &label)?;
    read(s, raw)
}

/// Reads `[[sink]]` number `i` (0-based) from its table; none if it has
/// problems (which are in `r`).
pub(crate) fn read(
    r: &mut Reader<'_>,
    base: &Path,
    i: usize,
    item: &Spanned<DeValue<'_>>,
) -> Option<SinkConfig> {
    let DeValue::Table(t) = item.get_ref() else {
        r.error(
            item.span(),
            format!("sink #{}", i + 1),
            "a sink is a table of keys",
        );
        return None;
    };
    let mut common = DeTable::new();
    let mut rest = DeTable::new();
    for (k, v) in t.iter() {
        let name: &str = k.get_ref().as_ref();
        if matches!(name, "type" | "name" | "queue" | "spool_max") {
            common.insert(k.clone(), v.clone());
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    let common_v = Spanned::new(item.span(), DeValue::Table(common));
    let c: Common = r.section(&common_v, &format!("sink #{}", i + 1))?;
    let kind_name = c.kind.get_ref().clone();
    let Some((_, read_kind)) = REGISTRY.iter().find(|(n, _)| *n == kind_name) else {
        let types: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
        r.error(
            c.kind.span(),
            format!("sink #{} → type", i + 1),
            format!(
                "unknown sink type '{kind_name}' (this version has: {})",
                types.join(", ")
            ),
        );
        return None;
    };
    let label = format!("sink #{} ({kind_name})", i + 1);
    let before = r.errors.len();
    let name = c
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| kind_name.clone());
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        r.error(
            c.name.as_ref().map_or(item.span(), Spanned::span),
            format!("{label} → name"),
            "a sink name is letters, digits, '-', '_' and '.'",
        );
    }
    let mut s = SinkReader {
        r,
        base,
        label,
        kind: &kind_name,
        at: item.span(),
    };
    let queue = c
        .queue
        .as_ref()
        .and_then(|q| s.count(q, "queue", 1, 10_000_000))
        .map_or(DEFAULT_QUEUE, |q| q as usize);
    let spool_max = c
        .spool_max
        .as_ref()
        .and_then(|v| s.size(v, "spool_max"))
        .unwrap_or(DEFAULT_SPOOL_MAX);
    if spool_max < MIN_SPOOL_MAX
        && let Some(v) = &c.spool_max
    {
        s.error(
            v.span(),
            "spool_max",
            format!(
                "at least {} KiB: a spool must hold a record",
                MIN_SPOOL_MAX / 1024
            ),
        );
    }
    let rest_v = Spanned::new(item.span(), DeValue::Table(rest));
    let kind = read_kind(&mut s, &rest_v);
    if s.r.errors.len() > before {
        return None;
    }
    Some(SinkConfig {
        name,
        queue,
        spool_max,
        kind: kind?,
    })
}

/// The field names of a struct deriving `Deserialize`: serde hands them to
/// `deserialize_struct`, where this deserializer keeps them and stops. One
/// source for a sink's keys: its `Raw` struct.
fn fields_of<R: for<'x> Deserialize<'x>>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor, value};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, value::Error> {
            Err(value::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, value::Error> {
            *self.0 = fields;
            Err(value::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = R::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_the_raw_structs() {
        assert_eq!(
            fields_of::<Common>(),
            ["type", "name", "queue", "spool_max"]
        );
    }
}
