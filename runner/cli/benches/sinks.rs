//! Issue-5 figures, printed: 100,000 synthetic records through jsonl,
//! prometheus, otlp and webhook sinks at once (the last two to a loopback
//! receiver answering 200), and what the fan-out costs the caller: the time
//! of one `send` to all four, which is all the scheduler pays.
//!
//! `cargo bench -p waymark --bench sinks`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use waymark_monitor::sinks::otlp::OtlpConfig;
use waymark_monitor::sinks::webhook::WebhookConfig;
use waymark_monitor::sinks::{Delivery, Exposed, Sink};
use waymark_monitor::sinks::{
    SinkConfig, SinkKind, jsonl::JsonlConfig, prometheus::PrometheusConfig,
};

const N: usize = 100_000;

fn receiver(count: Arc<AtomicU64>) -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            while let Ok((tcp, _)) = l.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let count = count.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let _ = req.into_body().collect().await;
                                count.fetch_add(1, Ordering::Relaxed);
                                hyper::Response::builder()
                                    .status(200)
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    });
    addr
}

fn record(i: usize) -> waymark_record::RunRecord {
    serde_json::from_value(serde_json::json!({
        "journey": format!("j{}", i % 100), "run_id": format!("01BENCH{i:012}"), "location": "bench",
        "attempt": 1, "started_at": "2026-11-23T10:00:00.000Z", "duration_ms": 21.5,
        "status": if i.is_multiple_of(10) { "fail" } else { "pass" }, "error": null,
        "steps": [{"name": "list", "status": "pass", "start_ms": 0.1, "duration_ms": 20.0,
            "checks": [{"name": "status is 200", "passed": true, "detail": null}],
            "requests": [{"method": "GET", "url": "https://api.example.com/pairs", "status": 200,
                "http_version": "HTTP/1.1", "remote_addr": "203.0.113.7:443", "reused_connection": false,
                "start_ms": 0.2, "timings_ms": {"resolve": 1.2, "connect": 3.1, "tls": 6.0,
                "processing": 8.4, "transfer": 0.7, "total": 19.4}, "bytes_received": 5120,
                "bytes_decoded": 5120, "tls": {"version": "TLSv1.3", "cipher": "TLS13_AES_128_GCM_SHA256",
                "cert_not_after": "2027-01-01T00:00:00Z", "verified": true},
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "error": null}]}],
        "logs": [{"level": "info", "message": "ok"}]
    }))
    .expect("record")
}

fn main() {
    let received = Arc::new(AtomicU64::new(0));
    let addr = receiver(received.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let configs = [
        SinkConfig {
            name: "jsonl".into(),
            queue: N,
            spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
            kind: SinkKind::Jsonl(JsonlConfig {
                path: dir.path().join("runs.jsonl"),
                max_size: 0,
                keep: 1,
            }),
        },
        SinkConfig {
            name: "prometheus".into(),
            queue: N,
            spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
            kind: SinkKind::Prometheus(PrometheusConfig {
                listen: None,
                remote_write: None,
                push_interval: Duration::from_secs(15),
            }),
        },
        SinkConfig {
            name: "otlp".into(),
            queue: N,
            spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
            kind: SinkKind::Otlp(OtlpConfig {
                endpoint: format!("http://{addr}"),
                headers: Default::default(),
                timeout: Duration::from_secs(10),
                service_name: "bench".into(),
            }),
        },
        SinkConfig {
            name: "webhook".into(),
            queue: N,
            spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
            kind: SinkKind::Webhook(WebhookConfig {
                url: format!("http://{addr}/hook"),
                events: vec!["run".into()],
                slack: false,
                headers: Default::default(),
                secret: Some("bench".into()),
                timeout: Duration::from_secs(10),
            }),
        },
    ];
    let mut exposed = Exposed::default();
    let sinks: Vec<Sink> = configs
        .iter()
        .map(|c| Sink::start(c, Some(&dir.path().join("spool")), &mut exposed).expect("sink"))
        .collect();
    let records: Vec<Arc<Delivery>> = (0..N)
        .map(|i| {
            Arc::new(Delivery {
                record: record(i),
                final_attempt: true,
            })
        })
        .collect();
    let mut send_ns: Vec<u64> = Vec::with_capacity(N);
    let t0 = Instant::now();
    for d in &records {
        let t = Instant::now();
        for s in &sinks {
            s.send(d.clone());
        }
        send_ns.push(t.elapsed().as_nanos() as u64);
    }
    let sent = t0.elapsed();
    let mut done_at = vec![None; sinks.len()];
    let limit = Instant::now() + Duration::from_secs(600);
    while done_at.iter().any(Option::is_none) && Instant::now() < limit {
        for (i, s) in sinks.iter().enumerate() {
            if done_at[i].is_none() && s.stats().delivered.load(Ordering::Relaxed) >= N as u64 {
                done_at[i] = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    send_ns.sort_unstable();
    let pct = |q: f64| send_ns[((q * N as f64) as usize).min(N - 1)] as f64 / 1000.0;
    println!("== {N} records through jsonl + prometheus + otlp + webhook at once");
    println!(
        "   the caller's cost (send to all four sinks): p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs; all {N} handed over in {:.2} s",
        pct(0.5),
        pct(0.99),
        send_ns[N - 1] as f64 / 1000.0,
        sent.as_secs_f64()
    );
    for (s, d) in sinks.iter().zip(&done_at) {
        let st = s.stats();
        match d {
            Some(d) => println!(
                "   {:<10} {:>9.0} records/s ({:.2} s for all; spooled {}, dropped {})",
                s.name(),
                N as f64 / d.as_secs_f64(),
                d.as_secs_f64(),
                st.spooled.load(Ordering::Relaxed),
                st.dropped.load(Ordering::Relaxed)
            ),
            None => println!("   {:<10} did not finish within 600 s", s.name()),
        }
    }
    let all = done_at.iter().flatten().max().copied().unwrap_or_default();
    println!(
        "   all sinks: {:.0} records/s end to end ({:.2} s); the receiver got {} requests",
        N as f64 / all.as_secs_f64().max(1e-9),
        all.as_secs_f64(),
        received.load(Ordering::Relaxed)
    );
    for s in sinks {
        s.close(Duration::from_secs(10));
    }
}
