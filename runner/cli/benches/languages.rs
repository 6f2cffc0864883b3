//! Issue-6 figures, printed: what a journey costs by language.
//!
//! For the api journey in Rust, JavaScript (componentize-js) and Python
//! (componentize-py):
//! - component size;
//! - `waymark run JOURNEY --demo` wall time with an empty compile cache
//!   (first start: compiles) and then with the cache filled (median of 5);
//!
//! for a journey with no request (the Rust test guest's `noop` mode,
//! tests/guests/js/noop.js, tests/guests/python/noop.py):
//! - instantiate + run: `waymark load` with 1 user for 5 s, a fresh
//!   instance each iteration; the time per iteration and its p50;
//! - memory per instance: RSS of `waymark load` with 100 users asleep in
//!   the journey, against 1 user;
//! - 2 users in one process against two `--shard` processes of 1 user:
//!   copy-on-write faults on a large engine image flush the TLB of every
//!   core the process runs on, so JavaScript scales better by process.
//!
//! The same for the api and noop journeys run from their source (no
//! build), and, for 100 distinct JavaScript journeys from source, `waymark
//! check` cold and warm and `waymark serve`'s RSS (only these with
//! `WAYMARK_BENCH=fleet`).
//!
//! `cargo bench -p waymark --bench languages` (after `npm install --prefix sdk/js`
//! and `pip install ./sdk/python`, as .ci/run does). Linux only (reads
//! /proc). Every run is bounded.

#[path = "../../../tests/support/lang.rs"]
mod lang;
#[path = "../../../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn waymark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waymark"))
}

/// Wall time of one `waymark run JOURNEY --demo`.
fn run_once(wasm: &Path, cache: &Path) -> Duration {
    let t = Instant::now();
    let out = waymark()
        .arg("run")
        .arg(wasm)
        .args(["--demo", "--format", "json"])
        .env("WAYMARK_CACHE_DIR", cache)
        .output()
        .expect("waymark runs");
    let took = t.elapsed();
    assert!(out.status.success(), "{}: {out:?}", wasm.display());
    took
}

/// `waymark load` of `wasm` for one 6 s step (1 s warm-up) with `args`,
/// its results to `json`.
fn load(wasm: &Path, vars: &[&str], args: &[&str], json: &Path, cache: &Path) -> Child {
    let mut cmd = waymark();
    cmd.arg("load").arg(wasm);
    for v in vars {
        cmd.args(["--var", v]);
    }
    cmd.args(args)
        .args([
            "--step-duration",
            "6s",
            "--warmup",
            "1s",
            "--quiet",
            "--json",
        ])
        .arg(json)
        .env("WAYMARK_CACHE_DIR", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("waymark load starts")
}

/// The first step of a `--json` result.
fn step(json: &Path) -> serde_json::Value {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json).expect("json")).expect("parses");
    doc["steps"][0].clone()
}

fn finish(mut child: Child) {
    assert!(
        child.wait().expect("waits").success(),
        "waymark load failed"
    );
}

struct Noop {
    per_iteration_us: f64,
    p50_ms: f64,
}

fn noop(wasm: &Path, vars: &[&str], cache: &Path) -> Noop {
    let dir = tempfile::tempdir().expect("tmp");
    let json = dir.path().join("load.json");
    finish(load(wasm, vars, &["--concurrency", "1"], &json, cache));
    let step = step(&json);
    Noop {
        per_iteration_us: 1e6 / step["throughput"].as_f64().expect("throughput"),
        p50_ms: step["latency"]["p50_ms"].as_f64().expect("p50"),
    }
}

