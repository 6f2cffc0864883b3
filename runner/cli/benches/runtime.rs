//! Issue-2 figures, printed: run overhead, whole-process `waymark run`
//! wall time, and our phases against curl's `-w` timers on the same URL.
//!
//! `cargo bench -p waymark --bench runtime` (curl must be installed for the
//! last part; it is skipped with a note otherwise). Every loop is bounded.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Script, ScriptedServer, TestCa, hostile_wasm, opts, percentile, runtime, sorted};
use waymark_record::Status;

fn main() {
    // WAYMARK_BENCH=keepalive runs only the last part (for profiling).
    let only_keepalive = std::env::var("WAYMARK_BENCH").as_deref() == Ok("keepalive");
    if std::env::var("WAYMARK_BENCH").as_deref() == Ok("wire") {
        wire_vs_curl();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        if only_keepalive {
            return;
        }
        run_overhead().await;
        if std::env::var("WAYMARK_BENCH").as_deref() == Ok("overhead") {
            std::process::exit(0);
        }
        process_wall().await;
        phases_vs_curl(false).await;
        phases_vs_curl(true).await;
    });
    // As `waymark run` does: one thread drives the journey and its connection.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(keepalive_vs_oha());
}

/// Instantiate + run + tear down a journey that makes no request.
async fn run_overhead() {
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("noop", &wasm).expect("loads");
    let o = opts(&[], None, &[("mode", "noop")]);
    for _ in 0..200 {
        runtime().run(&j, &o).await;
    }
    let n = 3000;
    let mut samples = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        let t = Instant::now();
        let rec = runtime().run(&j, &o).await;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(rec.status, Status::Pass);
        if Instant::now() > deadline {
            break;
        }
    }
    let s = sorted(samples);
    println!(
        "run overhead, no-request journey, warm: median {:.1} µs, p90 {:.1} µs, p99 {:.1} µs over {} runs (target: median < 100 µs)",
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        percentile(&s, 0.99),
        s.len()
    );
}

/// The whole `waymark run` process, cache warm, one request to loopback.
async fn process_wall() {
    let server = ScriptedServer::start(Script {
        chunks: support::ok_body(),
        ..Script::default()
    })
    .await;
    let cache = tempfile::tempdir().expect("dir");
    let url = format!("url={}/", server.url(false));
    let guest = hostile_wasm().display().to_string();
    let args = [
        "run",
        &guest,
        "--var",
        "mode=fetch",
        "--var",
        &url,
        "--allow-host",
        &server.authority(),
        "--format",
        "json",
    ];
    let exe = env!("CARGO_BIN_EXE_waymark");
    let once = || {
        let t = Instant::now();
        let out = Command::new(exe)
            .args(args)
            .env("WAYMARK_CACHE_DIR", cache.path())
            .output()
            .expect("waymark runs");
        assert!(out.status.success(), "{out:?}");
        t.elapsed().as_secs_f64() * 1e3
    };
    let first = tokio::task::block_in_place(once);
    let samples: Vec<f64> = (0..20).map(|_| tokio::task::block_in_place(once)).collect();
    let s = sorted(samples);
    println!(
        "waymark run, one loopback request: first (compiling) {first:.1} ms; cached median {:.1} ms, max {:.1} ms over 20 processes (target: < 50 ms)",
        percentile(&s, 0.5),
        s[s.len() - 1]
    );
}

