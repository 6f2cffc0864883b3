//! The phase-timed HTTP client behind the `http` interface.
//!
//! reqwest and hyper-util's pooled client hide the moments we need, so this
//! client drives the steps itself: resolve, TCP connect, TLS handshake, then a
//! hyper HTTP/1.1 connection over an I/O wrapper that notes when the first
//! response byte arrives. Phase definitions are those of the README (*Phases*), the same
//! as blackbox_exporter's and curl's `-w` timers.

pub mod allow;
mod io;
pub mod resolve;
mod stamp;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use std::time::Instant;
pub use waymark_record::Phase;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};

pub use allow::{AddrDenied, AllowList, HostPattern, PatternError};
pub use resolve::{Overrides, Resolve, ResolveEntryError, Resolved, SystemResolver};
pub use tls::{TlsConfigError, TlsInfo, TlsOptions};

mod config;
pub use config::*;
mod conn;
use conn::{Conn, Sender};
mod types;
pub use types::*;
mod wire;
pub use wire::redirect;
use wire::{Target, decode_body, header_value, headers_have, hyper_error, parse_url, version_name};

/// Where a request is, for a timeout's message and a failure's timings:
/// 0 before it touched the network, else 1 + the [`Phase`]'s index.
#[derive(Default)]
pub(crate) struct Progress(AtomicU8);

impl Progress {
    pub(crate) fn enter(&self, phase: Phase) {
        self.0.store(phase as u8 + 1, Ordering::Relaxed);
    }

    fn current(&self) -> Option<Phase> {
        usize::from(self.0.load(Ordering::Relaxed))
            .checked_sub(1)
            .and_then(Phase::from_index)
    }
}

type PoolKey = (bool, String, u16);

/// A request ready for hyper, the headers it carries, and whether we asked
/// for compression (and so decode the body).
struct Built {
    request: hyper::Request<Full<Bytes>>,
    headers: Vec<(String, String)>,
    decode: bool,
}

/// Open connections, handed from one run to the next by `waymark load` so a
/// virtual user keeps its connections across iterations (as k6 and oha do).
/// Only connections made under the same [`HttpConfig`] are taken back.
#[derive(Default)]
pub struct Connections {
    config: Option<Arc<HttpConfig>>,
    pool: HashMap<PoolKey, Conn>,
    targets: Targets,
}

/// The URLs requested last, parsed: a journey asks for the same few again
/// and again (each iteration of a load test), and parsing one, with the
/// strings it splits into, cost about as much as the rest of building the
/// request.
#[derive(Default)]
struct Targets(Vec<Arc<Target>>);

impl Targets {
    /// How many are kept; beyond, the oldest goes.
    const KEPT: usize = 8;

    fn get(&mut self, url: &str) -> Result<Arc<Target>, HttpError> {
        if let Some(t) = self.0.iter().find(|t| t.url == url) {
            return Ok(t.clone());
        }
        let t = Arc::new(parse_url(url)?);
        if self.0.len() >= Self::KEPT {
            self.0.remove(0);
        }
        self.0.push(t.clone());
        Ok(t)
    }
}

/// A per-run client: keeps connections alive between the run's requests and
/// closes them all when dropped.
pub struct Client {
    config: Arc<HttpConfig>,
    pool: HashMap<PoolKey, Conn>,
    trace_id: String,
    requests: u32,
    bytes: u64,
    jar: cookie_store::CookieStore,
    targets: Targets,
}

impl Client {
    /// A client with no open connection, tracing under a fresh trace id.
    pub fn new(config: Arc<HttpConfig>) -> Self {
        Client {
            config,
            pool: HashMap::new(),
            trace_id: hex::encode(rand::random::<[u8; 16]>()),
            requests: 0,
            bytes: 0,
            jar: cookie_store::CookieStore::default(),
            targets: Targets::default(),
        }
    }

    /// A client that starts with `conns`' connections when they were made
    /// under the same settings (cookies and counters start fresh).
    pub fn with_connections(config: Arc<HttpConfig>, conns: Connections) -> Self {
        let mut client = Client::new(config);
        if conns
            .config
            .is_some_and(|c| Arc::ptr_eq(&c, &client.config))
        {
            client.pool = conns.pool;
            client.targets = conns.targets;
        }
        client
    }

    /// Ready for another run that keeps the open connections: a fresh trace
    /// id, an empty cookie jar, and the per-run limits counted from zero.
    pub fn next_run(&mut self) {
        self.trace_id = hex::encode(rand::random::<[u8; 16]>());
        self.requests = 0;
        self.bytes = 0;
        self.jar.clear();
    }

