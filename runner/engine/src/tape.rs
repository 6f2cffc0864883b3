//! A run kept whole enough to be replayed (`--record-exchanges`,
//! `keep_exchanges`, `waymark replay`): every exchange with its heads and
//! bodies, the wall and monotonic clock readings and the random seed the
//! guest saw, and the run's record. Secrets are redacted before anything is
//! kept; the names of the secrets are kept so a replay can ask for them.
//!
//! A replay runs the component again with the network replaced by the
//! recorded responses (matched by method, URL and body hash), the clocks
//! replaced by the recorded readings and the random sources seeded as they
//! were; then its record is compared with the recorded one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use waymark_http::{Exchange, HttpError, Reached, Request, Response, TlsInfo};
use waymark_record::serde_time;
use waymark_record::{PhaseTimings, Redactor, RunRecord};

/// The `format` of a recorded run's file.
pub const FORMAT: &str = "waymark-exchanges/1";

/// Default cap on each body kept with a recorded run.
pub const DEFAULT_BODY_CAP: usize = 1 << 20;

/// Clock readings kept per clock: a guest reading the clock in a loop must
/// not grow the recording without bound. A replay past the last one goes
/// on from it at the real pace.
const MAX_CLOCK_READS: usize = 100_000;

/// A body as kept: text as text, other bytes as base64; cut at a cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// The body, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body in base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Its whole size in bytes (more than what is kept when it was cut).
    pub size: u64,
    /// SHA-256 of the whole body (after redaction), hex.
    pub sha256: String,
}

impl Body {
    /// `bytes` with `redactor`'s secrets replaced, kept up to `cap` bytes.
    pub fn keep(bytes: &[u8], cap: usize, redactor: &Redactor) -> Body {
        let mut whole = bytes.to_vec();
        redactor.redact_bytes(&mut whole);
        let sha256 = hex::encode(Sha256::digest(&whole));
        let size = whole.len() as u64;
        let mut kept = whole;
        // Text is cut on a character boundary so it stays text.
        let mut cut = kept.len().min(cap);
        if std::str::from_utf8(&kept).is_ok() {
            while cut > 0 && std::str::from_utf8(&kept[..cut]).is_err() {
                cut -= 1;
            }
        }
        kept.truncate(cut);
        match String::from_utf8(kept) {
            Ok(text) => Body {
                text: Some(text),
                base64: None,
                size,
                sha256,
            },
            Err(e) => Body {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
                size,
                sha256,
            },
        }
    }

    /// The bytes kept.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.text, &self.base64) {
            (Some(t), _) => t.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    /// Fewer bytes are kept than the body had.
    pub fn is_cut(&self) -> bool {
        (self.bytes().len() as u64) < self.size
    }
}

/// The TLS session of a kept response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedTls {
    /// `TLSv1.3`, ...
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
    /// The leaf certificate's notAfter, Unix seconds.
    pub not_after: Option<i64>,
}

/// A kept response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedResponse {
    /// Status code.
    pub status: u16,
    /// `HTTP/1.1`, ...
    pub http_version: String,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as the journey got it (decoded).
    pub body: Body,
    /// Body bytes on the wire.
    pub wire_bytes: u64,
    /// Phase durations.
    pub timings: PhaseTimings,
    /// A kept-alive connection was used.
    pub reused: bool,
    /// The peer address.
    pub remote_addr: String,
    /// For https.
    pub tls: Option<CapturedTls>,
}

/// One request as sent and what came back: what a HAR file, `run -v` and a
/// replay need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Captured {
    /// When it started.
    #[serde(with = "serde_time::rfc3339_millis")]
    pub started: SystemTime,
    /// Upper-case method.
    pub method: String,
    /// The URL as the journey gave it.
    pub url: String,
    /// The request headers as sent (the client's own included), or as
    /// asked for when the request was never sent.
    pub request_headers: Vec<(String, String)>,
    /// The request body.
    pub request_body: Option<Body>,
    /// Start to end, success or failure (`elapsed_ms` in JSON).
    #[serde(rename = "elapsed_ms", with = "serde_time::millis")]
    pub elapsed: Duration,
    /// The response.
    pub response: Option<CapturedResponse>,
    /// Or why there was none.
    pub error: Option<HttpError>,
    /// How far a failed request got.
    pub reached: Option<Reached>,
}

