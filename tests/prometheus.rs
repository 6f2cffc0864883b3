//! The prometheus sink, scraped for real: `waymark serve` with a prometheus
//! sink, Debian's `prometheus` scraping its `/metrics` every second, and
//! PromQL answers checked through Prometheus's HTTP API.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Kill, free_port};

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // Prometheus answers its API in one piece or chunked.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        return Some(out);
    }
    Some(body.to_string())
}

/// One instant-vector value of `query`, if Prometheus has it.
fn query(prom: &str, q: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", url_encode(q));
    let body = http_get(prom, &path)?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let first = v["data"]["result"].as_array()?.first()?.clone();
    first["value"][1].as_str()?.parse().ok()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A port nobody listens on any more.
fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Debian's Prometheus on `addr`, its data in `dir`, scraping every second
/// as `scrape_configs` says (empty for none), receiving remote writes.
fn prometheus(dir: &std::path::Path, addr: &str, scrape_configs: &str) -> Kill {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{scrape_configs}"),
    )
    .expect("prometheus.yml");
    Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    /// Runs the https server of journey `secure`.
    _rt: tokio::runtime::Runtime,
    _tls: support::ScriptedServer,
    _ca: support::TestCa,
    _cache: tempfile::TempDir,
    _serve: Kill,
    _prom: Kill,
    prom_addr: String,
    serve_addr: String,
    server: support::CountingServer,
}

/// `waymark serve` with a prometheus sink (`sink_extra` added to it) and
/// a Prometheus scraping it (`scrape`) or receiving its remote writes.
fn setup(scrape: bool, sink_extra: &str) -> Setup {
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "this test runs Debian's Prometheus: apt-get install prometheus (.ci/run does)"
    );
    let server = support::CountingServer::start(0, Duration::ZERO);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ca = support::TestCa::new();
    let tls = rt.block_on(support::ScriptedServer::ok(Some(ca.server.clone())));
    let dir = tempfile::tempdir().expect("tmp");
    let wasm = support::hostile_wasm().display().to_string();
    let serve_port = free_port();
    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nlocation = \"lab-1\"\nlisten = \"127.0.0.1:{serve_port}\"\nwatch = false\n\n\
             [store]\npath = \"history.db\"\n\n\
             [[journey]]\nname = \"ok\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nallow_hosts = [\"127.0.0.1\"]\n\
             vars = {{ mode = \"fetch\", url = \"{}\" }}\n\n\
             [[journey]]\nname = \"bad\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nvars = {{ mode = \"fail\" }}\n\n\
             [[journey]]\nname = \"secure\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nallow_hosts = [\"localhost\"]\nca_file = \"{}\"\n\
             vars = {{ mode = \"fetch\", url = \"https://localhost:{}/\" }}\n\n\
             [[journey]]\nname = \"slow\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nvars = {{ mode = \"sleep\", ms = \"700\" }}\n\n\
             [[journey]]\nname = \"down\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nallow_hosts = [\"127.0.0.1\"]\n\
             vars = {{ mode = \"fetch\", url = \"http://127.0.0.1:{}/\" }}\n\n\
             [[sink]]\ntype = \"prometheus\"\n{}\n",
            server.url(),
            ca.ca_file.display(),
            tls.addr.port(),
            refused_port(),
            sink_extra.replace("PROM", &prom_addr)
        ),
    )
    .expect("config");
    let cache = tempfile::tempdir().expect("cache");
    let mut serve = Kill(
        Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["serve", "-c"])
            .arg(&config)
            .env("WAYMARK_CACHE_DIR", cache.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve"),
    );
    let stderr = serve.0.stderr.take().expect("stderr");
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let serve_addr = format!("127.0.0.1:{serve_port}");
    let t = Instant::now();
    while http_get(&serve_addr, "/healthz").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let scrape_configs = if scrape {
        format!(
            "scrape_configs:\n  - job_name: waymark\n    static_configs:\n      - targets: ['{serve_addr}']\n"
        )
    } else {
        String::new()
    };
    let prom = prometheus(dir.path(), &prom_addr, &scrape_configs);
    Setup {
        _dir: dir,
        _rt: rt,
        _tls: tls,
        _ca: ca,
        _cache: cache,
        _serve: serve,
        _prom: prom,
        prom_addr,
        serve_addr,
        server,
    }
}

