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

/// A loopback server for [`exchange`]: answers each connection with the
/// bytes last set, then closes it.
struct Echo {
    port: u16,
    answer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

fn echo() -> &'static Echo {
    static ECHO: std::sync::OnceLock<Echo> = std::sync::OnceLock::new();
    ECHO.get_or_init(|| {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback");
        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        let answer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let a = answer.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                // Read the request head (bounded), then answer and close.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let bytes = a.lock().map(|b| b.clone()).unwrap_or_default();
                let _ = s.write_all(&bytes);
            }
        });
        Echo { port, answer }
    })
}

/// A request the journey could make, to a server that answers with any
/// bytes: the URL, method and header checks of the `http` interface, then
/// the client's whole response path (head parsing, lengths, chunking,
/// decompression, caps). Input: `METHOD PATH\nname: value…` (the request),
/// a NUL, then the response bytes as sent.
pub fn exchange(data: &[u8]) {
    static RT: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    let Some(rt) = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
    }) else {
        return;
    };
    let (req, resp) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..]),
    };
    let req = String::from_utf8_lossy(req);
    let mut lines = req.lines();
    let first = lines.next().unwrap_or("");
    let (method, path) = first.split_once(' ').unwrap_or(("GET", first));
    let server = echo();
    if let Ok(mut a) = server.answer.lock() {
        *a = resp.to_vec();
    }
    // A path, or (starting with a scheme) a whole URL of the journey's.
    let url = if path.contains("://") {
        path.to_string()
    } else {
        format!("http://127.0.0.1:{}{path}", server.port)
    };
    let Ok(allow) = waymark_http::AllowList::parse(&["127.0.0.1"]) else {
        return;
    };
    let Ok(mut config) = waymark_http::HttpConfig::new(allow, None) else {
        return;
    };
    config.max_body = 1 << 20;
    config.max_total_bytes = 4 << 20;
    let mut client = waymark_http::Client::new(std::sync::Arc::new(config));
    let request = waymark_http::Request {
        method: method.to_string(),
        url,
        headers: lines
            .take(32)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim_start().to_string()))
            .collect(),
        body: None,
        timeout: Some(Duration::from_secs(1)),
        trace: true,
    };
    let ex = rt.block_on(client.send(&request));
    match &ex.result {
        Ok(r) => {
            assert!(r.body.len() as u64 <= 1 << 20, "the body cap holds");
            assert!(ex.reached.is_none());
        }
        Err(e) => {
            let _ = e.to_string();
            // What a failure got through adds up to its time.
            if let Some(r) = ex.reached {
                let t = r.timings;
                let sum = t.resolve + t.connect + t.tls + t.processing + t.transfer;
                assert!(sum <= t.total + Duration::from_millis(1), "{t:?}");
            }
        }
    }
}

/// A recorded run (`waymark replay FILE`): the reader, and what a replay
/// does with what it read before it runs anything.
pub fn tape(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tape) = waymark_engine::tape::Tape::from_json(text) else {
        return;
    };
    for x in &tape.exchanges {
        let _ = x.describe();
        if let Some(r) = &x.response {
            let _ = (r.body.bytes(), r.body.is_cut());
        }
    }
    assert_eq!(
        waymark_engine::tape::first_difference(&tape.record, &tape.record),
        None
    );
}
