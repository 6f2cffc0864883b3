//! The host side of the `waymark:journey` world for one run: what the guest's
//! imports do, and the record they build up.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::waymark::journey::{http as whttp, report, vars};
use crate::recorder::Recorder;
use crate::script_bindings::waymark::journey::script;
use crate::tape::{
    self, ClockLog, RecordingMonotonic, RecordingWall, ReplayClock, Replayer, TapeMode,
};
use crate::wasi_http::Hooks;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use waymark_http::{self as http, Client, Exchange};
use waymark_record::{Level, LogRecord};

/// Guest output beyond this many log lines is counted, not kept: a journey
/// printing in a loop must not exhaust the host.
const MAX_LOG_LINES: usize = 1000;
/// Longer log lines are cut.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// The first log line of every run made with `--insecure`.
const INSECURE: &str = "INSECURE: TLS certificate verification is off for this run (--insecure); \
                        any server certificate is accepted";

/// Everything one run's Store holds.
pub struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// Shared with the `wasi:http` hooks, whose requests run in tasks of
    /// their own.
    pub(crate) client: Arc<tokio::sync::Mutex<Client>>,
    http_ctx: WasiHttpCtx,
    hooks: Hooks,
    vars: Arc<HashMap<String, String>>,
    /// A journey run from its source: the modules the runtime evaluates.
    pub(crate) script: Option<Arc<Vec<script::Module>>>,
    /// A store that prepares files: the source of the runtime's preparer
    /// (`script.preparer`), empty otherwise.
    pub(crate) preparer: &'static str,
    /// For `--har`, `-v` and a recording: body cap, and the run's start on
    /// both clocks.
    capture: Option<(usize, std::time::SystemTime, Instant)>,
    pub(crate) captured: Vec<crate::har::Captured>,
    /// The run's secrets, found once, for what `captured` keeps and a
    /// replay matches (none otherwise: `waymark load` finds them per user).
    redactor: Option<Arc<waymark_record::Redactor>>,
    /// A recording's clock readings and random seed.
    pub(crate) recording: Option<(Arc<Mutex<ClockLog>>, [u8; 32])>,
    /// A replay's recorded exchanges.
    pub(crate) replay: Option<Arc<Mutex<Replayer>>>,
    pub(crate) rec: Recorder,
    pub(crate) logs: Arc<Mutex<LogBuffer>>,
    /// When the current run must stop (read by the epoch callback).
    pub(crate) deadline: Instant,
}

