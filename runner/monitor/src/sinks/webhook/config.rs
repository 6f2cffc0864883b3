use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::sinks::registry::SinkReader;

/// A webhook sink.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Which events: `failing`, `recovered`, `failure`, `run`.
    pub events: Vec<String>,
    /// `json` (the event with its record) or `slack` (a `text` line).
    pub slack: bool,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Key of the `X-Waymark-Signature` HMAC-SHA256.
    pub secret: Option<String>,
    /// Per request.
    pub timeout: Duration,
}

/// The events a webhook can be sent for.
pub const EVENTS: [&str; 4] = ["failing", "recovered", "failure", "run"];
/// Per request unless `timeout` says otherwise (every network sink).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    url: Option<Spanned<String>>,
    events: Option<Vec<Spanned<String>>>,
    format: Option<Spanned<String>>,
    headers: Option<BTreeMap<String, String>>,
    secret: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

pub(crate) fn read(s: &mut SinkReader<'_, '_>, raw: Raw) -> Option<WebhookConfig> {
    let url = match &raw.url {
        Some(u) => s.http_url(u, "url").unwrap_or_default(),
        None => {
            s.missing("missing key 'url'");
            String::new()
        }
    };
    let mut events = Vec::new();
    for e in raw.events.iter().flatten() {
        if EVENTS.contains(&e.get_ref().as_str()) {
            events.push(e.get_ref().clone());
        } else {
            s.error(
                e.span(),
                "events",
                format!(
                    "unknown event '{}' (events: {})",
                    e.get_ref(),
                    EVENTS.join(", ")
                ),
            );
        }
    }
    if raw.events.is_none() {
        events = vec!["failing".into(), "recovered".into()];
    }
    let slack = match &raw.format {
        None => false,
        Some(f) => match f.get_ref().as_str() {
            "json" => false,
            "slack" => true,
            other => {
                let msg = format!("unknown format '{other}' (json or slack)");
                s.error(f.span(), "format", msg);
                false
            }
        },
    };
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|t| s.duration(t, "timeout"))
        .unwrap_or(DEFAULT_TIMEOUT);
    Some(WebhookConfig {
        url,
        events,
        slack,
        headers: raw.headers.unwrap_or_default(),
        secret: raw.secret.map(Spanned::into_inner),
        timeout,
    })
}