impl Captured {
    /// Keep `req` and its outcome, secrets redacted, bodies cut at `cap`.
    pub fn new(
        run_started: SystemTime,
        run_t0: Instant,
        req: &Request,
        ex: &Exchange,
        cap: usize,
        redactor: &Redactor,
    ) -> Self {
        let started = run_started + ex.started.saturating_duration_since(run_t0);
        let text = |s: &str| {
            let mut s = s.to_string();
            redactor.redact(&mut s);
            s
        };
        let pairs = |h: &[(String, String)]| -> Vec<(String, String)> {
            h.iter().map(|(k, v)| (text(k), text(v))).collect()
        };
        let (response, error) = match &ex.result {
            Ok(r) => (
                Some(CapturedResponse {
                    status: r.status,
                    http_version: r.http_version.to_string(),
                    headers: pairs(&r.headers),
                    body: Body::keep(&r.body, cap, redactor),
                    wire_bytes: r.wire_bytes,
                    timings: r.timings,
                    reused: r.reused_connection,
                    remote_addr: r.remote_addr.to_string(),
                    tls: r.tls.as_ref().map(|t| CapturedTls {
                        version: t.version.clone(),
                        cipher: t.cipher.clone(),
                        not_after: t.not_after.map(unix_seconds),
                    }),
                }),
                None,
            ),
            Err(e) => {
                let mut e = e.clone();
                if let Some(m) = e.detail_mut() {
                    redactor.redact(m);
                }
                (None, Some(e))
            }
        };
        let request_headers = match &ex.result {
            Ok(r) => &r.request_headers,
            Err(_) => &req.headers,
        };
        Captured {
            started,
            method: req.method.to_ascii_uppercase(),
            url: text(&req.url),
            request_headers: pairs(request_headers),
            request_body: req.body.as_ref().map(|b| Body::keep(b, cap, redactor)),
            elapsed: ex.elapsed,
            response,
            error,
            reached: ex.reached,
        }
    }

    /// What a replayed request is matched on: method, URL and body hash.
    fn key(&self) -> (String, String, Option<String>) {
        (
            self.method.clone(),
            self.url.clone(),
            self.request_body.as_ref().map(|b| b.sha256.clone()),
        )
    }

    /// `METHOD URL (body sha256 …)`, for a divergence's report.
    pub fn describe(&self) -> String {
        describe(
            &self.method,
            &self.url,
            self.request_body
                .as_ref()
                .map(|b| (b.size, b.sha256.as_str())),
        )
    }

    /// The exchange the client would have returned, for a replay.
    fn replayed(&self, trace_id: &str) -> Exchange {
        let result = match (&self.response, &self.error) {
            (Some(r), _) => Ok(Response {
                status: r.status,
                headers: r.headers.clone(),
                body: r.body.bytes().into(),
                wire_bytes: r.wire_bytes,
                request_headers: self.request_headers.clone(),
                timings: r.timings,
                http_version: version_name(&r.http_version),
                remote_addr: r
                    .remote_addr
                    .parse()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                reused_connection: r.reused,
                tls: r.tls.as_ref().map(|t| TlsInfo {
                    version: t.version.clone(),
                    cipher: t.cipher.clone(),
                    not_after: t
                        .not_after
                        .and_then(|s| u64::try_from(s).ok())
                        .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
                }),
            }),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(HttpError::Reset(
                "the recorded request has neither a response nor an error".into(),
            )),
        };
        Exchange {
            started: Instant::now(),
            trace_id: trace_id.to_string(),
            span_id: None,
            result,
            elapsed: self.elapsed,
            reached: self.reached,
        }
    }
}

fn describe(method: &str, url: &str, body: Option<(u64, &str)>) -> String {
    match body {
        Some((size, sha)) => format!(
            "{method} {url} (body of {size} bytes, sha256 {})",
            sha.get(..12).unwrap_or(sha)
        ),
        None => format!("{method} {url} (no body)"),
    }
}

