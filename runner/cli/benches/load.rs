//! Issue-7 figures, printed: `waymark load` beside wrk, oha and locust.
//!
//! One nginx (Debian's, started here with its own config on a free
//! loopback port) serves a 1 KiB file. For each concurrency 1, 8, 32, 128
//! every tool runs the closed model for `WAYMARK_BENCH_SECS` (default 10)
//! seconds: `waymark load` with the `health` journey (one GET and two
//! checks per iteration; a fresh Wasm instance each, then again with
//! `--reuse-instance`), `wrk`, `oha` and
//! `locust` (headless, `HttpUser`). Printed: requests/s and p99 of each,
//! and waymark's requests/s as a share of oha's and a multiple of
//! locust's. Then the RSS per idle virtual user: 1,000 users in a journey
//! that sleeps, against one user of the same journey. And the USL fit of
//! a ramp against a loopback server whose serialization is known (a lock
//! held for 0.5 ms of every 5 ms: σ = 10 %), and against nginx.
//!
//! `cargo bench -p waymark --bench load`; a tool that is not installed is
//! skipped and said so (`apt-get install nginx-light wrk`, `cargo install
//! oha`, `pip install locust`). `WAYMARK_BENCH=rss`, `=usl`, `=compare`
//! `=rounds` (three rounds of an audit, compared), `=phases` (resolve
//! and an 8 MB transfer in fresh `waymark run` processes, beside curl) or
//! `=open` (the open model at 1,000 to 50,000 arrivals/s beside oha's rate
//! limit) or `=floor` (CPU per iteration of a journey that sends nothing,
//! fresh and reused, beside oha's per request, each on one core) runs one part. Linux only (reads /proc). Every run is bounded by its duration.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn nginx(dir: &Path, port: u16) -> Option<support::Kill> {
    nginx_on(dir, port, None)
}

/// As [`nginx`], its worker kept to CPU `cpu` when one is given (`taskset`).
fn nginx_on(dir: &Path, port: u16, cpu: Option<usize>) -> Option<support::Kill> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).ok()?;
    let body: String = (0..1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    std::fs::write(www.join("1k.txt"), body).ok()?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\ndaemon off;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 10000000;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {d}/www; location / {{ }} }} }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).ok()?;
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), "nginx"]);
            c
        }
        None => Command::new("nginx"),
    };
    let child = cmd
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let kill = support::Kill(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(kill)
}

struct Figures {
    rps: f64,
    p99_ms: f64,
    /// waymark only: its CPU demand over the step (used plus waited for,
    /// of the cores it may use), CPU µs per iteration (getrusage over the
    /// whole step) and its runtime's busy share.
    generator: Option<(f64, f64, f64)>,
}

/// Runs `waymark load` with the health journey against `port` and reads
/// back its `--json` result (`json`); none when it failed (said why).
fn load_json(
    wasm: &Path,
    port: u16,
    path: &str,
    extra: &[&str],
    json: &Path,
    cache: &Path,
) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("load")
        .arg(wasm)
        .args(["--var", &format!("base_url=http://127.0.0.1:{port}")])
        .args(["--var", &format!("health_path={path}")])
        .args(["--allow-host", &format!("127.0.0.1:{port}")])
        .args(extra)
        .args(["--quiet", "--json"])
        .arg(json)
        .env("WAYMARK_CACHE_DIR", cache)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "waymark load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(json).ok()?).ok()
}

fn waymark_load(
    wasm: &Path,
    port: u16,
    users: u32,
    secs: u64,
    cache: &Path,
    reuse: bool,
) -> Option<Figures> {
    let json = cache.join(format!("load-{users}-{reuse}.json"));
    let users = users.to_string();
    let step = format!("{}s", secs + 1);
    let mut extra = vec![
        "--concurrency",
        &users,
        "--step-duration",
        &step,
        "--warmup",
        "1s",
    ];
    if reuse {
        extra.push("--reuse-instance");
    }
    let v = load_json(wasm, port, "/1k.txt", &extra, &json, cache)?;
    let s = &v["steps"][0];
    if s["passed"] != s["iterations"] {
        eprintln!("waymark load: not every iteration passed: {}", s["errors"]);
    }
    let g = &s["generator"];
    let share = g["cpu"].as_f64()?;
    let demand = share + g["cpu_wait"].as_f64()?;
    let busy = g["runtime_busy"].as_f64()?;
    let cores = g["cores"].as_f64()?;
    let iterations = s["iterations"].as_f64()? + s["unmeasured"].as_f64()?;
    let cpu_us = share * cores * s["duration_s"].as_f64()? * 1e6 / iterations.max(1.0);
    Some(Figures {
        rps: s["request_rate"].as_f64()?,
        p99_ms: s["phases"]["total"]["p99_ms"].as_f64()?,
        generator: Some((demand, cpu_us, busy)),
    })
}

