use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::sinks::registry::SinkReader;

/// A prometheus sink.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Where `/metrics` answers; none: on `[runner] listen`.
    pub listen: Option<SocketAddr>,
    /// Also push to this remote-write URL (e.g. `http://prom:9090/api/v1/write`).
    pub remote_write: Option<String>,
    /// How often to push.
    pub push_interval: Duration,
}

/// How often to push unless `push_interval` says otherwise.
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    listen: Option<Spanned<String>>,
    remote_write: Option<Spanned<String>>,
    push_interval: Option<Spanned<String>>,
}

pub(crate) fn read(s: &mut SinkReader<'_, '_>, raw: Raw) -> Option<PrometheusConfig> {
    let listen = match &raw.listen {
        Some(l) => match crate::spans::listen_addr(l.get_ref()) {
            Some(a) => Some(a),
            None => {
                let msg = format!(
                    "'{}' is not an address like 127.0.0.1:9464 or :9464",
                    l.get_ref()
                );
                s.error(l.span(), "listen", msg);
                None
            }
        },
        None => None,
    };
    let remote_write = raw
        .remote_write
        .as_ref()
        .and_then(|u| s.http_url(u, "remote_write"));
    let push_interval = raw
        .push_interval
        .as_ref()
        .and_then(|t| s.duration(t, "push_interval"))
        .unwrap_or(DEFAULT_PUSH_INTERVAL);
    Some(PrometheusConfig {
        listen,
        remote_write,
        push_interval,
    })
}