fn version_name(v: &str) -> &'static str {
    match v {
        "HTTP/1.0" => "HTTP/1.0",
        "HTTP/2" | "HTTP/2.0" => "HTTP/2",
        "HTTP/3" => "HTTP/3",
        "HTTP/0.9" => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A recorded run: what `--record-exchanges` writes and `waymark replay`
/// reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tape {
    /// [`FORMAT`].
    pub format: String,
    /// The journey's name.
    pub journey: String,
    /// The component's path as the recording run was given it, when known.
    pub component: Option<String>,
    /// SHA-256 of the component's bytes, hex: a replay with other bytes
    /// says the journey changed.
    pub component_sha256: String,
    /// The plain variables of the run (secrets are never kept).
    pub vars: BTreeMap<String, String>,
    /// The names of the run's secrets, which a replay must be given again.
    pub secrets: Vec<String>,
    /// The seed of the guest's random sources, hex (32 bytes).
    pub seed: String,
    /// Every wall-clock reading of the guest, ns since 1970, in order.
    pub wall_clock_ns: Vec<u64>,
    /// Every monotonic-clock reading of the guest, ns, in order.
    pub monotonic_ns: Vec<u64>,
    /// Readings beyond these were not kept (see the cap).
    pub clock_reads_dropped: u64,
    /// Every request, in the order it ended.
    pub exchanges: Vec<Captured>,
    /// The run's record.
    pub record: RunRecord,
}

/// A recorded run could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    /// Not JSON of the tape's shape.
    #[error("not a recorded run (line {line}, column {column}): {message}")]
    Parse {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// serde's reason.
        message: String,
    },
    /// Another format.
    #[error("recorded in format '{found}'; this waymark reads '{FORMAT}'")]
    Format {
        /// Its format.
        found: String,
    },
    /// The seed is not 32 bytes of hex.
    #[error("the recorded seed is not 64 hex digits")]
    Seed,
}

impl Tape {
    /// Reads a tape from its JSON.
    pub fn from_json(text: &str) -> Result<Tape, TapeError> {
        let tape: Tape = serde_json::from_str(text).map_err(|e| TapeError::Parse {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        if tape.format != FORMAT {
            return Err(TapeError::Format { found: tape.format });
        }
        tape.seed_bytes()?;
        Ok(tape)
    }

    pub(crate) fn seed_bytes(&self) -> Result<[u8; 32], TapeError> {
        let bytes = hex::decode(&self.seed).map_err(|_| TapeError::Seed)?;
        bytes.try_into().map_err(|_| TapeError::Seed)
    }

    /// SHA-256 of `wasm`, as [`Tape::component_sha256`] holds it.
    pub fn sha256(wasm: &[u8]) -> String {
        hex::encode(Sha256::digest(wasm))
    }
}

/// What the recording clocks saw; shared by the two clocks and the run.
#[derive(Default, Debug)]
pub(crate) struct ClockLog {
    pub(crate) wall_ns: Vec<u64>,
    pub(crate) monotonic_ns: Vec<u64>,
    pub(crate) dropped: u64,
}

fn push_capped(log: &Mutex<ClockLog>, value: u64, wall: bool) {
    if let Ok(mut l) = log.lock() {
        let list = if wall {
            &mut l.wall_ns
        } else {
            &mut l.monotonic_ns
        };
        if list.len() < MAX_CLOCK_READS {
            list.push(value);
        } else {
            l.dropped += 1;
        }
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The real wall clock, every reading kept.
pub(crate) struct RecordingWall(pub(crate) Arc<Mutex<ClockLog>>);

impl wasmtime_wasi::HostWallClock for RecordingWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        push_capped(&self.0, ns(now), true);
        now
    }
}

/// A monotonic clock counted from the run's start, every reading kept.
pub(crate) struct RecordingMonotonic {
    pub(crate) log: Arc<Mutex<ClockLog>>,
    pub(crate) t0: Instant,
}

impl wasmtime_wasi::HostMonotonicClock for RecordingMonotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let now = ns(self.t0.elapsed());
        push_capped(&self.log, now, false);
        now
    }
}

/// Recorded readings, in order; past the last one, time goes on from it.
struct Readings {
    values: Vec<u64>,
    next: usize,
    ran_out: Option<(u64, Instant)>,
}

impl Readings {
    fn next(&mut self) -> u64 {
        if let Some(v) = self.values.get(self.next) {
            self.next += 1;
            return *v;
        }
        let (last, since) = *self
            .ran_out
            .get_or_insert_with(|| (self.values.last().copied().unwrap_or(0), Instant::now()));
        last.saturating_add(ns(since.elapsed()))
    }
}

/// A replayed clock: the recorded readings.
pub(crate) struct ReplayClock(Mutex<Readings>);