/// Iterations/s of 2 users: in one process, and as two `--shard` processes
/// (one user each) merged.
fn two_users(wasm: &Path, vars: &[&str], cache: &Path) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tmp");
    let throughput = |json: &Path| step(json)["throughput"].as_f64().expect("throughput");
    let one = dir.path().join("one.json");
    finish(load(wasm, vars, &["--concurrency", "2"], &one, cache));
    let parts = [dir.path().join("s0.json"), dir.path().join("s1.json")];
    let children = [0, 1].map(|i| {
        let shard = format!("{i}/2");
        load(
            wasm,
            vars,
            &["--concurrency", "2", "--shard", &shard],
            &parts[i],
            cache,
        )
    });
    children.into_iter().for_each(finish);
    (throughput(&one), parts.iter().map(|p| throughput(p)).sum())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // `WAYMARK_BENCH=fleet`: only the 100-journey tables.
    if std::env::var("WAYMARK_BENCH").is_ok_and(|v| v == "fleet") {
        fleet(&root, "JavaScript");
        fleet(&root, "Python");
        return;
    }
    // The Rust api journey as build.rs made it for `waymark demo`.
    let rust_api = root.join("target/guests/wasm32-wasip2/release/journey_api.wasm");
    let built = lang::build_all(&[
        "journeys/js/api.js",
        "journeys/python/api.py",
        "tests/guests/js/noop.js",
        "tests/guests/python/noop.py",
    ]);
    let rows: [(&str, PathBuf, PathBuf, Vec<&str>); 5] = [
        (
            "Rust",
            rust_api,
            support::hostile_wasm().to_path_buf(),
            vec!["mode=noop"],
        ),
        ("JavaScript", built[0].clone(), built[2].clone(), vec![]),
        ("Python", built[1].clone(), built[3].clone(), vec![]),
        // No build: the binary's JavaScript runtime runs the sources.
        (
            "JavaScript, from source",
            root.join("journeys/js/api.js"),
            root.join("tests/guests/js/noop.js"),
            vec![],
        ),
        (
            "Python, from source",
            root.join("journeys/python/api.py"),
            root.join("tests/guests/python/noop.py"),
            vec![],
        ),
    ];
    println!(
        "| language | api component | first run (compiles) | cached run (median of 5) | \
         no-request journey: instantiate + run (p50) | memory per instance | \
         2 users: one process / 2 shard processes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, api, noop_wasm, vars) in rows {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = dir.path().join("cache");
        let size = std::fs::metadata(&api).expect("built").len();
        let first = run_once(&api, &cache);
        let mut cached: Vec<Duration> = (0..5).map(|_| run_once(&api, &cache)).collect();
        cached.sort();
        let n = noop(&noop_wasm, &vars, &cache);
        let asleep: Vec<&str> = vars.iter().copied().chain(["ms=20000"]).collect();
        // A journey from source is loaded from a snapshot made for its vars
        // (compiled once, seconds): made here, so that the memory read
        // below is of users asleep, not of the compiler.
        let warm = dir.path().join("warm.json");
        finish(load(
            &noop_wasm,
            &asleep,
            &[
                "--concurrency",
                "1",
                "--iterations",
                "1",
                "--timeout",
                "100ms",
            ],
            &warm,
            &cache,
        ));
        let one = support::idle_load_rss(&noop_wasm, &asleep, 1, &cache);
        let many = support::idle_load_rss(&noop_wasm, &asleep, 100, &cache);
        let per = many.saturating_sub(one) as f64 / 99.0;
        let (together, sharded) = two_users(&noop_wasm, &vars, &cache);
        println!(
            "| {name} | {:.1} MiB | {:.2} s | {:.0} ms | {:.0} µs ({:.2} ms) | {:.2} MiB (RSS {:.0} → {:.0} MiB, 1 → 100 asleep) | {together:.0} / {sharded:.0} it/s |",
            mib(size),
            first.as_secs_f64(),
            cached[2].as_secs_f64() * 1000.0,
            n.per_iteration_us,
            n.p50_ms,
            per / 1024.0,
            one as f64 / 1024.0,
            many as f64 / 1024.0,
        );
    }
    println!(
        "\nA run is the whole command: process start, the demo API, loading the component \
         (compiling it, or mapping it from the cache), one run of the journey, the record \
         (from source: the runtime's component, then preparing the source). The \
         component size of a journey from source is that of its .js file."
    );
    fleet(&root, "JavaScript");
    fleet(&root, "Python");
}

/// `n` distinct journeys from source (the api journey in `lang`, one line
/// different in each) in a serve config, in `dir`.
fn source_fleet(root: &Path, lang: &str, dir: &Path, n: usize) -> PathBuf {
    let (source, ext) = match lang {
        "JavaScript" => ("journeys/js/api.js", "js"),
        _ => ("journeys/python/api.py", "py"),
    };
    let api = std::fs::read_to_string(root.join(source)).expect("api journey");
    let mut config =
        String::from("[store]\npath = \"off\"\n\n[runner]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..n {
        let name = format!("api{i}");
        std::fs::write(
            dir.join(format!("{name}.{ext}")),
            api.replace("log in", &format!("log in {i}")),
        )
        .expect("write");
        config.push_str(&format!(
            "\n[[journey]]\nname = \"{name}\"\nwasm = \"{name}.{ext}\"\nevery = \"1h\"\n"
        ));
    }
    let path = dir.join(format!("fleet{n}.toml"));
    std::fs::write(&path, config).expect("config");
    path
}

/// 100 distinct journeys from source in `lang`: `waymark check` with an
/// empty and a filled compile cache, and `waymark serve`'s RSS with 100
/// and 200 of them loaded (none due within the measure).
fn fleet(root: &Path, lang: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = dir.path().join("cache");
    let hundred = source_fleet(root, lang, dir.path(), 100);
    let two_hundred = source_fleet(root, lang, dir.path(), 200);
    let check = |config: &Path| {
        let t = Instant::now();
        let out = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%M")
            .arg(env!("CARGO_BIN_EXE_waymark"))
            .arg("check")
            .arg("--config")
            .arg(config)
            .env("WAYMARK_CACHE_DIR", &cache)
            .output()
            .expect("waymark check runs");
        let took = t.elapsed();
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let kib: u64 = stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("/usr/bin/time's peak RSS");
        (took, kib)
    };
    let (cold, cold_kib) = check(&hundred);
    let (warm, warm_kib) = check(&hundred);
    // The 200-journey serve prepares the 100 files it has not seen: the
    // instance that prepared them is dropped once the config is loaded,
    // and what is left counts against the journeys.
    let serve_rss = |config: &Path| {
        let mut cmd = waymark();
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .env("WAYMARK_CACHE_DIR", &cache);
        let serve = support::ServeProcess::start(cmd);
        std::thread::sleep(Duration::from_secs(2));
        support::rss_kib(serve.child.id())
    };
    let rss100 = serve_rss(&hundred);
    let rss200 = serve_rss(&two_hundred);
    println!(
        "\n| 100 distinct {lang} journeys from source | figure |\n|---|---|\n\
         | `waymark check`, empty compile cache | {:.1} s, peak RSS {:.0} MiB |\n\
         | `waymark check`, cache filled | {:.2} s, peak RSS {:.0} MiB |\n\
         | `waymark serve` RSS, 100 journeys loaded | {:.0} MiB |\n\
         | added RSS per further journey (100 → 200) | {:.0} KiB |",
        cold.as_secs_f64(),
        cold_kib as f64 / 1024.0,
        warm.as_secs_f64(),
        warm_kib as f64 / 1024.0,
        rss100 as f64 / 1024.0,
        rss200.saturating_sub(rss100) as f64 / 100.0,
    );
}
