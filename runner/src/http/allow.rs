//! The host allow-list: which `host[:port]` a journey may reach.

use std::fmt;

/// One allow-list entry: `host`, `*.domain`, each with an optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// Exactly this name or IP literal (lower-case, IPv6 without brackets).
    Exact(String),
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
        let (host, port) = if let Some(rest) = p.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("missing ']'"))?;
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
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
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

    /// The patterns, for messages.
    pub fn patterns(&self) -> &[HostPattern] {
        &self.patterns
    }
}

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

    #[test]
    fn empty_list_allows_nothing() {
        assert!(!AllowList::default().allows("localhost", 80));
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
