//! `[runner]`, `[store]`, `[ui]` and `[load]`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::*;
use crate::spans::Reader;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunner {
    pub(super) location: Option<Spanned<String>>,
    pub(super) max_concurrent_runs: Option<Spanned<i64>>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) watch: Option<bool>,
    pub(super) spool_dir: Option<Spanned<String>>,
    pub(super) shard: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUi {
    pub(super) trace_url: Option<Spanned<String>>,
    pub(super) title: Option<Spanned<String>>,
    pub(super) group: Option<Vec<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: Spanned<String>,
    pub(super) journeys: Vec<Spanned<String>>,
}

pub(super) fn read_ui(r: &mut Reader, raw: RawUi, journeys: &[JourneyConfig]) -> UiConfig {
    let mut out = UiConfig::default();
    for j in journeys {
        for t in &j.tags {
            out.tags.entry(t.clone()).or_default().push(j.name.clone());
        }
    }
    if let Some(t) = raw.title {
        out.title = t.into_inner();
    }
    if let Some(u) = raw.trace_url {
        if u.get_ref().contains("{trace_id}") {
            out.trace_url = Some(u.into_inner());
        } else {
            r.error(
                u.span(),
                "[ui] → trace_url",
                "the URL must hold {trace_id}, where each run's trace id goes",
            );
        }
    }
    for (i, g) in raw.group.unwrap_or_default().into_iter().enumerate() {
        let key = format!("[[ui.group]] #{} → journeys", i + 1);
        let mut names = Vec::new();
        for j in g.journeys {
            if journeys.iter().any(|c| c.name == *j.get_ref()) {
                names.push(j.into_inner());
            } else {
                r.error(
                    j.span(),
                    key.clone(),
                    format!("no [[journey]] is named '{}'", j.get_ref()),
                );
            }
        }
        out.groups.push((g.name.into_inner(), names));
    }
    out
}

/// Most passes over a ramp: each one is the whole ramp again.
pub const MAX_REPEAT: i64 = 100;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    pub(super) journey: Option<Spanned<String>>,
    pub(super) concurrency: Option<Vec<Spanned<i64>>>,
    pub(super) rate: Option<Vec<Spanned<String>>>,
    pub(super) step_duration: Option<Spanned<String>>,
    pub(super) warmup: Option<Spanned<String>>,
    pub(super) iterations: Option<Spanned<i64>>,
    pub(super) max_vus: Option<Spanned<i64>>,
    pub(super) reuse_instance: Option<bool>,
    pub(super) repeat: Option<Spanned<i64>>,
    pub(super) prometheus: Option<Spanned<String>>,
    pub(super) observe: Option<Vec<Spanned<String>>>,
    pub(super) slo: Option<Vec<Spanned<String>>>,
    pub(super) report: Option<Spanned<String>>,
    pub(super) json: Option<Spanned<String>>,
}

pub(super) fn read_runner(r: &mut Reader, base: &Path, raw: RawRunner) -> RunnerConfig {
    let mut out = RunnerConfig {
        spool_dir: base.join(
            raw.spool_dir
                .as_ref()
                .map_or("spool", |s| s.get_ref().as_str()),
        ),
        location: waymark_engine::DEFAULT_LOCATION.into(),
        max_concurrent_runs: 64,
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        shutdown_grace: Duration::from_secs(30),
        watch: raw.watch.unwrap_or(true),
        shard: waymark_load::Shard::WHOLE,
        lease: DEFAULT_LEASE,
    };
    if let Some(t) = &raw.lease
        && let Some(d) = r.duration(t, "[runner] → lease")
    {
        if d < MIN_LEASE {
            r.error(
                t.span(),
                "[runner] → lease",
                format!(
                    "{} is shorter than the shortest lease, {} ms: replicas beat five times per lease",
                    t.get_ref(),
                    MIN_LEASE.as_millis()
                ),
            );
        } else {
            out.lease = d;
        }
    }
    if let Some(t) = &raw.shard {
        match waymark_load::Shard::parse(t.get_ref()) {
            Ok(s) => out.shard = s,
            Err(e) => r.error(t.span(), "[runner] → shard", e.to_string()),
        }
    }
    if let Some(l) = raw.location {
        if l.get_ref().trim().is_empty() {
            r.error(
                l.span(),
                "[runner] → location",
                "the location cannot be empty",
            );
        } else {
            out.location = l.into_inner();
        }
    }
    if let Some(n) = &raw.max_concurrent_runs
        && let Some(n) = r.count(n, "[runner] → max_concurrent_runs", 1, 100_000)
    {
        out.max_concurrent_runs = n as usize;
    }
    if let Some(l) = &raw.listen {
        let text = l.get_ref().trim();
        if text.is_empty() || text == "off" {
            out.listen = None;
        } else {
            match crate::spans::listen_addr(text) {
                Some(a) => out.listen = Some(a),
                None => r.error(
                    l.span(),
                    "[runner] → listen",
                    format!("'{text}' is not an address like 127.0.0.1:9464 or :9464 (or \"off\")"),
                ),
            }
        }
    }
    if let Some(g) = &raw.shutdown_grace
        && let Some(d) = r.duration(g, "[runner] → shutdown_grace")
    {
        out.shutdown_grace = d;
    }
    out
}