    /// Gives up the open connections, for the next run of the same settings.
    pub fn into_connections(self) -> Connections {
        let pool = self
            .pool
            .into_iter()
            .filter(|(_, c)| !c.sender.is_closed())
            .collect();
        Connections {
            config: Some(self.config),
            pool,
            targets: self.targets,
        }
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// The settings this client was made with, shared.
    pub fn config_arc(&self) -> Arc<HttpConfig> {
        self.config.clone()
    }

    /// The trace id every request of this client carries.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// Cookies of the jar a request to `url` would carry.
    pub fn cookies(&self, url: &str) -> Vec<(String, String)> {
        url::Url::parse(url)
            .map(|u| self.cookies_for(&u))
            .unwrap_or_default()
    }

    fn cookies_for(&self, url: &url::Url) -> Vec<(String, String)> {
        self.jar
            .get_request_values(url)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Keeps the cookies a response from `url` sets, as if this client had
    /// received it: a replayed response feeds the jar as a live one does.
    pub fn keep_response_cookies(&mut self, url: &str, headers: &[(String, String)]) {
        if let Ok(target) = parse_url(url) {
            self.keep_cookies(&target, headers);
        }
    }

    fn keep_cookies(&mut self, target: &Target, headers: &[(String, String)]) {
        if headers.iter().any(|(k, _)| k == "set-cookie")
            && let Some(url) = target.cookie_url()
        {
            for (_, v) in headers.iter().filter(|(k, _)| k == "set-cookie") {
                // A cookie the jar refuses (bad domain, ...) is simply not kept.
                let _ = self.jar.parse(v, &url);
            }
        }
    }

    /// Empty the cookie jar.
    pub fn clear_cookies(&mut self) {
        self.jar.clear();
    }

    /// Send `req`, read the whole response, and time every phase.
    pub async fn send(&mut self, req: &Request) -> Exchange {
        resolve::warm_up().await;
        let started = Instant::now();
        let progress = Progress::default();
        let mut timings = Timings::default();
        // One span per request, in the run's one trace.
        let span = req.trace.then(|| hex::encode(rand::random::<[u8; 8]>()));
        let sp = span.as_deref();
        let inner = self.send_inner(req, sp, started, &progress, &mut timings);
        let result = match req.timeout {
            Some(limit) => match tokio::time::timeout(limit, inner).await {
                Ok(r) => r,
                Err(_) => {
                    let during = progress.current().map_or("request", Phase::as_str);
                    // A half-used connection cannot carry the next request.
                    if let Ok(t) = self.targets.get(&req.url) {
                        self.pool.remove(&(t.https, t.host.clone(), t.port));
                    }
                    Err(HttpError::Timeout(format!(
                        "request timeout of {} ms expired during {during}",
                        limit.as_millis()
                    )))
                }
            },
            None => inner.await,
        };
        let elapsed = started.elapsed();
        let reached = match (&result, progress.current()) {
            (Err(_), Some(phase)) => Some(Reached::new(timings, phase, elapsed)),
            _ => None,
        };
        Exchange {
            started,
            trace_id: if req.trace {
                self.trace_id.clone()
            } else {
                String::new()
            },
            span_id: span,
            result,
            elapsed,
            reached,
        }
    }

    async fn send_inner(
        &mut self,
        req: &Request,
        span: Option<&str>,
        started: Instant,
        progress: &Progress,
        timings: &mut Timings,
    ) -> Result<Response, HttpError> {
        // Every request counts, the denied and the malformed too: each is
        // an entry the host keeps in the record.
        if self.requests >= self.config.max_requests {
            return Err(HttpError::Limit(format!(
                "request count: at most {} requests per run",
                self.config.max_requests
            )));
        }
        self.requests += 1;
        let target = self.targets.get(&req.url)?;
        if !self.config.allow.allows(&target.host, target.port) {
            return Err(HttpError::Denied(format!(
                "host '{}' is not in the allow-list (allow it with --allow-host {}, or in allow_hosts)",
                target.authority, target.authority
            )));
        }
        let method = if req.method.bytes().any(|b| b.is_ascii_lowercase()) {
            hyper::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        } else {
            hyper::Method::from_bytes(req.method.as_bytes())
        }
        .map_err(|_| HttpError::InvalidRequest(format!("bad method '{}'", req.method)))?;
        let key = (target.https, target.host.clone(), target.port);

        // A kept-alive connection may have been closed by the server while
        // idle; that shows only when we use it, so one fresh retry is safe.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let pooled = self.pool.remove(&key).filter(|c| !c.sender.is_closed());
            let reused = pooled.is_some();
            *timings = Timings::default();
            let mut conn = match pooled {
                Some(c) => c,
                // Boxed: setting a connection up (resolve, TCP, TLS, the
                // HTTP handshake) was most of this future's size (9.3 KiB of
                // `send`'s, 1.9 KiB without), held by every request in
                // flight, a kept-alive connection's included.
                None => Box::pin(self.connect(&target, started, progress, timings)).await?,
            };
            let ready = Instant::now();
            progress.enter(Phase::Processing);
            let Built {
                request,
                headers: sent_headers,
                decode,
            } = self.build_request(
                req,
                span,
                &method,
                &target,
                matches!(conn.sender, Sender::H2(_)),
            )?;
            conn.probe.arm();
            let h2 = matches!(conn.sender, Sender::H2(_));
            let sent = conn.sender.send(request).await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if reused && attempt == 1 && (e.is_closed() || e.is_canceled()) => continue,
                Err(e) if reused && attempt == 1 && e.is_incomplete_message() => continue,
                Err(e) => return Err(hyper_error(&e)),
            };
            // The read that brought the response's first byte (HTTP/2: its
            // HEADERS frame), not when hyper handed the response over: by
            // then a body that came with the head may have been read too.
            let first_byte = conn.probe.first_byte().unwrap_or_else(Instant::now);
            timings.processing = first_byte.saturating_duration_since(ready);
            progress.enter(Phase::Transfer);

            let status = resp.status().as_u16();
            let http_version = version_name(resp.version());
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            self.keep_cookies(&target, &headers);
            let mut body = resp.into_body();
            let content_length = (!headers_have(&headers, "transfer-encoding"))
                .then(|| header_value(&headers, "content-length"))
                .flatten()
                .and_then(|v| v.trim().parse::<u64>().ok());
            // The frames are kept as they came and joined after the clock
            // stops: the transfer phase is the network's time, not a copy
            // of the body (one copy, of the exact size; none for one frame).
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut len: u64 = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    let expected = content_length
                        .map(|n| format!(" of {n}"))
                        .unwrap_or_default();
                    HttpError::Reset(format!(
                        "the connection ended after {len}{expected} body bytes ({e})"
                    ))
                })?;
                if let Ok(data) = frame.into_data() {
                    if data.is_empty() {
                        continue;
                    }
                    if len + data.len() as u64 > self.config.max_body {
                        return Err(HttpError::TooLarge(self.config.max_body));
                    }
                    len += data.len() as u64;
                    self.bytes += data.len() as u64;
                    if self.bytes > self.config.max_total_bytes {
                        return Err(HttpError::Limit(format!(
                            "total bytes: at most {} body bytes per run",
                            self.config.max_total_bytes
                        )));
                    }
                    chunks.push(data);
                }
            }
            // The read that brought the last byte, not the end of handing the
            // frames over: that is our time, not the network's.
            let done = conn
                .probe
                .last_byte()
                .filter(|t| *t >= first_byte)
                .unwrap_or_else(Instant::now);
            let wire_bytes = conn.probe.wire_body_bytes().unwrap_or(len);
            if let Some(n) = content_length
                && !h2
                && wire_bytes > n
            {
                // hyper stops at Content-Length and would trip over the rest
                // on the next request; the connection is not kept.
                return Err(HttpError::Protocol(format!(
                    "the server sent {} bytes more than its Content-Length of {n}",
                    wire_bytes - n
                )));
            }
            let raw = match chunks.len() {
                1 => chunks.swap_remove(0),
                _ => {
                    let mut whole = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
                    for c in &chunks {
                        whole.extend_from_slice(c);
                    }
                    whole.freeze()
                }
            };
            let wire = raw.len() as u64;
            let body = match header_value(&headers, "content-encoding").filter(|_| decode) {
                Some(encoding) => decode_body(encoding, raw, self.config.max_body)?,
                None => raw,
            };
            timings.transfer = done.saturating_duration_since(first_byte);
            timings.total = done.saturating_duration_since(started);

            let response = Response {
                status,
                headers,
                body,
                wire_bytes: wire,
                request_headers: sent_headers,
                timings: *timings,
                http_version,
                remote_addr: conn.remote,
                reused_connection: reused,
                tls: conn.tls.clone(),
            };
            if !conn.sender.is_closed() {
                self.pool.insert(key, conn);
            }
            return Ok(response);
        }
    }

    fn build_request(
        &self,
        req: &Request,
        span: Option<&str>,
        method: &hyper::Method,
        target: &Target,
        h2: bool,
    ) -> Result<Built, HttpError> {
        let has = |name: &str| {
            req.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        // HTTP/2 names the host in its :authority pseudo-header.
        if !has("host") && !h2 {
            headers.push(("host".into(), target.authority.clone()));
        }
        if !has("user-agent") {
            headers.push(("user-agent".into(), self.config.user_agent.clone()));
        }
        // Decoding is ours only when the journey left the encoding to us.
        let decode = !has("accept-encoding");
        if decode {
            headers.push(("accept-encoding".into(), "gzip, deflate, br".into()));
        }
        if let Some(span) = span
            && !has("traceparent")
        {
            headers.push((
                "traceparent".into(),
                format!("00-{}-{span}-01", self.trace_id),
            ));
        }
        if !has("cookie") && self.jar.iter_any().next().is_some() {
            let cookies: Vec<String> = target
                .cookie_url()
                .map(|u| self.cookies_for(&u))
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !cookies.is_empty() {
                headers.push(("cookie".into(), cookies.join("; ")));
            }
        }
        headers.extend(req.headers.iter().cloned());
        let body = Full::new(Bytes::from(req.body.clone().unwrap_or_default()));
        // Built in place rather than through `Request::builder`, which moves
        // the whole request at every header.
        let mut request = hyper::Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = if h2 {
            target.h2_uri.clone()
        } else {
            target.h1_uri.clone()
        };
        let map = request.headers_mut();
        map.reserve(headers.len());
        for (k, v) in &headers {
            let bad =
                |e: &dyn std::fmt::Display| HttpError::InvalidRequest(format!("bad header: {e}"));
            let name = hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(&e))?;
            let value = hyper::header::HeaderValue::from_str(v).map_err(|e| bad(&e))?;
            map.append(name, value);
        }
        Ok(Built {
            request,
            headers,
            decode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_asked_again_is_parsed_once_and_a_new_one_is_not_mistaken_for_it() {
        let mut t = Targets::default();
        let a = t.get("http://127.0.0.1:8080/a").expect("valid");
        assert!(Arc::ptr_eq(
            &a,
            &t.get("http://127.0.0.1:8080/a").expect("valid")
        ));
        let b = t.get("http://127.0.0.1:8080/b").expect("valid");
        assert_eq!(b.h1_uri, "/b");
        assert_eq!(a.h1_uri, "/a");
        for i in 0..Targets::KEPT {
            t.get(&format!("http://h{i}.test/")).expect("valid");
        }
        assert_eq!(t.0.len(), Targets::KEPT, "the kept URLs are bounded");
        assert!(t.0.iter().all(|k| k.url != a.url), "the oldest went first");
        assert!(
            t.get("ftp://x/").is_err(),
            "a bad URL is an error, not kept"
        );
        assert_eq!(t.0.len(), Targets::KEPT);
    }

    #[test]
    fn a_request_is_built_for_each_protocol_and_a_bad_header_is_refused() {
        let allow = AllowList::parse(&["127.0.0.1"]).expect("allow");
        let client = Client::new(Arc::new(HttpConfig::new(allow, None).expect("config")));
        let target = parse_url("http://127.0.0.1:8080/p?q=1").expect("valid");
        let mut req = Request {
            method: "POST".into(),
            url: target.url.clone(),
            headers: vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())],
            body: Some(b"hi".to_vec()),
            timeout: None,
            trace: false,
        };
        let h1 = client
            .build_request(&req, None, &hyper::Method::POST, &target, false)
            .expect("built");
        assert_eq!(h1.request.uri(), "/p?q=1");
        assert_eq!(h1.request.method(), hyper::Method::POST);
        assert_eq!(h1.request.headers()["host"], "127.0.0.1:8080");
        let both: Vec<_> = h1.request.headers().get_all("x-a").iter().collect();
        assert_eq!(both, ["1", "2"], "a repeated header keeps every value");
        let h2 = client
            .build_request(&req, None, &hyper::Method::POST, &target, true)
            .expect("built");
        assert_eq!(h2.request.uri(), "http://127.0.0.1:8080/p?q=1");
        assert!(h2.request.headers().get("host").is_none());

        req.headers = vec![("x-b".into(), "a\nb".into())];
        let err = client
            .build_request(&req, None, &hyper::Method::POST, &target, false)
            .err()
            .expect("a newline in a value is refused");
        assert!(err.to_string().contains("bad header"), "{err}");
        req.headers = vec![("bad name".into(), "v".into())];
        assert!(
            client
                .build_request(&req, None, &hyper::Method::POST, &target, false)
                .is_err()
        );
    }
}
