//! Issue-4 figures, printed: `waymark serve` under many schedules.
//!
//! - `10k`: 10,000 journeys `every = "1m"`, each one GET to a loopback
//!   server, for 150 s;
//! - `100`: 100 journeys `every = "1s"` for 60 s;
//! - `burst` (only when asked): 10,000 journeys on the cron `0 * * * * *`,
//!   all due in the same second, for 130 s.
//!
//! For each: schedule lag (actual start − due time, from the history store)
//! p50/p90/p99/max, CPU of the serve process over the window, its peak RSS
//! (VmHWM), and the run counts. `cargo bench -p waymark --bench serve`;
//! `WAYMARK_BENCH=10k|100|burst` runs one. Linux only (reads /proc).

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use waymark_monitor::store::{Filter, Store};

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

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn scenario(label: &str, n: usize, schedule: &str, window: Duration, interval: Duration) {
    let server = support::CountingServer::start(0, Duration::ZERO);
    let dir = tempfile::tempdir().expect("tmp");
    let wasm = dir.path().join("health.wasm");
    std::fs::write(&wasm, waymark::demo::JOURNEYS[0].1).expect("write journey");
    let mut cfg = format!(
        "[runner]\nlocation = \"bench\"\nlisten = \"off\"\nwatch = false\n\n\
         [store]\npath = \"history.db\"\n\n\
         [defaults]\nallow_hosts = [\"127.0.0.1\"]\ntimeout = \"10s\"\n\
         vars = {{ base_url = \"http://{}\" }}\n{schedule}\n\n",
        server.addr
    );
    for i in 0..n {
        cfg.push_str(&format!(
            "[[journey]]\nname = \"j{i:05}\"\nwasm = \"health.wasm\"\n"
        ));
    }
    let config = dir.path().join("waymark.toml");
    std::fs::write(&config, cfg).expect("write config");
    let log = dir.path().join("serve.log");
    let cache = dir.path().join("cache");
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
    let pid = child.id();
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
    let startup = t_start.elapsed();
    let rss_after_start = status_kib(pid, "VmRSS:");
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let hwm = status_kib(pid, "VmHWM:");
    let _ = Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status();
    let t_stop = Instant::now();
    let code = child.wait().expect("wait");
    let stop = t_stop.elapsed();

    let store = Store::open(&dir.path().join("history.db")).expect("store");
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
    println!(
        "   schedule lag ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&lags, 0.50),
        percentile(&lags, 0.90),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "   CPU {:.1}% of one core over the window ({:.1} s of {:.0} s); RSS after start {:.1} MiB, peak {:.1} MiB",
        100.0 * cpu / wall,
        cpu,
        wall,
        rss_after_start as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
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
    if want("100") {
        scenario(
            "100",
            100,
            "every = \"1s\"",
            Duration::from_secs(60),
            Duration::from_secs(1),
        );
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