fn wrk(port: u16, users: u32, secs: u64) -> Option<Figures> {
    let out = Command::new("wrk")
        .args(["-t", &users.min(2).to_string(), "-c", &users.to_string()])
        .args(["-d", &format!("{secs}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/1k.txt"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let p99 = text.lines().find(|l| l.trim_start().starts_with("99%"))?;
    Some(Figures {
        rps,
        p99_ms: wrk_ms(p99.split_whitespace().nth(1)?)?,
        generator: None,
    })
}

fn wrk_ms(v: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|x| x * mult)
}

fn oha(port: u16, users: u32, secs: u64) -> Option<Figures> {
    let out = Command::new("oha")
        .args(["-z", &format!("{secs}s"), "-c", &users.to_string()])
        .args(["--no-tui", "--output-format", "json"])
        .arg(format!("http://127.0.0.1:{port}/1k.txt"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Figures {
        rps: v["summary"]["requestsPerSec"].as_f64()?,
        p99_ms: v["latencyPercentiles"]["p99"].as_f64()? * 1000.0,
        generator: None,
    })
}

fn locust(port: u16, users: u32, secs: u64, dir: &Path) -> Option<Figures> {
    let file = dir.join("locustfile.py");
    std::fs::write(
        &file,
        "from locust import HttpUser, task\n\n\
         class Get(HttpUser):\n    @task\n    def get(self):\n        self.client.get('/1k.txt')\n",
    )
    .ok()?;
    let prefix = dir.join(format!("locust-{users}"));
    let status = Command::new("locust")
        .arg("-f")
        .arg(&file)
        .args(["--headless", "--only-summary", "-u", &users.to_string()])
        .args(["-r", &users.to_string(), "-t", &format!("{secs}s")])
        .args(["--host", &format!("http://127.0.0.1:{port}")])
        .arg("--csv")
        .arg(&prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let csv = std::fs::read_to_string(format!("{}_stats.csv", prefix.display())).ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let row: Vec<&str> = lines
        .find(|l| l.contains("Aggregated"))?
        .split(',')
        .collect();
    let col = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| h.trim_matches('"') == name)?;
        row.get(i)?.trim_matches('"').parse().ok()
    };
    Some(Figures {
        rps: col("Requests/s")?,
        p99_ms: col("99%")?,
        generator: None,
    })
}

fn cell(f: &Option<Figures>) -> String {
    match f {
        Some(f) => format!("{:>9.0} {:>8.2}", f.rps, f.p99_ms),
        None => format!("{:>9} {:>8}", "-", "-"),
    }
}

/// nginx serving the 1 KiB file, and the health journey beside it.
struct Nginx {
    /// Stops nginx when dropped.
    _server: support::Kill,
    port: u16,
    wasm: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl Nginx {
    /// Started in `dir`; none (said why, naming `part`) without nginx.
    fn start(dir: &Path, part: &str) -> Option<Nginx> {
        if !have("nginx") {
            println!("nginx not installed (apt-get install nginx-light): {part} skipped");
            return None;
        }
        let port = support::free_port();
        let Some(server) = nginx(dir, port) else {
            println!("nginx did not start: {part} skipped");
            return None;
        };
        let wasm = dir.join("health.wasm");
        std::fs::write(&wasm, waymark::demo::JOURNEYS[0].1).expect("write journey");
        Some(Nginx {
            _server: server,
            port,
            wasm,
            cache: dir.join("cache"),
        })
    }
}

fn compare(secs: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(ng) = Nginx::start(dir.path(), "comparison") else {
        return;
    };
    let (port, wasm, cache) = (ng.port, ng.wasm.clone(), ng.cache.clone());
    let tools = ["wrk", "oha", "locust"];
    for t in tools {
        if !have(t) {
            println!("{t} not installed: its column is empty");
        }
    }
    println!(
        "\nclosed model, {secs} s per level, nginx 1 KiB file on loopback; requests/s and p99 (ms)\n"
    );
    println!(
        "{:>5}  {:>18}  {:>20}  {:>18}  {:>20}  {:>18}  {:>18}  {:>18}  {:>11}  {:>9}",
        "users",
        "waymark (fresh)",
        "gen CPU, busy, µs/it",
        "waymark (reuse)",
        "gen CPU, busy, µs/it",
        "wrk",
        "oha",
        "locust",
        "÷ oha f / r",
        "× locust"
    );
    let mut rows = Vec::new();
    for users in [1u32, 8, 32, 128] {
        let w = waymark_load(&wasm, port, users, secs, &cache, false);
        let r = waymark_load(&wasm, port, users, secs, &cache, true);
        let k = have("wrk").then(|| wrk(port, users, secs)).flatten();
        let o = have("oha").then(|| oha(port, users, secs)).flatten();
        let l = have("locust")
            .then(|| locust(port, users, secs, dir.path()))
            .flatten();
        let ratio = |a: &Option<Figures>, b: &Option<Figures>| match (a, b) {
            (Some(a), Some(b)) if b.rps > 0.0 => format!("{:.2}", a.rps / b.rps),
            _ => "-".into(),
        };
        let gen_cell = |f: &Option<Figures>| match f.as_ref().and_then(|f| f.generator) {
            Some((demand, us, busy)) => {
                format!(
                    "{:>4.0} % {:>4.0} % {:>6.1}",
                    demand * 100.0,
                    busy * 100.0,
                    us
                )
            }
            None => "-".into(),
        };
        println!(
            "{users:>5}  {}  {:>20}  {}  {:>20}  {}  {}  {}  {:>11}  {:>9}",
            cell(&w),
            gen_cell(&w),
            cell(&r),
            gen_cell(&r),
            cell(&k),
            cell(&o),
            cell(&l),
            format!("{} / {}", ratio(&w, &o), ratio(&r, &o)),
            ratio(&w, &l)
        );
        let js = |f: &Option<Figures>| match f {
            Some(f) => serde_json::json!({"rps": f.rps, "p99_ms": f.p99_ms}),
            None => serde_json::Value::Null,
        };
        rows.push(serde_json::json!({
            "users": users,
            "waymark": js(&w),
            "waymark_cpu_demand": w.as_ref().and_then(|f| f.generator).map(|g| g.0),
            "waymark_runtime_busy": w.as_ref().and_then(|f| f.generator).map(|g| g.2),
            "waymark_cpu_us_per_iteration": w.as_ref().and_then(|f| f.generator).map(|g| g.1),
            "waymark_reuse": js(&r),
            "waymark_reuse_cpu_demand": r.as_ref().and_then(|f| f.generator).map(|g| g.0),
            "waymark_reuse_cpu_us_per_iteration": r.as_ref().and_then(|f| f.generator).map(|g| g.1),
            "wrk": js(&k),
            "oha": js(&o),
            "locust": js(&l),
        }));
    }
    // Beside the printed table, a file two runs can be compared with.
    let out = support::root().join("target/bench-load.json");
    let doc = serde_json::json!({
        "seconds_per_level": secs,
        "waymark_version": env!("CARGO_PKG_VERSION"),
        "rows": rows,
    });
    match serde_json::to_string_pretty(&doc).map(|s| std::fs::write(&out, s)) {
        Ok(Ok(())) => println!(
            "
written: {}",
            out.display()
        ),
        _ => println!(
            "
could not write {}",
            out.display()
        ),
    }
    println!(
        "\nwaymark's p99 is of the request's total phase time; each waymark iteration is a whole journey \
         (one GET, two checks; figures through the engine's observer, no record): fresh = a new instance per iteration (the default), \
         reuse = --reuse-instance."
    );
}

/// The USL fit `waymark load` makes of a ramp against `port`.
fn fit(wasm: &Path, port: u16, path: &str, users: &str, cache: &Path) -> Option<serde_json::Value> {
    let json = cache.join(format!("usl-{port}.json"));
    let extra = [
        "--concurrency",
        users,
        "--step-duration",
        "4s",
        "--warmup",
        "1s",
    ];
    load_json(wasm, port, path, &extra, &json, cache)
}

fn show_fit(what: &str, v: &serde_json::Value) {
    let usl = &v["usl"];
    if usl.is_null() {
        println!(
            "{what}: no fit ({})",
            v["usl_refused"].as_str().unwrap_or("no reason given")
        );
        return;
    }
    let f = |k: &str| usl[k].as_f64();
    println!(
        "{what}: σ {:.2} %, κ {:.5}, N* {}, λ {:.0}/s, R² {:.3}, {} points",
        f("sigma").unwrap_or(f64::NAN) * 100.0,
        f("kappa").unwrap_or(f64::NAN),
        f("peak_concurrency").map_or("- (κ = 0)".into(), |n| format!("{n:.1}")),
        f("lambda").unwrap_or(f64::NAN),
        f("r_squared").unwrap_or(f64::NAN),
        usl["points"]
    );
}

/// The audit against a server whose σ is known, and against nginx.
fn usl() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = dir.path().join("cache");
    let wasm = dir.path().join("health.wasm");
    std::fs::write(&wasm, waymark::demo::JOURNEYS[0].1).expect("write journey");
    let (held, outside) = (Duration::from_micros(500), Duration::from_micros(4500));
    let (port, spent) = support::lock_server(held, outside);
    println!("\nUSL fit, closed ramp 1,2,4,8,16,32,64 users, 4 s per step (1 s warm-up):");
    if let Some(v) = fit(&wasm, port, "/", "1,2,4,8,16,32,64", &cache) {
        let h = spent.0.load(Ordering::Relaxed) as f64;
        let o = spent.1.load(Ordering::Relaxed) as f64;
        println!(
            "lock server ({} µs held of every {} µs; slept as measured: σ = {:.2} %)",
            held.as_micros(),
            (held + outside).as_micros(),
            100.0 * h / (h + o).max(1.0)
        );
        show_fit("  waymark's fit", &v);
    }
    if have("nginx") {
        let port = support::free_port();
        // The server is stopped when `_nginx` drops, after the fit.
        if let Some(_nginx) = nginx(dir.path(), port)
            && let Some(v) = fit(&wasm, port, "/1k.txt", "1,2,4,8,16,32,64", &cache)
        {
            show_fit("nginx, 1 KiB file", &v);
        }
    }
}

fn rss() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = dir.path().join("cache");
    let hostile = support::hostile_wasm();
    let vars = ["mode=sleep", "ms=20000"];
    let one = support::idle_load_memory(hostile, &vars, 1, &cache);
    for users in [1000u32, 10_000] {
        let many = support::idle_load_memory(hostile, &vars, users, &cache);
        let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / f64::from(users - 1);
        println!(
            "\nRSS with users asleep in the journey (think time): 1 user {:.1} MiB, {users} users {:.1} MiB → {:.0} KiB per idle virtual user \
             (PSS {:.0} KiB: RSS counts the shared memory image once per instance; page tables {:.0} KiB more)",
            one.rss as f64 / 1024.0,
            many.rss as f64 / 1024.0,
            per(many.rss, one.rss),
            per(many.pss, one.pss),
            per(many.page_tables, one.page_tables),
        );
    }
}

/// Three rounds of an audit against a server changed between them, as a
/// team works: a group commit (see `support::group_commit_server`) whose
/// commit takes 0.6 ms, then 0.3 ms (the database moved), then 0.1 ms
/// (more CPU), with crosstalk cut alongside. Each round ramps 1 to 48
/// users twice (`--repeat 2`) and gates on the one before; then `load
/// compare` of the three, its HTML page and, with chromium, a screenshot
/// of it in `target/rounds/`.
fn rounds() {
    let dir = support::root().join("target").join("rounds");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        println!("cannot create {}", dir.display());
        return;
    }
    let cache = dir.join("cache");
    let wasm = dir.join("health.wasm");
    if std::fs::write(&wasm, waymark::demo::JOURNEYS[0].1).is_err() {
        return;
    }
    let mut previous: Option<std::path::PathBuf> = None;
    let mut files = Vec::new();
    for (i, (serial_us, crosstalk_us)) in [(600u64, 10u64), (300, 5), (100, 2)].iter().enumerate() {
        let port = support::group_commit_server(
            Duration::from_millis(8),
            Duration::from_millis(2),
            Duration::from_micros(*serial_us),
            Duration::from_micros(*crosstalk_us),
        );
        let json = dir.join(format!("round{}.json", i + 1));
        let html = dir.join(format!("round{}.html", i + 1));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
        cmd.arg("load")
            .arg(&wasm)
            .args(["--var", &format!("base_url=http://127.0.0.1:{port}")])
            .args(["--var", "health_path=/"])
            .args(["--allow-host", &format!("127.0.0.1:{port}")])
            .args(["--concurrency", "1,2,4,8,16,32,48", "--step-duration", "3s"])
            .args(["--warmup", "1s", "--repeat", "2", "--name", "api"])
            .arg("--json")
            .arg(&json)
            .arg("--report")
            .arg(&html)
            .env("WAYMARK_CACHE_DIR", &cache);
        if let Some(p) = &previous {
            cmd.arg("--baseline")
                .arg(p)
                .args(["--slo", "throughput>=0.95*baseline beyond spread"])
                .args(["--slo", "sigma<=baseline"]);
        }
        println!(
            "\n== round {}: commit {serial_us} µs, crosstalk {crosstalk_us} µs per other request of the round",
            i + 1
        );
        match cmd.output() {
            Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
            Err(e) => {
                println!("waymark load did not run: {e}");
                return;
            }
        }
        previous = Some(json.clone());
        files.push(json);
    }
    let page = dir.join("compare.html");
    match Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["load", "compare"])
        .args(&files)
        .arg("--report")
        .arg(&page)
        .output()
    {
        Ok(out) => print!("\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("waymark load compare did not run: {e}"),
    }
    if have("chromium") {
        let shot = dir.join("compare.png");
        let ok = support::screenshot(&page, &shot, "1100,1500", &dir);
        if ok {
            println!("screenshot: {}", shot.display());
        }
    }
}