/// Same URL, 20 fresh connections each: curl's -w timers against ours.
async fn phases_vs_curl(https: bool) {
    if Command::new("curl").arg("--version").output().is_err() {
        println!("phases vs curl: skipped, curl is not installed");
        return;
    }
    let ca = TestCa::new();
    let chunk = |ms: u64, s: &str| (Duration::from_millis(ms), s.as_bytes().to_vec());
    let server = ScriptedServer::start(Script {
        ttfb: Duration::from_millis(20),
        chunks: vec![chunk(0, "{\"a\":"), chunk(10, "1,"), chunk(10, "\"b\":2}")],
        tls: https.then(|| ca.server.clone()),
        tls_delay: Duration::from_millis(5),
        ..Script::default()
    })
    .await;
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://localhost:{}/t", server.addr.port());
    let names = waymark_record::PHASE_NAMES;

    let mut curl: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..20 {
        let phases = tokio::task::block_in_place(|| {
            let mut curl = Command::new("curl");
            curl.arg("--cacert").arg(&ca.ca_file);
            support::wire::curl_phases(curl, &url)
        });
        for (i, p) in phases.iter().enumerate() {
            curl[i].push(*p);
        }
    }

    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("phases", &wasm).expect("loads");
    let o = opts(
        &[format!("localhost:{}", server.addr.port())],
        Some(&ca.ca_file),
        &[("mode", "fetch"), ("url", &url)],
    );
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for _ in 0..20 {
        let rec = runtime().run(&j, &o).await;
        let t = rec.requests().next().expect("one request").timings;
        for (i, p) in [
            t.resolve,
            t.connect,
            t.tls,
            t.processing,
            t.transfer,
            t.total,
        ]
        .iter()
        .enumerate()
        {
            ours[i].push(waymark_record::serde_time::as_millis(*p));
        }
    }
    println!("phases vs curl -w, {scheme}://localhost, 20 fresh connections each, medians:");
    println!(
        "  {:<11} {:>9} {:>9} {:>8}  within 1 ms or 5%",
        "phase", "curl ms", "ours ms", "diff"
    );
    for (i, name) in names.iter().enumerate() {
        let c = percentile(&sorted(curl[i].clone()), 0.5);
        let w = percentile(&sorted(ours[i].clone()), 0.5);
        let diff = w - c;
        let ok = diff.abs() <= 1.0f64.max(0.05 * c);
        println!(
            "  {name:<11} {c:>9.3} {w:>9.3} {diff:>+8.3}  {}",
            if ok { "yes" } else { "NO" }
        );
    }
}

/// 10,000 GETs over one keep-alive connection from a journey, against
/// `oha -n 10000 -c 1` on the same loopback server.
async fn keepalive_vs_oha() {
    const N: u32 = 10_000;
    // The server gets a thread and runtime of its own, so both clients reach
    // it the same way: over loopback, from another thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        rt.block_on(async move {
            let server = support::FeatureServer::start(None).await;
            let _ = tx.send(server.addr);
            // Bounded: the benchmark is over long before this.
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(server);
        });
    });
    let addr = rx.recv().expect("server address");
    let server_url = format!("http://{addr}");
    let url = format!("{server_url}/version");
    let oha = || {
        let oha_url = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("oha")
                .args([
                    "-n",
                    &N.to_string(),
                    "-c",
                    "1",
                    "--no-tui",
                    "--output-format",
                    "json",
                    &oha_url,
                ])
                .output()
                .ok()?;
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()?["summary"]["requestsPerSec"]
                .as_f64()
        })
    };
    // oha before and after ours, so drift on a shared machine shows.
    let oha_before = oha().await.expect("join");
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("keepalive", &wasm).expect("loads");
    let mut o = opts(
        &[addr.to_string()],
        None,
        &[("mode", "loop"), ("url", &url), ("n", &N.to_string())],
    );
    o.timeout = Duration::from_secs(120);
    let mut http = (*o.http).clone();
    http.max_requests = N;
    o.http = std::sync::Arc::new(http);
    let rec = runtime().run(&j, &o).await;
    assert_eq!(rec.status, Status::Pass, "{:?}", rec.error);
    let reqs: Vec<_> = rec.requests().collect();
    assert_eq!(reqs.len(), N as usize);
    assert!(reqs[1..].iter().all(|r| r.reused_connection));
    let ms = waymark_record::serde_time::as_millis;
    let first = ms(reqs[0].start);
    let last = ms(reqs[reqs.len() - 1].start + reqs[reqs.len() - 1].timings.total);
    let ours = f64::from(N) / ((last - first) / 1000.0);
    let in_flight: f64 = reqs.iter().map(|r| ms(r.timings.total)).sum::<f64>() / f64::from(N);
    println!(
        "  per request: {:.1} µs in flight (start to last byte), {:.1} µs between requests",
        in_flight * 1000.0,
        (last - first) / f64::from(N) * 1000.0 - in_flight * 1000.0
    );
    // The same loop on the host client alone, without the guest: how much
    // of the gap is the client and how much the Wasm boundary.
    let mut client = waymark_http::Client::new(o.http.clone());
    let request = waymark_http::Request {
        method: "GET".into(),
        url: url.clone(),
        headers: Vec::new(),
        body: None,
        timeout: None,
        trace: true,
    };
    let t = Instant::now();
    for _ in 0..N {
        let ex = client.send(&request).await;
        assert!(ex.result.is_ok(), "{:?}", ex.result);
    }
    let host_only = f64::from(N) / t.elapsed().as_secs_f64();
    println!("  the host client alone: {host_only:.0} req/s");
    let oha_after = oha().await.expect("join");
    match oha_before.zip(oha_after) {
        Some((before, after)) => println!(
            "keep-alive loop, {N} GETs on one connection: journey {ours:.0} req/s, oha -c 1 {before:.0} (before) / {after:.0} (after) req/s, ratio {:.2} to their mean (target >= 0.8)",
            ours / ((before + after) / 2.0)
        ),
        None => println!(
            "keep-alive loop, {N} GETs on one connection: journey {ours:.0} req/s (oha not installed: cargo install oha)"
        ),
    }
}