impl ReplayClock {
    pub(crate) fn new(values: Vec<u64>) -> Self {
        ReplayClock(Mutex::new(Readings {
            values,
            next: 0,
            ran_out: None,
        }))
    }

    fn read(&self) -> u64 {
        self.0.lock().map(|mut r| r.next()).unwrap_or(0)
    }
}

impl wasmtime_wasi::HostWallClock for ReplayClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.read())
    }
}

impl wasmtime_wasi::HostMonotonicClock for ReplayClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.read()
    }
}

/// Where a replay first asked for something the recording does not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The replay's request number (1 = first) that found no match.
    pub request: usize,
    /// The recorded request expected there, if any was left.
    pub recorded: Option<String>,
    /// The request the replay made.
    pub replayed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "the replay diverged at its request {}: no recorded request matches it",
            self.request
        )?;
        writeln!(
            f,
            "  recorded: {}",
            self.recorded
                .as_deref()
                .unwrap_or("(none left: the recorded run made no more requests)")
        )?;
        write!(f, "  replayed: {}", self.replayed)
    }
}

/// Answers a replay's requests from the recording.
pub(crate) struct Replayer {
    exchanges: Vec<Captured>,
    used: Vec<bool>,
    asked: usize,
    redactor: Redactor,
    pub(crate) divergence: Option<Divergence>,
}

impl Replayer {
    pub(crate) fn new(exchanges: Vec<Captured>, redactor: Redactor) -> Self {
        let used = vec![false; exchanges.len()];
        Replayer {
            exchanges,
            used,
            asked: 0,
            redactor,
            divergence: None,
        }
    }

    /// The recorded exchange for `req`: the first unused one with the same
    /// method, URL and body hash (secrets redacted on both sides, so a
    /// secret given again matches its `***`). None is a divergence, noted.
    pub(crate) fn answer(&mut self, req: &Request, trace_id: &str) -> Exchange {
        self.asked += 1;
        let mut url = req.url.clone();
        self.redactor.redact(&mut url);
        let body = req.body.as_ref().map(|b| {
            let mut b = b.clone();
            self.redactor.redact_bytes(&mut b);
            (b.len() as u64, hex::encode(Sha256::digest(&b)))
        });
        let key = (
            req.method.to_ascii_uppercase(),
            url,
            body.as_ref().map(|(_, sha)| sha.clone()),
        );
        let found =
            (0..self.exchanges.len()).find(|&i| !self.used[i] && self.exchanges[i].key() == key);
        if let Some(i) = found {
            self.used[i] = true;
            return self.exchanges[i].replayed(trace_id);
        }
        let replayed = describe(
            &key.0,
            &key.1,
            body.as_ref().map(|(size, sha)| (*size, sha.as_str())),
        );
        let recorded = (0..self.exchanges.len())
            .find(|&i| !self.used[i])
            .map(|i| self.exchanges[i].describe());
        let message = format!("replay: no recorded request matches {replayed}");
        if self.divergence.is_none() {
            self.divergence = Some(Divergence {
                request: self.asked,
                recorded,
                replayed,
            });
        }
        Exchange {
            started: Instant::now(),
            trace_id: trace_id.to_string(),
            span_id: None,
            result: Err(HttpError::Denied(message)),
            elapsed: Duration::ZERO,
            reached: None,
        }
    }
}

/// Whether a run is recorded for a replay, or is one.
#[derive(Clone, Default)]
pub enum TapeMode {
    /// Neither.
    #[default]
    Off,
    /// Keep the clocks' readings and seed the random sources, for a tape.
    Record,
    /// Answer from this recording.
    Replay(Arc<Tape>),
}

