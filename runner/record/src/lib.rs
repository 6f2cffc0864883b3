//! The result record: one per run, what every sink gets.
//!
//! Inside it is typed (`Duration`, `SystemTime`, enums); only its JSON form
//! writes milliseconds as numbers and instants as RFC 3339, as it always has.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub mod junit;
mod redact;
pub mod serde_time;
pub use redact::Redactor;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every check passed and the journey returned `Ok`.
    Pass,
    /// A check failed or the journey returned an error.
    Fail,
    /// The sandbox or the host stopped the run (trap, memory, denied host).
    Error,
    /// The run's wall-clock limit expired.
    Timeout,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 4] = [Status::Pass, Status::Fail, Status::Error, Status::Timeout];

    /// The exit code of `waymark run`: 0 pass, 1 fail, 2 anything else.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Pass => 0,
            Status::Fail => 1,
            Status::Error | Status::Timeout => 2,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Timeout => "timeout",
        }
    }
}

/// Why a run did not pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// One or more checks failed.
    Check,
    /// The journey returned an error of its own.
    Journey,
    /// The guest trapped (a panic, an invalid operation) or could not start.
    Trap,
    /// A time limit expired.
    Timeout,
    /// The memory limit was hit.
    Memory,
    /// The journey reached for a host outside the allow-list.
    Denied,
    /// A request failed and the journey gave up on it.
    Http,
    /// A limit of the host was reached: the record's budget.
    Limit,
}

impl ErrorKind {
    /// As written in the record.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Check => "check",
            ErrorKind::Journey => "journey",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Memory => "memory",
            ErrorKind::Denied => "denied",
            ErrorKind::Http => "http",
            ErrorKind::Limit => "limit",
        }
    }
}

/// The run's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// In plain words.
    pub message: String,
}

/// One run of one journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Journey name.
    pub journey: String,
    /// ULID of this run.
    pub run_id: String,
    /// Where the runner stands (`[runner] location`).
    pub location: String,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// When the run started (RFC 3339, UTC, milliseconds in JSON).
    #[serde(with = "serde_time::rfc3339_millis")]
    pub started_at: SystemTime,
    /// Wall time of the whole run (`duration_ms` in JSON).
    #[serde(rename = "duration_ms", with = "serde_time::millis")]
    pub duration: Duration,
    /// Outcome.
    pub status: Status,
    /// Why it did not pass.
    pub error: Option<RunError>,
    /// Steps in the order they started.
    pub steps: Vec<StepRecord>,
    /// Log lines (journey logs and guest stdout/stderr).
    pub logs: Vec<LogRecord>,
    /// The `[[maintenance]]` window the run started in, by name: its
    /// alerts are held and availability leaves it out. Absent outside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
}

/// A named step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// `pass`, `fail` (a check or a request failed) or `error` (the run stopped inside it).
    pub status: Status,
    /// Offset of the step's start from the run's start (used by waterfalls;
    /// `start_ms` in JSON).
    #[serde(rename = "start_ms", with = "serde_time::millis")]
    pub start: Duration,
    /// Step wall time (`duration_ms` in JSON).
    #[serde(rename = "duration_ms", with = "serde_time::millis")]
    pub duration: Duration,
    /// Checks in order.
    pub checks: Vec<CheckRecord>,
    /// Requests in order.
    pub requests: Vec<RequestRecord>,
}

/// A check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Check name.
    pub name: String,
    /// Did it pass?
    pub passed: bool,
    /// What was seen, if the journey said.
    pub detail: Option<String>,
}

/// The phase names, in order, as in `timings_ms`
/// (blackbox_exporter's names); `total` spans them all.
pub const PHASE_NAMES: [&str; 6] = [
    "resolve",
    "connect",
    "tls",
    "processing",
    "transfer",
    "total",
];

/// Phase durations (milliseconds in JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimings {
    /// start → address resolved.
    #[serde(with = "serde_time::millis")]
    pub resolve: Duration,
    /// resolved → TCP established.
    #[serde(with = "serde_time::millis")]
    pub connect: Duration,
    /// TCP established → TLS done.
    #[serde(with = "serde_time::millis")]
    pub tls: Duration,
    /// ready → first response byte.
    #[serde(with = "serde_time::millis")]
    pub processing: Duration,
    /// first → last body byte.
    #[serde(with = "serde_time::millis")]
    pub transfer: Duration,
    /// start → last body byte.
    #[serde(with = "serde_time::millis")]
    pub total: Duration,
}

