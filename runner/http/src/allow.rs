//! The host allow-list: which `host[:port]` a journey may reach, checked on
//! the name before resolving and on every resolved address after.
//!
//! Loopback, private, link-local (the cloud metadata address 169.254.169.254
//! among them), multicast and unspecified addresses are refused unless a
//! pattern names them: an IP literal, a CIDR range, or `localhost` for
//! loopback. A name matched by `api.example.com` or `*.example.com` that
//! resolves to such an address (DNS rebinding) is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One allow-list entry: `host`, `*.domain`, `*`, an IP, or a CIDR range,
/// each with an optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this name or IP literal (lower-case, IPv6 without brackets).
    Exact(String),
    /// Addresses in this range (`10.0.0.0/8`, `fd00::/8`); matches IP literals.
    Cidr(ipnet::IpNet),
    /// Any subdomain of this suffix (`*.example.com` matches `a.example.com`,
    /// not `example.com` itself, as with TLS wildcards).
    Suffix(String),
    /// `*`: every host.
    Any,
}

/// A malformed allow-list entry.
#[derive(Debug, thiserror::Error)]
#[error("invalid allow-host pattern '{pattern}': {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl HostPattern {
    /// Parse `host`, `*.domain`, `*`, `host:port`, `[v6]:port`.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: pattern.to_string(),
            reason,
        };
        let p = pattern.trim();
        if p.is_empty() {
            return Err(err("empty"));
        }
        let (host, port) = if let Some((net, port)) = split_cidr(p) {
            let net: ipnet::IpNet = net.parse().map_err(|_| err("not a CIDR range"))?;
            let port = port
                .map(|s| {
                    s.parse::<u16>()
                        .map_err(|_| err("port is not a number 0-65535"))
                })
                .transpose()?;
            return Ok(HostPattern {
                host: HostMatch::Cidr(net.trunc()),
                port,
            });
        } else if let Some(rest) = p.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("missing ']'"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("only an IPv6 address goes in [brackets]"));
            }
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(err("unexpected text after ']'")),
            };
            (h, port)
        } else if p.matches(':').count() == 1 {
            let (h, port) = p.split_once(':').ok_or_else(|| err("bad port"))?;
            (h, Some(port))
        } else {
            (p, None)
        };
        let port = port
            .map(|s| {
                s.parse::<u16>()
                    .map_err(|_| err("port is not a number 0-65535"))
            })
            .transpose()?;
        let host = host.to_ascii_lowercase();
        if host != "*" && !valid_host(host.strip_prefix("*.").unwrap_or(&host)) {
            return Err(err(
                "not a host name or IP address (letters, digits, '-', '_' and dots; \
                 an IPv6 address in [brackets] when a port follows; punycode for other scripts)",
            ));
        }
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') || suffix.parse::<IpAddr>().is_ok() {
                return Err(err("a wildcard must look like *.example.com"));
            }
            HostMatch::Suffix(suffix.to_string())
        } else if host.contains('*') {
            return Err(err("a wildcard must look like *.example.com"));
        } else if host.is_empty() {
            return Err(err("empty host"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(HostPattern { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Cidr(net) => host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
            HostMatch::Suffix(s) => host
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostMatch::Any => "*".to_string(),
            HostMatch::Exact(h) if h.contains(':') => format!("[{h}]"),
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(s) => format!("*.{s}"),
            HostMatch::Cidr(net) if self.port.is_some() && net.addr().is_ipv6() => {
                format!("[{net}]")
            }
            HostMatch::Cidr(net) => net.to_string(),
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

/// The hosts a run may reach; empty means none.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    patterns: Vec<HostPattern>,
}

impl AllowList {
    /// Parse every pattern; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| HostPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { patterns })
    }

    /// Is `host` (lower-case, IPv6 without brackets) on `port` allowed?
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.patterns.iter().any(|p| p.matches(&host, port))
    }

    /// May `host` be reached at `addr`, which it resolved to? `Err` says why
    /// not. Public addresses of an allowed host pass; special ones (loopback,
    /// private, ...) only when a pattern names the address itself.
    pub fn check_addr(&self, host: &str, addr: SocketAddr) -> Result<(), AddrDenied> {
        let original = addr.ip();
        let ip = canonical(original);
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let named = self.patterns.iter().any(|p| {
            if p.port.is_some_and(|port| port != addr.port()) {
                return false;
            }
            match &p.host {
                HostMatch::Exact(h) => {
                    h.parse::<IpAddr>().is_ok_and(|lit| canonical(lit) == ip)
                        || (h == "localhost" && host == "localhost" && ip.is_loopback())
                }
                HostMatch::Cidr(net) => net.contains(&ip),
                HostMatch::Any | HostMatch::Suffix(_) => false,
            }
        });
        if named {
            return Ok(());
        }
        let shown = match original {
            IpAddr::V6(_) => format!("[{original}]:{}", addr.port()),
            IpAddr::V4(_) => format!("{original}:{}", addr.port()),
        };
        Err(AddrDenied {
            host: host.parse::<IpAddr>().is_err().then_some(host),
            ip: original,
            shown,
            range,
        })
    }

    /// The patterns, for messages.
    pub fn patterns(&self) -> &[HostPattern] {
        &self.patterns
    }
}

/// A DNS name (labels of letters, digits, `-` and `_`, an optional final
/// dot) or an IP address. Anything else could never match a URL's host, and
/// would not read back from its own display.
fn valid_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        })
}

