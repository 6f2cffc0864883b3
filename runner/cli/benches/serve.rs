//! Issue-4 figures, printed: `waymark serve` under many schedules.
//!
//! - `10k`: 10,000 journeys `every = "1m"`, each one GET to a loopback
//!   server, for 150 s;
//! - `10k-postgres`: the same with the history in PostgreSQL (Debian's,
//!   started in a temporary directory on the same cores);
//! - `10k-postgres-3`: the same 10,000 over 3 replicas (`shard`, leases)
//!   writing to one PostgreSQL;
//! - `100`: 100 journeys `every = "1s"` for 60 s;
//! - `overload`: 2,400 to 14,400 journeys `every = "1s"` (about 50 % to
//!   300 % of a 2-core machine), 20 s each: runs started per minute, ticks
//!   skipped, WARN lines, `/healthz`;
//! - `burst` (only when asked): 10,000 journeys on the cron `0 * * * * *`,
//!   all due in the same second, for 130 s;
//! - `ui` (only when asked): the web UI over a history of 10,000 journeys
//!   at 2 locations, hourly for 2 days (960,000 runs): the overview API's
//!   answer time for a page, a filter and a deep page, and the overview's
//!   first paint in headless Chromium (navigation start → table drawn).
//!
//! For each: schedule lag (actual start − due time, from the history store)
//! p50/p90/p99/max, CPU of the serve process over the window, its peak RSS
//! (VmHWM), and the run counts. `cargo bench -p waymark --bench serve`;
//! `WAYMARK_BENCH=10k|10k-postgres|10k-postgres-3|100|overload|burst` runs one. Linux only (reads /proc).

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use waymark_monitor::store::{Database, Filter, Postgres, Store};