/// Where a replay's record first differs from the recorded one.
pub fn first_difference(recorded: &RunRecord, replayed: &RunRecord) -> Option<String> {
    let steps = recorded.steps.len().max(replayed.steps.len());
    for i in 0..steps {
        let (a, b) = match (recorded.steps.get(i), replayed.steps.get(i)) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => {
                return Some(format!(
                    "step {} '{}' was recorded but the replay stopped before it",
                    i + 1,
                    a.name
                ));
            }
            (None, Some(b)) => {
                return Some(format!("step {} '{}' is new in the replay", i + 1, b.name));
            }
            (None, None) => break,
        };
        if a.name != b.name {
            return Some(format!(
                "step {}: recorded '{}', replayed '{}'",
                i + 1,
                a.name,
                b.name
            ));
        }
        let requests = a.requests.len().max(b.requests.len());
        for j in 0..requests {
            let show = |r: Option<&waymark_record::RequestRecord>| match r {
                None => "no request".to_string(),
                Some(r) => format!(
                    "{} {} → {}",
                    r.method,
                    r.url,
                    match (&r.status, &r.error) {
                        (Some(s), _) => s.to_string(),
                        (None, Some(e)) => e.kind.as_str().to_string(),
                        (None, None) => "no answer".into(),
                    }
                ),
            };
            let (ra, rb) = (a.requests.get(j), b.requests.get(j));
            let same = match (ra, rb) {
                (Some(x), Some(y)) => {
                    x.method == y.method
                        && x.url == y.url
                        && x.status == y.status
                        && x.error.as_ref().map(|e| e.kind) == y.error.as_ref().map(|e| e.kind)
                }
                _ => false,
            };
            if !same {
                return Some(format!(
                    "step '{}', request {}: recorded {}, replayed {}",
                    a.name,
                    j + 1,
                    show(ra),
                    show(rb)
                ));
            }
        }
        let checks = a.checks.len().max(b.checks.len());
        for j in 0..checks {
            match (a.checks.get(j), b.checks.get(j)) {
                (Some(x), Some(y)) if x.name == y.name && x.passed == y.passed => {}
                (Some(x), Some(y)) if x.name == y.name => {
                    return Some(format!(
                        "step '{}', check '{}': {} when recorded, {} in the replay",
                        a.name,
                        x.name,
                        verdict(x.passed),
                        verdict(y.passed)
                    ));
                }
                (x, y) => {
                    let name = |c: Option<&waymark_record::CheckRecord>| {
                        c.map_or("no check".to_string(), |c| {
                            format!("'{}' ({})", c.name, verdict(c.passed))
                        })
                    };
                    return Some(format!(
                        "step '{}', check {}: recorded {}, replayed {}",
                        a.name,
                        j + 1,
                        name(x),
                        name(y)
                    ));
                }
            }
        }
        if a.status != b.status {
            return Some(format!(
                "step '{}': {} when recorded, {} in the replay",
                a.name,
                a.status.as_str(),
                b.status.as_str()
            ));
        }
    }
    if recorded.status != replayed.status {
        return Some(format!(
            "the run: {} when recorded, {} in the replay",
            recorded.status.as_str(),
            replayed.status.as_str()
        ));
    }
    None
}

fn verdict(passed: bool) -> &'static str {
    if passed { "passed" } else { "failed" }
}

/// A request of a replay: answered from the recording, and the response's
/// cookies kept by the client as a live response's would be. It takes as
/// long as the recorded one did, so the replay's record and waterfall have
/// the recording's shape (its sleeps are slept too).
pub(crate) async fn replay_send(
    replayer: &Mutex<Replayer>,
    client: &mut waymark_http::Client,
    req: &Request,
) -> Exchange {
    let ex = match replayer.lock() {
        Ok(mut r) => r.answer(req, client.trace_id()),
        Err(_) => Exchange {
            started: Instant::now(),
            trace_id: String::new(),
            span_id: None,
            result: Err(HttpError::Denied(
                "replay: the recording is unusable".into(),
            )),
            elapsed: Duration::ZERO,
            reached: None,
        },
    };
    if let Ok(r) = &ex.result {
        client.keep_response_cookies(&req.url, &r.headers);
    }
    tokio::time::sleep(ex.elapsed).await;
    ex
}

/// The guest's random sources for a recorded or replayed run: both seeded
/// from `seed`, so a replay sees the same numbers.
pub(crate) fn seeded(builder: &mut wasmtime_wasi::WasiCtxBuilder, seed: [u8; 32]) {
    use rand_wasi::SeedableRng as _;
    let mut insecure = Sha256::new();
    insecure.update(seed);
    insecure.update(b"insecure");
    let insecure: [u8; 32] = insecure.finalize().into();
    let mut low = [0u8; 16];
    low.copy_from_slice(&insecure[..16]);
    builder
        .secure_random(rand_wasi::rngs::StdRng::from_seed(seed))
        .insecure_random(rand_wasi::rngs::StdRng::from_seed(insecure))
        .insecure_random_seed(u128::from_le_bytes(low));
}
