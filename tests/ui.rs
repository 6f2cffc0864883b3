//! The web UI of `waymark serve` as an SRE opens it: the real binary over a
//! history with two locations of one journey, whose TLS time halved a week
//! ago, and a journey failing now; the JSON API, and the pages rendered by
//! Debian's headless Chromium.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use waymark_monitor::store::{Entry, Store};

const HOUR: u64 = 3600;

/// A run of `journey` at `location`, `hours_ago`, with one request whose
/// connect, tls and processing are as given (ms).
fn entry(journey: &str, location: &str, n: usize, hours_ago: u64, status: &str, tls: f64) -> Entry {
    let at = SystemTime::now() - Duration::from_secs(hours_ago * HOUR);
    let (connect, processing) = (20.0, 30.0);
    let total = connect + tls + processing;
    let record = serde_json::from_value(json!({
        "journey": journey, "run_id": format!("{journey}-{location}-{n}"), "location": location,
        "attempt": 1, "started_at": humantime::format_rfc3339_millis(at).to_string(),
        "duration_ms": total + 1.0, "status": status,
        "error": if status == "pass" { Value::Null } else {
            json!({"kind": "check", "message": "1 check failed: status is 200"}) },
        "steps": [{
            "name": "quote", "status": status, "start_ms": 0.0, "duration_ms": total,
            "checks": [{"name": "status is 200", "passed": status == "pass", "detail": null}],
            "requests": [{
                "method": "GET", "url": "https://swap.example/quote", "status": 200,
                "http_version": "HTTP/2", "remote_addr": "127.0.0.1:443", "reused_connection": false,
                "start_ms": 0.0,
                "timings_ms": {"resolve": 0.0, "connect": connect, "tls": tls,
                               "processing": processing, "transfer": 0.0, "total": total},
                "bytes_received": 10, "bytes_decoded": 10, "tls": null,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": null, "error": null
            }]
        }],
        "logs": []
    }))
    .expect("record");
    Entry {
        record,
        final_attempt: true,
        scheduled_at: None,
        tape: None,
    }
}

fn history(db: &Path) {
    let mut store = Store::open(db).expect("store");
    let mut entries = Vec::new();
    // swap: hourly for 14 days from two locations; São Paulo's TLS moved to
    // an edge load balancer 7 days ago (40 → 20 ms), Frankfurt's did not.
    for h in 0..(14 * 24) {
        let tls_sp = if h < 7 * 24 { 20.0 } else { 40.0 };
        entries.push(entry("swap", "sao-paulo", h as usize, h, "pass", tls_sp));
        entries.push(entry("swap", "frankfurt", h as usize, h, "pass", 10.0));
    }
    // search: passing until 3 hours ago, failing since.
    for h in 0..48 {
        let status = if h < 3 { "fail" } else { "pass" };
        entries.push(entry("search", "frankfurt", h as usize, h, status, 10.0));
    }
    // billing: its last 5 runs failed inside a maintenance window.
    for h in 0..10 {
        let status = if h < 5 { "fail" } else { "pass" };
        let mut e = entry("billing", "frankfurt", h as usize, h, status, 10.0);
        if h < 5 {
            e.record.maintenance = Some("db upgrade".into());
        }
        entries.push(e);
    }
    // search's last failure was kept whole (keep_exchanges): a recording.
    let tape = std::fs::read_to_string(
        support::root().join("tests/fuzz/corpus/tape/seed-recorded-run.json"),
    )
    .expect("a recording");
    if let Some(e) = entries
        .iter_mut()
        .find(|e| e.record.run_id == "search-frankfurt-0")
    {
        e.tape = Some(tape);
    }
    store.insert(&entries).expect("insert");
}

/// One HTTP/1.1 exchange with the serve under test: status and body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, "")
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, body)
}

