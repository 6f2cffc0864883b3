//! `[defaults]` and `[[journey]]`: what runs, when, and with which limits.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::schedule::Schedule;
use crate::spans::{Reader, Size};

/// Both `[defaults]` and `[[journey]]`: `name` and `wasm` are refused in
/// `[defaults]` after reading.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJourney {
    pub(super) name: Option<Spanned<String>>,
    pub(super) wasm: Option<Spanned<String>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) every: Option<Spanned<String>>,
    pub(super) jitter: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_delay: Option<Spanned<String>>,
    pub(super) memory_limit: Option<Spanned<Size>>,
    pub(super) max_record: Option<Spanned<Size>>,
    pub(super) allow_hosts: Option<Vec<Spanned<String>>>,
    pub(super) resolve: Option<Vec<Spanned<String>>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) client_cert: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
    pub(super) insecure: Option<bool>,
    pub(super) max_requests: Option<Spanned<i64>>,
    pub(super) max_body: Option<Spanned<Size>>,
    pub(super) max_total_bytes: Option<Spanned<Size>>,
    pub(super) vars: Option<BTreeMap<String, Spanned<String>>>,
    pub(super) secrets: Option<BTreeMap<String, Spanned<String>>>,
    pub(super) keep_exchanges: Option<Spanned<String>>,
    pub(super) tags: Option<Vec<Spanned<String>>>,
}

/// `journey.x` if set, else `defaults.x`.
fn pick<'a, T>(j: &'a Option<T>, d: &'a Option<T>) -> Option<&'a T> {
    j.as_ref().or(d.as_ref())
}

