//! `waymark demo`: an embedded demo API on loopback (log in, profile, trading
//! pairs, prices; with a little realistic latency) and the example journeys,
//! built into the binary, run against it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The example journeys, compiled by `build.rs` from `journeys/`.
pub const JOURNEYS: [(&str, &[u8]); 3] = [
    ("health", include_bytes!(env!("WAYMARK_JOURNEY_HEALTH"))),
    ("api", include_bytes!(env!("WAYMARK_JOURNEY_API"))),
    ("market", include_bytes!(env!("WAYMARK_JOURNEY_MARKET"))),
];

/// The demo user's name and password.
pub const USER: &str = "qa";
/// The demo user's password (a secret of the api journey).
pub const PASSWORD: &str = "demo-password";

/// The trading pairs: symbol, status, a reference price.
const PAIRS: [(&str, &str, f64); 6] = [
    ("BTC-USD", "active", 97_412.5),
    ("ETH-USD", "active", 3_388.2),
    ("DOGE-USD", "halted", 0.41),
    ("SOL-USD", "active", 241.7),
    ("XRP-USD", "delisted", 1.39),
    ("ADA-USD", "active", 1.07),
];

/// A running demo API; stops when dropped.
pub struct DemoApi {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoApi {
    /// Listen on `127.0.0.1` on a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_latency(Duration::from_millis(3), Duration::from_millis(12)).await
    }

    /// Listen on a free loopback port; each answer waits a random time in
    /// `min..=max` first, like a real service's processing time.
    pub async fn start_with_latency(min: Duration, max: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let token = format!("tok-{}", hex::encode(rand::random::<[u8; 12]>()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let token = token.clone();
                        async move { Ok::<_, Infallible>(answer(req, &token, min, max).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DemoApi { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, for the allow-list.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// The vars and secrets the example journeys need against this API.
    pub fn vars(&self) -> (HashMap<String, String>, HashMap<String, String>) {
        let vars = HashMap::from([
            ("base_url".to_string(), self.base_url()),
            ("user".to_string(), USER.to_string()),
        ]);
        let secrets = HashMap::from([("password".to_string(), PASSWORD.to_string())]);
        (vars, secrets)
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    token: &str,
    min: Duration,
    max: Duration,
) -> Response<Full<Bytes>> {
    let spread = max.saturating_sub(min).as_micros() as u64;
    let wait = min
        + Duration::from_micros(if spread > 0 {
            rand::random::<u64>() % spread
        } else {
            0
        });
    tokio::time::sleep(wait).await;

    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(token));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (method.as_str(), path.as_str()) {
        ("GET", "/health") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        ("POST", "/login") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let creds: Option<serde_json::Value> =
                body.ok().and_then(|b| serde_json::from_slice(&b).ok());
            let ok = creds.is_some_and(|c| c["user"] == USER && c["password"] == PASSWORD);
            if ok {
                json(
                    StatusCode::OK,
                    serde_json::json!({"token": token, "expires_in": 3600}),
                )
            } else {
                json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "bad credentials"}),
                )
            }
        }
        ("GET", "/me") if authorized => json(
            StatusCode::OK,
            serde_json::json!({"user": USER, "plan": "pro", "region": "eu-west"}),
        ),
        ("GET", "/me") => json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "no valid token"}),
        ),
        ("GET", "/pairs") => {
            let pairs: Vec<_> = PAIRS
                .iter()
                .map(|(symbol, status, _)| {
                    let (base, quote) = symbol.split_once('-').unwrap_or((symbol, ""));
                    serde_json::json!({"symbol": symbol, "base": base, "quote": quote, "status": status})
                })
                .collect();
            json(StatusCode::OK, serde_json::json!({ "pairs": pairs }))
        }
        ("GET", p) if p.starts_with("/prices/") => {
            let symbol = &p["/prices/".len()..];
            match PAIRS.iter().find(|(s, _, _)| *s == symbol) {
                Some((s, _, reference)) => {
                    let drift = 1.0 + (rand::random::<f64>() - 0.5) / 500.0;
                    let mid = reference * drift;
                    json(
                        StatusCode::OK,
                        serde_json::json!({"symbol": s, "bid": mid * 0.9995, "ask": mid * 1.0005}),
                    )
                }
                None => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "unknown pair"}),
                ),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    }
}
