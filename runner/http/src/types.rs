//! What goes in and comes out of the client: the request, its phase
//! timings, the response, the error cases, and the exchange that holds them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Phase, TlsInfo};
pub use waymark_record::HttpErrorKind;

/// A request as the journey asked for it.
#[derive(Debug, Clone)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body, if any.
    pub body: Option<Vec<u8>>,
    /// Per-request time limit.
    pub timeout: Option<Duration>,
    /// Send a `traceparent` header.
    pub trace: bool,
}

/// Phase durations of one request: the record's type, so the client's
/// timings go into the record as they are.
pub use waymark_record::PhaseTimings as Timings;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The whole body, decoded if the client asked for compression.
    pub body: Bytes,
    /// Body bytes as received (before decoding).
    pub wire_bytes: u64,
    /// The request headers as sent, ours included.
    pub request_headers: Vec<(String, String)>,
    /// Phase durations.
    pub timings: Timings,
    /// `HTTP/1.1`, ...
    pub http_version: &'static str,
    /// The peer address.
    pub remote_addr: SocketAddr,
    /// A kept-alive connection of this run was used.
    pub reused_connection: bool,
    /// The TLS session, for https.
    pub tls: Option<TlsInfo>,
}

/// Why a request got no response; each variant is the WIT `http-error`
/// case that [`HttpError::kind`] names. Its JSON form (a recorded run's
/// exchanges) is `{"kind": "connect", "detail": "…"}`, the kinds named as in the record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum HttpError {
    /// The allow-list refused the host.
    Denied(String),
    /// Bad URL, method or header.
    InvalidRequest(String),
    /// Name resolution failed.
    Resolve(String),
    /// TCP connect failed.
    Connect(String),
    /// TLS handshake failed.
    Tls(String),
    /// A time limit expired.
    Timeout(String),
    /// The peer broke HTTP.
    Protocol(String),
    /// The response could not be parsed.
    Malformed(String),
    /// The connection was reset or closed before the response was complete.
    Reset(String),
    /// The body exceeded the cap, in bytes.
    TooLarge(u64),
    /// A per-run limit was hit.
    Limit(String),
}

impl HttpError {
    /// The WIT case, whose name the record and every output use.
    pub fn kind(&self) -> HttpErrorKind {
        match self {
            HttpError::Denied(_) => HttpErrorKind::Denied,
            HttpError::InvalidRequest(_) => HttpErrorKind::InvalidRequest,
            HttpError::Resolve(_) => HttpErrorKind::Resolve,
            HttpError::Connect(_) => HttpErrorKind::Connect,
            HttpError::Tls(_) => HttpErrorKind::Tls,
            HttpError::Timeout(_) => HttpErrorKind::Timeout,
            HttpError::Protocol(_) => HttpErrorKind::Protocol,
            HttpError::Malformed(_) => HttpErrorKind::Malformed,
            HttpError::Reset(_) => HttpErrorKind::Reset,
            HttpError::TooLarge(_) => HttpErrorKind::TooLarge,
            HttpError::Limit(_) => HttpErrorKind::Limit,
        }
    }

    /// What happened, without the kind's prefix that `Display` adds: for
    /// places that show the kind beside it (the record, the waterfall).
    pub fn detail(&self) -> String {
        match self {
            HttpError::TooLarge(cap) => format!("the body is larger than the {cap}-byte cap"),
            // One list of the variants that hold a message: detail_mut's.
            other => other
                .clone()
                .detail_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
        }
    }
}

impl HttpError {
    /// The message, to rewrite in place (redaction); none for
    /// [`HttpError::TooLarge`], which holds a number.
    pub fn detail_mut(&mut self) -> Option<&mut String> {
        match self {
            HttpError::Denied(m)
            | HttpError::InvalidRequest(m)
            | HttpError::Resolve(m)
            | HttpError::Connect(m)
            | HttpError::Tls(m)
            | HttpError::Timeout(m)
            | HttpError::Protocol(m)
            | HttpError::Malformed(m)
            | HttpError::Reset(m)
            | HttpError::Limit(m) => Some(m),
            HttpError::TooLarge(_) => None,
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind().prefix(), self.detail())
    }
}

impl std::error::Error for HttpError {}

/// What one `send` did, success or not: what the record needs.
#[derive(Debug)]
pub struct Exchange {
    /// When the request started.
    pub started: Instant,
    /// The W3C trace id sent in `traceparent` (empty when none was sent).
    pub trace_id: String,
    /// This request's span id in `traceparent`.
    pub span_id: Option<String>,
    /// The response, or why there is none.
    pub result: Result<Response, HttpError>,
    /// Time from start to the end (success or failure).
    pub elapsed: Duration,
    /// How far a failed request got; `None` for a response (its timings
    /// say it all) and for a request refused before it touched the network.
    pub reached: Option<Reached>,
}

/// The phases a failed request went through.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reached {
    /// The phases it completed, and the one it failed in timed up to the
    /// failure; `total` is the whole request.
    pub timings: Timings,
    /// The phase it failed in.
    pub phase: Phase,
}

impl Reached {
    /// The failing phase gets what the completed ones leave of `elapsed`.
    pub(crate) fn new(mut timings: Timings, phase: Phase, elapsed: Duration) -> Reached {
        let before: Duration = Phase::ALL
            .into_iter()
            .take_while(|p| *p < phase)
            .map(|p| timings.get(p))
            .sum();
        let rest = elapsed.saturating_sub(before);
        match phase {
            Phase::Resolve => timings.resolve = rest,
            Phase::Connect => timings.connect = rest,
            Phase::Tls => timings.tls = rest,
            Phase::Processing => timings.processing = rest,
            Phase::Transfer => timings.transfer = rest,
        }
        timings.total = elapsed;
        Reached { timings, phase }
    }
}
