//! The sandbox boundary of the HTTP interface: allow-list on names and on
//! resolved addresses, redirects, DNS rebinding, and per-run limits. Every
//! rule has a test against a real loopback server.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use support::{Script, ScriptedServer, hostile_wasm, ok_body, runtime};
use waymark_engine::RunOptions;
use waymark_http::{AllowList, HttpConfig, Overrides, SystemResolver};
use waymark_record::{ErrorKind, HttpErrorKind, RunRecord, Status};

fn config(allow: &[String], resolve: &[(&str, &str)]) -> HttpConfig {
    let mut c = HttpConfig::new(AllowList::parse(allow).expect("valid"), None).expect("tls");
    let map: HashMap<String, Vec<IpAddr>> = resolve
        .iter()
        .map(|(h, ip)| (h.to_string(), vec![ip.parse().expect("ip")]))
        .collect();
    c.resolver = Arc::new(Overrides::new(map, Arc::new(SystemResolver)));
    c
}

async fn run(http: HttpConfig, vars: &[(&str, &str)]) -> RunRecord {
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("policy", &wasm).expect("loads");
    let mut o = RunOptions::new(Arc::new(http));
    o.vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    runtime().run(&j, &o).await
}

fn request_errors(rec: &RunRecord) -> Vec<(String, String)> {
    rec.requests()
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| (e.kind.as_str().to_string(), e.message.clone()))
        })
        .collect()
}

async fn ok_server() -> ScriptedServer {
    ScriptedServer::ok(None).await
}

#[tokio::test]
async fn a_name_rebound_to_loopback_is_denied_before_connecting() {
    let server = ok_server().await;
    let port = server.addr.port().to_string();
    let url = format!("http://rebind.example.test:{port}/");
    // Allowed by name, three ways; the name resolves to 127.0.0.1.
    for allow in ["rebind.example.test", "*.example.test", "*"] {
        let http = config(
            &[allow.to_string()],
            &[("rebind.example.test", "127.0.0.1")],
        );
        let rec = run(http, &[("mode", "fetch"), ("url", &url)]).await;
        assert_eq!(rec.status, Status::Error, "{allow}: {rec:#?}");
        assert_eq!(
            rec.error.as_ref().map(|e| e.kind.clone()),
            Some(ErrorKind::Denied)
        );
        let errs = request_errors(&rec);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "denied");
        assert!(
            errs[0]
                .1
                .contains("'rebind.example.test' resolved to 127.0.0.1, a loopback address"),
            "{}",
            errs[0].1
        );
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);

    // Naming the address itself allows it.
    let http = config(
        &["rebind.example.test".into(), format!("127.0.0.1:{port}")],
        &[("rebind.example.test", "127.0.0.1")],
    );
    let rec = run(http, &[("mode", "fetch"), ("url", &url)]).await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
}

