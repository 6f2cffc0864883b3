//! Sinks against real receivers on loopback: webhook events and signatures,
//! a receiver that goes down and comes back, the spool across a restart,
//! jsonl rotation.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waymark_monitor::sinks::jsonl::JsonlConfig;
use waymark_monitor::sinks::webhook::WebhookConfig;
use waymark_monitor::sinks::{Delivery, Exposed, Sink};
use waymark_monitor::sinks::{SinkConfig, SinkKind};
use waymark_record::RunRecord;

/// Requests for journey `busy` answered 429 so far (the first two are).
static BUSY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Each request's path, headers and body, in arrival order.
type Received = Arc<Mutex<Vec<(String, HashMap<String, String>, Vec<u8>)>>>;

/// A webhook receiver on its own thread. While `up` is false it closes every
/// connection at once, as a crashed service behind a load balancer would.
/// It refuses records of journey `poison` with 400, and answers the first
/// two of journey `busy` with 429.
struct Receiver {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    got: Received,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Receiver {
    fn start() -> Receiver {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_l.set_nonblocking(true).expect("nonblocking");
        let addr = std_l.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (up2, got2) = (up.clone(), got.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_l).expect("listener");
                let serve = async {
                    while let Ok((tcp, _)) = l.accept().await {
                        if !up2.load(Ordering::SeqCst) {
                            drop(tcp);
                            continue;
                        }
                        let (got, up) = (got2.clone(), up2.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(
                                move |req: hyper::Request<hyper::body::Incoming>| {
                                    let (got, up) = (got.clone(), up.clone());
                                    async move {
                                        use http_body_util::BodyExt;
                                        let path = req.uri().path().to_string();
                                        // Down: kept-alive connections break too.
                                        if !up.load(Ordering::SeqCst) {
                                            return Err(std::io::Error::other("down"));
                                        }
                                        let headers = req
                                            .headers()
                                            .iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.to_string(),
                                                    v.to_str().unwrap_or("").to_string(),
                                                )
                                            })
                                            .collect();
                                        let body = req
                                            .into_body()
                                            .collect()
                                            .await
                                            .map(|b| b.to_bytes().to_vec())
                                            .unwrap_or_default();
                                        // A record it can never take, and one it
                                        // takes once it is less busy.
                                        let text = String::from_utf8_lossy(&body);
                                        let code = if text.contains("\"journey\":\"poison\"") {
                                            400
                                        } else if text.contains("\"journey\":\"busy\"")
                                            && BUSY.fetch_add(1, Ordering::SeqCst) < 2
                                        {
                                            429
                                        } else {
                                            got.lock().expect("got").push((path, headers, body));
                                            204
                                        };
                                        hyper::Response::builder()
                                            .status(code)
                                            .body(http_body_util::Full::new(bytes::Bytes::new()))
                                            .map_err(std::io::Error::other)
                                    }
                                },
                            );
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Receiver {
            addr,
            up,
            got,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .expect("got")
            .iter()
            .map(|(_, _, b)| serde_json::from_slice(b).expect("json body"))
            .collect()
    }

    fn wait_for(&self, n: usize, limit: Duration) {
        let t = Instant::now();
        while self.got.lock().expect("got").len() < n {
            assert!(
                t.elapsed() < limit,
                "only {} of {n} deliveries",
                self.got.lock().expect("got").len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn record(journey: &str, run: &str, status: &str) -> RunRecord {
    serde_json::from_value(serde_json::json!({
        "journey": journey, "run_id": run, "location": "lab", "attempt": 1,
        "started_at": "2026-11-23T10:00:00.000Z", "duration_ms": 12.5, "status": status,
        "error": if status == "pass" { serde_json::Value::Null } else {
            serde_json::json!({"kind": "check", "message": "1 check failed: status is 200"}) },
        "steps": [{"name": "log in", "status": status, "start_ms": 0.0, "duration_ms": 12.0,
                   "checks": [{"name": "status is 200", "passed": status == "pass", "detail": null}],
                   "requests": []}],
        "logs": []
    }))
    .expect("record")
}

fn delivery(journey: &str, run: &str, status: &str) -> Arc<Delivery> {
    Arc::new(Delivery {
        record: record(journey, run, status),
        final_attempt: true,
    })
}

fn webhook(
    url: String,
    events: &[&str],
    queue: usize,
    secret: Option<&str>,
    slack: bool,
) -> SinkConfig {
    SinkConfig {
        name: "hook".into(),
        queue,
        spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
        kind: SinkKind::Webhook(WebhookConfig {
            url,
            events: events.iter().map(|s| s.to_string()).collect(),
            slack,
            headers: BTreeMap::from([("x-team".to_string(), "sre".to_string())]),
            secret: secret.map(str::to_string),
            timeout: Duration::from_secs(2),
        }),
    }
}

#[test]
fn webhook_posts_state_changes_signed() {
    let rx = Receiver::start();
    let sink = Sink::start(
        &webhook(
            rx.url(),
            &["failing", "recovered"],
            100,
            Some("s3cret"),
            false,
        ),
        None,
        &mut Exposed::default(),
    )
    .expect("sink");
    for (i, status) in ["pass", "fail", "fail", "pass", "pass", "error"]
        .iter()
        .enumerate()
    {
        sink.send(delivery("login", &format!("r{i}"), status));
    }
    // Not final: never an event of its own.
    sink.send(Arc::new(Delivery {
        record: record("login", "r9", "fail"),
        final_attempt: false,
    }));
    rx.wait_for(3, Duration::from_secs(10));
    sink.close(Duration::from_secs(5));
    let bodies = rx.bodies();
    let events: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap_or(""),
                b["run_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        events,
        [("failing", "r1"), ("recovered", "r3"), ("failing", "r5")]
    );
    assert_eq!(bodies[0]["journey"], "login");
    assert_eq!(bodies[0]["location"], "lab");
    assert_eq!(bodies[0]["failing_step"], "log in");
    assert_eq!(bodies[0]["failing_check"], "status is 200");
    assert_eq!(bodies[0]["record"]["status"], "fail");
    for (_, headers, body) in rx.got.lock().expect("got").iter() {
        assert_eq!(headers["x-team"], "sre");
        assert_eq!(headers["content-type"], "application/json");
        let ts = &headers["x-waymark-timestamp"];
        assert_eq!(
            headers["x-waymark-signature"],
            waymark_monitor::sinks::webhook::signature("s3cret", ts, body),
            "the receiver can verify the sender"
        );
        assert_ne!(
            headers["x-waymark-signature"],
            waymark_monitor::sinks::webhook::signature("other", ts, body)
        );
    }
}

#[test]
fn webhook_slack_text_and_every_failure() {
    let rx = Receiver::start();
    let sink = Sink::start(
        &webhook(rx.url(), &["failure"], 100, None, true),
        None,
        &mut Exposed::default(),
    )
    .expect("sink");
    for (i, status) in ["fail", "fail", "pass"].iter().enumerate() {
        sink.send(delivery("search", &format!("s{i}"), status));
    }
    rx.wait_for(2, Duration::from_secs(10));
    sink.close(Duration::from_secs(5));
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 2, "one per failed run");
    let text = bodies[0]["text"].as_str().expect("slack text");
    assert!(
        text.contains("*search* failed in lab: 1 check failed: status is 200 (step \"log in\")"),
        "{text}"
    );
}

#[test]
fn a_receiver_down_for_a_while_gets_every_record_once_it_is_back() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().expect("tmp");
    // A small queue, so the outage overflows to the spool.
    let sink = Sink::start(
        &webhook(rx.url(), &["run"], 20, None, false),
        Some(spool.path()),
        &mut Exposed::default(),
    )
    .expect("sink");
    let n = 300;
    let t = Instant::now();
    for i in 0..n {
        if i == 50 {
            rx.up.store(false, Ordering::SeqCst);
        }
        if i == 200 {
            rx.up.store(true, Ordering::SeqCst);
        }
        // Sending never waits, whatever the sink's state.
        let s = Instant::now();
        sink.send(delivery("j", &format!("run{i:03}"), "pass"));
        assert!(
            s.elapsed() < Duration::from_millis(50),
            "send waited {:?}",
            s.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(t.elapsed() < Duration::from_secs(20));
    rx.wait_for(n, Duration::from_secs(60));
    let stats = sink.stats();
    let (spooled, failures, dropped) = (
        stats.spooled.load(Ordering::SeqCst),
        stats.failures.load(Ordering::SeqCst),
        stats.dropped.load(Ordering::SeqCst),
    );
    sink.close(Duration::from_secs(5));
    let ids: Vec<String> = rx
        .bodies()
        .iter()
        .map(|b| format!("{}#{}", b["run_id"].as_str().unwrap_or(""), b["attempt"]))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), n, "every record arrived");
    assert!(
        ids.len() - n <= 50,
        "at most a batch resent: {} extra",
        ids.len() - n
    );
    assert!(failures > 0, "the outage was seen");
    assert!(spooled > 0, "the queue overflowed to the spool");
    assert_eq!(dropped, 0);
}

#[test]
fn records_spooled_at_shutdown_are_sent_by_the_next_start() {
    let rx = Receiver::start();
    rx.up.store(false, Ordering::SeqCst);
    let spool = tempfile::tempdir().expect("tmp");
    let cfg = webhook(rx.url(), &["run"], 1000, None, false);
    let sink = Sink::start(&cfg, Some(spool.path()), &mut Exposed::default()).expect("sink");
    for i in 0..40 {
        sink.send(delivery("j", &format!("k{i:02}"), "pass"));
    }
    let t = Instant::now();
    sink.close(Duration::from_millis(500));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "close keeps to its grace: {:?}",
        t.elapsed()
    );
    assert!(rx.got.lock().expect("got").is_empty());
    assert!(
        std::fs::read_dir(spool.path().join("hook"))
            .expect("spool dir")
            .count()
            > 0
    );

    rx.up.store(true, Ordering::SeqCst);
    let sink = Sink::start(&cfg, Some(spool.path()), &mut Exposed::default()).expect("sink");
    rx.wait_for(40, Duration::from_secs(20));
    sink.close(Duration::from_secs(5));
    let mut ids: Vec<String> = rx
        .bodies()
        .iter()
        .map(|b| b["run_id"].as_str().unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    let left: Vec<_> = std::fs::read_dir(spool.path().join("hook"))
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    assert!(left.is_empty(), "the spool is empty once sent: {left:?}");
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn jsonl_rotates_by_size_and_keeps_whole_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("runs.jsonl");
    let one = serde_json::to_vec(&record("j", "r000", "pass"))
        .expect("json")
        .len() as u64
        + 1;
    let cfg = SinkConfig {
        name: "jsonl".into(),
        queue: 1000,
        spool_max: waymark_monitor::sinks::DEFAULT_SPOOL_MAX,
        kind: SinkKind::Jsonl(JsonlConfig {
            path: path.clone(),
            max_size: one * 10,
            keep: 2,
        }),
    };
    let sink = Sink::start(&cfg, None, &mut Exposed::default()).expect("sink");
    for i in 0..35 {
        sink.send(delivery("j", &format!("r{i:03}"), "pass"));
    }
    sink.close(Duration::from_secs(5));
    // 35 lines of 10 per file: 5 current, 10 in .1, 10 in .2, the oldest 10 gone.
    assert_eq!(lines(&path), 5);
    assert_eq!(lines(&dir.path().join("runs.jsonl.1")), 10);
    assert_eq!(lines(&dir.path().join("runs.jsonl.2")), 10);
    assert!(!dir.path().join("runs.jsonl.3").exists());
    let last: RunRecord = serde_json::from_str(
        std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .last()
            .expect("line"),
    )
    .expect("a whole record");
    assert_eq!(last.run_id, "r034");
}

#[test]
fn waymark_run_feeds_sinks_too() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("tmp");
    let jsonl = dir.path().join("ci.jsonl");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
            .arg("run")
            .arg(support::hostile_wasm())
            .args(["--var", "mode=noop", "--format", "json"])
            .args(["--sink", &format!("jsonl:{}", jsonl.display())])
            .args(["--sink", &format!("webhook:{}", rx.url())])
            .args(extra)
            .env("WAYMARK_CACHE_DIR", dir.path().join("cache"))
            .output()
            .expect("waymark run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rec: RunRecord = serde_json::from_slice(&out.stdout).expect("record");
        (rec, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (first, _) = run(&[]);
    rx.wait_for(1, Duration::from_secs(10));
    assert_eq!(rx.bodies()[0]["run_id"], first.run_id.as_str());
    assert_eq!(rx.bodies()[0]["event"], "run");

    // Receiver down: the record waits in the spool and says so...
    rx.up.store(false, Ordering::SeqCst);
    let (second, err) = run(&[]);
    assert!(err.contains("receiver unreachable"), "{err}");
    assert_eq!(rx.bodies().len(), 1);
    // ...and goes out with the next run once it is back.
    rx.up.store(true, Ordering::SeqCst);
    let (third, _) = run(&[]);
    rx.wait_for(3, Duration::from_secs(10));
    let ids: Vec<String> = rx
        .bodies()
        .iter()
        .map(|b| b["run_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        ids.contains(&second.run_id) && ids.contains(&third.run_id),
        "{ids:?}"
    );
    // The jsonl file has all three, whole.
    let lines: Vec<RunRecord> = std::fs::read_to_string(&jsonl)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(lines.len(), 3);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("run")
        .arg(support::hostile_wasm())
        .args(["--sink", "kafka:somewhere"])
        .output()
        .expect("waymark run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind 'kafka'"));
}

#[test]
fn otlp_trace_carries_the_traceparent_ids_and_the_phases() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
    use prost::Message;

    let rx = Receiver::start();
    let cache = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("run")
        .arg(support::hostile_wasm())
        .args([
            "--var",
            "mode=fetch",
            "--var",
            &format!("url=http://{}/ok", rx.addr),
        ])
        .args([
            "--allow-host",
            "127.0.0.1",
            "--format",
            "json",
            "--location",
            "lab-2",
        ])
        .args(["--sink", &format!("otlp:http://{}", rx.addr)])
        .env("WAYMARK_CACHE_DIR", cache.path())
        .output()
        .expect("waymark run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: RunRecord = serde_json::from_slice(&out.stdout).expect("record");
    let got = rx.got.lock().expect("got").clone();
    let by_path = |p: &str| {
        got.iter()
            .find(|(path, _, _)| path == p)
            .unwrap_or_else(|| {
                panic!(
                    "nothing at {p}: {:?}",
                    got.iter().map(|g| &g.0).collect::<Vec<_>>()
                )
            })
            .clone()
    };
    let (_, headers, _) = by_path("/ok");
    let tp: Vec<&str> = headers["traceparent"].split('-').collect();
    let (trace, span) = (tp[1], tp[2]);

    let (_, h, body) = by_path("/v1/traces");
    assert_eq!(h["content-type"], "application/x-protobuf");
    let req =
        ExportTraceServiceRequest::decode(&body[..]).expect("the official protobuf decodes it");
    let attr = |attrs: &[KeyValue], k: &str| -> Option<Value> {
        attrs
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone()?.value)
    };
    let rs = &req.resource_spans[0];
    let res = rs.resource.as_ref().expect("resource");
    assert_eq!(
        attr(&res.attributes, "service.name"),
        Some(Value::StringValue("waymark".into()))
    );
    assert_eq!(
        attr(&res.attributes, "waymark.location"),
        Some(Value::StringValue("lab-2".into()))
    );
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 3, "run, its implicit step, the request");
    assert!(
        spans.iter().all(|s| hex::encode(&s.trace_id) == trace),
        "one trace: the traceparent's"
    );
    let root = &spans[0];
    assert_eq!(root.name, rec.journey);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        attr(&root.attributes, "waymark.run_id"),
        Some(Value::StringValue(rec.run_id.clone()))
    );
    assert_eq!(
        attr(&root.attributes, "waymark.status"),
        Some(Value::StringValue("pass".into()))
    );
    let step = &spans[1];
    assert_eq!(step.parent_span_id, root.span_id);
    let check = step
        .events
        .iter()
        .find(|e| e.name == "check")
        .expect("check event");
    assert_eq!(
        attr(&check.attributes, "waymark.check.name"),
        Some(Value::StringValue("status is 2xx".into()))
    );
    assert_eq!(
        attr(&check.attributes, "waymark.check.passed"),
        Some(Value::BoolValue(true))
    );
    let request = &spans[2];
    assert_eq!(
        hex::encode(&request.span_id),
        span,
        "the request span is the traceparent's span"
    );
    assert_eq!(request.parent_span_id, step.span_id);
    assert_eq!(
        attr(&request.attributes, "http.response.status_code"),
        Some(Value::IntValue(204))
    );
    let total = match attr(&request.attributes, "waymark.phase.total_ms") {
        Some(Value::DoubleValue(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        total,
        waymark_record::serde_time::as_millis(rec.steps[0].requests[0].timings.total)
    );
    assert!(request.end_time_unix_nano > request.start_time_unix_nano);
    assert!(request.start_time_unix_nano >= root.start_time_unix_nano);

    let (_, _, body) = by_path("/v1/metrics");
    let m = ExportMetricsServiceRequest::decode(&body[..]).expect("metrics decode");
    let names: Vec<&str> = m.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "waymark.journey.duration",
            "waymark.journey.success",
            "waymark.journey.runs"
        ]
    );
}

#[test]
fn a_refused_record_is_set_aside_and_the_rest_go_on() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().expect("tmp");
    let sink = Sink::start(
        &webhook(rx.url(), &["run"], 100, None, false),
        Some(spool.path()),
        &mut Exposed::default(),
    )
    .expect("sink");
    // In one batch: good records, one the receiver refuses (400) and one it
    // is too busy for at first (429).
    for i in 0..5 {
        sink.send(delivery("good", &format!("g{i}"), "pass"));
    }
    sink.send(delivery("poison", "p0", "pass"));
    sink.send(delivery("busy", "b0", "pass"));
    for i in 5..10 {
        sink.send(delivery("good", &format!("g{i}"), "pass"));
    }
    rx.wait_for(11, Duration::from_secs(30));
    // And the sink is not stuck: later records go out too.
    sink.send(delivery("good", "after", "pass"));
    rx.wait_for(12, Duration::from_secs(30));
    let stats = sink.stats_handle();
    sink.close(Duration::from_secs(5));
    let journeys: Vec<String> = rx
        .bodies()
        .iter()
        .map(|b| b["journey"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!journeys.contains(&"poison".to_string()), "{journeys:?}");
    assert!(
        journeys.contains(&"busy".to_string()),
        "429 was retried: {journeys:?}"
    );
    assert_eq!(stats.dead_lettered.load(Ordering::SeqCst), 1);
    assert!(stats.retries.load(Ordering::SeqCst) >= 2, "429 twice");
    let dead = std::fs::read_to_string(spool.path().join("hook").join("dead-letter.jsonl"))
        .expect("dead-letter file");
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1, "{dead}");
    assert_eq!(lines[0]["delivery"]["record"]["run_id"], "p0");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("status 400"),
        "{dead}"
    );
    // Nothing is waiting in the spool for a retry.
    let pending: Vec<_> = std::fs::read_dir(spool.path().join("hook"))
        .expect("spool dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("draining-") || (n == "current.jsonl"))
        .collect();
    assert!(pending.is_empty(), "{pending:?}");
}

#[test]
fn the_spool_stays_within_its_bound_dropping_the_oldest() {
    let rx = Receiver::start();
    rx.up.store(false, Ordering::SeqCst);
    let spool = tempfile::tempdir().expect("tmp");
    let max = 1u64 << 20;
    let mut cfg = webhook(rx.url(), &["run"], 10, None, false);
    cfg.spool_max = max;
    let sink = Sink::start(&cfg, Some(spool.path()), &mut Exposed::default()).expect("sink");
    let n = 6_000;
    for i in 0..n {
        sink.send(delivery("j", &format!("run{i:05}"), "pass"));
        if i % 500 == 0 {
            // Let the spool's thread keep up, as a scheduler's pace would.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Shut down while the receiver is still down: the rest is spooled too.
    let stats = sink.stats_handle();
    sink.close(Duration::from_millis(300));
    let dir = spool.path().join("hook");
    let mut bytes = 0;
    let mut kept = Vec::new();
    for e in std::fs::read_dir(&dir)
        .expect("spool dir")
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "current.jsonl" || name.starts_with("draining-") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(e.path()).expect("read");
            bytes += text.len() as u64;
            for l in text.lines() {
                let d: serde_json::Value = serde_json::from_str(l).expect("whole records");
                kept.push(d["record"]["run_id"].as_str().unwrap_or("").to_string());
            }
        }
    }
    let evicted = stats.spool_evicted.load(Ordering::SeqCst);
    let spooled = stats.spooled.load(Ordering::SeqCst);
    let delivered = stats.delivered.load(Ordering::SeqCst);
    // One segment (an eighth of the bound) may be over while the next is written.
    assert!(
        bytes <= max + max / 8,
        "{bytes} bytes on disk for a bound of {max}"
    );
    assert!(evicted > 0, "the bound was reached and counted");
    assert_eq!(delivered, 0);
    assert_eq!(
        spooled - evicted,
        kept.len() as u64,
        "every record is delivered, kept or counted as dropped"
    );
    // The newest survive; the oldest spooled went (the first few were in
    // the worker's hands, and were spooled last, at the close).
    assert!(
        kept.contains(&format!("run{:05}", n - 1)),
        "the newest is kept"
    );
    assert!(!kept.contains(&"run00500".to_string()), "an early one went");
}

#[test]
fn otlp_carries_the_runners_own_metrics_under_serve() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use prost::Message;

    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nlocation = \"lab-3\"\nlisten = \"off\"\nwatch = false\n\n\
             [[journey]]\nname = \"a\"\nwasm = \"{}\"\nevery = \"200ms\"\nvars = {{ mode = \"noop\" }}\n\n\
             [[sink]]\ntype = \"otlp\"\nendpoint = \"http://{}\"\n",
            support::hostile_wasm().display(),
            rx.addr
        ),
    )
    .expect("config");
    let _serve = support::Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["serve", "-c"])
            .arg(&config)
            .env("WAYMARK_CACHE_DIR", dir.path().join("cache"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let t = Instant::now();
    let runner = loop {
        let got = rx.got.lock().expect("got").clone();
        let found = got
            .iter()
            .filter(|(p, _, _)| p == "/v1/metrics")
            .filter_map(|(_, _, b)| ExportMetricsServiceRequest::decode(&b[..]).ok())
            .find(|r| {
                r.resource_metrics.iter().any(|rm| {
                    rm.scope_metrics
                        .iter()
                        .any(|sm| sm.metrics.iter().any(|m| m.name == "waymark.schedule.lag"))
                })
            });
        if let Some(r) = found {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no runner metrics over OTLP"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let rm = &runner.resource_metrics[0];
    let metrics = &rm.scope_metrics[0].metrics;
    let by_name = |n: &str| {
        metrics.iter().find(|m| m.name == n).unwrap_or_else(|| {
            panic!(
                "no {n}: {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        })
    };
    let lag = by_name("waymark.schedule.lag");
    assert_eq!(lag.unit, "s");
    let Some(Data::Histogram(h)) = &lag.data else {
        panic!("{lag:?}")
    };
    assert!(h.data_points[0].count >= 1);
    assert_eq!(
        h.data_points[0].bucket_counts.len(),
        h.data_points[0].explicit_bounds.len() + 1
    );
    let records = by_name("waymark.sink.records");
    let Some(Data::Sum(sum)) = &records.data else {
        panic!("{records:?}")
    };
    assert!(sum.is_monotonic);
    assert!(
        sum.data_points.iter().any(|p| p
            .attributes
            .iter()
            .any(|a| a.key == "sink" && format!("{:?}", a.value).contains("otlp"))),
        "{sum:?}"
    );
}