/// A phase of a request, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Name resolution (and the address check).
    Resolve,
    /// TCP connect.
    Connect,
    /// TLS handshake.
    Tls,
    /// Request written, waiting for the first response byte.
    Processing,
    /// Reading the body.
    Transfer,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tls,
        Phase::Processing,
        Phase::Transfer,
    ];

    /// The name metrics, reports and the record use.
    pub fn as_str(self) -> &'static str {
        PhaseTimings::PHASES[self as usize]
    }

    /// The phase at `index` in [`Phase::ALL`].
    pub fn from_index(index: usize) -> Option<Phase> {
        Phase::ALL.get(index).copied()
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PhaseTimings {
    /// Names of the phases, in order (`total` is not one of them).
    pub const PHASES: [&'static str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

    /// One phase's duration.
    pub fn get(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Resolve => self.resolve,
            Phase::Connect => self.connect,
            Phase::Tls => self.tls,
            Phase::Processing => self.processing,
            Phase::Transfer => self.transfer,
        }
    }

    /// The phases a failed request went through, up to and including the
    /// one it failed in, with their durations.
    pub fn reached(&self, failed_in: Phase) -> impl Iterator<Item = (Phase, Duration)> + '_ {
        Phase::ALL
            .into_iter()
            .take_while(move |p| *p <= failed_in)
            .map(|p| (p, self.get(p)))
    }

    /// Each phase and `total` with its name, as metrics and reports label them.
    pub fn named(&self) -> [(&'static str, Duration); 6] {
        [
            ("resolve", self.resolve),
            ("connect", self.connect),
            ("tls", self.tls),
            ("processing", self.processing),
            ("transfer", self.transfer),
            ("total", self.total),
        ]
    }
}

/// TLS facts of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsRecord {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite.
    pub cipher: String,
    /// Leaf certificate's notAfter (RFC 3339 in JSON).
    #[serde(with = "serde_time::rfc3339_seconds_opt")]
    pub cert_not_after: Option<SystemTime>,
    /// False when the run was told not to verify certificates (`--insecure`).
    pub verified: bool,
}

/// The cases of the WIT's `http-error`, as the record names them. The
/// host's errors, the wasi:http error codes and every output take their
/// names from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpErrorKind {
    /// The allow-list refused the host.
    Denied,
    /// Bad URL, method or header.
    InvalidRequest,
    /// Name resolution failed.
    Resolve,
    /// TCP connect failed.
    Connect,
    /// TLS handshake failed.
    Tls,
    /// A time limit expired.
    Timeout,
    /// The peer broke HTTP.
    Protocol,
    /// The response could not be parsed.
    Malformed,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// The body exceeded the cap.
    TooLarge,
    /// A per-run limit was hit.
    Limit,
}

impl HttpErrorKind {
    /// Every case, in the WIT's order.
    pub const ALL: [HttpErrorKind; 11] = [
        HttpErrorKind::Denied,
        HttpErrorKind::InvalidRequest,
        HttpErrorKind::Resolve,
        HttpErrorKind::Connect,
        HttpErrorKind::Tls,
        HttpErrorKind::Timeout,
        HttpErrorKind::Protocol,
        HttpErrorKind::Malformed,
        HttpErrorKind::Reset,
        HttpErrorKind::TooLarge,
        HttpErrorKind::Limit,
    ];

    /// The case's name, as in the WIT and the record.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpErrorKind::Denied => "denied",
            HttpErrorKind::InvalidRequest => "invalid-request",
            HttpErrorKind::Resolve => "resolve",
            HttpErrorKind::Connect => "connect",
            HttpErrorKind::Tls => "tls",
            HttpErrorKind::Timeout => "timeout",
            HttpErrorKind::Protocol => "protocol",
            HttpErrorKind::Malformed => "malformed",
            HttpErrorKind::Reset => "reset",
            HttpErrorKind::TooLarge => "too-large",
            HttpErrorKind::Limit => "limit",
        }
    }

    /// How a message of this kind starts when it stands alone.
    pub fn prefix(self) -> &'static str {
        match self {
            HttpErrorKind::Denied => "denied",
            HttpErrorKind::InvalidRequest => "invalid request",
            HttpErrorKind::Resolve => "resolve failed",
            HttpErrorKind::Connect => "connect failed",
            HttpErrorKind::Tls => "TLS failed",
            HttpErrorKind::Timeout => "timeout",
            HttpErrorKind::Protocol => "protocol error",
            HttpErrorKind::Malformed => "malformed response",
            HttpErrorKind::Reset => "connection reset",
            HttpErrorKind::TooLarge => "response too large",
            HttpErrorKind::Limit => "limit reached",
        }
    }
}

impl std::fmt::Display for HttpErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestError {
    /// The `http-error` case: denied, resolve, connect, tls, timeout, ...
    pub kind: HttpErrorKind,
    /// In plain words.
    pub message: String,
    /// The phase it failed in; absent when it failed before reaching the
    /// network (a bad URL, a host outside the allow-list, a limit). The
    /// request's timings then hold the phases it completed and this one
    /// up to the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
}