/// Median of `v` (none when empty).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// One `waymark run` of the health journey against `base`/`path`, in a
/// fresh process: the first request's timings, ms.
fn first_request(wasm: &Path, base: &str, path: &str, allow: &str) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("run")
        .arg(wasm)
        .args(["--var", &format!("base_url={base}")])
        .args(["--var", &format!("health_path={path}")])
        .args([
            "--allow-host",
            allow,
            "--max-body",
            "16MiB",
            "--format",
            "json",
        ])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["steps"][0]["requests"][0]["timings_ms"].clone())
}

/// Waymark's own set-up kept out of the phases, in fresh processes: the
/// resolve of `localhost` (the resolver set up before the clock), and the
/// transfer of an 8 MB file from nginx beside curl's.
fn phases() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(_) => return,
    };
    let wasm = dir.path().join("health.wasm");
    if std::fs::write(&wasm, waymark::demo::JOURNEYS[0].1).is_err() {
        return;
    }
    let resolve: Vec<f64> = (0..10)
        .filter_map(|_| first_request(&wasm, "http://localhost:9", "/", "*")?["resolve"].as_f64())
        .collect();
    println!(
        "\nresolve of localhost in a fresh `waymark run`, median of {}: {:.3} ms (range {:.3}–{:.3})",
        resolve.len(),
        median(resolve.clone()).unwrap_or(f64::NAN),
        resolve.iter().copied().fold(f64::INFINITY, f64::min),
        resolve.iter().copied().fold(0.0, f64::max)
    );
    if !(have("nginx") && have("curl")) {
        println!("nginx or curl missing: no transfer comparison");
        return;
    }
    let port = support::free_port();
    let Some(_nginx) = nginx(dir.path(), port) else {
        return;
    };
    let big: Vec<u8> = (0..8_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    if std::fs::write(dir.path().join("www").join("8m.bin"), big).is_err() {
        return;
    }
    let base = format!("http://127.0.0.1:{port}");
    let (mut ours, mut curls) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        if let Ok(out) = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{time_starttransfer} %{time_total}",
            ])
            .arg(format!("{base}/8m.bin"))
            .output()
        {
            let t: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [first, total] = t[..] {
                curls.push((total - first) * 1000.0);
            }
        }
        if let Some(t) = first_request(&wasm, &base, "/8m.bin", &format!("127.0.0.1:{port}")) {
            ours.extend(t["transfer"].as_f64());
        }
    }
    println!(
        "transfer of an 8 MB file from nginx on loopback, median of 40 fresh processes each: waymark {:.2} ms, curl {:.2} ms",
        median(ours).unwrap_or(f64::NAN),
        median(curls).unwrap_or(f64::NAN)
    );
}

