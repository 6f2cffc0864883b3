//! Failure semantics: each way a request can go wrong reaches the journey as
//! its own `http-error` case with a clear message, against a real
//! misbehaving loopback server; the journey decides what to do with it.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use support::{Fault, Script, ScriptedServer, TestCa, hostile_wasm, ok_body, runtime};
use waymark_engine::RunOptions;
use waymark_http::{AllowList, HttpConfig, Overrides, SystemResolver};
use waymark_record::{Phase, PhaseTimings, Status};

/// What was recorded of a failed request.
struct Failed {
    kind: String,
    message: String,
    /// The phase it failed in.
    phase: Option<Phase>,
    timings: PhaseTimings,
}

/// Run the classifying guest on `url`; return what was recorded of its request.
async fn classify(
    url: &str,
    allow: &[String],
    resolve: &[(&str, &[&str])],
    ca: Option<&TestCa>,
    timeout_ms: Option<&str>,
) -> Failed {
    let mut http = HttpConfig::new(
        AllowList::parse(allow).expect("valid"),
        ca.map(|c| c.ca_file.as_path()),
    )
    .expect("tls");
    let map: HashMap<String, Vec<IpAddr>> = resolve
        .iter()
        .map(|(h, ips)| {
            let ips = ips.iter().map(|ip| ip.parse().expect("ip")).collect();
            (h.to_string(), ips)
        })
        .collect();
    http.resolver = Arc::new(Overrides::new(map, Arc::new(SystemResolver)));
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("failures", &wasm).expect("loads");
    let mut o = RunOptions::new(Arc::new(http));
    o.vars.insert("mode".into(), "classify".into());
    o.vars.insert("url".into(), url.into());
    if let Some(ms) = timeout_ms {
        o.vars.insert("timeout_ms".into(), ms.into());
    }
    let rec = runtime().run(&j, &o).await;
    assert_eq!(rec.status, Status::Pass, "the journey handled it: {rec:#?}");
    let seen = rec.steps[0].checks[0].name.clone();
    let req = rec.requests().last().expect("a request");
    let err = req.error.as_ref().expect("a request error");
    assert_eq!(
        seen,
        format!("error {}", err.kind),
        "the journey sees the recorded case"
    );
    Failed {
        kind: err.kind.as_str().to_string(),
        message: err.message.clone(),
        phase: err.phase,
        timings: req.timings,
    }
}

async fn faulty(fault: Fault) -> ScriptedServer {
    ScriptedServer::start(Script {
        chunks: ok_body(),
        fault,
        ..Script::default()
    })
    .await
}