/// `10.0.0.0/8` or `10.0.0.0/8:443` or `[fd00::/8]:443` or `fd00::/8`.
fn split_cidr(p: &str) -> Option<(&str, Option<&str>)> {
    if !p.contains('/') {
        return None;
    }
    if let Some(rest) = p.strip_prefix('[') {
        let (net, after) = rest.split_once(']')?;
        return Some((net, after.strip_prefix(':')));
    }
    let (addr, tail) = p.split_once('/')?;
    match tail.split_once(':') {
        Some((bits, port)) if !addr.contains(':') => {
            Some((&p[..addr.len() + 1 + bits.len()], Some(port)))
        }
        _ => Some((p, None)),
    }
}

/// An IPv6 address that carries an IPv4 address is judged as that address:
/// on a network that routes it, it reaches the IPv4 host.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, |(v4, _)| IpAddr::V4(v4)),
        v4 => v4,
    }
}

/// The IPv4 address an IPv6 address carries, and how: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64
/// (`64:ff9b::/96`, RFC 6052), 6to4 (`2002::/16`, RFC 3056) and Teredo
/// (`2001::/32`, RFC 4380: the client's address, bits inverted).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some((v4, "IPv4-mapped"));
    }
    if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
        return Some((low, "IPv4-compatible"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some((low, "NAT64"));
    }
    if s[0] == 0x2002 {
        return Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), "6to4"));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let client = !u32::from(low);
        return Some((Ipv4Addr::from(client), "Teredo"));
    }
    None
}

/// The kind of a non-public address, or `None` for a public one: the
/// special-purpose ranges of IANA's IPv4 and IPv6 registries that are not
/// reachable on the internet or reach somewhere else.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (carrier-grade NAT)")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("IETF protocol assignment")
            } else if (o[0], o[1], o[2]) == (192, 0, 2)
                || (o[0], o[1], o[2]) == (198, 51, 100)
                || (o[0], o[1], o[2]) == (203, 0, 113)
            {
                Some("documentation")
            } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
                Some("benchmarking")
            } else if (o[0], o[1], o[2]) == (192, 88, 99) {
                Some("6to4 relay anycast")
            } else if o[0] >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (seg[0] & 0xffc0) == 0xfec0 {
                Some("site-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[..3] == [0x64, 0xff9b, 1] {
                // RFC 8215: NAT64 for local use, at a prefix length only the
                // network knows, so the IPv4 address cannot be read back.
                Some("NAT64 (local use)")
            } else if seg[..4] == [0x100, 0, 0, 0] {
                Some("discard-only")
            } else if (seg[0] == 0x2001 && seg[1] == 0xdb8) || (seg[0] & 0xfff0) == 0x3ff0 {
                Some("documentation")
            } else if seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0 {
                Some("benchmarking")
            } else if seg[0] == 0x2001 && (seg[1] & 0xfe00) == 0 {
                Some("IETF protocol assignment")
            } else if seg[0] == 0x5f00 {
                Some("segment routing (SRv6)")
            } else {
                None
            }
        }
    }
}

