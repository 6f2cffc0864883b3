use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::sinks::registry::SinkReader;
use crate::sinks::webhook::DEFAULT_TIMEOUT;

/// An Alertmanager sink.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// Re-send firing alerts this often.
    pub resend_interval: Duration,
    /// The `severity` label.
    pub severity: String,
    /// Extra labels on every alert.
    pub labels: BTreeMap<String, String>,
    /// The alert's `generatorURL`; `{journey}` and `{run_id}` are filled in.
    pub link: Option<String>,
    /// Per request.
    pub timeout: Duration,
}

/// The `severity` label unless `severity` says otherwise.
pub const DEFAULT_SEVERITY: &str = "critical";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: Option<Spanned<String>>,
    resend_interval: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    labels: Option<BTreeMap<String, String>>,
    link: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

pub(crate) fn read(s: &mut SinkReader<'_, '_>, raw: Raw) -> Option<AlertmanagerConfig> {
    let url = match &raw.url {
        Some(u) => s.http_url(u, "url").unwrap_or_default(),
        None => {
            s.missing("missing key 'url' (e.g. \"http://127.0.0.1:9093\")");
            String::new()
        }
    };
    let resend_interval = raw
        .resend_interval
        .as_ref()
        .and_then(|t| s.duration(t, "resend_interval"))
        .unwrap_or(super::DEFAULT_RESEND);
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|t| s.duration(t, "timeout"))
        .unwrap_or(DEFAULT_TIMEOUT);
    Some(AlertmanagerConfig {
        url,
        resend_interval,
        severity: raw
            .severity
            .map_or_else(|| DEFAULT_SEVERITY.to_string(), Spanned::into_inner),
        labels: raw.labels.unwrap_or_default(),
        link: raw.link.map(Spanned::into_inner),
        timeout,
    })
}