pub(super) fn read_store(r: &mut Reader, base: &Path, raw: RawStore) -> StoreConfig {
    use crate::store::{Database, Postgres};
    let mut out = StoreConfig {
        database: Some(Database::Sqlite(base.join("waymark.db"))),
        retention: DEFAULT_RETENTION,
    };
    if let Some(p) = &raw.path {
        let t = p.get_ref().trim();
        out.database = if t.is_empty() || t == "off" {
            None
        } else {
            Some(Database::Sqlite(base.join(t)))
        };
    }
    if let Some(u) = &raw.url {
        let text = u.get_ref().trim();
        if let Some(p) = &raw.path {
            r.error(
                p.span(),
                "[store] → path",
                "give path (a SQLite file) or url (PostgreSQL), not both",
            );
        } else if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            r.error(
                u.span(),
                "[store] → url",
                "the history's url must be a PostgreSQL one: postgres://user:password@host:port/database",
            );
        } else if let Err(e) = text.parse::<postgres::Config>() {
            r.error(
                u.span(),
                "[store] → url",
                format!("not a PostgreSQL URL: {e}"),
            );
        } else {
            out.database = Some(Database::Postgres(Postgres {
                url: text.to_string(),
                ca_file: raw.ca_file.as_ref().map(|c| base.join(c.get_ref().trim())),
            }));
        }
    } else if let Some(c) = &raw.ca_file {
        r.error(
            c.span(),
            "[store] → ca_file",
            "ca_file is for a PostgreSQL url; a SQLite file needs none",
        );
    }
    if let Some(v) = &raw.retention
        && let Some(d) = r.duration(v, "[store] → retention")
    {
        if d.is_zero() {
            r.error(
                v.span(),
                "[store] → retention",
                "the retention must be above 0",
            );
        } else {
            out.retention = d;
        }
    }
    out
}

pub(super) fn read_load(
    r: &mut Reader,
    base: &Path,
    span: Range<usize>,
    raw: RawLoad,
    journeys: &[(Spanned<DeValue>, RawJourney)],
) -> Option<LoadConfig> {
    let errors_before = r.errors.len();
    let names: Vec<&str> = journeys
        .iter()
        .filter_map(|(_, j)| j.name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let journey = match &raw.journey {
        Some(n) if names.contains(&n.get_ref().as_str()) => n.get_ref().clone(),
        Some(n) => {
            r.error(
                n.span(),
                "[load] → journey",
                format!(
                    "no [[journey]] is named '{}' (the file has: {})",
                    n.get_ref(),
                    names.join(", ")
                ),
            );
            String::new()
        }
        None if names.len() == 1 => names[0].to_string(),
        None => {
            r.error(
                span.clone(),
                "[load] → journey",
                "name the [[journey]] to load: the file has more than one",
            );
            String::new()
        }
    };
    let mut concurrency = Vec::new();
    for v in raw.concurrency.iter().flatten() {
        if let Some(n) = r.count(v, "[load] → concurrency", 1, 1_000_000) {
            concurrency.push(n as u32);
        }
    }
    let mut rate = Vec::new();
    for v in raw.rate.iter().flatten() {
        match waymark_load::parse_rate(v.get_ref()) {
            Ok(x) => rate.push(x),
            Err(e) => r.error(v.span(), "[load] → rate", e),
        }
    }
    if let (Some(c), Some(rt)) = (&raw.concurrency, &raw.rate)
        && !c.is_empty()
        && !rt.is_empty()
    {
        r.error(
            rt[0].span(),
            "[load] → rate",
            "give 'concurrency' (closed model) or 'rate' (open model), not both",
        );
    }
    let step_duration = raw.step_duration.as_ref().and_then(|v| {
        let d = r.duration(v, "[load] → step_duration")?;
        if d.is_zero() {
            r.error(
                v.span(),
                "[load] → step_duration",
                "a step must last above 0",
            );
            None
        } else {
            Some(d)
        }
    });
    let warmup = raw
        .warmup
        .as_ref()
        .and_then(|v| r.duration(v, "[load] → warmup"));
    if let (Some(w), Some(d), Some(v)) = (warmup, step_duration, &raw.warmup)
        && w >= d
    {
        r.error(
            v.span(),
            "[load] → warmup",
            "the warm-up must be shorter than step_duration, or nothing is measured",
        );
    }
    let iterations = raw
        .iterations
        .as_ref()
        .and_then(|v| r.count(v, "[load] → iterations", 1, i64::MAX))
        .map(|n| n as u64);
    let max_vus = raw
        .max_vus
        .as_ref()
        .and_then(|v| r.count(v, "[load] → max_vus", 1, 1_000_000))
        .map(|n| n as u32);
    let repeat = raw
        .repeat
        .as_ref()
        .and_then(|v| r.count(v, "[load] → repeat", 1, MAX_REPEAT))
        .map(|n| n as u32);
    let mut observe = Vec::new();
    for v in raw.observe.iter().flatten() {
        match waymark_load::observe::Observe::parse(v.get_ref()) {
            Ok(o) => observe.push(o),
            Err(e) => r.error(v.span(), "[load] → observe", e),
        }
    }
    let prometheus = raw.prometheus.as_ref().map(|p| p.get_ref().clone());
    if let (false, Some(first)) = (prometheus.is_some(), raw.observe.iter().flatten().next()) {
        r.error(
            first.span(),
            "[load] → observe",
            "observed series are asked of Prometheus: set [load] prometheus = \"http://host:9090\"",
        );
    }
    let mut slo = Vec::new();
    for v in raw.slo.iter().flatten() {
        match waymark_load::slo::Gate::parse(v.get_ref()) {
            Ok(g) => slo.push(g),
            Err(e) => r.error(v.span(), "[load] → slo", e),
        }
    }
    let path = |v: &Option<Spanned<String>>| v.as_ref().map(|p| base.join(p.get_ref()));
    (r.errors.len() == errors_before).then(|| LoadConfig {
        journey,
        concurrency,
        rate,
        step_duration,
        warmup,
        iterations,
        max_vus,
        reuse_instance: raw.reuse_instance.unwrap_or(false),
        repeat,
        prometheus,
        observe,
        slo,
        report: path(&raw.report),
        json: path(&raw.json),
    })
}