fn api(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// Renders `url` in headless Chromium and returns the page's DOM once its
/// scripts have run.
fn dom(url: &str, home: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ])
        .env("HOME", home)
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs (apt-get install chromium)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_ui_shows_status_uptime_and_a_phase_halved_by_the_move_to_the_edge() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("history.db");
    history(&db);
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nlisten = \"127.0.0.1:0\"\nlocation = \"frankfurt\"\n\n[[journey]]\nname = \"swap\"\nwasm = \"{w}\"\nschedule = \"0 0 0 29 2 *\"\n\n[[journey]]\nname = \"search\"\nwasm = \"{w}\"\nschedule = \"0 0 0 29 2 *\"\ntags = [\"web\"]\n\n[store]\npath = \"{}\"\n\n[ui]\ntitle = \"Example trading status\"\ntrace_url = \"https://tempo.example/trace/{{trace_id}}\"\n\n[[ui.group]]\nname = \"Trading API\"\njourneys = [\"swap\", \"search\"]\n\n[[maintenance]]\nname = \"search reindex\"\nstart = \"{from}\"\nend = \"{to}\"\ntags = [\"web\"]\n",
            db.display(),
            w = support::hostile_wasm().display(),
            from = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600)),
            to = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)),
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["serve", "--log-format", "json", "-c"])
        .arg(&config)
        .env("WAYMARK_CACHE_DIR", dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let _serve = support::Kill(child);
    let mut addr = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "waymark serve started" {
            addr = v["listen"].as_str().and_then(|a| a.parse().ok());
            break;
        }
    }
    let addr: SocketAddr = addr.expect("serve started with a listener");

    // Overview: a row per journey and location.
    let all = api(addr, "/api/journeys");
    let row = |journey: &str, location: &str| -> Value {
        all["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["journey"] == journey && r["location"] == location)
            .cloned()
            .unwrap_or_else(|| panic!("no row {journey}@{location}: {all}"))
    };
    let sp = row("swap", "sao-paulo");
    assert_eq!(sp["status"], "pass");
    assert_eq!(sp["uptime"]["7d"], 1.0);
    assert_eq!(sp["days"].as_array().map(Vec::len), Some(90));
    assert_eq!(sp["incident"], Value::Null);
    let search = row("search", "frankfurt");
    assert_eq!(search["status"], "fail");
    // 3 of the last 24 hourly runs failed.
    let day = search["uptime"]["24h"].as_f64().expect("24h uptime");
    assert!((day - 21.0 / 24.0).abs() < 0.05, "{search}");
    assert!(search["incident"]["since"].is_string(), "{search}");
    // This runner (at frankfurt) schedules search: its next run is known.
    assert!(
        search["next_run"]
            .as_str()
            .is_some_and(|t| t.starts_with("2028-02-29T00:00:00")),
        "{search}"
    );
    assert_eq!(sp["next_run"], Value::Null, "another location's");
    // The open incident can be acknowledged, once; MTTA joins MTTR.
    let id = search["incident"]["id"]
        .as_str()
        .expect("incident id")
        .to_string();
    assert!(id.starts_with("search@"), "{id}");
    assert_eq!(search["incident"]["acknowledged_by"], Value::Null);
    let path = format!("/api/incidents/{id}/ack");
    let (status, body) = post(addr, &path, r#"{"by": "alice"}"#);
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(addr, &path, r#"{"by": "bob"}"#);
    assert_eq!(status, 200);
    let (status, body) = post(addr, &path, r#"{"who": "carol"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("by"), "{body}");
    let (status, _) = post(addr, "/api/incidents/search@1/ack", r#"{"by": "x"}"#);
    assert_eq!(status, 404);
    let inc = api(addr, "/api/incidents?journey=search");
    let open = &inc["journeys"][0]["incidents"]
        .as_array()
        .expect("incidents")[0];
    assert_eq!(open["acknowledged_by"], "alice", "the first stands: {inc}");
    // The spell began with the run 2 hours ago (runs are hourly).
    let tta = open["time_to_acknowledge_s"].as_f64().expect("tta");
    assert!((tta - 7200.0).abs() < 120.0, "{inc}");
    assert!(inc["journeys"][0]["mtta_s"].as_f64().is_some(), "{inc}");
    let again = api(addr, "/api/journeys?status=fail&q=search");
    assert_eq!(again["rows"][0]["incident"]["acknowledged_by"], "alice");
    let stats = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["history", "--stats", "--db"])
        .arg(&db)
        .output()
        .expect("history");
    let table = String::from_utf8_lossy(&stats.stdout);
    let billing_line = table
        .lines()
        .find(|l| l.starts_with("billing"))
        .unwrap_or_default();
    assert!(
        billing_line.contains(" 5 ") && billing_line.contains("100.00%"),
        "runs in maintenance are left out: {table}"
    );
    assert!(
        table.contains("MEAN TIME TO ACKNOWLEDGE")
            && table.contains("acknowledged by alice after 2h"),
        "{table}"
    );

    // Maintenance: the window open now shows on the journeys it covers
    // (by tag), and runs in a window count neither for nor against uptime.
    assert_eq!(search["maintenance"], "search reindex", "{search}");
    assert_eq!(sp["maintenance"], Value::Null);
    let billing = row("billing", "frankfurt");
    assert_eq!(billing["uptime"]["24h"], 1.0, "{billing}");
    assert_eq!(billing["counts"]["24h"]["runs"], 5);
    let held: u64 = billing["days"]
        .as_array()
        .expect("days")
        .iter()
        .filter_map(|d| d["maintenance"].as_u64())
        .sum();
    assert_eq!(held, 5);
    let tagged = api(addr, "/api/journeys?tag=web");
    assert_eq!(tagged["total"], 1, "{tagged}");
    assert_eq!(tagged["rows"][0]["journey"], "search");

    // Filters and pages.
    let failing = api(addr, "/api/journeys?status=fail");
    assert_eq!(
        failing["total"], 2,
        "search, and billing in maintenance: {failing}"
    );
    let paged = api(addr, "/api/journeys?per_page=1&page=1");
    assert_eq!(paged["rows"].as_array().map(Vec::len), Some(1));
    assert!(paged["total"].as_u64() >= Some(3));

    // Before/after: São Paulo's tls halved, Frankfurt's did not move.
    let cmp = api(
        addr,
        "/api/journeys/swap/compare?before=14d/7d&after=7d/now&location=sao-paulo",
    );
    let tls = cmp["median_change_pct"]["tls"]
        .as_f64()
        .expect("tls change");
    assert!((tls + 50.0).abs() < 0.1, "{cmp}");
    assert_eq!(cmp["median_change_pct"]["connect"].as_f64(), Some(0.0));
    assert_eq!(
        cmp["before"]["summary"]["phases"]["tls"]["median_ms"].as_f64(),
        Some(40.0)
    );
    let fra = api(
        addr,
        "/api/journeys/swap/compare?before=14d/7d&after=7d/now&location=frankfurt",
    );
    assert_eq!(fra["median_change_pct"]["tls"].as_f64(), Some(0.0));

    // Phases over time: one series per location, tls 40 then 20 in São Paulo.
    let ph = api(addr, "/api/journeys/swap/phases?window=14d/now&buckets=14");
    let series = ph["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "{ph}");
    let sp_points = series
        .iter()
        .find(|s| s["location"] == "sao-paulo")
        .and_then(|s| s["points"].as_array())
        .expect("sao-paulo points");
    assert_eq!(
        sp_points.first().map(|p| p["tls_ms"].clone()),
        Some(json!(40.0))
    );
    assert_eq!(
        sp_points.last().map(|p| p["tls_ms"].clone()),
        Some(json!(20.0))
    );

    // Runs and one run.
    let runs = api(addr, "/api/journeys/search/runs?status=fail");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(3), "{runs}");
    let one = api(addr, "/api/runs/search-frankfurt-0");
    assert_eq!(one["record"]["status"], "fail");
    assert_eq!(one["replayable"], true);
    assert_eq!(
        one["trace_url"], "https://tempo.example/trace/{trace_id}",
        "{one}"
    );
    let har = api(addr, "/api/runs/search-frankfurt-0/har");
    assert_eq!(har["log"]["version"], "1.2");
    assert_eq!(har["log"]["entries"].as_array().map(Vec::len), Some(1));
    let (status, _) = get(addr, "/api/runs/search-frankfurt-1/har");
    assert_eq!(status, 404, "a run not kept whole has no HAR");

    // The public status page and the badges.
    let page = api(addr, "/api/status-page");
    assert_eq!(page["title"], "Example trading status");
    assert_eq!(page["operational"], false);
    let group = &page["groups"][0];
    assert_eq!(group["name"], "Trading API");
    assert_eq!(group["journeys"][0]["status"], "pass");
    assert_eq!(group["journeys"][1]["status"], "fail");
    let (status, html) = get(addr, "/status-page");
    assert_eq!(status, 200);
    assert!(
        html.contains("Example trading status") && html.contains("Some systems are failing"),
        "{html}"
    );
    assert!(!html.contains("<script"), "the status page needs no script");
    let (status, svg) = get(addr, "/badge/swap/uptime/7d.svg");
    assert_eq!(status, 200);
    assert!(
        svg.contains("<svg") && svg.contains("uptime 7d: 100.00%"),
        "{svg}"
    );
    let (_, svg) = get(addr, "/badge/search/uptime/24h.svg");
    assert!(svg.contains("uptime 24h: 87.50%"), "{svg}");
    let (_, svg) = get(addr, "/badge/swap/p95.svg");
    assert!(
        svg.contains("p95: 71 ms"),
        "the worst location's p95: {svg}"
    );
    let (status, _) = get(addr, "/badge/swap/uptime/1y.svg");
    assert_eq!(status, 400);
    let (status, _) = get(addr, "/badge/nobody/p95.svg");
    assert_eq!(status, 404);

    // Bad input is refused with what and where.
    let (status, body) = get(addr, "/api/journeys/swap/compare?before=7d&after=7d/now");
    assert_eq!(status, 400);
    assert!(
        body.contains("before") && body.contains("FROM/TO"),
        "{body}"
    );
    let (status, body) = get(addr, "/api/journeys?status=broken");
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(addr, "/api/runs/nope");
    assert_eq!(status, 404);
    let (status, _) = get(addr, "/api/nothing");
    assert_eq!(status, 404);

    // The pages, rendered: their scripts draw what the API says.
    let home = dir.path().join("chromium");
    let overview = dom(&format!("http://{addr}/"), &home);
    assert!(
        overview.contains("sao-paulo") && overview.contains("open for"),
        "{overview}"
    );
    let journey = dom(
        &format!("http://{addr}/journeys/swap?location=sao-paulo"),
        &home,
    );
    assert!(journey.contains("median change"), "{journey}");
    assert!(journey.contains("-50.0 %"), "{journey}");
    assert!(
        journey.contains("<rect"),
        "the phase chart is drawn: {journey}"
    );
    let search_page = dom(&format!("http://{addr}/journeys/search"), &home);
    assert!(
        search_page.contains("mean time to acknowledge 2.0 h"),
        "{search_page}"
    );
    let run = dom(&format!("http://{addr}/runs/search-frankfurt-0"), &home);
    assert!(run.contains("status is 200") && run.contains("✗"), "{run}");
    assert!(
        run.contains("https://tempo.example/trace/4bf92f3577b34da6a3ce929d0e0e4736"),
        "trace ids link to the tracing UI: {run}"
    );
    assert!(run.contains("/har?attempt=1"), "{run}");

    // `WAYMARK_UI_SHOTS=DIR` keeps pictures of the pages (the README's).
    if let Some(shots) = std::env::var_os("WAYMARK_UI_SHOTS") {
        let shots = Path::new(&shots);
        for (page, file) in [
            ("/", "ui-overview.png"),
            ("/journeys/swap?location=sao-paulo", "ui-journey.png"),
        ] {
            let shot = Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--virtual-time-budget=10000",
                    "--window-size=1400,900",
                ])
                .arg(format!("--screenshot={}", shots.join(file).display()))
                .arg(format!("http://{addr}{page}"))
                .env("HOME", &home)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(shot.is_ok_and(|s| s.success()), "screenshot of {page}");
        }
    }
}

#[test]
fn runs_in_a_maintenance_window_are_stored_marked_and_their_alerts_held() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("history.db");
    // A webhook that counts what it is sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = posts.clone();
    support::answer_each_request(listener, move |head| {
        if head.contains("POST /hook") {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec())
    });
    let journey = |name: &str| {
        format!(
            "[[journey]]\nname = \"{name}\"\nwasm = \"{}\"\nevery = \"1s\"\nvars = {{ mode = \"fail\" }}\n\n",
            support::hostile_wasm().display()
        )
    };
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}[[maintenance]]\nname = \"deploy\"\nstart = \"{}\"\nend = \"{}\"\njourneys = [\"broken\"]\n\n[[sink]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\nevents = [\"failing\"]\n\n[store]\npath = \"{}\"\n",
            journey("broken"),
            journey("broken-too"),
            humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(3600)),
            humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)),
            db.display()
        ),
    )
    .expect("config");
    let serve = support::Kill(
        Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["serve", "-c"])
            .arg(&config)
            .env("WAYMARK_CACHE_DIR", dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    // Three runs of each, stored.
    let t = std::time::Instant::now();
    let records = loop {
        let recs: Vec<waymark_record::RunRecord> = Store::open(&db)
            .and_then(|s| s.list(&waymark_monitor::store::Filter::default()))
            .map(|es| es.into_iter().map(|e| e.record).collect())
            .unwrap_or_default();
        let n = |j: &str| recs.iter().filter(|r| r.journey == j).count();
        if n("broken") >= 3 && n("broken-too") >= 3 {
            break recs;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "runs not stored");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Deliveries of the runs stored so far have had time to go out.
    std::thread::sleep(Duration::from_secs(1));
    drop(serve);
    for r in &records {
        let expected = (r.journey == "broken").then(|| "deploy".to_string());
        assert_eq!(r.maintenance, expected, "{}", r.journey);
        assert_eq!(r.status, waymark_record::Status::Fail);
    }
    // One `failing` event: broken-too's. broken's is held.
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Availability leaves the window out: broken has no counted runs.
    let stats = Store::open(&db)
        .and_then(|s| s.stats(&waymark_monitor::store::Filter::default()))
        .expect("stats");
    assert!(stats.iter().all(|s| s.journey != "broken"), "{stats:?}");
    assert!(
        stats
            .iter()
            .any(|s| s.journey == "broken-too" && s.passed == 0)
    );
}