#[tokio::test]
async fn loopback_needs_a_pattern_naming_it_even_under_a_wildcard() {
    let server = ok_server().await;
    let url = format!("{}/", server.url(false));
    let rec = run(
        config(&["*".into()], &[]),
        &[("mode", "fetch"), ("url", &url)],
    )
    .await;
    assert_eq!(rec.status, Status::Error, "{rec:#?}");
    let errs = request_errors(&rec);
    assert!(errs[0].1.contains("is a loopback address"), "{errs:?}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);

    let rec = run(
        config(&["127.0.0.0/8".into()], &[]),
        &[("mode", "fetch"), ("url", &url)],
    )
    .await;
    assert_eq!(
        rec.status,
        Status::Pass,
        "a CIDR pattern names it: {rec:#?}"
    );
}

fn to_metadata(path: &str) -> (u16, Vec<(String, String)>) {
    match path {
        "/start" => (
            302,
            vec![(
                "location".into(),
                "http://169.254.169.254/latest/meta-data/".into(),
            )],
        ),
        _ => (200, vec![]),
    }
}

#[tokio::test]
async fn a_redirect_to_the_metadata_address_is_denied() {
    let server = ScriptedServer::start(Script {
        chunks: ok_body(),
        respond: Some(to_metadata),
        ..Script::default()
    })
    .await;
    let url = format!("{}/start", server.url(false));
    // Even `*` does not reach a link-local address.
    let rec = run(
        config(&[server.authority(), "*".into()], &[]),
        &[("mode", "fetch"), ("url", &url)],
    )
    .await;
    assert_eq!(rec.status, Status::Error, "{rec:#?}");
    let reqs: Vec<_> = rec.requests().collect();
    assert_eq!(reqs.len(), 2, "each hop is its own entry");
    assert_eq!(reqs[0].status, Some(302));
    assert_eq!(reqs[1].url, "http://169.254.169.254/latest/meta-data/");
    let err = reqs[1].error.as_ref().expect("denied");
    assert_eq!(err.kind, HttpErrorKind::Denied);
    assert!(
        err.message
            .contains("169.254.169.254:80 is a link-local address"),
        "{}",
        err.message
    );
}

fn hops(path: &str) -> (u16, Vec<(String, String)>) {
    match path {
        "/a" => (301, vec![("location".into(), "/b".into())]),
        "/b" => (307, vec![("location".into(), "c".into())]),
        "/loop" => (302, vec![("location".into(), "/loop".into())]),
        "/bad-location" => (302, vec![("location".into(), "http://[::1".into())]),
        _ => (200, vec![]),
    }
}

#[tokio::test]
async fn redirects_are_followed_hop_by_hop_and_bounded() {
    let server = ScriptedServer::start(Script {
        chunks: ok_body(),
        respond: Some(hops),
        ..Script::default()
    })
    .await;
    let allow = [server.authority()];
    let url = format!("{}/a", server.url(false));
    let rec = run(config(&allow, &[]), &[("mode", "fetch"), ("url", &url)]).await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    let chain: Vec<(String, Option<u16>)> = rec
        .requests()
        .map(|r| (r.url.rsplit('/').next().unwrap_or("").to_string(), r.status))
        .collect();
    assert_eq!(
        chain,
        [
            ("a".into(), Some(301)),
            ("b".into(), Some(307)),
            ("c".into(), Some(200))
        ]
    );

    let url = format!("{}/loop", server.url(false));
    let rec = run(config(&allow, &[]), &[("mode", "fetch"), ("url", &url)]).await;
    assert_eq!(rec.status, Status::Fail, "{rec:#?}");
    assert_eq!(
        rec.requests().count(),
        11,
        "the first request and 10 redirects"
    );
    let msg = &rec.error.as_ref().expect("error").message;
    assert!(msg.contains("redirects: more than 10"), "{msg}");
    // The error is on the hop that went one too far, and the run's kind
    // says a request failed.
    assert_eq!(rec.error.as_ref().map(|e| &e.kind), Some(&ErrorKind::Http));
    let last = rec.requests().last().expect("a hop");
    let err = last.error.as_ref().expect("the last hop carries the error");
    assert_eq!(err.kind, HttpErrorKind::Limit);
    assert!(err.message.contains("more than 10"), "{}", err.message);
    assert!(rec.requests().take(10).all(|r| r.error.is_none()));

    // A Location that is no URL: the error is on the hop that sent it.
    let url = format!("{}/bad-location", server.url(false));
    let rec = run(config(&allow, &[]), &[("mode", "fetch"), ("url", &url)]).await;
    assert_eq!(rec.error.as_ref().map(|e| &e.kind), Some(&ErrorKind::Http));
    let reqs: Vec<_> = rec.requests().collect();
    assert_eq!(reqs.len(), 1, "{rec:#?}");
    assert_eq!(reqs[0].status, Some(302));
    let err = reqs[0].error.as_ref().expect("on the hop");
    assert_eq!(err.kind, HttpErrorKind::Protocol);
    assert!(err.message.contains("invalid Location"), "{}", err.message);
}

fn big_header(_: &str) -> (u16, Vec<(String, String)>) {
    (200, vec![("x-padding".into(), "a".repeat(100 * 1024))])
}

#[tokio::test]
async fn each_limit_is_reported_by_name() {
    let server = ok_server().await;
    let allow = [server.authority()];
    let url = format!("{}/", server.url(false));

    let mut http = config(&allow, &[]);
    http.max_requests = 3;
    let rec = run(http, &[("mode", "loop"), ("url", &url), ("n", "5")]).await;
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    let errs = request_errors(&rec);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "limit");
    assert!(errs[0].1.contains("request count: at most 3"), "{errs:?}");

    let mut http = config(&allow, &[]);
    http.max_total_bytes = 40;
    let rec = run(http, &[("mode", "loop"), ("url", &url), ("n", "5")]).await;
    let errs = request_errors(&rec);
    assert!(errs[0].1.contains("total bytes: at most 40"), "{errs:?}");
    assert_eq!(
        rec.requests().count(),
        3,
        "15-byte bodies: the third crosses 40"
    );

    let mut http = config(&allow, &[]);
    http.max_body = 5;
    let rec = run(http, &[("mode", "fetch"), ("url", &url)]).await;
    let errs = request_errors(&rec);
    assert_eq!(errs[0].0, "too-large", "{errs:?}");

    let padded = ScriptedServer::start(Script {
        chunks: ok_body(),
        respond: Some(big_header),
        ..Script::default()
    })
    .await;
    let url = format!("{}/", padded.url(false));
    let rec = run(
        config(&[padded.authority()], &[]),
        &[("mode", "fetch"), ("url", &url)],
    )
    .await;
    let errs = request_errors(&rec);
    assert!(!errs.is_empty(), "{rec:#?}");
    assert_eq!(errs[0].0, "limit", "{errs:?}");
    assert!(errs[0].1.contains("header size"), "{errs:?}");
}
