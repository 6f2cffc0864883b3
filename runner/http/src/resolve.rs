//! Name resolution behind one trait, so the system resolver can be
//! overridden per name (`--resolve`, and tests that control DNS).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

/// What a lookup returns.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`, in the order to try them.
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a>;
}

/// The operating system's resolver (`getaddrinfo`: /etc/hosts, DNS, ...).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Sets the system resolver up once per process, before the first
/// request's clock starts. The first lookup of a process pays for glibc
/// reading nsswitch.conf, /etc/hosts and gai.conf, and for tokio starting
/// the thread lookups run on: 1 to 6 ms on this machine, against 0.02 ms
/// for every lookup after. That is waymark's time, not the target's, and a
/// one-off `waymark run` would otherwise show it as resolve.
pub async fn warm_up() {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    WARM.get_or_init(|| async {
        // A name /etc/hosts answers: the whole path is set up, no packet leaves.
        let _ = tokio::net::lookup_host(("localhost", 0)).await;
    })
    .await;
}

/// Fixed answers for some names, the fallback resolver for the rest.
pub struct Overrides {
    map: HashMap<String, Vec<IpAddr>>,
    fallback: Arc<dyn Resolve>,
}

impl Overrides {
    /// Answer `map`'s names from it (names lower-case).
    pub fn new(map: HashMap<String, Vec<IpAddr>>, fallback: Arc<dyn Resolve>) -> Self {
        let map = map
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Overrides { map, fallback }
    }

    /// Parse `HOST:ADDR[,ADDR...]` (as curl's `--resolve`, without a port).
    pub fn parse_entry(entry: &str) -> Result<(String, Vec<IpAddr>), ResolveEntryError> {
        let (host, addrs) = entry
            .split_once(':')
            .filter(|(h, a)| !h.is_empty() && !a.is_empty())
            .ok_or_else(|| ResolveEntryError::Shape(entry.to_string()))?;
        let addrs = addrs
            .split(',')
            .map(|a| {
                a.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| ResolveEntryError::Address {
                        entry: entry.to_string(),
                        addr: a.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((host.to_ascii_lowercase(), addrs))
    }
}

/// A resolve entry (`HOST:ADDR[,ADDR...]`) that does not read; the CLI
/// (`--resolve`) and the config (`resolve = [...]`) each say where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveEntryError {
    /// Not `HOST:ADDR…`.
    #[error("'{0}': expected HOST:ADDR[,ADDR...]")]
    Shape(String),
    /// An address that is not an IP address.
    #[error("'{entry}': '{addr}' is not an IP address")]
    Address {
        /// The whole entry.
        entry: String,
        /// The part that is not an address.
        addr: String,
    },
}

impl Resolve for Overrides {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        match self.map.get(&host.to_ascii_lowercase()) {
            Some(addrs) => {
                let addrs = addrs.clone();
                Box::pin(async move { Ok(addrs) })
            }
            None => self.fallback.resolve(host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let (h, a) = Overrides::parse_entry("API.example.com:127.0.0.1,::1").expect("valid");
        assert_eq!(h, "api.example.com");
        assert_eq!(a.len(), 2);
        assert!(Overrides::parse_entry("nohost").is_err());
        assert!(
            Overrides::parse_entry("h:not-an-ip")
                .unwrap_err()
                .to_string()
                .contains("not an IP")
        );
    }
}
