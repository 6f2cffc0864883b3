use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::sinks::registry::SinkReader;
use crate::sinks::webhook::DEFAULT_TIMEOUT;

/// An OTLP sink.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Base URL of the collector's OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`;
    /// `/v1/traces` and `/v1/metrics` are added.
    pub endpoint: String,
    /// Extra request headers (e.g. an API key).
    pub headers: BTreeMap<String, String>,
    /// Per request.
    pub timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// `service.name` unless `service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "waymark";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    endpoint: Option<Spanned<String>>,
    headers: Option<BTreeMap<String, String>>,
    timeout: Option<Spanned<String>>,
    service_name: Option<Spanned<String>>,
}

pub(crate) fn read(s: &mut SinkReader<'_, '_>, raw: Raw) -> Option<OtlpConfig> {
    let endpoint = match &raw.endpoint {
        Some(u) => s.http_url(u, "endpoint").unwrap_or_default(),
        None => {
            s.missing("missing key 'endpoint' (e.g. \"http://127.0.0.1:4318\")");
            String::new()
        }
    };
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|t| s.duration(t, "timeout"))
        .unwrap_or(DEFAULT_TIMEOUT);
    Some(OtlpConfig {
        endpoint,
        headers: raw.headers.unwrap_or_default(),
        timeout,
        service_name: raw
            .service_name
            .map_or_else(|| DEFAULT_SERVICE_NAME.to_string(), Spanned::into_inner),
    })
}