impl RunState {
    pub(crate) fn new(
        journey: &str,
        vars: Arc<HashMap<String, String>>,
        opts: &crate::RunOptions,
        // When the run starts, and when it must be stopped.
        window: std::ops::Range<Instant>,
        started_at: std::time::SystemTime,
        conns: waymark_http::Connections,
    ) -> Self {
        let std::ops::Range {
            start: started,
            end: deadline,
        } = window;
        let http = opts.http.clone();
        let memory_limit = opts.memory_limit;
        let capture = opts.capture_bodies.map(|cap| (cap, started_at));
        let logs = Arc::new(Mutex::new(LogBuffer::default()));
        if http.insecure
            && let Ok(mut l) = logs.lock()
        {
            l.push(Level::Warn, INSECURE.into());
        }
        let client = Arc::new(tokio::sync::Mutex::new(Client::with_connections(
            http.clone(),
            conns,
        )));
        let mut rec = Recorder::new(journey, started, opts.max_record);
        rec.insecure = http.insecure;
        let redactor =
            (opts.capture_bodies.is_some() || !matches!(opts.tape, TapeMode::Off)).then(|| {
                let secrets: Vec<&String> = opts.secrets.values().collect();
                Arc::new(waymark_record::Redactor::new(&secrets))
            });
        // WASI with nothing behind it: no preopened directories, no env, no
        // args, no sockets; stdout/stderr become log lines of the run.
        let mut builder = WasiCtx::builder();
        let mut recording = None;
        let mut replay = None;
        match &opts.tape {
            TapeMode::Off => {}
            TapeMode::Record => {
                let log = Arc::new(Mutex::new(ClockLog::default()));
                let seed: [u8; 32] = rand_wasi::random();
                builder
                    .wall_clock(RecordingWall(log.clone()))
                    .monotonic_clock(RecordingMonotonic {
                        log: log.clone(),
                        t0: started,
                    });
                tape::seeded(&mut builder, seed);
                recording = Some((log, seed));
            }
            TapeMode::Replay(t) => {
                builder
                    .wall_clock(ReplayClock::new(t.wall_clock_ns.clone()))
                    .monotonic_clock(ReplayClock::new(t.monotonic_ns.clone()));
                // Checked when the tape was read.
                tape::seeded(&mut builder, t.seed_bytes().unwrap_or_default());
                replay = Some(Arc::new(Mutex::new(Replayer::new(
                    t.exchanges.clone(),
                    redactor.as_deref().cloned().unwrap_or_default(),
                ))));
            }
        }
        let wasi = builder
            .stdout(GuestOutput {
                logs: logs.clone(),
                level: Level::Info,
            })
            .stderr(GuestOutput {
                logs: logs.clone(),
                level: Level::Warn,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        RunState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                exceeded: None,
            },
            capture: capture.map(|(cap, wall)| (cap, wall, started)),
            captured: Vec::new(),
            redactor,
            recording,
            replay: replay.clone(),
            client: client.clone(),
            http_ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                client,
                exchanges: Default::default(),
                used: false,
                body_cap: http.max_body,
                replay,
            },
            vars,
            script: None,
            preparer: "",
            rec,
            logs,
            deadline,
        }
    }

    /// Ready for another run of the same instance, started at `started`:
    /// a fresh record, logs, trace id, cookie jar and request counters, and
    /// the new deadline. Connections and the guest's memory carry over.
    pub(crate) fn next_run(&mut self, journey: &str, started: Instant, deadline: Instant) {
        let insecure = self.rec.insecure;
        self.rec = Recorder::new(journey, started, self.rec.budget.limit());
        self.rec.insecure = insecure;
        if let Ok(mut l) = self.logs.lock() {
            *l = LogBuffer::default();
            if insecure {
                l.push(Level::Warn, INSECURE.into());
            }
        }
        if let Ok(mut c) = self.client.try_lock() {
            c.next_run();
        }
        self.captured.clear();
        if let Some((_, wall, at)) = &mut self.capture {
            *wall = std::time::SystemTime::now();
            *at = started;
        }
        self.deadline = deadline;
    }
}

impl RunState {
    /// Record what `wasi:http` requests finished since the last host call.
    pub(crate) fn drain_wasi_http(&mut self) {
        if !self.hooks.used {
            return;
        }
        let finished = match self.hooks.exchanges.lock() {
            Ok(mut x) if !x.finished.is_empty() => std::mem::take(&mut x.finished),
            _ => return,
        };
        self.record_finished(finished);
    }

    fn record_finished(&mut self, finished: Vec<(http::Request, Exchange)>) {
        for (request, ex) in finished {
            self.record_exchange(&request, &ex);
        }
    }

    /// At the end of the run: what finished goes into the record, and what
    /// is still in flight is recorded as stopped, as an SDK request would be.
    pub(crate) fn stop_wasi_http(&mut self) {
        if !self.hooks.used {
            return;
        }
        // Both lists at once: a request finishing meanwhile is in one of them.
        let (finished, in_flight) = match self.hooks.exchanges.lock() {
            Ok(mut x) => (
                std::mem::take(&mut x.finished),
                std::mem::take(&mut x.in_flight),
            ),
            Err(_) => return,
        };
        self.record_finished(finished);
        for (_, method, url, started) in in_flight {
            self.rec.request_started(&method, &url, started);
        }
    }

    /// A `wasi:http` request the guest left running still holds the
    /// client (its task keeps a handle to it).
    pub(crate) fn wasi_http_in_flight(&self) -> bool {
        Arc::strong_count(&self.client) > 2
    }

    /// The open connections, unless a request still running holds them.
    pub(crate) fn take_connections(self) -> waymark_http::Connections {
        let RunState { client, hooks, .. } = self;
        drop(hooks);
        match Arc::try_unwrap(client) {
            Ok(c) => c.into_inner().into_connections(),
            Err(shared) => match shared.try_lock() {
                Ok(mut c) => {
                    let config = c.config_arc();
                    std::mem::replace(&mut *c, Client::new(config)).into_connections()
                }
                Err(_) => Default::default(),
            },
        }
    }