/// An address the allow-list refuses: a special range (loopback, private,
/// link-local, …) that no pattern names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrDenied {
    /// The name that resolved to it; none when the URL held the address.
    pub host: Option<String>,
    /// The address.
    pub ip: IpAddr,
    /// The address and port as a pattern would name them.
    pub shown: String,
    /// Which special range.
    pub range: &'static str,
}

impl std::fmt::Display for AddrDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.shown;
        match &self.host {
            None => write!(f, "{shown} is a {} address", self.range)?,
            Some(h) => write!(f, "'{h}' resolved to {}, a {} address", self.ip, self.range)?,
        }
        if let IpAddr::V6(v6) = self.ip
            && let Some((v4, how)) = embedded_ipv4(v6)
        {
            write!(f, " ({how}, carrying {v4})")?;
        }
        write!(
            f,
            "; only a pattern naming it allows it (--allow-host {shown}, or {shown:?} in allow_hosts)"
        )
    }
}

impl std::error::Error for AddrDenied {}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> AllowList {
        AllowList::parse(p).expect("valid patterns")
    }

    #[test]
    fn exact_host_any_port() {
        let a = list(&["api.example.com"]);
        assert!(a.allows("api.example.com", 443));
        assert!(a.allows("API.example.com", 80));
        assert!(!a.allows("example.com", 443));
        assert!(!a.allows("api.example.com.evil.net", 443));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let a = list(&["*.example.com"]);
        assert!(a.allows("a.example.com", 443));
        assert!(a.allows("a.b.example.com", 443));
        assert!(!a.allows("example.com", 443));
        assert!(!a.allows("badexample.com", 443));
    }

    #[test]
    fn ports_restrict() {
        let a = list(&["*.example.com:443", "127.0.0.1:8080", "[::1]:9000"]);
        assert!(a.allows("x.example.com", 443));
        assert!(!a.allows("x.example.com", 80));
        assert!(a.allows("127.0.0.1", 8080));
        assert!(!a.allows("127.0.0.1", 8081));
        assert!(a.allows("::1", 9000));
        assert!(!a.allows("::1", 9001));
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn public_addresses_of_allowed_hosts_pass() {
        let a = list(&["api.example.com", "*.example.com"]);
        assert!(
            a.check_addr("api.example.com", addr("93.184.215.14:443"))
                .is_ok()
        );
        assert!(
            a.check_addr("x.example.com", addr("[2606:2800::1]:443"))
                .is_ok()
        );
    }

    #[test]
    fn special_addresses_need_a_pattern_naming_them() {
        // A name that resolves to a special address is refused (rebinding),
        // even when the name itself is allowed.
        let a = list(&["api.example.com", "*.example.com", "*"]);
        for (ip, range) in [
            ("127.0.0.1:80", "loopback"),
            ("10.1.2.3:80", "private"),
            ("172.16.0.1:80", "private"),
            ("192.168.1.1:80", "private"),
            ("169.254.169.254:80", "link-local"),
            ("224.0.0.1:80", "multicast"),
            ("0.0.0.0:80", "unspecified"),
            ("100.64.0.1:80", "carrier-grade NAT"),
            ("[::1]:80", "loopback"),
            ("[fd00::1]:80", "unique local"),
            ("[fe80::1]:80", "link-local"),
            ("[::ffff:127.0.0.1]:80", "loopback"),
            ("[::]:80", "unspecified"),
            // IPv6 forms that carry an IPv4 address are judged by it.
            ("[::127.0.0.1]:80", "loopback"),
            ("[::a9fe:a9fe]:80", "link-local"),
            ("[64:ff9b::10.0.0.1]:80", "private"),
            ("[64:ff9b::169.254.169.254]:80", "link-local"),
            ("[2002:7f00:1::]:80", "loopback"),
            ("[2002:c0a8:101::1]:80", "private"),
            // Teredo: the client's address, bits inverted (here 10.0.0.1).
            ("[2001:0:4136:e378:8000:63bf:f5ff:fffe]:80", "private"),
            ("[64:ff9b:1::a00:1]:80", "NAT64 (local use)"),
            ("[fec0::1]:80", "site-local"),
            ("[100::1]:80", "discard-only"),
            ("[2001:db8::1]:80", "documentation"),
            ("[3fff::1]:80", "documentation"),
            ("[2001:2::1]:80", "benchmarking"),
            ("[2001:10::1]:80", "IETF protocol assignment"),
            ("[5f00::1]:80", "segment routing"),
            ("192.0.2.1:80", "documentation"),
            ("198.18.0.1:80", "benchmarking"),
            ("240.0.0.1:80", "reserved"),
            ("192.0.0.8:80", "IETF protocol assignment"),
        ] {
            let e = a
                .check_addr("api.example.com", addr(ip))
                .expect_err(ip)
                .to_string();
            assert!(e.contains(range), "{ip}: {e}");
            assert!(e.contains("'api.example.com' resolved to"), "{ip}: {e}");
        }
        // Named by an IP literal, a CIDR range, or localhost for loopback.
        let a = list(&["127.0.0.1:8080", "10.0.0.0/8", "localhost", "[::1]:9000"]);
        assert!(a.check_addr("127.0.0.1", addr("127.0.0.1:8080")).is_ok());
        assert!(a.check_addr("127.0.0.1", addr("127.0.0.1:8081")).is_err());
        assert!(a.check_addr("svc.internal", addr("10.9.8.7:443")).is_ok());
        assert!(a.check_addr("localhost", addr("127.0.0.1:1234")).is_ok());
        assert!(a.check_addr("localhost", addr("[::1]:1234")).is_ok());
        assert!(
            a.check_addr("localhost", addr("169.254.169.254:80"))
                .is_err()
        );
        assert!(a.check_addr("::1", addr("[::1]:9000")).is_ok());
        // A pattern naming the IPv4 address allows its IPv6 carriers too.
        assert!(
            a.check_addr("nat64", addr("[64:ff9b::a09:807]:443"))
                .is_ok()
        );
        let e = list(&["*"])
            .check_addr("x", addr("[64:ff9b::a00:1]:80"))
            .expect_err("carried private");
        assert!(e.to_string().contains("NAT64, carrying 10.0.0.1"), "{e}");
        // Public addresses carried in them stay public.
        for ip in [
            "[2002:808:808::1]:80",
            "[64:ff9b::808:808]:80",
            "[::ffff:8.8.8.8]:80",
        ] {
            assert!(list(&["*"]).check_addr("x", addr(ip)).is_ok(), "{ip}");
        }
    }

    #[test]
    fn cidr_patterns_match_ip_literals() {
        let a = list(&["10.0.0.0/8", "192.168.0.0/16:8443", "[fd00::/8]:443"]);
        assert!(a.allows("10.1.2.3", 80));
        assert!(!a.allows("11.1.2.3", 80));
        assert!(a.allows("192.168.3.4", 8443));
        assert!(!a.allows("192.168.3.4", 443));
        assert!(a.allows("fd00::5", 443));
        assert!(
            !a.allows("svc.internal", 80),
            "a range never matches a name"
        );
        for p in ["10.0.0.0/8", "192.168.0.0/16:8443", "[fd00::/8]:443"] {
            assert_eq!(HostPattern::parse(p).expect(p).to_string(), p);
        }
        assert!(HostPattern::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn empty_list_allows_nothing() {
        assert!(!AllowList::default().allows("localhost", 80));
    }

    #[test]
    fn hosts_that_are_neither_names_nor_addresses_are_refused() {
        for bad in [
            "1][::1:",
            // Found by fuzzing: a wildcard over an IPv6 address, in brackets.
            "[*.::]:45",
            "*.10.0.0.1",
            "[example.com]:80",
            "a b",
            "exa/mple.com",
            "a..b",
            "ex@mple.com",
            "[::1",
            "é.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "api.example.com",
            "example.com.",
            "_svc.local",
            "::1",
            "[::1]:80",
            "x-1",
        ] {
            let p = HostPattern::parse(good).expect(good);
            assert!(HostPattern::parse(&p.to_string()).is_ok(), "{good} → {p}");
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in ["", "a:b", "ex*ample.com", "*.", "[::1", "host:70000"] {
            let e = HostPattern::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for p in ["api.example.com", "*.example.com:443", "[::1]:9000", "*"] {
            assert_eq!(HostPattern::parse(p).expect(p).to_string(), p);
        }
    }
}