/// The open model against nginx at fixed arrival rates, beside oha's rate
/// limit with its coordinated-omission correction: the rate each kept, the
/// latency p50 and p99 (from the intended start), and waymark's CPU. A
/// server answering in about 0.1 ms is the point: any lateness of the
/// generator's own timetable shows at once in the latency.
fn open(secs: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(ng) = Nginx::start(dir.path(), "open model") else {
        return;
    };
    let (port, wasm, cache) = (ng.port, ng.wasm.clone(), ng.cache.clone());
    println!(
        "\nopen model, {secs} s per rate, nginx 1 KiB file on loopback: rate kept, latency p50 / p99 (ms) from the intended start\n"
    );
    println!(
        "{:>8}  {:>30}  {:>30}  {:>30}",
        "rate/s",
        "waymark fresh (gen CPU)",
        "waymark reuse (gen CPU)",
        "oha -q --latency-correction"
    );
    for rate in [1_000u32, 5_000, 10_000, 20_000, 50_000] {
        let ours = |reuse: bool| -> String {
            let json = cache.join(format!("open-{rate}-{reuse}.json"));
            let r = format!("{rate}/s");
            let step = format!("{}s", secs + 1);
            let mut extra = vec!["--rate", &r, "--step-duration", &step, "--warmup", "1s"];
            if reuse {
                extra.push("--reuse-instance");
            }
            let Some(v) = load_json(&wasm, port, "/1k.txt", &extra, &json, &cache) else {
                return "-".into();
            };
            let s = &v["steps"][0];
            let g = &s["generator"];
            let demand =
                g["cpu"].as_f64().unwrap_or(f64::NAN) + g["cpu_wait"].as_f64().unwrap_or(f64::NAN);
            format!(
                "{:>7.0} {:>6.2} {:>6.2} ({:>3.0} %{})",
                s["throughput"].as_f64().unwrap_or(f64::NAN),
                s["latency"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
                s["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
                demand * 100.0,
                if g["saturated"] == true { ", sat." } else { "" }
            )
        };
        let fresh = ours(false);
        let reuse = ours(true);
        let o = have("oha")
            .then(|| {
                let out = Command::new("oha")
                    .args(["-z", &format!("{secs}s"), "-q", &rate.to_string()])
                    .args(["-c", "1000", "--latency-correction"])
                    .args(["--no-tui", "--output-format", "json"])
                    .arg(format!("http://127.0.0.1:{port}/1k.txt"))
                    .output()
                    .ok()?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                Some(format!(
                    "{:>7.0} {:>6.2} {:>6.2}",
                    v["summary"]["requestsPerSec"].as_f64()?,
                    v["latencyPercentiles"]["p50"].as_f64()? * 1000.0,
                    v["latencyPercentiles"]["p99"].as_f64()? * 1000.0
                ))
            })
            .flatten()
            .unwrap_or_else(|| "-".into());
        println!("{rate:>8}  {fresh:>30}  {reuse:>30}  {o:>30}");
    }
}

/// Runs `cmd` to its end; its user and system CPU (µs) per unit of work,
/// where `count` reads how many units it did from its standard output.
fn cpu_per(mut cmd: Command, count: impl Fn(&[u8]) -> Option<f64>) -> Option<(f64, f64)> {
    let (u0, s0) = waymark_load::generator::cpu_of(libc::RUSAGE_CHILDREN);
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    let (u1, s1) = waymark_load::generator::cpu_of(libc::RUSAGE_CHILDREN);
    let n = count(&out.stdout).filter(|n| *n > 0.0)?;
    let per = |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() * 1e6 / n;
    Some((per(u1, u0), per(s1, s0)))
}

/// What a fresh instance costs before the journey does anything, beside
/// what one request costs oha: the floor under `waymark load`'s CPU per
/// iteration. The generator and oha run on CPU 0 and nginx on CPU 1
/// (`taskset`), 8 users each, so each tool's CPU is its own. The journey
/// that sends nothing is the test guest's `noop` mode.
fn floor(secs: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !two || !have("taskset") || !have("nginx") {
        println!("floor: needs two cores, taskset and nginx: skipped");
        return;
    }
    let port = support::free_port();
    let Some(_nginx) = nginx_on(dir.path(), port, Some(1)) else {
        println!("nginx did not start: floor skipped");
        return;
    };
    let health = dir.path().join("health.wasm");
    std::fs::write(&health, waymark::demo::JOURNEYS[0].1).expect("write journey");
    let cache = dir.path().join("cache");
    let json = dir.path().join("floor.json");
    let step = format!("{}s", secs + 1);
    let waymark = |wasm: &Path, vars: &[String], reuse: bool| {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0", env!("CARGO_BIN_EXE_waymark"), "load"])
            .arg(wasm)
            .args(["--allow-host", &format!("127.0.0.1:{port}")])
            .args(["--concurrency", "8", "--step-duration", &step])
            .args(["--warmup", "1s", "--max-requests", "1000000000"])
            .args(["--quiet", "--json"])
            .arg(&json)
            .env("WAYMARK_CACHE_DIR", &cache);
        for v in vars {
            cmd.args(["--var", v]);
        }
        if reuse {
            cmd.arg("--reuse-instance");
        }
        // Every iteration the process ran, the warm-up's too: its CPU is
        // the whole process's.
        cpu_per(cmd, |_| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).ok()?).ok()?;
            let s = &v["steps"][0];
            Some(s["iterations"].as_f64()? + s["unmeasured"].as_f64()?)
        })
    };
    let noop = ["mode=noop".to_string()];
    let get = [
        format!("base_url=http://127.0.0.1:{port}"),
        "health_path=/1k.txt".to_string(),
    ];
    let rows = [
        (
            "waymark, a journey that sends nothing, fresh instance",
            waymark(support::hostile_wasm(), &noop, false),
        ),
        (
            "waymark, a journey that sends nothing, reused instance",
            waymark(support::hostile_wasm(), &noop, true),
        ),
        (
            "waymark, health journey (one GET, two checks), fresh",
            waymark(&health, &get, false),
        ),
        (
            "waymark, health journey, reused instance",
            waymark(&health, &get, true),
        ),
        (
            "oha, one GET",
            have("oha")
                .then(|| {
                    let mut cmd = Command::new("taskset");
                    cmd.args(["-c", "0", "oha", "-z", &format!("{secs}s"), "-c", "8"])
                        .args(["--no-tui", "--output-format", "json"])
                        .arg(format!("http://127.0.0.1:{port}/1k.txt"));
                    cpu_per(cmd, |out| {
                        let v: serde_json::Value = serde_json::from_slice(out).ok()?;
                        let s = &v["summary"];
                        Some(s["requestsPerSec"].as_f64()? * s["total"].as_f64()?)
                    })
                })
                .flatten(),
        ),
    ];
    println!(
        "\nCPU per iteration (waymark) or request (oha), µs; the tool on CPU 0, nginx 1 KiB on CPU 1, 8 users, {secs} s\n"
    );
    println!("{:<56} {:>7} {:>7} {:>7}", "", "user", "system", "total");
    for (what, cpu) in &rows {
        match cpu {
            Some((u, s)) => println!("{what:<56} {u:>7.1} {s:>7.1} {:>7.1}", u + s),
            None => println!("{what:<56} {:>7} {:>7} {:>7}", "-", "-", "-"),
        }
    }
    if let (Some((nu, ns)), Some((_, os))) = (rows[0].1, rows[4].1) {
        println!(
            "\nfloor of a fresh iteration that sends one request: the empty fresh instance ({:.1} µs) \
             and the system's part of oha's request ({os:.1} µs) = {:.1} µs",
            nu + ns,
            nu + ns + os
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u64 = std::env::var("WAYMARK_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("WAYMARK_BENCH").unwrap_or_default();
    if only.is_empty() || only == "compare" {
        compare(secs);
    }
    if only.is_empty() || only == "usl" {
        usl();
    }
    if only.is_empty() || only == "rss" {
        rss();
    }
    if only.is_empty() || only == "rounds" {
        rounds();
    }
    if only.is_empty() || only == "phases" {
        phases();
    }
    if only.is_empty() || only == "open" {
        open(secs);
    }
    if only.is_empty() || only == "floor" {
        floor(secs);
    }
}
