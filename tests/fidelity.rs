//! What real journeys against real services need: compression, cookies,
//! form bodies, tracing switches, and HTTP/2 by ALPN with HTTP/1.1 fallback.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;
use support::{FeatureServer, TestCa, hostile_wasm, opts, runtime};

use waymark_record::{HttpErrorKind, RunRecord, Status};

async fn run(url: &str, allow: &str, ca: Option<&TestCa>, mode: &str) -> RunRecord {
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("fidelity", &wasm).expect("loads");
    let o = opts(
        &[allow.to_string()],
        ca.map(|c| c.ca_file.as_path()),
        &[("mode", mode), ("url", url), ("secure_context", "yes")],
    );
    runtime().run(&j, &o).await
}

fn failed(rec: &RunRecord) -> Vec<String> {
    rec.failed_checks()
        .map(|c| format!("{}: {:?}", c.name, c.detail))
        .collect()
}

#[tokio::test]
async fn compression_cookies_forms_and_tracing() {
    let server = FeatureServer::start(None).await;
    let rec = run(
        &server.url(false),
        &server.addr.to_string(),
        None,
        "fidelity",
    )
    .await;
    assert_eq!(rec.status, Status::Pass, "{:?} {rec:#?}", failed(&rec));
    // The record keeps both sizes of a compressed body.
    for r in rec.steps[0].requests.iter() {
        assert!(r.bytes_received < r.bytes_decoded, "{r:?}");
        assert!(r.bytes_decoded > 20_000, "{r:?}");
    }
    // Tracing: requests that sent traceparent carry the run's trace id; the
    // one that turned it off carries none.
    let ids: Vec<Option<&str>> = rec.steps[2]
        .requests
        .iter()
        .map(|r| r.trace_id.as_deref())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0].is_some() && ids[0] == ids[1], "{ids:?}");
    assert_eq!(ids[2], None);
    let spans: Vec<Option<&str>> = rec.steps[2]
        .requests
        .iter()
        .map(|r| r.span_id.as_deref())
        .collect();
    assert!(
        spans[0].is_some() && spans[1].is_some() && spans[0] != spans[1],
        "{spans:?}"
    );
    assert_eq!(spans[2], None);
}

#[tokio::test]
async fn secure_cookies_stay_off_plain_http_to_a_named_host() {
    use std::sync::Arc;
    use waymark_http::{AllowList, HttpConfig, Overrides, SystemResolver};
    let server = FeatureServer::start(None).await;
    let port = server.addr.port();
    let allow = AllowList::parse(&["shop.example.test".to_string(), format!("127.0.0.1:{port}")])
        .expect("valid");
    let mut http = HttpConfig::new(allow, None).expect("tls");
    let map = [(
        "shop.example.test".to_string(),
        vec!["127.0.0.1".parse().expect("ip")],
    )];
    http.resolver = Arc::new(Overrides::new(
        map.into_iter().collect(),
        Arc::new(SystemResolver),
    ));
    let mut o = waymark_engine::RunOptions::new(Arc::new(http));
    for (k, v) in [
        ("mode", "fidelity".to_string()),
        ("url", format!("http://shop.example.test:{port}")),
        ("secure_context", "no".to_string()),
    ] {
        o.vars.insert(k.into(), v);
    }
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("fidelity", &wasm).expect("loads");
    let rec = runtime().run(&j, &o).await;
    assert_eq!(rec.status, Status::Pass, "{:?}", failed(&rec));
}

