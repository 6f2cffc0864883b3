//! The example journeys, built from `journeys/`, against real servers on
//! loopback: the demo API over HTTP, and a TLS server with a test CA.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{Script, ScriptedServer, TestCa, ok_body, opts, runtime};
use waymark::demo::{DemoApi, JOURNEYS};
use waymark_record::{HttpErrorKind, RunRecord, Status};

fn journey(name: &str) -> &'static [u8] {
    JOURNEYS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, w)| *w)
        .expect("example journey")
}

async fn run_against_demo(name: &str) -> RunRecord {
    let api = DemoApi::start().await.expect("demo api");
    let mut o = opts(&[api.authority()], None, &[]);
    (o.vars, o.secrets) = api.vars();
    let j = runtime().load(name, journey(name)).expect("loads");
    runtime().run(&j, &o).await
}

fn shape(rec: &RunRecord) -> Vec<(String, usize, usize)> {
    rec.steps
        .iter()
        .map(|s| (s.name.clone(), s.checks.len(), s.requests.len()))
        .collect()
}

#[tokio::test]
async fn health_journey_passes_against_the_demo_api() {
    let rec = run_against_demo("health").await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    assert_eq!(shape(&rec), vec![("health".into(), 2, 1)]);
    let req = &rec.steps[0].requests[0];
    assert_eq!(req.status, Some(200));
    assert_eq!(req.http_version.as_deref(), Some("HTTP/1.1"));
    assert!(!req.reused_connection);
    assert!(req.timings.connect > Duration::ZERO, "{req:?}");
    assert_eq!(
        req.timings.tls,
        Duration::ZERO,
        "plain http has no tls phase"
    );
}

#[tokio::test]
async fn api_journey_logs_in_and_uses_the_token() {
    let rec = run_against_demo("api").await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    assert_eq!(
        shape(&rec),
        vec![
            ("log in".into(), 2, 1),
            ("profile".into(), 3, 1),
            ("rejects a bad token".into(), 1, 1),
        ]
    );
    // One connection, kept alive across the steps.
    let reused: Vec<bool> = rec.requests().map(|r| r.reused_connection).collect();
    assert_eq!(reused, vec![false, true, true]);
    for r in rec.requests().skip(1) {
        let t = r.timings;
        assert_eq!(
            (t.resolve, t.connect, t.tls),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO),
            "{r:?}"
        );
    }
    // The password is a secret: it reaches the journey, not the record.
    let json = serde_json::to_string(&rec).expect("json");
    assert!(!json.contains(waymark::demo::PASSWORD));
}

#[tokio::test]
async fn market_journey_lists_pairs_then_prices() {
    let rec = run_against_demo("market").await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    assert_eq!(
        shape(&rec),
        vec![("list pairs".into(), 2, 1), ("prices".into(), 9, 3)]
    );
    let urls: Vec<&str> = rec.requests().map(|r| r.url.as_str()).collect();
    assert!(urls[1].ends_with("/prices/BTC-USD"), "{urls:?}");
    assert!(
        urls[3].ends_with("/prices/SOL-USD"),
        "halted DOGE-USD is skipped: {urls:?}"
    );
    assert_eq!(rec.logs.len(), 3);
}

#[tokio::test]
async fn market_journey_fails_when_too_few_pairs_are_active() {
    let api = DemoApi::start().await.expect("demo api");
    let mut o = opts(&[api.authority()], None, &[]);
    (o.vars, o.secrets) = api.vars();
    o.vars.insert("pairs".into(), "5".into());
    let j = runtime().load("market", journey("market")).expect("loads");
    let rec = runtime().run(&j, &o).await;
    assert_eq!(rec.status, Status::Fail, "{rec:#?}");
    let failed: Vec<&str> = rec.failed_checks().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, vec!["has active pairs"]);
    assert_eq!(rec.steps[0].status, Status::Fail);
    assert_eq!(rec.steps[1].status, Status::Pass);
}

#[tokio::test]
async fn health_journey_over_https_with_a_test_ca() {
    let ca = TestCa::new();
    let server = ScriptedServer::ok(Some(ca.server.clone())).await;
    let base = format!("https://localhost:{}", server.addr.port());
    let allow = [format!("localhost:{}", server.addr.port())];
    let j = runtime().load("health", journey("health")).expect("loads");

    let rec = runtime()
        .run(&j, &opts(&allow, Some(&ca.ca_file), &[("base_url", &base)]))
        .await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    let req = &rec.steps[0].requests[0];
    let tls = req.tls.as_ref().expect("tls facts");
    assert!(tls.version.starts_with("TLSv1."), "{tls:?}");
    assert!(!tls.cipher.is_empty());
    assert_eq!(
        tls.cert_not_after,
        humantime::parse_rfc3339("2031-01-01T00:00:00Z").ok()
    );
    assert!(req.timings.tls > Duration::ZERO);

    // Without the CA the certificate is refused, in plain words.
    let rec = runtime()
        .run(&j, &opts(&allow, None, &[("base_url", &base)]))
        .await;
    assert_eq!(rec.status, Status::Fail, "{rec:#?}");
    let err = rec.steps[0].requests[0].error.as_ref().expect("tls error");
    assert_eq!(err.kind, HttpErrorKind::Tls);
    assert!(err.message.contains("unknown issuer"), "{}", err.message);
}

#[tokio::test]
async fn https_keep_alive_skips_the_handshake() {
    let ca = TestCa::new();
    let server = ScriptedServer::start(Script {
        chunks: ok_body(),
        tls: Some(ca.server.clone()),
        tls_delay: Duration::from_millis(30),
        ..Script::default()
    })
    .await;
    let wasm = std::fs::read(support::hostile_wasm()).expect("guest");
    let j = runtime().load("loop", &wasm).expect("loads");
    let url = format!("https://localhost:{}/x", server.addr.port());
    let allow = [format!("localhost:{}", server.addr.port())];
    let rec = runtime()
        .run(
            &j,
            &opts(
                &allow,
                Some(&ca.ca_file),
                &[("mode", "loop"), ("url", &url), ("n", "5")],
            ),
        )
        .await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    let reqs: Vec<_> = rec.requests().collect();
    assert_eq!(reqs.len(), 5);
    assert!(
        reqs[0].timings.tls >= Duration::from_millis(30),
        "{:?}",
        reqs[0].timings
    );
    for r in &reqs[1..] {
        assert!(r.reused_connection);
        assert_eq!(r.timings.tls, Duration::ZERO);
        assert!(
            r.tls.is_some(),
            "a reused TLS connection still reports its session"
        );
    }
    assert_eq!(
        server.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