/// Each phase against the packets on the wire (see `tests/wire.rs`), for
/// Waymark in a fresh and in a warm process and for curl, 20 runs per case.
fn wire_vs_curl() {
    use support::wire::{Blackbox, Lab, cases, curl_run, differences, measure, table, waymark_run};
    #[derive(Clone, Copy)]
    enum Tool {
        Waymark(bool),
        Curl,
        Blackbox,
    }
    const TARGET_MS: f64 = 0.25;
    let lab = Lab::start().unwrap_or_else(|e| panic!("the wire lab cannot start: {e}"));
    let wasm = hostile_wasm();
    let cache = tempfile::tempdir().expect("cache");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_waymark"));
    let names: Vec<String> = cases(&lab).into_iter().map(|c| c.name).collect();
    waymark_run(&lab, bin, wasm, cache.path(), None, &cases(&lab)[0].url);
    println!(
        "phases − the same span on the wire, ms, median / p90 of 20 runs per case \
         (DNS answering 30 ms late, the proxy delaying the return path 25 ms; target ±{TARGET_MS} ms):"
    );
    let blackbox = Blackbox::start(&lab);
    if blackbox.is_none() {
        println!(
            "blackbox_exporter: skipped, Debian's prometheus-blackbox-exporter is not installed"
        );
    }
    let tools = [
        ("waymark, fresh process", Tool::Waymark(false)),
        ("waymark, warm process", Tool::Waymark(true)),
        ("curl 7.88", Tool::Curl),
        ("blackbox_exporter 0.23", Tool::Blackbox),
    ];
    for (tool, kind) in tools {
        let runs = match (kind, &blackbox) {
            (Tool::Blackbox, None) => continue,
            (Tool::Blackbox, Some(bb)) => {
                measure(&lab, 20, |lab, case| bb.probe(lab, &case.url, case.h2))
            }
            (Tool::Curl, _) => measure(&lab, 20, |lab, case| curl_run(lab, &case.url, case.h2)),
            (Tool::Waymark(warm), _) => measure(&lab, 20, |lab, case| {
                let before = warm.then_some(case.other.as_str());
                waymark_run(lab, bin, wasm, cache.path(), before, &case.url)
            }),
        };
        let diffs = differences(&lab.packets(), &runs).unwrap_or_else(|e| panic!("{e}"));
        let (t, within, all) = table(&diffs, &names, TARGET_MS);
        println!("{tool}: {within} of {all} medians within ±{TARGET_MS} ms\n{t}");
    }
}
