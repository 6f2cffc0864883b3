//! The service's own HTTP endpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Shared, now_ms};

/// `/healthz`: 200 while the scheduler loop turned within the last 5 s;
/// `/status`: every journey's counters as JSON; `/metrics`: the runner's
/// own metrics, and the journeys' when a prometheus sink is configured.
pub(super) async fn listen(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let (code, ctype, body) = match req.uri().path() {
                        "/healthz" => {
                            let age = now_ms()
                                .saturating_sub(shared.heartbeat_ms.load(Ordering::Relaxed));
                            if shared.stopping.load(Ordering::SeqCst) {
                                (503, "text/plain", "shutting down\n".to_string())
                            } else if age > 5_000 {
                                (
                                    503,
                                    "text/plain",
                                    format!("scheduler stalled for {age} ms\n"),
                                )
                            } else if let Some(why) = shared.degraded() {
                                // Still up and running: a probe must not
                                // restart it, a person should look.
                                (200, "text/plain", format!("degraded: {why}\n"))
                            } else {
                                (200, "text/plain", "ok\n".to_string())
                            }
                        }
                        "/status" => {
                            let (code, body) =
                                super::status::answer(&shared, req.uri().query()).await;
                            let ctype = if code == 200 {
                                "application/json"
                            } else {
                                "text/plain"
                            };
                            (code, ctype, body)
                        }
                        "/metrics" => {
                            let accept = req
                                .headers()
                                .get(hyper::header::ACCEPT)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            // With leases the split changes between beats
                            // as leases run out: as of this scrape.
                            // Hashing every journey's name: off the async
                            // workers.
                            if shared.leases.is_some() {
                                let sh = shared.clone();
                                let _ =
                                    tokio::task::spawn_blocking(move || sh.shard_metrics()).await;
                            }
                            let mut registries = vec![shared.telemetry.registry()];
                            if let Some(m) = &shared.metrics {
                                registries.insert(0, m.registry());
                            }
                            let (ctype, body) =
                                crate::sinks::prometheus::exposition(&registries, accept);
                            (200, ctype, body)
                        }
                        path if crate::ui::owns(path) => {
                            let (path, query) =
                                (path.to_string(), req.uri().query().map(str::to_string));
                            let method = req.method().to_string();
                            // An acknowledgement is a few bytes; more is refused.
                            let body = match http_body_util::Limited::new(req.into_body(), 4096)
                                .collect()
                                .await
                            {
                                Ok(b) => b.to_bytes(),
                                Err(_) => {
                                    return hyper::Response::builder()
                                        .status(413)
                                        .body(Full::new(Bytes::from("a body of at most 4 KiB\n")));
                                }
                            };
                            let (db, ui) = (shared.history.clone(), shared.ui.clone());
                            let next = super::next_runs(&shared);
                            let now = shared.clock.now();
                            let reply = tokio::task::spawn_blocking(move || {
                                let request = crate::ui::Request {
                                    method: &method,
                                    path: &path,
                                    query: query.as_deref(),
                                    body: &body,
                                    next: &next,
                                };
                                crate::ui::answer(db.as_deref(), &ui, &request, now)
                            })
                            .await;
                            return match reply {
                                Ok(r) => hyper::Response::builder()
                                    .status(r.status)
                                    .header("content-type", r.content_type)
                                    .body(Full::new(Bytes::from(r.body))),
                                Err(_) => hyper::Response::builder()
                                    .status(500)
                                    .body(Full::new(Bytes::from("the UI's answer stopped\n"))),
                            };
                        }
                        _ => (
                            404,
                            "text/plain",
                            "not found: try /, /api/journeys, /healthz, /status or /metrics\n"
                                .to_string(),
                        ),
                    };
                    hyper::Response::builder()
                        .status(code)
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