    fn record_exchange(&mut self, request: &http::Request, ex: &Exchange) {
        self.rec.request(&request.method, &request.url, ex);
        if let (Some((cap, wall, t0)), Some(redactor)) = (self.capture, &self.redactor) {
            self.captured.push(crate::har::Captured::new(
                wall, t0, request, ex, cap, redactor,
            ));
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory; remembers that it refused, so the run can say why
/// it stopped instead of showing the guest allocator's abort.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) exceeded: Option<usize>,
}

/// The error a refused memory growth traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (the journey asked for {desired} bytes)")]
pub struct MemoryExceeded {
    /// The cap.
    pub limit: usize,
    /// What the guest asked for.
    pub desired: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = Some(desired);
            return Err(MemoryExceeded {
                limit: self.limit,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Log lines of the run, from `report.log` and from guest stdout/stderr, in
/// the order they happened.
#[derive(Default)]
pub(crate) struct LogBuffer {
    pub(crate) lines: Vec<LogRecord>,
    dropped: usize,
    partial_out: Vec<u8>,
    partial_err: Vec<u8>,
}

impl LogBuffer {
    fn push(&mut self, level: Level, message: String) {
        if self.lines.len() >= MAX_LOG_LINES {
            self.dropped += 1;
            return;
        }
        let mut message = message;
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …(cut)");
        }
        self.lines.push(LogRecord { level, message });
    }

    fn write_output(&mut self, level: Level, bytes: &[u8]) {
        let partial = match level {
            Level::Warn => &mut self.partial_err,
            _ => &mut self.partial_out,
        };
        partial.extend_from_slice(bytes);
        let mut buf = std::mem::take(partial);
        // One pass over the buffer: a write of a million newlines must not
        // shift the rest of it a million times.
        let mut start = 0;
        while let Some(off) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + off;
            if self.lines.len() < MAX_LOG_LINES {
                let line = String::from_utf8_lossy(&buf[start..end])
                    .trim_end()
                    .to_string();
                self.push(level, line);
            } else {
                self.dropped += 1;
            }
            start = end + 1;
        }
        buf.drain(..start);
        // A runaway line without a newline is cut rather than kept growing.
        if buf.len() > MAX_LINE_BYTES {
            self.push(level, String::from_utf8_lossy(&buf).into_owned());
            buf.clear();
        }
        match level {
            Level::Warn => self.partial_err = buf,
            _ => self.partial_out = buf,
        }
    }

    /// Take every line, flushing unfinished output lines.
    pub(crate) fn finish(&mut self) -> Vec<LogRecord> {
        for level in [Level::Info, Level::Warn] {
            let partial = match level {
                Level::Warn => std::mem::take(&mut self.partial_err),
                _ => std::mem::take(&mut self.partial_out),
            };
            if !partial.is_empty() {
                self.push(level, String::from_utf8_lossy(&partial).into_owned());
            }
        }
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogRecord {
                level: Level::Warn,
                message: format!("{} more log lines were dropped", self.dropped),
            });
        }
        lines
    }
}

/// Guest stdout or stderr, turned into log lines.
struct GuestOutput {
    logs: Arc<Mutex<LogBuffer>>,
    level: Level,
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(GuestWriter {
            logs: self.logs.clone(),
            level: self.level,
        })
    }
}

struct GuestWriter {
    logs: Arc<Mutex<LogBuffer>>,
    level: Level,
}

