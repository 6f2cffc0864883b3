//! Phase timings against a server that injects known delays: each phase
//! must land within tolerance of what was injected, and never below it.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{Script, ScriptedServer, TestCa, hostile_wasm, ok_body, opts, runtime};
use waymark_record::{PhaseTimings, Status};

/// A request's phases in milliseconds, as the injected delays are written.
#[derive(Debug, Clone, Copy)]
struct Ms {
    resolve: f64,
    connect: f64,
    tls: f64,
    processing: f64,
    transfer: f64,
    total: f64,
}

impl Ms {
    fn of(t: &PhaseTimings) -> Ms {
        let ms = waymark_record::serde_time::as_millis;
        Ms {
            resolve: ms(t.resolve),
            connect: ms(t.connect),
            tls: ms(t.tls),
            processing: ms(t.processing),
            transfer: ms(t.transfer),
            total: ms(t.total),
        }
    }
}

/// Loopback work and scheduling noise on a loaded 2-core CI machine.
const SLACK_MS: f64 = 40.0;

async fn timings(server: &ScriptedServer, https: Option<&TestCa>, n: u32) -> Vec<(bool, Ms)> {
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("phases", &wasm).expect("loads");
    let (url, allow) = match https {
        Some(_) => (
            format!("https://localhost:{}/t", server.addr.port()),
            format!("localhost:{}", server.addr.port()),
        ),
        None => (format!("{}/t", server.url(false)), server.authority()),
    };
    let n = n.to_string();
    let rec = runtime()
        .run(
            &j,
            &opts(
                &[allow],
                https.map(|ca| ca.ca_file.as_path()),
                &[("mode", "loop"), ("url", &url), ("n", &n)],
            ),
        )
        .await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    rec.requests()
        .map(|r| (r.reused_connection, Ms::of(&r.timings)))
        .collect()
}

fn near(measured: f64, injected: f64, what: &str) {
    assert!(
        measured >= injected - 1.0 && measured <= injected + SLACK_MS,
        "{what}: measured {measured:.2} ms, injected {injected:.2} ms"
    );
}

#[tokio::test]
async fn processing_is_the_time_to_first_byte() {
    let server = ScriptedServer::start(Script {
        ttfb: Duration::from_millis(150),
        chunks: ok_body(),
        ..Script::default()
    })
    .await;
    for (reused, t) in timings(&server, None, 2).await {
        near(t.processing, 150.0, "processing");
        assert!(t.transfer < 10.0, "transfer {t:?}");
        if reused {
            assert_eq!((t.resolve, t.connect, t.tls), (0.0, 0.0, 0.0));
        }
        let sum = t.resolve + t.connect + t.tls + t.processing + t.transfer;
        assert!(
            (t.total - sum).abs() < 1.0,
            "phases add up to the total: {t:?}"
        );
    }
}

#[tokio::test]
async fn transfer_is_first_to_last_byte_of_a_trickled_body() {
    // Headers at once, then three body chunks 60 ms apart: 180 ms transfer.
    let chunk = |s: &str| (Duration::from_millis(60), s.as_bytes().to_vec());
    let server = ScriptedServer::start(Script {
        ttfb: Duration::from_millis(20),
        chunks: vec![chunk("{\"a\":"), chunk("\"bc\""), chunk("}")],
        ..Script::default()
    })
    .await;
    for (_, t) in timings(&server, None, 2).await {
        near(t.processing, 20.0, "processing");
        near(t.transfer, 180.0, "transfer");
    }
}

#[tokio::test]
async fn tls_is_the_handshake_including_a_slow_accept() {
    let ca = TestCa::new();
    let server = ScriptedServer::start(Script {
        chunks: ok_body(),
        tls: Some(ca.server.clone()),
        tls_delay: Duration::from_millis(120),
        ..Script::default()
    })
    .await;
    let t = timings(&server, Some(&ca), 2).await;
    let (reused, first) = t[0];
    assert!(!reused);
    near(first.tls, 120.0, "tls");
    assert!(first.connect < 20.0, "connect {first:?}");
    let (reused, second) = t[1];
    assert!(reused);
    assert_eq!(second.tls, 0.0);
}