pub(super) fn read_journey(
    r: &mut Reader,
    base: &Path,
    span: Range<usize>,
    label: &str,
    j: &RawJourney,
    d: &RawJourney,
) -> Option<JourneyConfig> {
    let before = r.errors.len();
    let key = |k: &str| format!("{label} → {k}");
    // A value taken from [defaults] is reported once, under [defaults].
    let src_key = |own: bool, k: &str| {
        if own {
            format!("{label} → {k}")
        } else {
            format!("[defaults] → {k}")
        }
    };
    // A missing key is reported at the table's first line: the `[[journey]]`
    // header is just before it.
    let header = span.start..span.start;
    let name = match &j.name {
        Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
        Some(n) => {
            r.error(n.span(), key("name"), "the name cannot be empty");
            String::new()
        }
        None => {
            r.error(header.clone(), label, "missing key 'name'");
            String::new()
        }
    };
    let (wasm, wasm_at) = match &j.wasm {
        Some(w) => (base.join(w.get_ref()), Place::at(r.file, r.src, w.span())),
        None => {
            r.error(
                header.clone(),
                label,
                "missing key 'wasm' (the journey's .wasm component)",
            );
            (PathBuf::new(), Place::at(r.file, r.src, header.clone()))
        }
    };
    let schedule = match (&j.schedule, &j.every) {
        (Some(_), Some(e)) => {
            r.error(
                e.span(),
                key("every"),
                "give 'schedule' or 'every', not both",
            );
            None
        }
        (Some(c), None) => cron(r, c, &key("schedule")),
        (None, Some(e)) => every(r, e, &key("every")),
        // Only when the journey names neither does [defaults] decide.
        (None, None) => match (&d.schedule, &d.every) {
            (Some(_), Some(e)) => {
                r.error(
                    e.span(),
                    "[defaults] → every",
                    "give 'schedule' or 'every', not both",
                );
                None
            }
            (Some(c), None) => cron(r, c, "[defaults] → schedule"),
            (None, Some(e)) => every(r, e, "[defaults] → every"),
            (None, None) => {
                r.error(
                    header.clone(),
                    label,
                    "missing key 'schedule' (cron with seconds, e.g. \"0 */5 * * * *\") or 'every' (e.g. \"30s\")",
                );
                None
            }
        },
    };
    // Each value with the key to blame: the journey's own, or [defaults].
    macro_rules! field {
        ($f:ident) => {
            (pick(&j.$f, &d.$f), src_key(j.$f.is_some(), stringify!($f)))
        };
    }
    let mut dur = |(v, k): (Option<&Spanned<String>>, String), default: Duration| {
        v.and_then(|v| r.duration(v, &k)).unwrap_or(default)
    };
    let jitter = dur(field!(jitter), Duration::ZERO);
    let timeout = dur(field!(timeout), DEFAULT_TIMEOUT);
    let retry_delay = dur(field!(retry_delay), Duration::from_secs(1));
    if timeout.is_zero()
        && let (Some(t), k) = field!(timeout)
    {
        r.error(t.span(), k, "the timeout must be above 0");
    }
    let mut count = |(v, k): (Option<&Spanned<i64>>, String), min: i64, max: i64| {
        v.and_then(|n| r.count(n, &k, min, max))
    };
    let retries = count(field!(retries), 0, 10).unwrap_or(0) as u32;
    let max_requests = count(field!(max_requests), 1, 1_000_000)
        .map_or(waymark_http::DEFAULT_MAX_REQUESTS, |n| n as u32);
    let mut size = |(v, k): (Option<&Spanned<Size>>, String), default: u64| {
        v.and_then(|v| r.size(v, &k)).unwrap_or(default)
    };
    let memory_limit = size(field!(memory_limit), DEFAULT_MEMORY_LIMIT as u64) as usize;
    let max_record = usize::try_from(size(
        field!(max_record),
        waymark_engine::DEFAULT_MAX_RECORD as u64,
    ))
    .unwrap_or(usize::MAX);
    let max_body = size(field!(max_body), waymark_http::DEFAULT_MAX_BODY);
    let max_total_bytes = size(
        field!(max_total_bytes),
        waymark_http::DEFAULT_MAX_TOTAL_BYTES,
    );

    let (allow, allow_key) = field!(allow_hosts);
    let allow: Vec<Spanned<String>> = allow.cloned().unwrap_or_default();
    for p in &allow {
        if let Err(e) = waymark_http::allow::HostPattern::parse(p.get_ref()) {
            r.error(p.span(), allow_key.clone(), e.to_string());
        }
    }
    let (resolve, resolve_key) = field!(resolve);
    let resolve: Vec<Spanned<String>> = resolve.cloned().unwrap_or_default();
    for e in &resolve {
        if let Err(msg) = waymark_http::Overrides::parse_entry(e.get_ref()) {
            r.error(e.span(), resolve_key.clone(), msg);
        }
    }
    let file = |v: Option<&Spanned<String>>| v.map(|v| base.join(v.get_ref()));
    let ca_file = file(pick(&j.ca_file, &d.ca_file));
    let cert = pick(&j.client_cert, &d.client_cert);
    let cert_key = pick(&j.client_key, &d.client_key);
    let client_cert = match (cert, cert_key) {
        (Some(c), Some(k)) => Some((base.join(c.get_ref()), base.join(k.get_ref()))),
        (Some(c), None) => {
            r.error(
                c.span(),
                field!(client_cert).1,
                "client_cert needs client_key too",
            );
            None
        }
        (None, Some(k)) => {
            r.error(
                k.span(),
                field!(client_key).1,
                "client_key needs client_cert too",
            );
            None
        }
        (None, None) => None,
    };
    let merge = |a: &Option<BTreeMap<String, Spanned<String>>>,
                 b: &Option<BTreeMap<String, Spanned<String>>>| {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for m in [b, a].into_iter().flatten() {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())));
        }
        out
    };
    let keep_exchanges = match field!(keep_exchanges) {
        (None, _) => KeepExchanges::Never,
        (Some(v), k) => match v.get_ref().as_str() {
            "never" => KeepExchanges::Never,
            "on-failure" => KeepExchanges::OnFailure,
            "always" => KeepExchanges::Always,
            other => {
                r.error(
                    v.span(),
                    k,
                    format!("'{other}' is not one of \"never\", \"on-failure\", \"always\""),
                );
                KeepExchanges::Never
            }
        },
    };
    let tags: Vec<String> = pick(&j.tags, &d.tags)
        .map(|t| t.iter().map(|t| t.get_ref().clone()).collect())
        .unwrap_or_default();
    let vars = merge(&j.vars, &d.vars);
    let secrets = merge(&j.secrets, &d.secrets);
    if r.errors.len() > before {
        return None;
    }
    Some(JourneyConfig {
        name,
        wasm,
        schedule: schedule?,
        jitter,
        timeout,
        retries,
        retry_delay,
        memory_limit,
        max_record,
        keep_exchanges,
        tags,
        vars,
        secrets,
        http: HttpSettings {
            allow_hosts: allow.into_iter().map(Spanned::into_inner).collect(),
            resolve: resolve.into_iter().map(Spanned::into_inner).collect(),
            ca_file,
            client_cert,
            insecure: pick(&j.insecure, &d.insecure).copied().unwrap_or(false),
            max_requests,
            max_body,
            max_total_bytes,
        },
        wasm_at,
        label: label.to_string(),
    })
}

fn cron(r: &mut Reader, v: &Spanned<String>, key: &str) -> Option<Schedule> {
    match Schedule::cron(v.get_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            r.error(v.span(), key, e);
            None
        }
    }
}

fn every(r: &mut Reader, v: &Spanned<String>, key: &str) -> Option<Schedule> {
    let d = r.duration(v, key)?;
    if d < MIN_EVERY {
        r.error(
            v.span(),
            key,
            format!(
                "every {} is too often; the shortest interval is {}",
                humantime::format_duration(d),
                humantime::format_duration(MIN_EVERY)
            ),
        );
        return None;
    }
    Some(Schedule::Every(d))
}