fn wait(prom_addr: &str, q: &str, want: &dyn Fn(f64) -> bool) -> f64 {
    let t = Instant::now();
    loop {
        let v = query(prom_addr, q);
        if v.is_some_and(want) {
            return v.unwrap_or_default();
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "PromQL {q} never matched (last: {v:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn remote_write_reaches_prometheus() {
    let s = setup(
        false,
        "listen = \"127.0.0.1:0\"\nremote_write = \"http://PROM/api/v1/write\"\npush_interval = \"1s\"",
    );
    wait(
        &s.prom_addr,
        r#"waymark_journey_success{journey="ok",location="lab-1",job="waymark"}"#,
        &|v| v == 1.0,
    );
    wait(
        &s.prom_addr,
        r#"waymark_journey_success{journey="bad",job="waymark"}"#,
        &|v| v == 0.0,
    );
    wait(
        &s.prom_addr,
        r#"sum(waymark_http_phase_duration_seconds_count{journey="ok",phase="total"})"#,
        &|v| v >= 1.0,
    );
    assert!(s.server.count() >= 1);
}

#[test]
fn prometheus_scrapes_waymark_serve() {
    let s = setup(true, "");
    let prom_addr = s.prom_addr.as_str();
    let wait = |q: &str, want: &dyn Fn(f64) -> bool| wait(prom_addr, q, want);
    wait(
        r#"waymark_journey_success{journey="ok",location="lab-1"}"#,
        &|v| v == 1.0,
    );
    wait(
        r#"waymark_journey_success{journey="bad",location="lab-1"}"#,
        &|v| v == 0.0,
    );
    wait(
        r#"sum(waymark_journey_runs_total{journey="bad",status="fail"})"#,
        &|v| v >= 2.0,
    );
    wait(
        r#"waymark_check_failures_total{journey="bad",check="this fails"}"#,
        &|v| v >= 1.0,
    );
    wait(
        r#"sum(waymark_http_phase_duration_seconds_count{journey="ok",phase="total",location="lab-1"})"#,
        &|v| v >= 2.0,
    );
    // A failed request counts for the phases it got through, under its
    // error's kind, and not for those it never reached.
    wait(
        r#"sum(waymark_http_phase_duration_seconds_count{journey="down",phase="connect",result="connect"})"#,
        &|v| v >= 2.0,
    );
    wait(
        r#"sum(waymark_http_phase_duration_seconds_count{journey="ok",phase="total",result="ok"})"#,
        &|v| v >= 2.0,
    );
    assert_eq!(
        query(
            prom_addr,
            r#"count(waymark_http_phase_duration_seconds_count{journey="down",phase="processing"})"#
        ),
        None,
        "a refused connection never reached processing"
    );
    let d = wait(r#"waymark_journey_duration_seconds{journey="ok"}"#, &|v| {
        v > 0.0
    });
    assert!(d < 5.0, "{d}");
    let p95 = wait(
        r#"histogram_quantile(0.95, sum by (le) (rate(waymark_http_phase_duration_seconds_bucket{journey="ok",phase="total"}[30s])))"#,
        &|v| v.is_finite() && v > 0.0,
    );
    assert!(p95 < 1.0, "{p95}");
    // The server saw the requests behind those figures.
    assert!(s.server.count() >= 2);

    // The runner's own metrics, beside the journeys'.
    wait(r#"sum(waymark_schedule_lag_seconds_count)"#, &|v| v >= 3.0);
    let lag_p99 = wait(
        r#"histogram_quantile(0.99, sum by (le) (rate(waymark_schedule_lag_seconds_bucket[30s])))"#,
        &|v| v.is_finite(),
    );
    assert!(lag_p99 < 1.0, "schedule lag p99 {lag_p99} s");
    wait(
        r#"waymark_sink_records_total{sink="prometheus",outcome="delivered"}"#,
        &|v| v >= 3.0,
    );
    wait(
        r#"waymark_sink_records_total{sink="prometheus",outcome="dead_lettered"}"#,
        &|v| v == 0.0,
    );
    wait(r#"waymark_sink_queued_records{sink="prometheus"}"#, &|v| {
        v >= 0.0
    });
    wait(r#"waymark_store_records_total{outcome="written"}"#, &|v| {
        v >= 3.0
    });
    wait(r#"waymark_store_queued_records"#, &|v| v >= 0.0);
    wait(r#"sum(waymark_store_batch_duration_seconds_count)"#, &|v| {
        v >= 1.0
    });
    wait(r#"waymark_runs_in_flight"#, &|v| v >= 0.0);
    wait(r#"count(waymark_build_info)"#, &|v| v == 1.0);

    // A reader that does not ask for OpenMetrics gets the classic text
    // format, and promtool (Debian's, beside Prometheus) finds nothing wrong.
    let classic = http_get(&s.serve_addr, "/metrics").expect("/metrics");
    assert!(!classic.contains("# EOF"), "not OpenMetrics: {classic}");
    assert!(
        classic.contains("# TYPE waymark_journey_runs_total counter"),
        "{classic}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(classic.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{classic}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PromQL expression of the Grafana dashboard, with its variables
/// set as Grafana would set them for "All".
fn dashboard_queries() -> Vec<(String, String)> {
    let path = support::root().join("docs/grafana/waymark.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "waymark-overview");
    assert!(
        dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "Grafana 10 reads it"
    );
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> =
        dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            // Every query goes to the dashboard's chosen Prometheus.
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "30s")
                .replace("$__range", "5m")
                .replace("$location", ".*")
                .replace("$journey", ".*")
                .replace("$slo", "0.999");
            assert!(!expr.contains('$'), "a variable left in {expr}");
            out.push((p["title"].as_str().unwrap_or("").to_string(), expr));
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_queries_parse_and_return_data() {
    let s = setup(true, "");
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    // Data worth a dashboard first: runs of every kind, a cert, a failure.
    wait(&s.prom_addr, r#"sum(waymark_journey_runs_total)"#, &|v| {
        v >= 20.0
    });
    wait(
        &s.prom_addr,
        r#"count(waymark_tls_cert_not_after_timestamp_seconds)"#,
        &|v| v >= 1.0,
    );
    for (title, expr) in &queries {
        let t = Instant::now();
        loop {
            let path = format!("/api/v1/query?query={}", url_encode(expr));
            let body = http_get(&s.prom_addr, &path);
            let v: Option<serde_json::Value> =
                body.as_deref().and_then(|b| serde_json::from_str(b).ok());
            let ok = v.as_ref().is_some_and(|v| v["status"] == "success");
            let series = v
                .as_ref()
                .and_then(|v| v["data"]["result"].as_array().map(Vec::len))
                .unwrap_or(0);
            if ok && series > 0 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "panel {title:?}: {expr}\n{}",
                body.unwrap_or_else(|| "Prometheus refused the query (does it parse?)".into())
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The variables' queries find their labels.
    for label in ["location", "journey"] {
        let body = http_get(
            &s.prom_addr,
            &format!("/api/v1/label/{label}/values?match[]=waymark_journey_success"),
        )
        .expect("label values");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(
            !v["data"].as_array().is_none_or(Vec::is_empty),
            "{label}: {body}"
        );
    }
}

/// `waymark load --observe` asks a real Prometheus over each step's
/// measured window. The load is aimed at Prometheus's own `/-/healthy` and
/// Prometheus scrapes itself, so the request rate it observes at its end
/// must track the request rate waymark measured at its end, step by step.
#[test]
fn load_observes_server_series_beside_the_ramp() {
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "this test runs Debian's Prometheus: apt-get install prometheus (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let _prom = prometheus(
        dir.path(),
        &prom_addr,
        &format!(
            "scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['{prom_addr}']\n"
        ),
    );
    wait(&prom_addr, "up{job=\"self\"}", &|v| v == 1.0);

    let json = dir.path().join("audit.json");
    let html = dir.path().join("audit.html");
    let served = "served=sum(irate(prometheus_http_requests_total{handler=\"/-/healthy\"}[3s]))";
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .env("WAYMARK_CACHE_DIR", dir.path().join("cache"))
        .args(["load"])
        .arg(support::hostile_wasm())
        .args([
            "--var",
            "mode=fetch",
            "--var",
            &format!("url=http://{prom_addr}/-/healthy"),
            "--allow-host",
            &prom_addr,
            "--concurrency",
            "1,4",
            "--step-duration",
            "6s",
            "--warmup",
            "3s",
            "--observe",
            served,
            "--observe",
            "up=up{job=\"self\"}",
            "--observe",
            "broken=rate(",
            "--prometheus",
            &format!("http://{prom_addr}"),
            "--json",
        ])
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .arg("-q")
        .output()
        .expect("waymark load");
    let shown = String::from_utf8_lossy(&out.stdout);
    eprintln!("{shown}");
    // A query that fails is a warning, not a failed audit.
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("server series from Prometheus")
            && shown.contains("warning: --observe broken: the query failed"),
        "{shown}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parses");
    let steps = v["steps"].as_array().expect("steps");
    let observed = v["observed"].as_array().expect("observed");
    assert_eq!(observed.len(), 3, "{observed:?}");
    for (i, step) in steps.iter().enumerate() {
        let measured = step["request_rate"].as_f64().expect("rate");
        let seen = &observed[0]["steps"][i];
        let (avg, max) = (
            seen["avg"].as_f64().expect("an average"),
            seen["max"].as_f64().expect("a max"),
        );
        assert!(
            (0.6..=1.5).contains(&(avg / measured)) && max >= avg,
            "step {i}: waymark measured {measured:.0} req/s, Prometheus served {avg:.0} (max {max:.0})\n{shown}"
        );
        assert_eq!(observed[1]["steps"][i]["avg"].as_f64(), Some(1.0), "up");
        assert!(observed[2]["steps"][i].is_null());
    }
    assert!(
        v["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("broken")))),
        "{v}"
    );
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(
        page.contains("served against concurrency") && page.contains("Warning: --observe broken"),
        "{page:.300}"
    );
}
