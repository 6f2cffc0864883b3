//! The run's record as the guest reports it: steps (explicit, and the
//! implicit one named after the journey), their checks and requests, and
//! what a stopped run leaves open.

use std::time::{Duration, Instant};

use waymark_http::{self as http, Exchange};
use waymark_record::{
    CheckRecord, PhaseTimings, RequestError, RequestRecord, Status, StepRecord, TlsRecord,
};

/// Longest step or check name kept; longer ones are cut with a marker.
const MAX_NAME: usize = 1024;
/// Longest check detail, URL or error message kept.
const MAX_TEXT: usize = 8 * 1024;

/// What the host holds on the guest's behalf in the record, against the
/// run's budget (`--max-record`): a guest that reports without end fills
/// it, and the run is stopped with kind `limit`.
#[derive(Debug, Default)]
pub(crate) struct RecordBudget {
    limit: usize,
    used: usize,
    /// What did not fit first: `steps`, `checks` or `requests`.
    pub(crate) full: Option<&'static str>,
    pub(crate) dropped_steps: u64,
    pub(crate) dropped_checks: u64,
    pub(crate) dropped_requests: u64,
}

impl RecordBudget {
    /// Takes `bytes` for an entry of `what`; false (and counted as dropped)
    /// once the budget is spent.
    fn take(&mut self, what: &'static str, bytes: usize) -> bool {
        if self.full.is_none() && self.used.saturating_add(bytes) <= self.limit {
            self.used += bytes;
            return true;
        }
        self.full.get_or_insert(what);
        match what {
            "steps" => self.dropped_steps += 1,
            "checks" => self.dropped_checks += 1,
            _ => self.dropped_requests += 1,
        }
        false
    }

    /// The budget in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

/// `text`, cut to at most `max` bytes (on a character boundary) with a
/// marker saying how much went.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    text.push_str(&format!(" …({} bytes cut)", total - at));
    text
}

/// Steps, checks and requests as the guest reports them.
pub(crate) struct Recorder {
    pub(crate) journey: String,
    pub(crate) started: Instant,
    pub(crate) steps: Vec<StepState>,
    /// The open steps, innermost last; `None` for one the budget had no
    /// room for.
    pub(crate) open: Vec<Option<usize>>,
    pub(crate) requests_denied: usize,
    pub(crate) requests_failed: usize,
    /// Requests sent and not answered yet (the SDK's one, and wasi:http's
    /// in flight when the run stopped), so a stopped run still shows which
    /// one hung.
    pub(crate) pending: Vec<(String, String, Instant)>,
    pub(crate) insecure: bool,
    pub(crate) budget: RecordBudget,
}

pub(crate) struct StepState {
    pub(crate) record: StepRecord,
    start: Instant,
    end: Option<Instant>,
    implicit: bool,
}

impl Recorder {
    pub(crate) fn new(journey: &str, started: Instant, max_record: usize) -> Self {
        Recorder {
            budget: RecordBudget {
                limit: max_record,
                ..RecordBudget::default()
            },
            journey: journey.to_string(),
            started,
            steps: Vec::new(),
            open: Vec::new(),
            requests_denied: 0,
            requests_failed: 0,
            pending: Vec::new(),
            insecure: false,
        }
    }

    /// Opens a step; `None` when the record's budget has no room for it.
    pub(crate) fn open_step(&mut self, name: String, implicit: bool) -> Option<usize> {
        let name = cut(name, MAX_NAME);
        if !self
            .budget
            .take("steps", std::mem::size_of::<StepState>() + name.len())
        {
            return None;
        }
        let now = Instant::now();
        self.steps.push(StepState {
            record: StepRecord {
                name,
                status: Status::Pass,
                start: now.saturating_duration_since(self.started),
                duration: Duration::ZERO,
                checks: Vec::new(),
                requests: Vec::new(),
            },
            start: now,
            end: None,
            implicit,
        });
        Some(self.steps.len() - 1)
    }

    /// The innermost open step, or the implicit step named after the
    /// journey for activity outside any step. A new implicit step starts
    /// whenever explicit steps came between, so the waterfall stays in order.
    ///
    /// `None` when the budget had no room for the step: what belongs in it
    /// is then dropped and counted.
    pub(crate) fn current(&mut self) -> Option<usize> {
        if let Some(&i) = self.open.last() {
            return i;
        }
        match self.steps.last() {
            Some(last) if last.implicit => Some(self.steps.len() - 1),
            _ => {
                let name = self.journey.clone();
                self.open_step(name, true)
            }
        }
    }

    pub(crate) fn touch(&mut self, i: usize) {
        if let Some(s) = self.steps.get_mut(i)
            && s.implicit
        {
            s.end = Some(Instant::now());
        }
    }

    pub(crate) fn step_start(&mut self, name: String) {
        // A step that did not fit is still opened (as nothing), so its
        // end closes it and not its parent.
        let i = self.open_step(name, false);
        self.open.push(i);
    }

    pub(crate) fn step_end(&mut self) {
        if let Some(Some(i)) = self.open.pop()
            && let Some(s) = self.steps.get_mut(i)
        {
            s.end = Some(Instant::now());
        }
    }

