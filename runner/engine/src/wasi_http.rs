//! Standard `wasi:http/outgoing-handler` for journeys whose language's stock
//! HTTP client imports it (JavaScript's `fetch()`, Python's and Go's wasi:http
//! clients). wasmtime-wasi-http provides the resources; its `send_request`
//! hook is routed through the run's own timed client, so such a request is
//! checked against the allow-list, counted against the run's limits, timed
//! phase by phase and recorded like an SDK request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::http;
use wasmtime_wasi_http::{Error as WasiError, RequestOptions, WasiBody, WasiHttpHooks};

use waymark_http::{Client, Exchange, HttpError, Request};

/// `wasi:http` requests on their way into the run's record. A request runs
/// in a task of its own while the guest goes on, so it cannot write the
/// record itself: the run drains `finished` at its next host call, before
/// the guest can report anything about the response, and records what is
/// still `in_flight` when it stops as stopped. One lock, so that a request
/// is always in exactly one of the two lists until it is taken.
#[derive(Default)]
pub(crate) struct Exchanges {
    pub(crate) finished: Vec<(Request, Exchange)>,
    /// id, method, URL, start.
    pub(crate) in_flight: Vec<(u64, String, String, Instant)>,
    next_id: u64,
}

/// The `wasi:http` hooks of one run: the run's client, shared with the
/// journey's SDK requests (one connection pool, one cookie jar, one request
/// budget), and where its exchanges go.
pub(crate) struct Hooks {
    pub(crate) client: Arc<tokio::sync::Mutex<Client>>,
    pub(crate) exchanges: Arc<Mutex<Exchanges>>,
    /// A wasi:http request was made: until then the run's host calls need
    /// not look at `exchanges` (most journeys never make one).
    pub(crate) used: bool,
    /// Largest request body the guest may stream (the run's body cap):
    /// the body is held whole before it is sent.
    pub(crate) body_cap: u64,
    /// A replay answers from its recording instead of the network.
    pub(crate) replay: Option<Arc<Mutex<crate::tape::Replayer>>>,
}

/// Takes a request off `in_flight` however its task ends (answered, failed
/// before sending, or dropped with the run).
struct InFlight {
    exchanges: Arc<Mutex<Exchanges>>,
    id: u64,
}

impl InFlight {
    fn finish(self, req: Request, ex: Exchange) {
        if let Ok(mut x) = self.exchanges.lock() {
            x.in_flight.retain(|(i, ..)| *i != self.id);
            x.finished.push((req, ex));
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut x) = self.exchanges.lock() {
            x.in_flight.retain(|(i, ..)| *i != self.id);
        }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), WasiError>> + Send>,
                ),
                WasiError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    // The client writes Host from the URL, as for SDK requests.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), WasiError>> + Send>,
    ) -> SendFuture {
        self.used = true;
        let client = self.client.clone();
        let mut id = 0;
        if let Ok(mut x) = self.exchanges.lock() {
            id = x.next_id;
            x.next_id += 1;
            let entry = (
                id,
                request.method().to_string(),
                request.uri().to_string(),
                Instant::now(),
            );
            x.in_flight.push(entry);
        }
        let guard = InFlight {
            exchanges: self.exchanges.clone(),
            id,
        };
        let cap = self.body_cap;
        let replay = self.replay.clone();
        Box::new(async move {
            let (parts, body) = request.into_parts();
            // The guest may still be writing the body; the timed client sends
            // whole bodies, so the request starts once the guest finishes it,
            // and a body past the cap is refused as it streams in.
            let limited =
                http_body_util::Limited::new(body, usize::try_from(cap).unwrap_or(usize::MAX));
            let body = match limited.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Err(match e.downcast::<WasiError>() {
                        Ok(w) => *w,
                        Err(_) => WasiError::HttpRequestBodySize(Some(cap)),
                    });
                }
            };
            let req = Request {
                method: parts.method.to_string(),
                url: parts.uri.to_string(),
                headers: parts
                    .headers
                    .iter()
                    .filter(|(name, _)| *name != http::header::HOST)
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: (!body.is_empty() || parts.method == http::Method::POST)
                    .then(|| body.to_vec()),
                timeout: options.and_then(timeout_of),
                trace: true,
            };
            let ex = {
                let mut client = client.lock().await;
                match &replay {
                    Some(r) => crate::tape::replay_send(r, &mut client, &req).await,
                    None => client.send(&req).await,
                }
            };
            let result = ex.result.clone();
            // The guest never sees the response before it is in the list.
            guard.finish(req.clone(), ex);
            let resp = result.map_err(error_code)?;
            let decoded = !req
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("accept-encoding"));
            let mut builder = http::Response::builder().status(resp.status);
            for (name, value) in &resp.headers {
                // The client decoded a body it asked to be compressed: the
                // guest gets it as it is now, plain and of its own length.
                if decoded
                    && (name.eq_ignore_ascii_case("content-encoding")
                        || name.eq_ignore_ascii_case("content-length"))
                {
                    continue;
                }
                builder = builder.header(name.as_str(), value.as_str());
            }
            let body = Full::new(resp.body)
                .map_err(|never| match never {})
                .boxed_unsync();
            let response = builder
                .body(body)
                .map_err(|e| WasiError::InternalError(Some(e.to_string())))?;
            let io: Box<dyn Future<Output = Result<(), WasiError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// wasi:http's three limits become the client's one per-request limit.
fn timeout_of(o: RequestOptions) -> Option<Duration> {
    [
        o.connect_timeout,
        o.first_byte_timeout,
        o.between_bytes_timeout,
    ]
    .into_iter()
    .flatten()
    .reduce(|a, b| a + b)
}

/// Our error kinds as wasi:http error codes; the message itself is in the
/// run's record.
fn error_code(e: HttpError) -> WasiError {
    match e {
        HttpError::Denied(_) => WasiError::HttpRequestDenied,
        HttpError::InvalidRequest(_) => WasiError::HttpRequestUriInvalid,
        HttpError::Resolve(m) => WasiError::DnsError {
            rcode: Some(m),
            info_code: None,
        },
        HttpError::Connect(_) => WasiError::ConnectionRefused,
        HttpError::Tls(_) => WasiError::TlsCertificateError,
        HttpError::Timeout(_) => WasiError::HttpResponseTimeout,
        HttpError::Protocol(_) | HttpError::Malformed(_) => WasiError::HttpProtocolError,
        HttpError::Reset(_) => WasiError::ConnectionTerminated,
        HttpError::TooLarge(n) => WasiError::HttpResponseBodySize(Some(n)),
        HttpError::Limit(m) => WasiError::InternalError(Some(format!("limit: {m}"))),
    }
}
