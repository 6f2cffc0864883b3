//! Name resolution behind one trait, so the system resolver can be
//! overridden per name (`--resolve`, and tests that control DNS).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::{Hosts, Resolver};

use crate::stamp::{AnswerClock, StampingProvider};

/// What a lookup returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<Resolved>> + Send + 'a>>;

/// A lookup's answer.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The addresses, in the order to try them.
    pub addrs: Vec<IpAddr>,
    /// The lookup's time on the network: from its first query sent to
    /// the arrival of its last answer, as the kernel stamped it. None when
    /// no query went out (a fixed answer, the hosts file) or the times are
    /// not known (`getaddrinfo`).
    pub network: Option<(Instant, Instant)>,
}

impl From<Vec<IpAddr>> for Resolved {
    fn from(addrs: Vec<IpAddr>) -> Self {
        Resolved {
            addrs,
            network: None,
        }
    }
}

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`, in the order to try them.
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a>;
}

/// The operating system's resolver configuration (`/etc/resolv.conf` and
/// `/etc/hosts`), queried from the request's own task by hickory, as Go's
/// resolver does for blackbox_exporter and k6.
///
/// glibc's `getaddrinfo` blocks, so it ran on a thread of its own and the
/// answer came back through two thread wake-ups; it also read its files on
/// every lookup. That put resolve 0.34 to 0.48 ms over the DNS packets on
/// the wire. Here the files are read before a request's clock starts (see
/// [`warm_up`]), the A and AAAA queries go out together, and nothing is
/// cached: every lookup is asked of the network, as a monitor must.
///
/// Where the configuration cannot be read (no `/etc/resolv.conf`, or no
/// name server in it), lookups go through `getaddrinfo` as before.
pub struct SystemResolver;

/// The system's resolver configuration as last read.
struct SystemConf {
    /// None: it could not be read, and `getaddrinfo` answers.
    dns: Option<(ResolverConfig, ResolverOpts, Arc<Hosts>)>,
    /// The files' modification times when read: a change is noticed by the
    /// next [`warm_up`] a second or more later, as glibc rereads a changed
    /// resolv.conf.
    stamps: [Option<SystemTime>; 2],
}

const CONF_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

/// How often the files are looked at for changes.
const RECHECK: Duration = Duration::from_secs(1);

fn stamps() -> [Option<SystemTime>; 2] {
    CONF_FILES.map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
}

impl SystemConf {
    fn read() -> Self {
        let stamps = stamps();
        let dns = match hickory_resolver::system_conf::read_system_conf() {
            Ok((config, mut opts)) if !config.name_servers().is_empty() => {
                // Every lookup goes to the network: a cached answer would
                // time the cache, not the name servers.
                opts.cache_size = 0;
                opts.positive_max_ttl = Some(Duration::ZERO);
                opts.negative_max_ttl = Some(Duration::ZERO);
                opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                // The hosts file is read here, once, not per lookup.
                opts.use_hosts_file = ResolveHosts::Never;
                let hosts = Hosts::from_system().unwrap_or_default();
                Some((config, opts, Arc::new(hosts)))
            }
            Ok(_) => {
                tracing::warn!(
                    "no name server in /etc/resolv.conf: names are resolved by getaddrinfo"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /etc/resolv.conf: names are resolved by getaddrinfo");
                None
            }
        };
        SystemConf { dns, stamps }
    }
}

static SYSTEM: Mutex<Option<Arc<SystemConf>>> = Mutex::new(None);

/// The configuration to resolve with; read again when `refresh` and its
/// files changed since.
fn system_conf(refresh: bool) -> Arc<SystemConf> {
    let mut guard = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(c) if !refresh || c.stamps == stamps() => c.clone(),
        _ => {
            let c = Arc::new(SystemConf::read());
            *guard = Some(c.clone());
            c
        }
    }
}

fn lookup_error(e: NetError) -> std::io::Error {
    use std::io::{Error, ErrorKind};
    if e.is_nx_domain() {
        Error::new(ErrorKind::NotFound, "no such name (NXDOMAIN)")
    } else if matches!(e, NetError::Timeout) {
        Error::new(ErrorKind::TimedOut, "the name servers did not answer")
    } else {
        Error::other(e)
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        let conf = system_conf(false);
        Box::pin(async move {
            let Some((config, opts, hosts)) = &conf.dns else {
                let addrs: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
                    .await?
                    .map(|a| a.ip())
                    .collect();
                return Ok(addrs.into());
            };
            // A resolver per lookup, from the configuration already read:
            // it runs its queries on the runtime that asked (each `waymark
            // load` thread has its own), and holds no connection a runtime
            // that has ended could have owned. Building it reads nothing.
            let clock = Arc::new(AnswerClock::default());
            let mut resolver =
                Resolver::builder_with_config(config.clone(), StampingProvider::new(clock.clone()))
                    .with_options(opts.clone())
                    .build()
                    .map_err(lookup_error)?;
            resolver.set_hosts(hosts.clone());
            let addrs = match resolver.lookup_ip(host).await {
                Ok(found) => found.iter().collect(),
                Err(e) if e.is_no_records_found() && !e.is_nx_domain() => Vec::new(),
                Err(e) => return Err(lookup_error(e)),
            };
            Ok(Resolved {
                addrs,
                network: clock.span(),
            })
        })
    }
}

