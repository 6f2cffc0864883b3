//! `waymark load` end to end: the binary against loopback servers, its JSON
//! read back, shards merged, SLO gates deciding the exit code, Ctrl-C, and
//! the HTML report rendered by headless Chromium.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{CountingServer, hostile_wasm};

fn waymark(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(args)
        .env("WAYMARK_CACHE_DIR", cache)
        .output()
        .expect("waymark runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `waymark load` of the test guest fetching `server`'s URL, with `extra` flags.
fn load_fetch(cache: &Path, server: &CountingServer, extra: &[&str]) -> Output {
    let url_var = format!("url={}", server.url());
    let authority = server.addr.to_string();
    let mut args = vec![
        "load",
        hostile_wasm().to_str().expect("utf-8 path"),
        "--name",
        "fetch",
        "--var",
        "mode=fetch",
        "--var",
        &url_var,
        "--allow-host",
        &authority,
    ];
    args.extend_from_slice(extra);
    waymark(cache, &args)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("json")
}

fn steps(v: &Value) -> &Vec<Value> {
    v["steps"].as_array().expect("steps")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn closed_ramp_measures_every_iteration_on_kept_alive_connections() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let server = CountingServer::start(0, Duration::from_millis(2));
    let json = cache.path().join("out.json");
    let out = load_fetch(
        cache.path(),
        &server,
        &[
            "--concurrency",
            "1,2,4",
            "--iterations",
            "30",
            "--step-duration",
            "60s",
            "--warmup",
            "0s",
            "--json",
            json.to_str().expect("utf-8"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let v = read_json(&json);
    assert_eq!(v["model"], "closed");
    assert_eq!(v["journey"], "fetch");
    let users: Vec<u64> = steps(&v).iter().map(|s| u(&s["users"])).collect();
    assert_eq!(users, vec![1, 2, 4]);
    for s in steps(&v) {
        // The budget ends each step: exactly 30 measured, each one request.
        assert_eq!(u(&s["iterations"]), 30, "{s}");
        assert_eq!(u(&s["passed"]), 30);
        assert_eq!(u(&s["requests"]), 30);
        assert_eq!(u(&s["latency"]["count"]), 30);
        assert_eq!(u(&s["phases"]["connect"]["count"]), 30);
        assert_eq!(u(&s["unmeasured"]), 0);
        assert!(s["throughput"].as_f64().expect("f64") > 0.0);
        let p = &s["latency"];
        assert!(p["p50_ms"].as_f64() <= p["p99_ms"].as_f64());
        assert!(p["p99_ms"].as_f64() <= p["max_ms"].as_f64());
        // The server waits 2 ms per request, so no journey took less.
        assert!(p["p50_ms"].as_f64().expect("f64") >= 2.0, "{p}");
    }
    assert_eq!(server.count(), 90, "one request per iteration, none lost");
    // Four users over the whole ramp: a connection each, reused across
    // iterations and steps.
    let conns = server.connections.load(Ordering::SeqCst);
    assert!(conns <= 4, "{conns} connections for 4 users");
    assert!(server.max_concurrent.load(Ordering::SeqCst) <= 4);
    // Three levels: the USL is fitted (or says why not) and printed.
    assert!(stdout.contains("Universal Scalability Law fit"), "{stdout}");
    // Beside the other tests on two cores, a step may find waymark itself
    // saturated; it is then left out and the refusal says so.
    let fitted = v["usl"]["lambda"].as_f64().is_some_and(|l| l > 0.0);
    let refused_for_saturation = v["usl_refused"]
        .as_str()
        .is_some_and(|r| r.contains("waymark itself was saturated"));
    assert!(fitted || refused_for_saturation, "{}", v["usl_refused"]);
}

#[test]
fn shards_merge_to_the_counts_of_a_single_run() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let server = CountingServer::start(0, Duration::from_millis(1));
    let flags = [
        "--concurrency",
        "3,6",
        "--iterations",
        "30",
        "--step-duration",
        "60s",
        "--warmup",
        "0s",
        "--quiet",
    ];
    let single = cache.path().join("single.json");
    let mut args: Vec<&str> = flags.to_vec();
    let single_s = single.to_str().expect("utf-8").to_string();
    args.extend(["--json", &single_s]);
    let out = load_fetch(cache.path(), &server, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = server.count();

    // Three shards as separate processes at once, as pods of an Indexed Job.
    let url_var = format!("url={}", server.url());
    let authority = server.addr.to_string();
    let parts: Vec<PathBuf> = (0..3)
        .map(|i| cache.path().join(format!("part-{i}.json")))
        .collect();
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            Command::new(env!("CARGO_BIN_EXE_waymark"))
                .args(["load", hostile_wasm().to_str().expect("utf-8")])
                .args(["--name", "fetch", "--var", "mode=fetch", "--var", &url_var])
                .args(["--allow-host", &authority, "--shard", &shard])
                .args(flags)
                .args(["--json", parts[i].to_str().expect("utf-8")])
                .env("WAYMARK_CACHE_DIR", cache.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("shard starts")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("shard ends");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    for p in &parts {
        let v = read_json(p);
        let users: Vec<u64> = steps(&v).iter().map(|s| u(&s["users"])).collect();
        assert_eq!(users, vec![1, 2], "each shard runs a third of the users");
        assert_eq!(u(&steps(&v)[0]["iterations"]), 10);
    }
    assert_eq!(
        server.count() - before,
        60,
        "the shards together ran the plan once"
    );

    let merged = cache.path().join("merged.json");
    let html = cache.path().join("merged.html");
    let mut args = vec!["load", "merge"];
    let part_s: Vec<String> = parts
        .iter()
        .map(|p| p.to_str().expect("utf-8").to_string())
        .collect();
    args.extend(part_s.iter().map(String::as_str));
    let merged_s = merged.to_str().expect("utf-8").to_string();
    let html_s = html.to_str().expect("utf-8").to_string();
    args.extend(["--json", &merged_s, "--report", &html_s]);
    let out = waymark(cache.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let one = read_json(&single);
    let all = read_json(&merged);
    assert_eq!(u(&all["shards_merged"]), 3);
    assert!(all["shard"].is_null());
    for (a, b) in steps(&one).iter().zip(steps(&all)) {
        for key in [
            "users",
            "iterations",
            "passed",
            "requests",
            "request_errors",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
        assert_eq!(a["errors"], b["errors"]);
        assert_eq!(a["latency"]["count"], b["latency"]["count"]);
        assert_eq!(a["phases"]["total"]["count"], b["phases"]["total"]["count"]);
    }
    assert_eq!(one["total"]["iterations"], all["total"]["iterations"]);
    // The merged histogram is the union of the parts, not an average.
    let part_max = parts
        .iter()
        .map(|p| {
            read_json(p)["total"]["latency"]["max_ms"]
                .as_f64()
                .expect("f64")
        })
        .fold(0.0, f64::max);
    assert_eq!(all["total"]["latency"]["max_ms"].as_f64(), Some(part_max));
    assert!(
        std::fs::read_to_string(&html)
            .expect("html")
            .contains("3 shards merged")
    );

    // Parts of different runs are refused.
    let other = cache.path().join("other.json");
    let mut v = read_json(&parts[0]);
    v["journey"] = Value::from("another");
    std::fs::write(&other, v.to_string()).expect("write");
    let out = waymark(
        cache.path(),
        &["load", "merge", &part_s[1], other.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("its journey is another, not fetch"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn slo_gates_decide_the_exit_code() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let flags = [
        "--concurrency",
        "1,2",
        "--iterations",
        "10",
        "--step-duration",
        "30s",
        "--warmup",
        "0s",
        "--slo",
        "errors<1%",
        "--slo",
        "p95<30s",
    ];
    // Every answer a 500: the journey's check fails each time.
    let failing = CountingServer::start(usize::MAX, Duration::ZERO);
    let out = load_fetch(cache.path(), &failing, &flags);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  errors<1%"), "{stdout}");
    assert!(stdout.contains("measured 100.00 % (20 of 20)"), "{stdout}");
    assert!(stdout.contains("PASS  p95<30s"), "{stdout}");
    assert!(stdout.contains("errors by kind: check 20"), "{stdout}");

    let passing = CountingServer::start(0, Duration::ZERO);
    let out = load_fetch(cache.path(), &passing, &flags);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("PASS  errors<1%"));

    let out = load_fetch(cache.path(), &passing, &["--slo", "p95<fast"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--slo 'p95<fast': 'fast' is not a duration"),
        "{}",
        text(&out.stderr)
    );
    // Nothing ran for a bad gate.
    assert_eq!(passing.count(), 20);
}

/// A server that takes 100 ms and 2 slots can serve 20 journeys/s. At 40
/// arrivals/s the open model must show the queue in the latency (measured
/// from each intended start) and 20/s as the throughput; a closed-loop tool
/// would report 100 ms and hide the queue.
#[test]
fn open_model_shows_queueing_from_the_intended_start() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let server = CountingServer::start(0, Duration::from_millis(100));
    let json = cache.path().join("open.json");
    let out = load_fetch(
        cache.path(),
        &server,
        &[
            "--rate",
            "40/s",
            "--max-vus",
            "2",
            "--step-duration",
            "2s",
            "--warmup",
            "0s",
            "--json",
            json.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v = read_json(&json);
    assert_eq!(v["model"], "open");
    let s = &steps(&v)[0];
    assert_eq!(s["rate"].as_f64(), Some(40.0));
    // Every arrival of the 2 s step ran and was measured.
    assert_eq!(u(&s["iterations"]), 80, "{s}");
    assert!(u(&s["waited_for_slot"]) > 0);
    let p99 = s["latency"]["p99_ms"].as_f64().expect("f64");
    assert!(p99 > 1000.0, "queueing hidden: p99 {p99} ms");
    let x = s["throughput"].as_f64().expect("f64");
    assert!(
        (14.0..=22.0).contains(&x),
        "throughput {x}/s, capacity 20/s"
    );
    assert!(server.max_concurrent.load(Ordering::SeqCst) <= 2);
}

/// A journey that never waits (no request, no sleep) must not hold the
/// workers so long that the step ends late: the window stays the plan's,
/// and every measured iteration ended inside it.
#[test]
fn journeys_that_never_wait_keep_the_step_on_time() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let json = cache.path().join("noop.json");
    let started = Instant::now();
    let out = waymark(
        cache.path(),
        &[
            "load",
            hostile_wasm().to_str().expect("utf-8"),
            "--var",
            "mode=noop",
            "--concurrency",
            "2,4",
            "--step-duration",
            "1500ms",
            "--warmup",
            "500ms",
            "--json",
            json.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(15));
    let v = read_json(&json);
    for s in steps(&v) {
        let measured = s["measured_s"].as_f64().expect("f64");
        assert!(
            (measured - 1.0).abs() < 0.05,
            "window {measured} s, planned 1 s"
        );
        let lasted = s["duration_s"].as_f64().expect("f64");
        assert!(
            (lasted - 1.5).abs() < 0.2,
            "the step lasted {lasted} s, planned 1.5 s"
        );
        let n = u(&s["iterations"]) as f64;
        let x = s["throughput"].as_f64().expect("f64");
        assert!(n > 100.0, "{s}");
        assert!(
            (x * measured - n).abs() < 1.0,
            "throughput {x}/s over {measured} s ≠ {n}"
        );
        assert_eq!(u(&s["requests"]), 0);
    }
}

#[test]
fn ctrl_c_stops_the_run_and_still_reports() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let server = CountingServer::start(0, Duration::from_millis(5));
    let json = cache.path().join("cut.json");
    let url_var = format!("url={}", server.url());
    let authority = server.addr.to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["load", hostile_wasm().to_str().expect("utf-8")])
        .args([
            "--var",
            "mode=fetch",
            "--var",
            &url_var,
            "--allow-host",
            &authority,
        ])
        .args([
            "--concurrency",
            "2,4",
            "--step-duration",
            "60s",
            "--warmup",
            "0s",
        ])
        .args(["--json", json.to_str().expect("utf-8")])
        .env("WAYMARK_CACHE_DIR", cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.count() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let out = child.wait_with_output().expect("ends");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        sent.elapsed()
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("interrupted"), "{stdout}");
    let v = read_json(&json);
    assert_eq!(v["interrupted"], true);
    assert_eq!(steps(&v).len(), 1, "the second step never started");
    assert_eq!(steps(&v)[0]["cut_short"], true);
    assert!(u(&steps(&v)[0]["iterations"]) >= 10);
}

#[test]
fn a_config_load_section_drives_the_audit() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    let server = CountingServer::start(0, Duration::ZERO);
    let dir = tempfile::tempdir().expect("temp");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[journey]]
name = "fetch"
wasm = "{wasm}"
every = "1m"
allow_hosts = ["{authority}"]
vars = {{ mode = "fetch", url = "{url}" }}

[[journey]]
name = "other"
wasm = "{wasm}"
every = "1m"

[load]
journey = "fetch"
concurrency = [1, 2]
iterations = 10
step_duration = "30s"
warmup = "0s"
slo = ["errors<1%", "p99<10s"]
json = "audit.json"
"#,
            wasm = hostile_wasm().display(),
            authority = server.addr,
            url = server.url()
        ),
    )
    .expect("config");
    let out = waymark(
        cache.path(),
        &["load", "-c", config.to_str().expect("utf-8")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("PASS  errors<1%"), "{stdout}");
    let v = read_json(&dir.path().join("audit.json"));
    assert_eq!(v["journey"], "fetch");
    let iterations: Vec<u64> = steps(&v).iter().map(|s| u(&s["iterations"])).collect();
    assert_eq!(iterations, vec![10, 10]);
    assert_eq!(server.count(), 20);

    // A flag overrides the file; settings of the journey may not be given twice.
    let out = waymark(
        cache.path(),
        &[
            "load",
            "-c",
            config.to_str().expect("utf-8"),
            "--var",
            "x=1",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--var would be ignored"),
        "{}",
        text(&out.stderr)
    );
}

/// The HTML report of a real run, rendered by headless Chromium: the
/// screenshot must show the measured points, the fitted USL curve and the
/// phase bars in their colours.
#[test]
fn html_report_renders_its_charts_in_chromium() {
    let _quiet = support::not_alone();
    assert!(
        Command::new("chromium").arg("--version").output().is_ok(),
        "this test renders the report in Debian's chromium: apt-get install chromium (.ci/run does)"
    );
    let cache = tempfile::tempdir().expect("temp");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = rt
        .block_on(waymark::demo::DemoApi::start())
        .expect("demo API");
    let wasm = cache.path().join("api.wasm");
    let (_, bytes) = waymark::demo::JOURNEYS
        .iter()
        .find(|(n, _)| *n == "api")
        .expect("api journey");
    std::fs::write(&wasm, bytes).expect("write wasm");
    let (vars, secrets) = api.vars();
    let mut args: Vec<String> = vec![
        "load".into(),
        wasm.to_str().expect("utf-8").into(),
        "--name".into(),
        "api".into(),
        "--allow-host".into(),
        api.authority(),
        "--concurrency".into(),
        "1,2,4,8".into(),
        "--step-duration".into(),
        "1500ms".into(),
        "--warmup".into(),
        "300ms".into(),
    ];
    for (k, v) in vars.iter().chain(secrets.iter()) {
        args.push("--var".into());
        args.push(format!("{k}={v}"));
    }
    let html = cache.path().join("report.html");
    args.push("--report".into());
    args.push(html.to_str().expect("utf-8").into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = waymark(cache.path(), &refs);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).expect("html");
    // Self-contained: nothing is fetched when it opens.
    for outside in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!page.contains(outside), "the report loads {outside}");
    }
    // The api journey's own steps are in the report.
    for step in ["log in", "profile"] {
        assert!(page.contains(step), "journey step {step} missing");
    }

    let shot = support::root().join("target").join("load-report.png");
    let ok = support::screenshot(&html, &shot, "1100,2600", cache.path());
    assert!(ok, "chromium failed");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("screenshot written"),
    ));
    let mut reader = decoder.read_info().expect("png");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("frame");
    let channels = info.color_type.samples();
    let count = |hex: &str| {
        let want: Vec<u8> = (0..3)
            .map(|i| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).expect("hex"))
            .collect();
        buf[..info.buffer_size()]
            .chunks(channels)
            .filter(|p| (0..3).all(|i| p[i].abs_diff(want[i]) <= 6))
            .count()
    };
    use waymark_load::report::colors;
    let points = count(colors::MEASURED);
    let curve = count(colors::USL);
    let bars = count(colors::PROCESSING);
    eprintln!(
        "screenshot {}: {points} point pixels, {curve} curve pixels, {bars} phase-bar pixels",
        shot.display()
    );
    // Four dots of radius 6 are ~450 pixels; the curve spans the chart.
    assert!(points > 300, "measured points not drawn ({points} pixels)");
    assert!(curve > 300, "USL curve not drawn ({curve} pixels)");
    assert!(bars > 500, "phase bars not drawn ({bars} pixels)");
}

/// The counts of one closed step of the `counter` guest: passed, failed
/// checks, traps, and the instance mode the report names.
fn counter_run(cache: &Path, extra: &[&str]) -> (u64, u64, u64, String) {
    let json = cache.join("counter.json");
    let mut args = vec![
        "load",
        hostile_wasm().to_str().expect("utf-8"),
        "--var",
        "mode=counter",
        "--concurrency",
        "2",
        "--iterations",
        "40",
        "--step-duration",
        "20s",
        "--warmup",
        "0s",
        "--json",
        json.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let out = waymark(cache, &args);
    let v = read_json(&json);
    let s = &steps(&v)[0];
    assert_eq!(u(&s["iterations"]), 40, "{}", text(&out.stderr));
    let errors = |k: &str| s["errors"][k].as_u64().unwrap_or(0);
    (
        u(&s["passed"]),
        errors("check"),
        errors("trap"),
        v["instances"].as_str().expect("instances").to_string(),
    )
}

#[test]
fn reuse_instance_keeps_one_instance_per_user_and_replaces_a_trapped_one() {
    let _quiet = support::not_alone();
    let cache = tempfile::tempdir().expect("temp");
    // The default: every iteration sees a fresh instance.
    let (passed, check, trap, mode) = counter_run(cache.path(), &[]);
    assert_eq!((passed, check, trap, mode.as_str()), (40, 0, 0, "fresh"));

    // Kept: only each user's first run is in a fresh instance (on a busy
    // machine one user may take the whole budget before the other starts).
    let (passed, check, trap, mode) = counter_run(cache.path(), &["--reuse-instance"]);
    assert_eq!((passed + check, trap, mode.as_str()), (40, 0, "reuse"));
    assert!((1..=2).contains(&passed), "passed {passed}");

    // A run that traps is not trusted again: every user's third run traps,
    // and the next starts over in a new instance (pass, fail, trap, ...).
    let (passed, check, trap, _) =
        counter_run(cache.path(), &["--reuse-instance", "--var", "trap_on=3"]);
    assert_eq!(passed + check + trap, 40);
    assert!(trap >= 10, "traps {trap}");
    assert!(
        (0..=2).contains(&(passed - trap)) && (0..=2).contains(&(passed - check)),
        "passed {passed}, failed checks {check}, traps {trap}"
    );
}

/// One round of an audit against a lock server holding its lock `held`
/// of every `held + outside`: its `--json` result in `dir/NAME.json`.
fn round(cache: &Path, dir: &Path, name: &str, held_us: u64, users: &str) -> std::path::PathBuf {
    let (json, out) = round_with(cache, dir, name, held_us, users, &["--step-duration", "2s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    json
}

/// [`round`] with more flags, and how it ended.
fn round_with(
    cache: &Path,
    dir: &Path,
    name: &str,
    held_us: u64,
    users: &str,
    extra: &[&str],
) -> (std::path::PathBuf, Output) {
    let (port, _) = support::lock_server(
        Duration::from_micros(held_us),
        Duration::from_micros(8_000 - held_us),
    );
    audit(cache, dir, name, port, users, extra)
}

/// `waymark load` of a fetch of `http://127.0.0.1:PORT/` at `users`, its
/// `--json` result in `dir/NAME.json`, and how it ended.
fn audit(
    cache: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    users: &str,
    extra: &[&str],
) -> (std::path::PathBuf, Output) {
    let json = dir.join(format!("{name}.json"));
    let url = format!("url=http://127.0.0.1:{port}/");
    let allow = format!("127.0.0.1:{port}");
    let mut args = vec![
        "load",
        hostile_wasm().to_str().expect("utf-8 path"),
        "--name",
        "locked",
        "--var",
        "mode=fetch",
        "--var",
        &url,
        "--allow-host",
        &allow,
        "--concurrency",
        users,
        "--warmup",
        "500ms",
        "--json",
        json.to_str().expect("utf-8 path"),
        "-q",
    ];
    args.extend_from_slice(extra);
    let out = waymark(cache, &args);
    (json, out)
}

#[test]
fn repeated_passes_show_their_spread_and_gate_beyond_it() {
    let _quiet = support::not_alone();
    let dir = tempfile::tempdir().expect("tmp");
    let cache = dir.path().join("cache");
    let (base, out) = round_with(
        &cache,
        dir.path(),
        "base",
        250,
        "1,2,4",
        &["--repeat", "2", "--step-duration", "1200ms"],
    );
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("run-to-run spread over 2 passes"), "{shown}");
    assert!(
        shown.contains("(pass 2)") && shown.contains("σ of each pass alone"),
        "{shown}"
    );
    let v = read_json(&base);
    assert_eq!(v["passes"], 2);
    let st = steps(&v);
    assert_eq!(st.len(), 6, "three levels, twice");
    assert_eq!(
        (st[2]["users"].as_u64(), st[3]["users"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(
        (st[2]["pass"].as_u64(), st[3]["pass"].as_u64()),
        (Some(0), Some(1))
    );
    let spread = &v["spread"];
    assert_eq!(
        spread["levels"].as_array().map(Vec::len),
        Some(3),
        "{spread}"
    );
    assert_eq!(
        spread["sigma"].as_array().map(Vec::len),
        Some(2),
        "{spread}"
    );
    for l in spread["levels"].as_array().into_iter().flatten() {
        let t = l["throughput"].as_array().expect("per pass");
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|x| x.as_f64().is_some_and(|x| x > 0.0)), "{l}");
    }

    // Half of every request under the lock: at 4 users about half the
    // baseline's throughput, far beyond any spread between its passes.
    let base_arg = base.to_str().expect("utf-8");
    let (_, out) = round_with(
        &cache,
        dir.path(),
        "worse",
        4_000,
        "1,2,4",
        &[
            "--repeat",
            "2",
            "--step-duration",
            "1200ms",
            "--baseline",
            base_arg,
            "--slo",
            "throughput>=0.9*baseline beyond spread",
        ],
    );
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}{}", text(&out.stderr));
    let line = shown
        .lines()
        .find(|l| l.contains("beyond spread"))
        .unwrap_or_default();
    assert!(
        line.contains("FAIL") && line.contains("baseline") && line.contains("spread"),
        "{shown}"
    );
    // Without a baseline the gate cannot be judged, and says so up front.
    let (_, out) = round_with(
        &cache,
        dir.path(),
        "alone",
        250,
        "1",
        &["--slo", "throughput>=0.9*baseline beyond spread"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("--baseline FILE"));
}

#[test]
fn rounds_compare_side_by_side_in_numbers_and_words() {
    let _quiet = support::not_alone();
    let dir = tempfile::tempdir().expect("tmp");
    let cache = dir.path().join("cache");
    // Three rounds of a server whose contention is cut between them: a
    // quarter of each request under the lock, then an eighth, then a
    // thirty-second; the third round ramps further.
    let r1 = round(&cache, dir.path(), "round1", 2_000, "1,2,4,8");
    let r2 = round(&cache, dir.path(), "round2", 1_000, "1,2,4,8");
    let r3 = round(&cache, dir.path(), "round3", 250, "1,2,4,8,16");
    let html = dir.path().join("compare.html");
    let out = waymark(
        &cache,
        &[
            "load",
            "compare",
            r1.to_str().expect("utf-8"),
            r2.to_str().expect("utf-8"),
            r3.to_str().expect("utf-8"),
            "--report",
            html.to_str().expect("utf-8"),
        ],
    );
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    for want in [
        "round1",
        "round2",
        "round3",
        "σ (serialization)",
        "N* (peak concurrency)",
        "8 users",
        "16 users: not measured in round1, round2",
        "serialization penalty σ",
    ] {
        assert!(shown.contains(want), "no {want:?} in:\n{shown}");
    }
    // The fits see the contention fall, round by round: a higher ceiling
    // each time (from these few levels a fit may put it in σ or in κ, and
    // a round without contention left has no ceiling at all).
    let ceiling = |p: &Path| {
        read_json(p)["usl"]["peak_throughput"]
            .as_f64()
            .unwrap_or(f64::INFINITY)
    };
    let (x1, x2, x3) = (ceiling(&r1), ceiling(&r2), ceiling(&r3));
    // Round 2 may see no ceiling up to 8 users at all (infinite), where
    // round 3, ramping to 16, finds one far above.
    assert!(
        x1.is_finite() && x1 < x2 && x1 < x3,
        "X(N*) per round: {x1} {x2} {x3}\n{shown}"
    );
    let page = std::fs::read_to_string(&html).expect("the page");
    assert!(
        page.contains("<svg") && page.contains("round3") && page.contains("N* ="),
        "{page:.400}"
    );
    // A round on its own is refused, in words.
    let out = waymark(&cache, &["load", "compare", r1.to_str().expect("utf-8")]);
    assert!(!out.status.success());
}

/// The predictive claim: against a server whose USL coefficients follow
/// from its design (a group commit, see `support::group_commit_server`),
/// a fit on 1 to 8 users predicts the throughput at 32 users, past the
/// peak, within the 95 % interval it states. Such an interval misses one
/// time in twenty by its nature, and a ramp disturbed by the machine misses
/// more often (a CI run saw two misses in a row, σ fitted at twice its
/// design in one), so the test fails at the third miss of up to four
/// ramps. A ramp so noisy that its interval is wider than the prediction
/// is run again too. The fitted σ and κ are
/// printed beside the design's; one short ramp cannot split them finely
/// (a little more of one and less of the other fit 1–8 as well), which is
/// what the interval is for.
#[test]
fn a_fit_on_one_to_eight_users_predicts_thirty_two() {
    let _quiet = support::alone();
    let dir = tempfile::tempdir().expect("tmp");
    let cache = dir.path().join("cache");
    let (serial, crosstalk) = (Duration::from_micros(500), Duration::from_micros(100));
    let port = support::group_commit_server(
        Duration::from_millis(8),
        Duration::from_millis(2),
        serial,
        crosstalk,
    );
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let (mut misses, mut noisy) = (Vec::new(), Vec::new());
    for attempt in 0..4 {
        if misses.len() == 3 {
            break;
        }
        let (short, out) = audit(
            &cache,
            dir.path(),
            &format!("short{attempt}"),
            port,
            "1,2,3,4,5,6,7,8",
            &["--step-duration", "3s"],
        );
        let shown = text(&out.stdout);
        eprintln!("{shown}");
        assert!(out.status.success(), "{shown}{}", text(&out.stderr));
        assert!(shown.contains("predicted beyond the ramp"), "{shown}");
        let v = read_json(&short);
        let usl = &v["usl"];
        let at_32 = usl["predictions"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["concurrency"].as_f64() == Some(32.0)))
            .unwrap_or_else(|| panic!("no prediction at 32 users: {usl}"));
        let (predicted, low, high) = (f(&at_32["throughput"]), f(&at_32["low"]), f(&at_32["high"]));
        assert!(
            low < predicted && predicted < high,
            "not an interval around its prediction: {predicted:.0} ({low:.0}–{high:.0})"
        );
        // A busy machine makes a noisy ramp, and an honest interval from it
        // is too wide to test anything: measured again.
        if (high - low) / predicted >= 1.0 {
            noisy.push(format!("{predicted:.0} ({low:.0}–{high:.0})"));
            continue;
        }
        // The design's coefficients, with the round's fixed part P + s read
        // off the fit's own λ (the network and the client add to P).
        let lambda = f(&usl["lambda"]);
        let design = (
            serial.as_secs_f64() * lambda,
            crosstalk.as_secs_f64() * lambda,
        );

        let (long, out) = audit(
            &cache,
            dir.path(),
            &format!("long{attempt}"),
            port,
            "32",
            &["--step-duration", "3s"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let measured = f(&steps(&read_json(&long))[0]["throughput"]);
        let said = format!(
            "σ {:.4} (design {:.4}), κ {:.5} (design {:.5}); at 32 users: measured {measured:.1}/s, predicted {predicted:.1}/s ({low:.1}–{high:.1})",
            f(&usl["sigma"]),
            design.0,
            f(&usl["kappa"]),
            design.1
        );
        eprintln!("{said}");
        if (low..=high).contains(&measured) {
            return;
        }
        misses.push(said);
    }
    panic!(
        "the interval missed {} time(s):\n{}\nramps too noisy to judge (interval wider than the prediction): {}",
        misses.len(),
        misses.join("\n"),
        noisy.join(", ")
    );
}
