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
        // The total is the phases and the client's own work between them
        // (a new connection's HTTP set-up after tls, the pool's look-up):
        // never less than their sum, and more only by what a busy machine
        // makes of that work.
        let sum = t.resolve + t.connect + t.tls + t.processing + t.transfer;
        assert!(
            sum <= t.total + 0.001 && t.total - sum < SLACK_MS,
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

/// A body whose chunks arrive when the test sends them.
struct Trickle(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for Trickle {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_processing_ends_at_the_headers_frame_not_at_control_frames() {
    // An HTTP/2 server that PINGs every 20 ms while it takes 150 ms to
    // answer, then trickles three chunks 60 ms apart: the PINGs (and the
    // SETTINGS and WINDOW_UPDATEs) reach the socket first, and must not
    // end processing.
    let ca = TestCa::new();
    let mut cfg = (*ca.server).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let (tx, rx) = tokio::sync::mpsc::channel(4);
                    tokio::spawn(async move {
                        for part in ["{\"a\":", "\"bc\"", "}"] {
                            tokio::time::sleep(Duration::from_millis(60)).await;
                            if tx.send(bytes::Bytes::from(part)).await.is_err() {
                                return;
                            }
                        }
                    });
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Trickle(rx)))
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .timer(hyper_util::rt::TokioTimer::new())
                        .keep_alive_interval(Duration::from_millis(20))
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    let wasm = std::fs::read(hostile_wasm()).expect("guest");
    let j = runtime().load("phases", &wasm).expect("loads");
    let url = format!("https://localhost:{port}/t");
    let rec = runtime()
        .run(
            &j,
            &opts(
                &[format!("localhost:{port}")],
                Some(ca.ca_file.as_path()),
                &[("mode", "loop"), ("url", &url), ("n", "2")],
            ),
        )
        .await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    for r in rec.requests() {
        assert_eq!(r.http_version.as_deref(), Some("HTTP/2"));
        let t = Ms::of(&r.timings);
        near(t.processing, 150.0, "processing");
        near(t.transfer, 180.0, "transfer");
        assert_eq!(r.bytes_received, 10, "DATA payload bytes: {r:?}");
    }
}