#[tokio::test]
async fn http2_by_alpn_and_http1_fallback() {
    let ca = TestCa::new();
    for (alpn, want) in [
        (vec![b"h2".to_vec(), b"http/1.1".to_vec()], "HTTP/2"),
        (vec![b"http/1.1".to_vec()], "HTTP/1.1"),
        (vec![], "HTTP/1.1"),
    ] {
        let server = FeatureServer::start(Some((ca.server.clone(), alpn))).await;
        let port = server.addr.port();
        let url = format!("https://localhost:{port}/version");
        let wasm = std::fs::read(hostile_wasm()).expect("guest");
        let j = runtime().load("h2", &wasm).expect("loads");
        let o = opts(
            &[format!("localhost:{port}")],
            Some(&ca.ca_file),
            &[("mode", "loop"), ("url", &url), ("n", "3")],
        );
        let rec = runtime().run(&j, &o).await;
        assert_eq!(rec.status, Status::Pass, "{rec:#?}");
        let reqs: Vec<_> = rec.requests().collect();
        assert_eq!(reqs.len(), 3);
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(r.http_version.as_deref(), Some(want), "{r:?}");
            assert_eq!(r.reused_connection, i > 0, "one connection: {r:?}");
            assert!(r.timings.processing > Duration::ZERO);
        }
        // The whole fidelity journey works over HTTP/2 as well.
        if want == "HTTP/2" {
            let rec = run(
                &format!("https://localhost:{port}"),
                &format!("localhost:{port}"),
                Some(&ca),
                "fidelity",
            )
            .await;
            assert_eq!(rec.status, Status::Pass, "{:?}", failed(&rec));
            assert!(
                rec.requests()
                    .all(|r| r.http_version.as_deref() == Some("HTTP/2"))
            );
        }
    }
}

async fn tls_run(server: &FeatureServer, tls: waymark_http::TlsOptions) -> RunRecord {
    use std::sync::Arc;
    let port = server.addr.port();
    let allow = waymark_http::AllowList::parse(&[format!("localhost:{port}")]).expect("valid");
    let http = waymark_http::HttpConfig::with_tls(allow, &tls).expect("tls config");
    let mut o = waymark_engine::RunOptions::new(Arc::new(http));
    o.vars.insert("mode".into(), "fetch".into());
    o.vars
        .insert("url".into(), format!("https://localhost:{port}/version"));
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("tls", &wasm).expect("loads");
    runtime().run(&j, &o).await
}

#[tokio::test]
async fn client_certificates_for_mtls() {
    let ca = TestCa::new();
    let server = FeatureServer::start(Some((ca.server_mtls.clone(), vec![]))).await;
    let with_ca = waymark_http::TlsOptions {
        ca_file: Some(ca.ca_file.clone()),
        ..Default::default()
    };
    let rec = tls_run(&server, with_ca.clone()).await;
    assert_ne!(rec.status, Status::Pass, "no client certificate: refused");
    let err = rec
        .requests()
        .next()
        .and_then(|r| r.error.clone())
        .expect("error");
    assert_eq!(err.kind, HttpErrorKind::Tls, "{err:?}");
    assert!(
        err.message.contains("requires a client certificate"),
        "{err:?}"
    );

    let rec = tls_run(
        &server,
        waymark_http::TlsOptions {
            client_cert: Some((ca.client_cert.clone(), ca.client_key.clone())),
            ..with_ca
        },
    )
    .await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
}

#[tokio::test]
async fn insecure_accepts_an_unknown_issuer_and_says_so_loudly() {
    let ca = TestCa::new();
    let server = FeatureServer::start(Some((ca.server.clone(), vec![]))).await;
    let rec = tls_run(&server, waymark_http::TlsOptions::default()).await;
    assert_ne!(
        rec.status,
        Status::Pass,
        "unknown issuer without --insecure"
    );

    let rec = tls_run(
        &server,
        waymark_http::TlsOptions {
            insecure: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    let tls = rec
        .requests()
        .next()
        .and_then(|r| r.tls.clone())
        .expect("tls facts");
    assert!(!tls.verified);
    assert!(
        rec.logs.iter().any(|l| l.message.starts_with("INSECURE")),
        "{:?}",
        rec.logs
    );
    let text = waymark_monitor::pretty::render(&rec, false);
    assert!(text.contains("⚠ INSECURE"), "{text}");
}