/// Sets the resolver up before the first request's clock starts, and looks
/// again at its files when a second has passed. Reading resolv.conf and
/// the hosts file (and, where `getaddrinfo` answers, glibc reading
/// nsswitch.conf and gai.conf and tokio starting the thread lookups run
/// on: 1 to 6 ms on this machine) is waymark's time, not the target's.
pub async fn warm_up() {
    thread_local! {
        // When this thread last looked: `waymark load` sends tens of
        // thousands of requests a second from each thread, and they should
        // not all take the process-wide lock to learn nothing changed.
        static LOOKED: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    if LOOKED.with(|l| l.get().is_some_and(|t| t.elapsed() < RECHECK)) {
        return;
    }
    LOOKED.with(|l| l.set(Some(Instant::now())));
    crate::stamp::keep_stamps_on();
    let conf = system_conf(true);
    if conf.dns.is_none() {
        static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        WARM.get_or_init(|| async {
            // A name /etc/hosts answers: the whole path is set up, no packet leaves.
            let _ = tokio::net::lookup_host(("localhost", 0)).await;
        })
        .await;
    }
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
                Box::pin(async move { Ok(addrs.into()) })
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

    /// Set in the child that runs inside its own mount namespace.
    const IN_NAMESPACE: &str = "WAYMARK_RESOLVER_TEST_FILES";

    /// A changed /etc/hosts (or resolv.conf) is read again by the next
    /// `warm_up` a second later, as glibc notices a changed resolv.conf: a
    /// `waymark serve` running for weeks must follow the machine's
    /// configuration. The files are the real paths, bind-mounted over in a
    /// mount namespace of the test's own (root, as the wire test needs); a
    /// machine where that cannot be done fails the test with the reason.
    #[test]
    fn a_changed_hosts_file_is_read_again() {
        if let Ok(hosts) = std::env::var(IN_NAMESPACE) {
            return changed_hosts_inside(std::path::Path::new(&hosts));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts = dir.path().join("hosts");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&hosts, "127.0.0.7 waymark-test.invalid\n").expect("hosts");
        // A server that is never asked: every name the test looks up is in
        // the hosts file, and a query would only time out.
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv.conf");
        let exe = std::env::current_exe().expect("test binary");
        let script = format!(
            "mount --bind '{}' /etc/hosts && mount --bind '{}' /etc/resolv.conf && exec '{}' --exact resolve::tests::a_changed_hosts_file_is_read_again --nocapture",
            hosts.display(),
            resolv.display(),
            exe.display()
        );
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env(IN_NAMESPACE, &hosts)
            .output()
            .expect("unshare (util-linux) runs");
        assert!(
            out.status.success(),
            "the test in its own mount namespace (needs root and unshare) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The child really ran the checks, not an empty filter.
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }

    fn changed_hosts_inside(hosts: &std::path::Path) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let lookup = || async {
                warm_up().await;
                SystemResolver
                    .resolve("waymark-test.invalid")
                    .await
                    .expect("the name is in the hosts file")
                    .addrs
            };
            assert!(
                system_conf(false).dns.is_some(),
                "resolv.conf was read: hickory answers, not getaddrinfo"
            );
            assert_eq!(lookup().await, vec![IpAddr::from([127, 0, 0, 7])]);
            // In place, as an editor or a configuration tool writes it: the
            // bind mount keeps the inode.
            std::fs::write(hosts, "127.0.0.8 waymark-test.invalid\n").expect("rewrite");
            tokio::time::sleep(RECHECK + Duration::from_millis(100)).await;
            assert_eq!(lookup().await, vec![IpAddr::from([127, 0, 0, 8])]);
        });
    }
}
