//! Hostile and broken journeys: each is stopped, reported with its kind,
//! and the same runtime goes on running the next journey.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Script, ScriptedServer, hostile_wasm, ok_body, opts, runtime};
use waymark_engine::{LoadedJourney, RunOptions};
use waymark_record::{ErrorKind, HttpErrorKind, Level, RunRecord, Status};

fn guest() -> LoadedJourney {
    let wasm = std::fs::read(hostile_wasm()).expect("guest built");
    runtime().load("hostile", &wasm).expect("guest loads")
}

async fn run_mode(
    mode: &str,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut RunOptions),
) -> RunRecord {
    let mut vars = vec![("mode", mode)];
    vars.extend_from_slice(extra);
    let mut o = opts(&[], None, &vars);
    tweak(&mut o);
    runtime().run(&guest(), &o).await
}

/// After any failure the runtime must still run a healthy journey.
async fn assert_runtime_still_works() {
    let rec = run_mode("noop", &[], |_| {}).await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
}

fn error_kind(rec: &RunRecord) -> ErrorKind {
    rec.error.as_ref().expect("an error").kind.clone()
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_epoch_deadline() {
    let t = Instant::now();
    let rec = run_mode("spin", &[], |o| o.timeout = Duration::from_millis(300)).await;
    let took = t.elapsed();
    assert_eq!(rec.status, Status::Timeout, "{rec:#?}");
    assert_eq!(error_kind(&rec), ErrorKind::Timeout);
    assert!(
        rec.error
            .as_ref()
            .is_some_and(|e| e.message.contains("300ms")),
        "{:?}",
        rec.error
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");
    assert_runtime_still_works().await;
}

#[tokio::test]
async fn a_stopped_run_with_many_open_steps_closes_its_record_in_linear_time() {
    // 200,000 nested steps left open, then a spin until the timeout. Closing
    // them was quadratic (4e10 comparisons here); it must take next to nothing.
    let t = Instant::now();
    let rec = run_mode("nest", &[("n", "200000")], |o| {
        o.timeout = Duration::from_secs(2);
        // Room for them all: this is about closing them, not the budget.
        o.max_record = 256 << 20;
    })
    .await;
    let took = t.elapsed();
    assert_eq!(rec.status, Status::Timeout, "{:?}", rec.error);
    assert_eq!(rec.steps.len(), 200_000);
    assert!(rec.steps.iter().all(|s| s.status == Status::Error));
    assert!(
        took < Duration::from_secs(3),
        "the record took {:?} past the 2 s timeout",
        took.saturating_sub(Duration::from_secs(2))
    );
}

/// The record of a guest that reports without end stays within its
/// budget, and the run is stopped with kind `limit` naming what overflowed.
#[tokio::test]
async fn a_flood_of_reports_is_stopped_at_the_record_budget() {
    for (what, n, len) in [
        ("checks", "10000000", "64"),
        ("steps", "10000000", "64"),
        ("requests", "10000000", "64"),
        // Few, but each name as large as the guest's memory allows.
        ("checks", "200", "1000000"),
    ] {
        let t = Instant::now();
        let rec = run_mode("flood", &[("what", what), ("n", n), ("len", len)], |o| {
            o.max_record = 1 << 20;
            o.timeout = Duration::from_secs(20);
            let mut http = (*o.http).clone();
            http.max_requests = u32::MAX;
            o.http = std::sync::Arc::new(http);
        })
        .await;
        let took = t.elapsed();
        let json = serde_json::to_string(&rec).expect("json");
        assert_eq!(rec.status, Status::Error, "{what}: {:?}", rec.error);
        assert_eq!(error_kind(&rec), ErrorKind::Limit, "{what}");
        let message = &rec.error.as_ref().expect("error").message;
        assert!(
            message.contains(what) && message.contains("max_record"),
            "{message}"
        );
        assert!(
            json.len() < 2 << 20,
            "{what} × {n} of {len} bytes: a {} byte record for a 1 MiB budget",
            json.len()
        );
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
    }
    // Long names are cut with a marker saying how much went.
    let rec = run_mode(
        "flood",
        &[("what", "checks"), ("n", "1"), ("len", "100000")],
        |_| {},
    )
    .await;
    let check = &rec.steps[0].checks[0];
    assert!(check.name.len() < 2048, "{}", check.name.len());
    assert!(
        check.name.ends_with("bytes cut)"),
        "{}",
        &check.name[1000..]
    );
    assert!(check.detail.as_ref().is_some_and(|d| d.len() < 9 * 1024));
}

/// Requests the allow-list refuses count toward `max_requests`, as every
/// other request does.
#[tokio::test]
async fn denied_requests_count_toward_the_request_limit() {
    let rec = run_mode("flood", &[("what", "requests"), ("n", "50")], |o| {
        let mut http = (*o.http).clone();
        http.max_requests = 10;
        o.http = std::sync::Arc::new(http);
    })
    .await;
    let kinds: Vec<HttpErrorKind> = rec
        .requests()
        .filter_map(|r| r.error.as_ref().map(|e| e.kind))
        .collect();
    assert_eq!(kinds.len(), 50);
    assert!(
        kinds[..10].iter().all(|k| *k == HttpErrorKind::Denied),
        "{kinds:?}"
    );
    assert!(
        kinds[10..].iter().all(|k| *k == HttpErrorKind::Limit),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn an_endless_loop_does_not_block_other_runs() {
    // On a single-threaded executor a spinning guest must still yield at
    // every epoch tick, or the second run would wait for the first to die.
    let spin = tokio::spawn(run_mode("spin", &[], |o| {
        o.timeout = Duration::from_secs(2)
    }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let quick = run_mode("sleep", &[("ms", "20")], |_| {}).await;
    assert_eq!(quick.status, Status::Pass);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let spun = spin.await.expect("join");
    assert_eq!(spun.status, Status::Timeout);
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_memory_cap() {
    let rec = run_mode("oom", &[], |o| o.memory_limit = 32 << 20).await;
    assert_eq!(rec.status, Status::Error, "{rec:#?}");
    assert_eq!(error_kind(&rec), ErrorKind::Memory);
    let msg = &rec.error.as_ref().expect("error").message;
    assert!(msg.contains("memory limit of 32.0 MiB"), "{msg}");
    assert_runtime_still_works().await;
}

#[tokio::test]
async fn a_host_outside_the_allow_list_is_denied_without_a_connection() {
    let server = ScriptedServer::ok(None).await;
    let url = format!("{}/secret-admin", server.url(false));
    // Allowed: a different port of the same address; not this one.
    let rec = run_mode("fetch", &[("url", &url)], |o| {
        let allow = waymark_http::AllowList::parse(&["127.0.0.1:1"]).expect("valid");
        o.http = std::sync::Arc::new(waymark_http::HttpConfig::new(allow, None).expect("tls"));
    })
    .await;
    assert_eq!(rec.status, Status::Error, "{rec:#?}");
    assert_eq!(error_kind(&rec), ErrorKind::Denied);
    let req = rec.requests().next().expect("the attempt is recorded");
    let err = req.error.as_ref().expect("request error");
    assert_eq!(err.kind, HttpErrorKind::Denied);
    assert!(err.message.contains(&server.authority()), "{}", err.message);
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        0,
        "no packet may reach it"
    );
    assert_runtime_still_works().await;
}

#[tokio::test]
async fn a_panic_is_reported_with_its_message() {
    let rec = run_mode("panic", &[("why", "no pairs today")], |_| {}).await;
    assert_eq!(rec.status, Status::Error, "{rec:#?}");
    assert_eq!(error_kind(&rec), ErrorKind::Trap);
    let msg = &rec.error.as_ref().expect("error").message;
    assert!(
        msg.contains("the journey panicked: the journey gave up: no pairs today"),
        "{msg}"
    );
    assert!(msg.contains("src/lib.rs"), "the panic location: {msg}");
    assert_runtime_still_works().await;
}

#[tokio::test]
async fn failed_checks_fail_the_run_but_not_the_journey() {
    let rec = run_mode("fail", &[], |_| {}).await;
    assert_eq!(rec.status, Status::Fail, "{rec:#?}");
    assert_eq!(error_kind(&rec), ErrorKind::Check);
    assert_eq!(
        rec.error.as_ref().expect("error").message,
        "1 check failed: this fails"
    );
    assert_eq!(rec.steps[0].status, Status::Fail);
}

#[tokio::test]
async fn a_journey_error_is_a_failure_with_its_message() {
    let rec = run_mode("no-such-mode", &[], |_| {}).await;
    assert_eq!(rec.status, Status::Fail);
    assert_eq!(error_kind(&rec), ErrorKind::Journey);
    assert_eq!(
        rec.error.as_ref().expect("error").message,
        "unknown mode no-such-mode"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_record() {
    let rec = run_mode("secret", &[], |o| {
        o.secrets.insert("token".into(), "hunter2 s3cr3t/x".into());
    })
    .await;
    let json = serde_json::to_string(&rec).expect("json");
    for form in [
        "hunter2 s3cr3t/x",
        "HUNTER2 S3CR3T/X",
        "hunter2%20s3cr3t%2Fx",
        "s3cr3t",
    ] {
        assert!(!json.contains(form), "{form} in {json}");
    }
    assert!(json.contains("shouted: ***"), "{json}");
    assert!(json.contains("?t=***"), "{json}");
    assert!(json.contains("first half ***"), "{json}");
    assert!(json.contains("token is ***"), "{json}");
    assert!(json.contains("step ***"), "{json}");
    assert!(json.contains("failed with ***"), "{json}");
    let pretty = waymark_monitor::pretty::render(&rec, false);
    assert!(!pretty.to_lowercase().contains("s3cr3t"), "{pretty}");
}

#[tokio::test]
async fn guest_stdout_and_stderr_become_log_lines() {
    let rec = run_mode("stdio", &[], |_| {}).await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    let logs: Vec<(Level, &str)> = rec
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert!(
        logs.contains(&(Level::Info, "hello from stdout")),
        "{logs:?}"
    );
    assert!(
        logs.contains(&(Level::Warn, "hello from stderr")),
        "{logs:?}"
    );
    assert!(logs.contains(&(Level::Info, "and a log line")), "{logs:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn sleep_yields_the_host_thread() {
    // Eight journeys sleeping 200 ms each on one thread: together they take
    // about 200 ms only if a sleeping guest holds no thread.
    let t = Instant::now();
    let runs: Vec<_> = (0..8)
        .map(|_| run_mode("sleep", &[("ms", "200")], |_| {}))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for r in runs {
        set.spawn(r);
    }
    while let Some(rec) = set.join_next().await {
        assert_eq!(rec.expect("join").status, Status::Pass);
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(
        took < Duration::from_millis(800),
        "sleeps ran one after another: {took:?}"
    );
}

#[tokio::test]
async fn the_compile_cache_is_used_on_the_second_load() {
    let dir = tempfile::tempdir().expect("dir");
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let first = waymark_engine::Runtime::new(Some(dir.path().into())).expect("runtime");
    assert!(!first.load("g", &wasm).expect("loads").from_cache);
    drop(first);
    let second = waymark_engine::Runtime::new(Some(dir.path().into())).expect("runtime");
    let j = second.load("g", &wasm).expect("loads");
    assert!(j.from_cache, "a second process must not recompile");
    let rec = second.run(&j, &opts(&[], None, &[("mode", "noop")])).await;
    assert_eq!(rec.status, Status::Pass);
    // A corrupt cache entry is recompiled, not trusted: the components and
    // Cranelift's compiled functions (`functions/xx/…`) alike.
    fn corrupt(dir: &std::path::Path) -> usize {
        let mut files = 0;
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files += corrupt(&path);
            } else {
                std::fs::write(&path, b"garbage").expect("write");
                files += 1;
            }
        }
        files
    }
    assert!(
        corrupt(dir.path()) > 1,
        "the function cache was not written"
    );
    assert!(dir.path().join("functions").is_dir());
    let third = waymark_engine::Runtime::new(Some(dir.path().into())).expect("runtime");
    let j = third.load("g", &wasm).expect("recompiles");
    assert!(!j.from_cache);
    let rec = third.run(&j, &opts(&[], None, &[("mode", "noop")])).await;
    assert_eq!(rec.status, Status::Pass);
}

/// The compiled components in `dir`.
fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

#[tokio::test]
async fn the_compile_cache_keeps_the_most_recently_used_under_its_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let a = std::fs::read(hostile_wasm()).expect("guest");
    // The same component with a custom section: other bytes, other entry.
    let with = |tail: u8| {
        let mut w = a.clone();
        w.extend_from_slice(&[0, 4, 3, b'w', b'm', tail]);
        w
    };
    let (b, c) = (with(b'k'), with(b'l'));
    let mut rt = waymark_engine::Runtime::new(Some(dir.path().into())).expect("runtime");
    for (name, wasm) in [("a", &a), ("b", &b), ("c", &c)] {
        assert!(!rt.load(name, wasm).expect("loads").from_cache, "{name}");
    }
    assert_eq!(cwasm_files(dir.path()).len(), 3);
    let one = std::fs::metadata(&cwasm_files(dir.path())[0])
        .expect("meta")
        .len();
    // Room for three: using `a` again makes `b` the least recently used,
    // and the next component compiled removes it and only it.
    rt.set_cache_limit(3 * one + one / 2);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(rt.load("a", &a).expect("loads").from_cache);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!rt.load("d", &with(b'n')).expect("loads").from_cache);
    assert_eq!(cwasm_files(dir.path()).len(), 3);
    assert!(rt.load("a", &a).expect("loads").from_cache, "a was used");
    assert!(rt.load("c", &c).expect("loads").from_cache, "c is newer");
    assert!(
        !rt.load("b", &b).expect("loads").from_cache,
        "b was the oldest"
    );
    // A limit below one component keeps the one just compiled, and it runs.
    rt.set_cache_limit(1);
    let j = rt.load("e", &with(b'o')).expect("loads");
    assert!(!j.from_cache);
    assert_eq!(cwasm_files(dir.path()).len(), 1);
    let rec = rt.run(&j, &opts(&[], None, &[("mode", "noop")])).await;
    assert_eq!(rec.status, Status::Pass);
}

#[tokio::test]
async fn bad_components_are_load_errors_not_panics() {
    let e = runtime()
        .load("junk", b"not wasm at all")
        .err()
        .expect("error");
    assert!(
        e.to_string().contains("is not a valid Wasm component"),
        "{e}"
    );
    // A core module (not a component) is refused too.
    let e = runtime()
        .load("core", b"\0asm\x01\0\0\0")
        .err()
        .expect("error");
    assert!(e.to_string().contains("journey 'core'"), "{e}");
}

#[tokio::test]
async fn a_run_stopped_while_waiting_shows_the_request_that_hung() {
    let server = ScriptedServer::start(Script {
        ttfb: Duration::from_secs(30),
        chunks: ok_body(),
        ..Script::default()
    })
    .await;
    let url = format!("{}/slow", server.url(false));
    let rec = run_mode("fetch", &[("url", &url)], |o| {
        o.timeout = Duration::from_millis(300);
        let allow = waymark_http::AllowList::parse(&[server.authority()]).expect("valid");
        o.http = std::sync::Arc::new(waymark_http::HttpConfig::new(allow, None).expect("tls"));
    })
    .await;
    assert_eq!(rec.status, Status::Timeout, "{rec:#?}");
    let req = rec.requests().next().expect("the hung request is recorded");
    assert_eq!(req.url, url);
    assert_eq!(req.error.as_ref().map(|e| e.kind.as_str()), Some("timeout"));
    assert!(
        req.timings.total >= Duration::from_millis(250),
        "{:?}",
        req.timings
    );
    assert_eq!(rec.steps[0].status, Status::Error, "the step was cut short");
}