impl tokio::io::AsyncWrite for GuestWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Ok(mut logs) = self.logs.lock() {
            logs.write_output(self.level, buf);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl whttp::Host for RunState {
    async fn send(&mut self, req: whttp::Request) -> Result<whttp::Response, whttp::HttpError> {
        let follow = req.follow_redirects.unwrap_or(true);
        let mut request = http::Request {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
            timeout: req
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
            trace: req.trace.unwrap_or(true),
        };
        self.drain_wasi_http();
        let mut hops = 0;
        let mut client = self.client.clone().lock_owned().await;
        // Each hop of a redirect chain is a request of its own in the record,
        // and passes the allow-list on its own.
        let result = loop {
            self.rec
                .request_started(&request.method, &request.url, Instant::now());
            let ex = match &self.replay {
                Some(r) => tape::replay_send(r, &mut client, &request).await,
                None => client.send(&request).await,
            };
            self.record_exchange(&request, &ex);
            let next = match &ex.result {
                Ok(resp) if follow => http::redirect(&request, resp),
                _ => None,
            };
            match next {
                None => break ex.result,
                Some(Err(e)) => {
                    self.rec.hop_failed(&e);
                    break Err(e);
                }
                Some(Ok(_)) if hops >= client.config().max_redirects => {
                    let e = http::HttpError::Limit(format!(
                        "redirects: more than {} for one request",
                        client.config().max_redirects
                    ));
                    self.rec.hop_failed(&e);
                    break Err(e);
                }
                Some(Ok(next)) => {
                    hops += 1;
                    request = next;
                }
            }
        };
        match result {
            Ok(r) => Ok(whttp::Response {
                status: r.status,
                headers: r.headers,
                body: r.body.to_vec(),
                wire_bytes: r.wire_bytes,
                timings: whttp::Timings {
                    resolve_us: micros(r.timings.resolve),
                    connect_us: micros(r.timings.connect),
                    tls_us: micros(r.timings.tls),
                    processing_us: micros(r.timings.processing),
                    transfer_us: micros(r.timings.transfer),
                    total_us: micros(r.timings.total),
                },
                http_version: r.http_version.to_string(),
                remote_addr: Some(r.remote_addr.to_string()),
                reused_connection: r.reused_connection,
                tls: r.tls.map(|t| whttp::TlsInfo {
                    version: t.version,
                    cipher: t.cipher,
                    peer_cert_not_after: t.not_after.map(unix_seconds),
                }),
            }),
            Err(e) => Err(match e {
                http::HttpError::Denied(m) => whttp::HttpError::Denied(m),
                http::HttpError::InvalidRequest(m) => whttp::HttpError::InvalidRequest(m),
                http::HttpError::Resolve(m) => whttp::HttpError::Resolve(m),
                http::HttpError::Connect(m) => whttp::HttpError::Connect(m),
                http::HttpError::Tls(m) => whttp::HttpError::Tls(m),
                http::HttpError::Timeout(m) => whttp::HttpError::Timeout(m),
                http::HttpError::Protocol(m) => whttp::HttpError::Protocol(m),
                http::HttpError::Malformed(m) => whttp::HttpError::Malformed(m),
                http::HttpError::Reset(m) => whttp::HttpError::Reset(m),
                http::HttpError::TooLarge(n) => whttp::HttpError::TooLarge(n),
                http::HttpError::Limit(m) => whttp::HttpError::Limit(m),
            }),
        }
    }

    async fn cookies(&mut self, url: String) -> Vec<(String, String)> {
        self.drain_wasi_http();
        self.client.lock().await.cookies(&url)
    }

    async fn clear_cookies(&mut self) {
        self.client.lock().await.clear_cookies();
    }
}

impl report::Host for RunState {
    async fn step_start(&mut self, name: String) {
        self.drain_wasi_http();
        self.rec.step_start(name);
    }

    async fn step_end(&mut self) {
        self.drain_wasi_http();
        self.rec.step_end();
    }

    async fn check(&mut self, name: String, passed: bool, detail: Option<String>) {
        self.drain_wasi_http();
        self.rec.check(name, passed, detail);
    }

    async fn log(&mut self, level: report::Level, message: String) {
        self.drain_wasi_http();
        let level = match level {
            report::Level::Debug => Level::Debug,
            report::Level::Info => Level::Info,
            report::Level::Warn => Level::Warn,
            report::Level::Error => Level::Error,
        };
        if let Ok(mut logs) = self.logs.lock() {
            logs.push(level, message);
        }
    }

    async fn sleep(&mut self, ms: u32) {
        self.drain_wasi_http();
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
}

impl script::Host for RunState {
    async fn modules(&mut self) -> Vec<script::Module> {
        self.script.as_deref().cloned().unwrap_or_default()
    }

    async fn preparer(&mut self) -> String {
        self.preparer.to_string()
    }
}

impl vars::Host for RunState {
    async fn get(&mut self, name: String) -> Option<String> {
        self.vars.get(&name).cloned()
    }
}

/// Seconds since 1970 as the WIT carries them (negative before).
fn unix_seconds(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