/// The schedule lag line, from lags in ms sorted ascending.
fn print_lags(lags: &[f64]) {
    println!(
        "   schedule lag ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(lags, 0.50),
        percentile(lags, 0.90),
        percentile(lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks / hz
}

/// A `waymark serve` of `n` health journeys on `schedule` against `server`,
/// logging to `dir/serve.log`; returns it once it has started, and how long
/// that took.
fn start_serve(
    dir: &std::path::Path,
    n: usize,
    schedule: &str,
    listen: &str,
    server: &support::CountingServer,
    store: &str,
    runner: &str,
) -> (std::process::Child, Duration) {
    let wasm = dir.join("health.wasm");
    std::fs::write(&wasm, waymark::demo::JOURNEYS[0].1).expect("write journey");
    let mut cfg = format!(
        "[runner]\nlocation = \"bench\"\nlisten = \"{listen}\"\nwatch = false\n{runner}\n\n\
         [store]\n{store}\n\n\
         [defaults]\nallow_hosts = [\"127.0.0.1\"]\ntimeout = \"10s\"\n\
         vars = {{ base_url = \"http://{}\" }}\n{schedule}\n\n",
        server.addr
    );
    for i in 0..n {
        cfg.push_str(&format!(
            "[[journey]]\nname = \"j{i:05}\"\nwasm = \"health.wasm\"\n"
        ));
    }
    let config = dir.join("waymark.toml");
    std::fs::write(&config, cfg).expect("write config");
    let log = dir.join("serve.log");
    let cache = dir.join("cache");
    let t_start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["serve", "-c"])
        .arg(&config)
        .env("WAYMARK_CACHE_DIR", &cache)
        .env_remove("WAYMARK_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn serve");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("waymark serve started")
    {
        assert!(
            t_start.elapsed() < Duration::from_secs(120),
            "serve did not start"
        );
        assert!(child.try_wait().ok().flatten().is_none(), "serve exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, t_start.elapsed())
}

fn scenario(label: &str, n: usize, schedule: &str, window: Duration, interval: Duration) {
    scenario_on(label, n, schedule, window, interval, None);
}

/// As [`scenario`], with the history in `pg` (PostgreSQL on the same cores)
/// instead of a SQLite file.
fn scenario_on(
    label: &str,
    n: usize,
    schedule: &str,
    window: Duration,
    interval: Duration,
    pg: Option<&support::postgres::Pg>,
) {
    let server = support::CountingServer::start(0, Duration::ZERO);
    let dir = tempfile::tempdir().expect("tmp");
    let store = match pg {
        Some(pg) => format!("url = \"{}\"", pg.url()),
        None => "path = \"history.db\"".to_string(),
    };
    let (mut child, startup) = start_serve(dir.path(), n, schedule, "off", &server, &store, "");
    let pid = child.id();
    let rss_after_start = support::status_kib(pid, "VmRSS:");
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let hwm = support::status_kib(pid, "VmHWM:");
    let _ = Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status();
    let t_stop = Instant::now();
    let code = child.wait().expect("wait");
    let stop = t_stop.elapsed();

    let database = match pg {
        Some(pg) => Database::Postgres(Postgres {
            url: pg.url(),
            ca_file: None,
        }),
        None => Database::Sqlite(dir.path().join("history.db")),
    };
    let store = Store::connect(&database).expect("store");
    let entries = store
        .list(&Filter {
            final_only: true,
            ..Filter::default()
        })
        .expect("history");
    let mut lags: Vec<f64> = entries
        .iter()
        .filter_map(|e| {
            let started = e.record.started_at;
            let due = e.scheduled_at?;
            Some(match started.duration_since(due) {
                Ok(d) => d.as_secs_f64() * 1000.0,
                Err(early) => -early.duration().as_secs_f64() * 1000.0,
            })
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let passed = entries
        .iter()
        .filter(|e| e.record.status == waymark_record::Status::Pass)
        .count();
    let expected = n as f64 * wall / interval.as_secs_f64();
    println!("== {label}: {n} journeys, {schedule}, {:.0} s window", wall);
    println!(
        "   startup (config + compile + first schedule) {:.2} s; SIGTERM to exit {:.2} s ({code})",
        startup.as_secs_f64(),
        stop.as_secs_f64()
    );
    println!(
        "   runs stored {} (about {:.0} due in the window), passed {passed}, server saw {} requests",
        entries.len(),
        expected,
        server.count()
    );
    print_lags(&lags);
    println!(
        "   CPU {:.1}% of one core over the window ({:.1} s of {:.0} s); RSS after start {:.1} MiB, peak {:.1} MiB",
        100.0 * cpu / wall,
        cpu,
        wall,
        rss_after_start as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

/// `replicas` processes of one config of `n` journeys every minute, sharded
/// with leases in one PostgreSQL history: the lag and the ticks stored from
/// the shared history (a tick stored twice would be a double run), each
/// replica's CPU and peak RSS.
fn sharded(n: usize, replicas: usize, window: Duration, pg: &support::postgres::Pg) {
    let server = support::CountingServer::start(0, Duration::ZERO);
    let dirs: Vec<tempfile::TempDir> = (0..replicas)
        .map(|_| tempfile::tempdir().expect("tmp"))
        .collect();
    let store = format!("url = \"{}\"", pg.url());
    let mut children = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let runner = format!("shard = \"{i}/{replicas}\"\nlease = \"10s\"");
        let (child, startup) = start_serve(
            d.path(),
            n,
            "every = \"1m\"",
            "off",
            &server,
            &store,
            &runner,
        );
        println!(
            "   replica {i}/{replicas} started in {:.2} s",
            startup.as_secs_f64()
        );
        children.push(child);
    }
    let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let begin = std::time::SystemTime::now();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let wall = t0.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|(&p, c0)| cpu_seconds(p) - c0)
        .collect();
    let hwm: Vec<u64> = pids
        .iter()
        .map(|&p| support::status_kib(p, "VmHWM:"))
        .collect();
    let end = std::time::SystemTime::now();
    for mut c in children {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    let store = Store::connect(&Database::Postgres(Postgres {
        url: pg.url(),
        ca_file: None,
    }))
    .expect("store");
    let entries = store
        .list(&Filter {
            final_only: true,
            limit: Some(10_000_000),
            ..Filter::default()
        })
        .expect("history");
    let in_window: Vec<_> = entries
        .iter()
        .filter(|e| e.scheduled_at.is_some_and(|d| d >= begin && d < end))
        .collect();
    let mut ticks: Vec<(String, std::time::SystemTime)> = in_window
        .iter()
        .filter_map(|e| Some((e.record.journey.clone(), e.scheduled_at?)))
        .collect();
    ticks.sort();
    let all = ticks.len();
    ticks.dedup();
    let mut lags: Vec<f64> = in_window
        .iter()
        .filter_map(|e| {
            let due = e.scheduled_at?;
            Some(
                e.record
                    .started_at
                    .duration_since(due)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            )
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    println!(
        "== {n} journeys every 1m over {replicas} replicas with leases, history in PostgreSQL, {wall:.0} s window"
    );
    println!(
        "   runs due in the window stored {all} (about {:.0} due), ticks stored twice {}",
        n as f64 * wall / 60.0,
        all - ticks.len()
    );
    print_lags(&lags);
    for i in 0..replicas {
        println!(
            "   replica {i}: CPU {:.1}% of one core, peak RSS {:.1} MiB",
            100.0 * cpu[i] / wall,
            hwm[i] as f64 / 1024.0
        );
    }
}

/// The sum of the `/metrics` samples named `name` whose labels contain `with`.
fn metric(addr: &str, name: &str, with: &str) -> f64 {
    http_text(addr, "/metrics")
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Offered load from 50 % to 300 % of what the runner completes: journeys
/// every second, more of them each level. Completed runs per minute should
/// hold at the saturation level rather than fall, and skipped ticks should
/// be counted, not logged one by one.
fn overload(levels: &[usize], window: Duration) {
    println!(
        "== overload: health journeys every 1 s, {:.0} s per level",
        window.as_secs_f64()
    );
    println!(
        "   journeys | offered runs/min | runs started/min | skipped (overlap) | missed | WARN lines | CPU % | /healthz"
    );
    for &n in levels {
        let server = support::CountingServer::start(0, Duration::ZERO);
        let dir = tempfile::tempdir().expect("tmp");
        let port = support::free_port();
        let addr = format!("127.0.0.1:{port}");
        let (mut child, _) = start_serve(
            dir.path(),
            n,
            "every = \"1s\"",
            &addr,
            &server,
            "path = \"history.db\"",
            "",
        );
        let pid = child.id();
        // Let the schedule settle into its pace first.
        std::thread::sleep(Duration::from_secs(3));
        // Every run that started counts once in the lag histogram.
        let count = || metric(&addr, "waymark_schedule_lag_seconds_count", "");
        let skipped = |r: &str| {
            metric(
                &addr,
                "waymark_ticks_skipped_total",
                &format!("reason=\"{r}\""),
            )
        };
        let (c0, o0, m0, cpu0, t0) = (
            count(),
            skipped("overlap"),
            skipped("missed"),
            cpu_seconds(pid),
            Instant::now(),
        );
        let warn0 = warn_lines(dir.path());
        std::thread::sleep(window);
        let wall = t0.elapsed().as_secs_f64();
        let (c1, o1, m1, cpu1) = (
            count(),
            skipped("overlap"),
            skipped("missed"),
            cpu_seconds(pid),
        );
        let warns = warn_lines(dir.path()) - warn0;
        let health = http_text(&addr, "/healthz");
        let _ = Command::new("kill")
            .args(["-s", "KILL", &pid.to_string()])
            .status();
        let _ = child.wait();
        println!(
            "   {n:>8} | {:>16.0} | {:>16.0} | {:>17.0} | {:>6.0} | {warns:>10} | {:>5.0} | {}",
            n as f64 * 60.0,
            (c1 - c0) / wall * 60.0,
            o1 - o0,
            m1 - m0,
            100.0 * (cpu1 - cpu0) / wall,
            health.trim()
        );
    }
}

fn http_text(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn warn_lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("serve.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("WARN"))
        .count()
}

fn main() {
    let only = std::env::var("WAYMARK_BENCH").ok();
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if want("10k") {
        scenario(
            "10k",
            10_000,
            "every = \"1m\"",
            Duration::from_secs(150),
            Duration::from_secs(60),
        );
    }
    if want("10k-postgres") {
        let pg = support::postgres::Pg::start(None);
        scenario_on(
            "10k, history in PostgreSQL",
            10_000,
            "every = \"1m\"",
            Duration::from_secs(150),
            Duration::from_secs(60),
            Some(&pg),
        );
    }
    if want("10k-postgres-3") {
        let pg = support::postgres::Pg::start(None);
        sharded(10_000, 3, Duration::from_secs(150), &pg);
    }
    if want("100") {
        scenario(
            "100",
            100,
            "every = \"1s\"",
            Duration::from_secs(60),
            Duration::from_secs(1),
        );
    }
    if want("overload") {
        overload(
            &[2_400, 4_800, 7_200, 9_600, 14_400],
            Duration::from_secs(20),
        );
    }
    if only.as_deref() == Some("ui") {
        ui();
    }
    if only.as_deref() == Some("burst") {
        scenario(
            "burst",
            10_000,
            "schedule = \"0 * * * * *\"",
            Duration::from_secs(130),
            Duration::from_secs(60),
        );
    }
}

fn http_get(addr: &str, path: &str) -> (u16, usize) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, 0);
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text.len())
}

fn ui() {
    use std::time::SystemTime;
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("history.db");
    let journeys = 10_000;
    let t = Instant::now();
    {
        let mut store = Store::open(&db).expect("store");
        let now = SystemTime::now();
        for h in (0..48u64).rev() {
            let at = now - Duration::from_secs(h * 3600);
            let stamp = humantime::format_rfc3339_millis(at).to_string();
            let mut batch = Vec::with_capacity(journeys * 2);
            for j in 0..journeys {
                for loc in ["eu", "sa"] {
                    // One journey in 50 fails in its last 3 hours.
                    let status = if j % 50 == 0 && h < 3 { "fail" } else { "pass" };
                    let record = serde_json::from_value(serde_json::json!({
                        "journey": format!("journey-{j:05}"), "run_id": format!("{j}-{loc}-{h}"),
                        "location": loc, "attempt": 1, "started_at": stamp,
                        "duration_ms": 50.0 + (j % 7) as f64, "status": status,
                        "error": null, "steps": [], "logs": []
                    }))
                    .expect("record");
                    batch.push(waymark_monitor::store::Entry {
                        record,
                        final_attempt: true,
                        scheduled_at: None,
                        tape: None,
                    });
                }
            }
            store.insert(&batch).expect("insert");
        }
    }
    let runs = journeys * 2 * 48;
    println!(
        "ui: history of {runs} runs ({journeys} journeys × 2 locations × 48 hours) written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nlisten = \"{listen}\"\n\n[[journey]]\nname = \"idle\"\nwasm = \"{}\"\nschedule = \"0 0 0 29 2 *\"\n\n[store]\npath = \"{}\"\n",
            support::hostile_wasm().display(),
            db.display()
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["serve", "-c"])
        .arg(&config)
        .env("WAYMARK_CACHE_DIR", dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let _serve = support::Kill(child);
    let up = Instant::now();
    while http_get(&listen, "/healthz").0 != 200 {
        assert!(
            up.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "{:<52} {:>8} {:>8} {:>8} {:>9}",
        "request", "p50 ms", "p90 ms", "max ms", "bytes"
    );
    for path in [
        "/api/journeys",
        "/api/journeys?page=199",
        "/api/journeys?status=fail",
        "/api/journeys?q=journey-0420",
        "/api/journeys/journey-04200/phases?window=2d/now",
        "/status-page",
        "/badge/journey-04200/uptime/7d.svg",
    ] {
        let mut ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let (status, n) = http_get(&listen, path);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(status, 200, "{path}");
            bytes = n;
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{path:<52} {:>8.1} {:>8.1} {:>8.1} {bytes:>9}",
            percentile(&ms, 0.5),
            percentile(&ms, 0.9),
            ms[ms.len() - 1]
        );
    }
    let home = dir.path().join("chromium");
    // Chromium's own clock (the page notes when it drew its first page)
    // and the wall time of the whole headless load beside that of the
    // script-free status page, which is Chromium's start-up and nothing
    // of the overview's.
    let load = |path: &str| -> (f64, Option<f64>) {
        let t = Instant::now();
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--virtual-time-budget=20000",
                "--dump-dom",
            ])
            .arg(format!("http://{listen}{path}"))
            .env("HOME", &home)
            .stderr(Stdio::null())
            .output()
            .expect("chromium");
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let dom = String::from_utf8_lossy(&out.stdout);
        let drawn = dom
            .split("data-drawn-ms=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse::<f64>().ok());
        (wall, drawn)
    };
    let (mut paints, mut walls, mut bases) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let (wall, drawn) = load("/");
        walls.push(wall);
        paints.extend(drawn);
        bases.push(load("/status-page").0);
    }
    for v in [&mut paints, &mut walls, &mut bases] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "overview in headless Chromium, 5 loads: first page of 100 rows drawn at {:.0} ms (median; max {:.0}) by the page's clock; whole load {:.0} ms against {:.0} ms for the script-free status page (Chromium's start-up), so about {:.0} ms of overview",
        percentile(&paints, 0.5),
        paints.last().copied().unwrap_or(f64::NAN),
        percentile(&walls, 0.5),
        percentile(&bases, 0.5),
        percentile(&walls, 0.5) - percentile(&bases, 0.5)
    );
}
