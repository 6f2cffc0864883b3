//! Journeys in three languages: the api and market journeys in Rust,
//! JavaScript (componentize-js) and Python (componentize-py) against the
//! same demo API must record the same steps, checks and requests; plain
//! `fetch()` goes through wasi:http and the same timed client; `waymark new`
//! projects build and pass `waymark run DIR --demo` as written.

#[path = "support/lang.rs"]
mod lang;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{CountingServer, Shape, opts, runtime, shape};
use waymark::demo::{DemoApi, JOURNEYS, PASSWORD};
use waymark_record::{ErrorKind, HttpErrorKind, RunRecord, Status};

async fn run_demo(name: &str, wasm: &[u8], extra: &[(&str, &str)]) -> RunRecord {
    let api = DemoApi::start().await.expect("demo api");
    let mut o = opts(&[api.authority()], None, &[]);
    (o.vars, o.secrets) = api.vars();
    for (k, v) in extra {
        o.vars.insert(k.to_string(), v.to_string());
    }
    let j = runtime().load(name, wasm).expect("loads");
    runtime().run(&j, &o).await
}

fn rust(name: &str) -> Vec<u8> {
    JOURNEYS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, w)| w.to_vec())
        .expect("example journey")
}

/// The journey `name` in each language: (language, component bytes).
fn three(name: &str) -> Vec<(&'static str, Vec<u8>)> {
    let built = lang::build_all(&[
        &format!("journeys/js/{name}.js"),
        &format!("journeys/python/{name}.py"),
    ]);
    let read = |p: &Path| std::fs::read(p).expect("built component");
    vec![
        ("rust", rust(name)),
        ("js", read(&built[0])),
        ("python", read(&built[1])),
    ]
}

