//! What each fuzz target does with its input, shared by the libFuzzer
//! binaries (`fuzz_targets/`) and the replay of the kept corpus
//! (`tests/fuzz_corpus.rs`), so a finding stays a test.
//!
//! Each must return (an error is fine) without panicking, hanging or
//! growing without bound, whatever the bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// `waymark.toml`: the whole reader, every section, with `${env:…}`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "TOKEN").then(|| "t0k3n".to_string());
    let (_, errors) =
        waymark_monitor::config::Config::parse_partial(Path::new("/fuzz/waymark.toml"), text, &env);
    // Every error can be shown, with its place.
    for e in errors {
        let _ = e.to_string();
    }
}

/// Durations, sizes and rates as users write them, and what the runner
/// does with them next (instants, schedules).
pub fn units(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = waymark_record::units::parse_duration(text) {
        let _ = waymark_record::units::later(Instant::now(), d);
        let _ = waymark_record::units::later_wall(SystemTime::now(), d);
        let _ = waymark_monitor::schedule::Schedule::Every(d).next_after(SystemTime::now(), text);
        let _ = waymark_load::Plan::default_warmup(d);
    }
    if let Ok(n) = waymark_record::units::parse_size(text) {
        let _ = waymark_record::units::format_size(n as u64);
    }
    if let Ok(r) = waymark_load::parse_rate(text) {
        assert!(r.is_finite() && r > 0.0, "{text}: {r}");
    }
    if let Ok(s) = waymark_monitor::schedule::Schedule::cron(text) {
        let _ = s.next_after(SystemTime::now(), "fuzz");
    }
    let _ = Duration::ZERO;
}

/// Allow-list patterns, one per line, then every address rule against a
/// few addresses of each kind.
pub fn allow(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().take(64).collect();
    let Ok(list) = waymark_http::AllowList::parse(&lines) else {
        return;
    };
    let addrs = [
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6("64:ff9b::a00:1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)),
        IpAddr::V6("2002:c0a8:101::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)),
    ];
    for line in &lines {
        let host = line.split(':').next().unwrap_or("");
        let _ = list.allows(host, 443);
        for ip in addrs {
            if let Err(e) = list.check_addr(host, SocketAddr::new(ip, 443)) {
                let _ = e.to_string();
            }
        }
    }
    for p in list.patterns() {
        // What is shown reads back as the same pattern.
        let shown = p.to_string();
        assert!(
            waymark_http::HostPattern::parse(&shown).is_ok(),
            "{shown} does not read back"
        );
    }
}