/// One HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// URL as requested.
    pub url: String,
    /// Status, when a response came.
    pub status: Option<u16>,
    /// `HTTP/1.1`, ...
    pub http_version: Option<String>,
    /// Peer address.
    pub remote_addr: Option<String>,
    /// A kept-alive connection was used (resolve/connect/tls are then 0).
    pub reused_connection: bool,
    /// Offset of the request's start from the run's start (extension; for
    /// waterfalls; `start_ms` in JSON).
    #[serde(rename = "start_ms", with = "serde_time::millis")]
    pub start: Duration,
    /// Phase durations (`timings_ms` in JSON); on error, those it got
    /// through (see [`RequestError::phase`]) and `total`.
    #[serde(rename = "timings_ms")]
    pub timings: PhaseTimings,
    /// Body bytes received on the wire (compressed, if it was).
    pub bytes_received: u64,
    /// Body bytes after decoding (equal to `bytes_received` when not compressed).
    pub bytes_decoded: u64,
    /// TLS facts, for https.
    pub tls: Option<TlsRecord>,
    /// W3C trace id sent in `traceparent` (one per run).
    pub trace_id: Option<String>,
    /// This request's span id in `traceparent`.
    pub span_id: Option<String>,
    /// Why there is no response.
    pub error: Option<RequestError>,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Debug.
    Debug,
    /// Info (guest stdout lands here).
    Info,
    /// Warn (guest stderr lands here).
    Warn,
    /// Error.
    Error,
}

/// A log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Severity.
    pub level: Level,
    /// The text.
    pub message: String,
}

impl RunRecord {
    /// Replace every form of each secret with `***` in every text of the
    /// record (see [`Redactor`]), so no sink ever sees one.
    pub fn redact(&mut self, secrets: &[String]) {
        self.redact_with(&Redactor::new(secrets));
    }

    /// As [`RunRecord::redact`], with the secrets' forms already found.
    pub fn redact_with(&mut self, redactor: &Redactor) {
        if redactor.is_empty() {
            return;
        }
        let r = |s: &mut String| redactor.redact(s);
        if let Some(e) = &mut self.error {
            r(&mut e.message);
        }
        for step in &mut self.steps {
            r(&mut step.name);
            for c in &mut step.checks {
                r(&mut c.name);
                if let Some(d) = &mut c.detail {
                    r(d);
                }
            }
            for q in &mut step.requests {
                r(&mut q.method);
                r(&mut q.url);
                if let Some(e) = &mut q.error {
                    r(&mut e.message);
                }
            }
        }
        for l in &mut self.logs {
            r(&mut l.message);
        }
        // A line cut at the length cap may hold half a secret, the next
        // line the other half.
        for i in 1..self.logs.len() {
            let (before, after) = self.logs.split_at_mut(i);
            if let (Some(a), Some(b)) = (before.last_mut(), after.first_mut()) {
                redactor.redact_across(&mut a.message, &mut b.message);
            }
        }
    }

    /// Checks that failed, in order.
    pub fn failed_checks(&self) -> impl Iterator<Item = &CheckRecord> {
        self.steps
            .iter()
            .flat_map(|s| s.checks.iter())
            .filter(|c| !c.passed)
    }

    /// All requests, in order.
    pub fn requests(&self) -> impl Iterator<Item = &RequestRecord> {
        self.steps.iter().flat_map(|s| s.requests.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_every_text() {
        let mut rec = RunRecord {
            journey: "j".into(),
            run_id: "r".into(),
            location: "l".into(),
            attempt: 1,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(1),
            status: Status::Fail,
            error: Some(RunError {
                kind: ErrorKind::Journey,
                message: "bad s3cret".into(),
            }),
            steps: vec![StepRecord {
                name: "step s3cret".into(),
                status: Status::Fail,
                start: Duration::ZERO,
                duration: Duration::from_millis(1),
                checks: vec![CheckRecord {
                    name: "c s3cret".into(),
                    passed: false,
                    detail: Some("d s3cret".into()),
                }],
                requests: vec![RequestRecord {
                    method: "GET".into(),
                    url: "http://x/?k=s3cret".into(),
                    status: None,
                    http_version: None,
                    remote_addr: None,
                    reused_connection: false,
                    start: Duration::ZERO,
                    timings: PhaseTimings::default(),
                    bytes_received: 0,
                    bytes_decoded: 0,
                    tls: None,
                    trace_id: None,
                    span_id: None,
                    error: Some(RequestError {
                        kind: HttpErrorKind::Connect,
                        message: "s3cret".into(),
                        phase: Some(Phase::Connect),
                    }),
                }],
            }],
            logs: vec![LogRecord {
                level: Level::Info,
                message: "token s3cret".into(),
            }],
            maintenance: None,
        };
        let json = serde_json::to_value(&rec).expect("serializes");
        // The JSON form every sink and stored history has used since 0.1.
        assert_eq!(json["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["duration_ms"], 1.0);
        assert_eq!(json["steps"][0]["start_ms"], 0.0);
        assert_eq!(json["steps"][0]["duration_ms"], 1.0);
        let q = &json["steps"][0]["requests"][0];
        assert_eq!(q["timings_ms"]["total"], 0.0);
        assert_eq!(q["error"]["kind"], "connect");
        let back: RunRecord = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, rec);
        rec.redact(&["s3cret".into(), String::new()]);
        let json = serde_json::to_string(&rec).expect("serializes");
        assert!(!json.contains("s3cret"), "{json}");
        assert_eq!(json.matches("***").count(), 7, "{json}");
    }
}

pub mod units;