fn strings(pairs: &[(&str, bool)]) -> Vec<(String, bool)> {
    pairs.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

fn reqs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_journey_records_the_same_in_rust_js_and_python() {
    let expected: Shape = vec![
        (
            "log in".into(),
            strings(&[("status is 200", true), ("token is not empty", true)]),
            reqs(&[("POST", "/login")]),
        ),
        (
            "profile".into(),
            strings(&[
                ("status is 200", true),
                ("user matches", true),
                ("plan is set", true),
            ]),
            reqs(&[("GET", "/me")]),
        ),
        (
            "rejects a bad token".into(),
            strings(&[("status is 401", true)]),
            reqs(&[("GET", "/me")]),
        ),
    ];
    for (lang, wasm) in three("api") {
        let rec = run_demo("api", &wasm, &[]).await;
        assert_eq!(rec.status, Status::Pass, "{lang}: {rec:#?}");
        assert_eq!(shape(&rec), expected, "{lang}");
        // One connection, kept alive across the steps, in every language.
        let reused: Vec<bool> = rec.requests().map(|r| r.reused_connection).collect();
        assert_eq!(reused, vec![false, true, true], "{lang}");
        let json = serde_json::to_string(&rec).expect("json");
        assert!(!json.contains(PASSWORD), "{lang}: the secret leaked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn market_journey_records_the_same_in_rust_js_and_python() {
    let mut prices = Vec::new();
    let mut paths = Vec::new();
    for sym in ["BTC-USD", "ETH-USD", "SOL-USD"] {
        for c in ["status is 200", "symbol echoed", "bid <= ask"] {
            prices.push((format!("{sym} {c}"), true));
        }
        paths.push(("GET".to_string(), format!("/prices/{sym}")));
    }
    let expected: Shape = vec![
        (
            "list pairs".into(),
            strings(&[("status is 200", true), ("has active pairs", true)]),
            reqs(&[("GET", "/pairs")]),
        ),
        ("prices".into(), prices, paths),
    ];
    for (lang, wasm) in three("market") {
        let rec = run_demo("market", &wasm, &[]).await;
        assert_eq!(rec.status, Status::Pass, "{lang}: {rec:#?}");
        assert_eq!(shape(&rec), expected, "{lang}");
        let logs: Vec<&str> = rec.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(logs.len(), 3, "{lang}: {logs:?}");
        assert!(logs[0].starts_with("BTC-USD: "), "{lang}: {logs:?}");

        // Asking for more active pairs than there are fails the same check.
        let rec = run_demo("market", &wasm, &[("pairs", "5")]).await;
        assert_eq!(rec.status, Status::Fail, "{lang}: {rec:#?}");
        let failed: Vec<&str> = rec.failed_checks().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["has active pairs"], "{lang}");
        let detail = rec.steps[0].checks[1].detail.as_deref();
        assert_eq!(detail, Some("4 active"), "{lang}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journey_error_is_the_run_error_in_every_language() {
    // `pairs` that is not a number: each language's parse error ends the run.
    for (lang, wasm) in three("market") {
        let rec = run_demo("market", &wasm, &[("pairs", "many")]).await;
        assert_eq!(rec.status, Status::Fail, "{lang}: {rec:#?}");
        let err = rec.error.as_ref().expect("error");
        assert_eq!(err.kind, ErrorKind::Journey, "{lang}: {err:?}");
        assert!(!err.message.is_empty(), "{lang}");
        assert!(rec.steps.is_empty(), "{lang}: nothing ran: {rec:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_fetch_goes_through_the_timed_client() {
    let fetch = lang::build("journeys/js/fetch.js");
    let wasm = std::fs::read(fetch).expect("built");
    let rec = run_demo("fetch", &wasm, &[]).await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    // The same record as the SDK's api journey: steps, checks, requests.
    let api = run_demo("api", &rust("api"), &[]).await;
    assert_eq!(shape(&rec), shape(&api));
    let r: Vec<_> = rec.requests().collect();
    assert_eq!(r.len(), 3);
    // Phases are measured: a new connection first, then kept alive.
    assert!(
        !r[0].reused_connection && r[0].timings.connect > Duration::ZERO,
        "{:?}",
        r[0]
    );
    for req in &r[1..] {
        assert!(req.reused_connection, "{req:?}");
        assert_eq!(
            (req.timings.connect, req.timings.tls),
            (Duration::ZERO, Duration::ZERO)
        );
        assert!(req.timings.processing > Duration::ZERO, "{req:?}");
    }
    assert!(r.iter().all(|q| q.status.is_some() && q.trace_id.is_some()));
    assert_eq!(r[0].status, Some(200));
    assert_eq!(r[2].status, Some(401));
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_and_the_helpers_are_held_to_the_allow_list() {
    let built = lang::build_all(&["tests/guests/js/policy.js", "tests/guests/python/policy.py"]);
    let api = DemoApi::start().await.expect("demo api");
    let url = format!("{}/health", api.base_url());
    for (path, checks) in built.iter().zip([2, 1]) {
        let wasm = std::fs::read(path).expect("built");
        let j = runtime().load("policy", &wasm).expect("loads");
        // Allowed: answered and recorded.
        let mut o = opts(&[api.authority()], None, &[]);
        o.vars.insert("url".into(), url.clone());
        let rec = runtime().run(&j, &o).await;
        assert_eq!(rec.status, Status::Pass, "{rec:#?}");
        assert_eq!(rec.requests().count(), checks);
        assert!(rec.requests().all(|r| r.status == Some(200)));

        // Not on the allow-list: the request fails inside the journey as a
        // denial, and the record names the denied host, for fetch as for the
        // helpers.
        let mut o = opts(&["example.com".into()], None, &[]);
        o.vars.insert("url".into(), url.clone());
        let rec = runtime().run(&j, &o).await;
        assert_eq!(rec.status, Status::Fail, "{rec:#?}");
        let reqs: Vec<_> = rec.requests().collect();
        assert_eq!(reqs.len(), checks, "{rec:#?}");
        for req in reqs {
            let err = req.error.as_ref().expect("denied");
            assert_eq!(err.kind, HttpErrorKind::Denied, "{err:?}");
            assert!(err.message.contains("127.0.0.1"), "{err:?}");
        }
        let checks: Vec<(&str, bool, Option<&str>)> = rec.steps[0]
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.passed, c.detail.as_deref()))
            .collect();
        let helper = ("helper answered", false, Some("HttpError denied"));
        assert_eq!(
            checks.last(),
            Some(&helper),
            "{}: {checks:?}",
            path.display()
        );
        if checks.len() == 2 {
            assert_eq!(checks[0].0, "fetch answered");
            assert!(!checks[0].1, "{checks:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_cut_off_by_the_run_timeout_is_recorded_as_stopped() {
    let wasm = std::fs::read(lang::build("tests/guests/js/policy.js")).expect("built");
    let server = CountingServer::start(0, std::time::Duration::from_secs(10));
    let authority = server.addr.to_string();
    let mut o = opts(std::slice::from_ref(&authority), None, &[]);
    o.vars
        .insert("url".into(), format!("http://{authority}/slow"));
    o.timeout = std::time::Duration::from_secs(2);
    let j = runtime().load("policy", &wasm).expect("loads");
    let rec = runtime().run(&j, &o).await;
    assert_eq!(rec.status, Status::Timeout, "{rec:#?}");
    let reqs: Vec<_> = rec.requests().collect();
    assert_eq!(reqs.len(), 1, "{rec:#?}");
    let err = reqs[0].error.as_ref().expect("stopped");
    assert_eq!(err.kind, HttpErrorKind::Timeout, "{err:?}");
    assert!(err.message.contains("when the run was stopped"), "{err:?}");
    assert!(
        reqs[0].timings.total >= Duration::from_millis(1500),
        "{:?}",
        reqs[0]
    );
    assert_eq!(rec.steps[0].status, Status::Error);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_js_and_python_journeys_are_stopped_and_the_runner_goes_on() {
    let built = lang::build_all(&[
        "tests/guests/js/hostile.js",
        "tests/guests/python/hostile.py",
    ]);
    for path in built {
        let wasm = std::fs::read(&path).expect("built");
        let j = runtime().load("hostile", &wasm).expect("loads");
        let mut o = opts(&[], None, &[("mode", "spin")]);
        o.timeout = std::time::Duration::from_secs(2);
        let rec = runtime().run(&j, &o).await;
        assert_eq!(rec.status, Status::Timeout, "{}: {rec:#?}", path.display());

        let o = opts(&[], None, &[("mode", "oom")]);
        let rec = runtime().run(&j, &o).await;
        assert_eq!(rec.status, Status::Error, "{}: {rec:#?}", path.display());
        let err = rec.error.as_ref().expect("error");
        assert_eq!(err.kind, ErrorKind::Memory, "{}: {err:?}", path.display());
        assert!(err.message.contains("memory limit"), "{err:?}");
    }
    // The same runtime still runs a good journey.
    let rec = run_demo("api", &rust("api"), &[]).await;
    assert_eq!(rec.status, Status::Pass);
}

fn waymark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waymark"))
}

fn run_project(dir: &Path) -> RunRecord {
    let out = waymark()
        .arg("run")
        .arg(dir)
        .args(["--demo", "--format", "json"])
        // Compiled components stay in this test's own cache.
        .env("WAYMARK_CACHE_DIR", dir.with_extension("cache"))
        // A Rust project's dependencies are built once across test runs.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/new-rust"),
        )
        .output()
        .expect("waymark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "waymark run {} --demo: {}\n{stdout}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("one JSON record")
}

fn new_project_builds_and_passes(lang: &str, source: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(format!("my-{lang}-journey"));
    let out = waymark()
        .args([
            "new",
            &format!("my-{lang}-journey"),
            "--lang",
            lang,
            "--dir",
        ])
        .arg(&dir)
        .output()
        .expect("waymark new");
    assert!(out.status.success(), "{out:?}");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
    assert_eq!(readme.lines().count(), 3, "{readme}");

    let rec = run_project(&dir);
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    assert_eq!(rec.journey, format!("my-{lang}-journey"));
    let steps: Vec<(&str, usize, usize)> = rec
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.checks.len(), s.requests.len()))
        .collect();
    assert_eq!(steps, vec![("health", 1, 1), ("log in", 2, 1)]);

    if lang == "rust" {
        return; // cargo decides for itself what to rebuild
    }
    // Run from its source: nothing was installed or built.
    for made in ["journey.wasm", "node_modules", "__pycache__"] {
        assert!(!dir.join(made).exists(), "{lang}: {made} was made");
    }
    // An edit is in the next run: the new check is in the record.
    let path = dir.join(source);
    let text = std::fs::read_to_string(&path).expect("source");
    let edited = match lang {
        "js" | "ts" => text.replace(
            "checkEq('status is 200', resp.status, 200);\n  });\n\n  step('log in'",
            "checkEq('status is 200', resp.status, 200);\n    check('edited', true);\n  });\n\n  step('log in'",
        ),
        _ => text.replace(
            "check_eq(\"status is 200\", resp.status, 200)\n\n    with step(\"log in\"):",
            "check_eq(\"status is 200\", resp.status, 200)\n        check(\"edited\", True)\n\n    with step(\"log in\"):",
        ),
    };
    assert_ne!(edited, text, "the edit applies");
    std::fs::write(&path, edited).expect("edit");
    let rec = run_project(&dir);
    let checks: Vec<&str> = rec.steps[0]
        .checks
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(checks, vec!["status is 200", "edited"]);
}

#[test]
fn new_js_project_builds_and_passes_against_the_demo() {
    new_project_builds_and_passes("js", "journey.js");
}

#[test]
fn new_ts_project_builds_and_passes_against_the_demo() {
    new_project_builds_and_passes("ts", "journey.ts");
}

#[test]
fn new_python_project_builds_and_passes_against_the_demo() {
    new_project_builds_and_passes("python", "app.py");
}

#[test]
fn new_rust_project_builds_and_passes_against_the_demo() {
    new_project_builds_and_passes("rust", "src/lib.rs");
}

#[test]
fn run_says_what_it_cannot_build() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = waymark().arg("run").arg(tmp.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not know how to build"), "{err}");

    let out = waymark()
        .args(["new", "9lives", "--dir"])
        .arg(tmp.path().join("x"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a journey name"));
}