#[tokio::test]
async fn every_failure_has_its_own_case_and_words() {
    let mut kinds = Vec::new();
    let mut check = |f: Failed, want_kind: &str, want_words: &str, want_phase: Phase| {
        let (kind, msg, t) = (f.kind, f.message, f.timings);
        assert_eq!(kind, want_kind, "{msg}");
        assert!(msg.contains(want_words), "{want_kind}: {msg}");
        // The phases it got through are kept, the one it failed in timed
        // to the failure, and those it never reached are zero.
        assert_eq!(
            f.phase,
            Some(want_phase),
            "{want_kind}: the phase it failed in"
        );
        let reached: std::time::Duration = t.reached(want_phase).map(|(_, d)| d).sum();
        assert!(reached <= t.total, "{want_kind}: {t:?}");
        assert!(
            t.total - reached < std::time::Duration::from_millis(5),
            "{want_kind}: the phases reached make up the total: {t:?}"
        );
        for p in Phase::ALL.into_iter().filter(|p| *p > want_phase) {
            assert!(
                t.get(p).is_zero(),
                "{want_kind}: {p} was never reached: {t:?}"
            );
        }
        if want_kind == "timeout" {
            assert!(
                t.processing >= std::time::Duration::from_millis(290),
                "{t:?}"
            );
        }
        kinds.push(kind);
    };

    // DNS failure: a name the resolver has no address for.
    check(
        classify(
            "http://nx.example.test/",
            &["nx.example.test".into()],
            &[("nx.example.test", &[])],
            None,
            None,
        )
        .await,
        "resolve",
        "'nx.example.test' has no address",
        Phase::Resolve,
    );

    // Denied after resolving: an allowed name whose address is not (the
    // time spent resolving it is kept).
    check(
        classify(
            "http://rebind.example.test/",
            &["rebind.example.test".into()],
            &[("rebind.example.test", &["169.254.169.254"])],
            None,
            None,
        )
        .await,
        "denied",
        "169.254.169.254",
        Phase::Resolve,
    );

    // Connection refused: a port nobody listens on any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    check(
        classify(
            &format!("http://127.0.0.1:{port}/"),
            &[format!("127.0.0.1:{port}")],
            &[],
            None,
            None,
        )
        .await,
        "connect",
        "connection refused",
        Phase::Connect,
    );

    // TLS failure: a certificate for another name.
    let ca = TestCa::new();
    let tls = ScriptedServer::ok(Some(ca.server.clone())).await;
    let p = tls.addr.port();
    check(
        classify(
            &format!("https://wrong.example.test:{p}/"),
            &["wrong.example.test".into(), format!("127.0.0.1:{p}")],
            &[("wrong.example.test", &["127.0.0.1"])],
            Some(&ca),
            None,
        )
        .await,
        "tls",
        "not valid for 'wrong.example.test' (wrong host)",
        Phase::Tls,
    );

    let reset = faulty(Fault::ResetMidBody).await;
    check(
        classify(
            &format!("{}/", reset.url(false)),
            &[reset.authority()],
            &[],
            None,
            None,
        )
        .await,
        "reset",
        "after 15 of 1015 body bytes",
        Phase::Transfer,
    );

    let silent = faulty(Fault::NeverAnswer).await;
    check(
        classify(
            &format!("{}/", silent.url(false)),
            &[silent.authority()],
            &[],
            None,
            Some("300"),
        )
        .await,
        "timeout",
        "request timeout of 300 ms expired during processing",
        Phase::Processing,
    );

    let extra = faulty(Fault::ExtraBody).await;
    check(
        classify(
            &format!("{}/", extra.url(false)),
            &[extra.authority()],
            &[],
            None,
            None,
        )
        .await,
        "protocol",
        "20 bytes more than its Content-Length of 15",
        Phase::Transfer,
    );

    let garbled = faulty(Fault::MalformedStatus).await;
    check(
        classify(
            &format!("{}/", garbled.url(false)),
            &[garbled.authority()],
            &[],
            None,
            None,
        )
        .await,
        "malformed",
        "could not be parsed",
        Phase::Processing,
    );

    let mut distinct = kinds.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), kinds.len(), "{kinds:?}");
}

#[tokio::test]
async fn certificate_errors_are_in_plain_words() {
    let expired = TestCa::expired();
    let server = ScriptedServer::ok(Some(expired.server.clone())).await;
    let p = server.addr.port();
    let Failed {
        kind, message: msg, ..
    } = classify(
        &format!("https://localhost:{p}/"),
        &[format!("localhost:{p}")],
        &[],
        Some(&expired),
        None,
    )
    .await;
    assert_eq!(kind, "tls");
    assert!(
        msg.contains("the server's certificate has expired"),
        "{msg}"
    );

    // A valid certificate from a CA the run was not told about.
    let ca = TestCa::new();
    let server = ScriptedServer::ok(Some(ca.server.clone())).await;
    let p = server.addr.port();
    let Failed {
        kind, message: msg, ..
    } = classify(
        &format!("https://localhost:{p}/"),
        &[format!("localhost:{p}")],
        &[],
        None,
        None,
    )
    .await;
    assert_eq!(kind, "tls");
    assert!(msg.contains("unknown issuer"), "{msg}");
}