    pub(crate) fn check(&mut self, name: String, passed: bool, detail: Option<String>) {
        let name = cut(name, MAX_NAME);
        let detail = detail.map(|d| cut(d, MAX_TEXT));
        let bytes = std::mem::size_of::<CheckRecord>()
            + name.len()
            + detail.as_ref().map_or(0, String::len);
        let Some(i) = self.current() else {
            self.budget.take("checks", usize::MAX);
            return;
        };
        if !self.budget.take("checks", bytes) {
            return;
        }
        if let Some(s) = self.steps.get_mut(i) {
            if !passed {
                s.record.status = Status::Fail;
            }
            s.record.checks.push(CheckRecord {
                name,
                passed,
                detail,
            });
        }
        self.touch(i);
    }

    pub(crate) fn request_started(&mut self, method: &str, url: &str, started: Instant) {
        self.pending
            .push((method.to_string(), url.to_string(), started));
    }

    pub(crate) fn request(&mut self, method: &str, url: &str, ex: &Exchange) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|(m, u, _)| m == method && u == url)
        {
            self.pending.remove(i);
        }
        if let Err(e) = &ex.result {
            if matches!(e, http::HttpError::Denied(_)) {
                self.requests_denied += 1;
            }
            self.requests_failed += 1;
        }
        let url = cut(url.to_string(), MAX_TEXT);
        let bytes = std::mem::size_of::<RequestRecord>()
            + url.len()
            + ex.result.as_ref().err().map_or(0, |e| e.detail().len());
        let Some(i) = self.current() else {
            self.budget.take("requests", usize::MAX);
            return;
        };
        if !self.budget.take("requests", bytes) {
            return;
        }
        let mut rec = RequestRecord {
            method: cut(method.to_ascii_uppercase(), MAX_NAME),
            url,
            status: None,
            http_version: None,
            remote_addr: None,
            reused_connection: false,
            start: ex.started.saturating_duration_since(self.started),
            timings: PhaseTimings {
                total: ex.elapsed,
                ..PhaseTimings::default()
            },
            bytes_received: 0,
            bytes_decoded: 0,
            tls: None,
            trace_id: (!ex.trace_id.is_empty()).then(|| ex.trace_id.clone()),
            span_id: ex.span_id.clone(),
            error: None,
        };
        match &ex.result {
            Ok(resp) => {
                rec.status = Some(resp.status);
                rec.http_version = Some(resp.http_version.to_string());
                rec.remote_addr = Some(resp.remote_addr.to_string());
                rec.reused_connection = resp.reused_connection;
                rec.timings = resp.timings;
                rec.bytes_received = resp.wire_bytes;
                rec.bytes_decoded = resp.body.len() as u64;
                rec.tls = resp.tls.as_ref().map(|t| TlsRecord {
                    version: t.version.clone(),
                    cipher: t.cipher.clone(),
                    cert_not_after: t.not_after,
                    verified: !self.insecure,
                });
            }
            Err(e) => {
                // The kind is beside it in every output; the message is the detail.
                if let Some(r) = &ex.reached {
                    rec.timings = r.timings;
                }
                rec.error = Some(RequestError {
                    kind: e.kind(),
                    message: cut(e.detail(), MAX_TEXT),
                    phase: ex.reached.map(|r| r.phase),
                });
            }
        }
        let run_start = self.started;
        if let Some(s) = self.steps.get_mut(i) {
            // An implicit step opens when its first request is recorded, which
            // is after that request started.
            if s.implicit && ex.started < s.start {
                s.start = ex.started;
                s.record.start = ex.started.saturating_duration_since(run_start);
            }
            if rec.error.is_some() {
                s.record.status = Status::Fail;
            }
            s.record.requests.push(rec);
        }
        self.touch(i);
    }

    /// The request just recorded could not be followed (a redirect with a
    /// bad Location, or one hop too many): the error belongs on that hop.
    pub(crate) fn hop_failed(&mut self, e: &http::HttpError) {
        if let Some(i) = self.current()
            && let Some(s) = self.steps.get_mut(i)
            && let Some(q) = s.record.requests.last_mut()
        {
            q.error = Some(RequestError {
                kind: e.kind(),
                message: e.detail(),
                phase: None,
            });
            s.record.status = Status::Fail;
        }
        self.requests_failed += 1;
    }

    /// Close the record: durations, and steps left open by a stopped run.
    pub(crate) fn finish(&mut self, stopped: bool) -> Vec<StepRecord> {
        // Steps cut short: the open ones, and the one whose request hung.
        // Marked in a table, not searched in a list: a guest can leave a
        // million steps open, and the record must close in linear time.
        let mut stopped_in = vec![false; self.steps.len()];
        for &i in self.open.iter().flatten() {
            if let Some(c) = stopped_in.get_mut(i) {
                *c = true;
            }
        }
        for (method, url, started) in std::mem::take(&mut self.pending) {
            let ex = Exchange {
                started,
                trace_id: String::new(),
                span_id: None,
                result: Err(http::HttpError::Timeout(
                    "no response yet when the run was stopped".into(),
                )),
                elapsed: started.elapsed(),
                reached: None,
            };
            if let Some(i) = self.current() {
                if stopped_in.len() <= i {
                    stopped_in.resize(i + 1, false);
                }
                stopped_in[i] = true;
            }
            self.request(&method, &url, &ex);
        }
        self.open.clear();
        let now = Instant::now();
        self.steps
            .drain(..)
            .enumerate()
            .map(|(i, mut s)| {
                let end = s.end.unwrap_or(now);
                s.record.duration = end.saturating_duration_since(s.start);
                if stopped && stopped_in.get(i).copied().unwrap_or(false) {
                    s.record.status = Status::Error;
                }
                s.record
            })
            .collect()
    }
}
