//! Where finished runs go besides the history. Each sink has its own thread
//! and bounded queue, so a slow or dead sink never delays the scheduler or
//! the other sinks. A delivery that failed for a reason that may pass (no
//! answer, 408, 429, 5xx) is retried with jittered exponential backoff;
//! records that do not fit the queue meanwhile go to a bounded spool on disk
//! and are sent once the sink is back; at shutdown what is still queued is
//! spooled. A record the receiver refuses for good (another 4xx) is set
//! aside in the dead-letter file and counted, so it cannot block the sink.

pub mod alertmanager;
pub mod jsonl;
pub mod otlp;
pub mod pretty;
pub mod prometheus;
mod registry;
pub(crate) mod spool;
pub mod webhook;

pub(crate) use registry::read;
pub use registry::{DEFAULT_QUEUE, DEFAULT_SPOOL_MAX, SinkConfig, SinkKind};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use spool::Spool;
use waymark_record::RunRecord;

/// What a sink receives: one attempt, and whether it decided its run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The attempt's record.
    pub record: RunRecord,
    /// A pass, or the last try: the run's outcome.
    pub final_attempt: bool,
}

/// One kind of sink, driven by its worker thread.
pub trait Deliver: Send {
    /// Sends `batch`, all of it or an error (then the whole batch is tried
    /// again later; receivers see each record at least once, with its
    /// `run_id` and `attempt` as a stable id).
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError>;
    /// Makes delivered records durable (files).
    fn flush(&mut self) -> Result<(), DeliverError> {
        Ok(())
    }
    /// Called about every 200 ms, for sinks that act on time (re-sending
    /// firing alerts).
    fn tick(&mut self) -> Result<(), DeliverError> {
        Ok(())
    }
    /// Most records per `deliver` call.
    fn max_batch(&self) -> usize {
        100
    }
}

/// A sink could not start.
#[derive(Debug, thiserror::Error)]
#[error("sink {name}: {source}")]
pub struct SinkError {
    /// Which sink.
    pub name: String,
    /// Why.
    #[source]
    pub source: DeliverError,
}

/// Why a delivery (or opening a sink, or its spool) failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// A file of the sink or its spool could not be used.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was being done: `open`, `write`, `rotate`, …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Standard output could not be written.
    #[error("cannot write to standard output: {0}")]
    Stdout(#[source] std::io::Error),
    /// The receiver could not be reached or did not answer in time.
    #[error("POST {url}: {source}")]
    Transport {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The receiver answered with a status other than 2xx.
    #[error("POST {url}: status {status}")]
    Status {
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// A record could not be encoded as JSON.
    #[error("cannot encode as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A payload could not be compressed.
    #[error("cannot compress: {0}")]
    Compress(#[from] snap::Error),
    /// The metrics registry could not be read into its typed model.
    #[error("cannot read the metrics registry")]
    Metrics,
    /// A thread holding the spool panicked.
    #[error("the spool's lock was poisoned by a panic")]
    Poisoned,
}

impl DeliverError {
    /// Whether trying again may succeed: the receiver was unreachable, busy
    /// (408, 429) or failing (5xx), or a file or lock could not be used. A
    /// receiver that refused the content (another status) or a record that
    /// cannot be encoded will fail the same way every time.
    pub fn retryable(&self) -> bool {
        match self {
            DeliverError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            DeliverError::Json(_) | DeliverError::Compress(_) => false,
            DeliverError::File { .. }
            | DeliverError::Stdout(_)
            | DeliverError::Transport { .. }
            | DeliverError::Metrics
            | DeliverError::Poisoned => true,
        }
    }

    /// `map_err` for an I/O error on `path`.
    pub(crate) fn file(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| DeliverError::File {
            action,
            path,
            source,
        }
    }
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records delivered.
    pub delivered: AtomicU64,
    /// Records written to the spool (queue full, or shutdown).
    pub spooled: AtomicU64,
    /// Delivery attempts that failed.
    pub failures: AtomicU64,
    /// Delivery attempts made again after a failure that may pass.
    pub retries: AtomicU64,
    /// Records lost: the queue was full and there is no spool, or the spool
    /// could not be written.
    pub dropped: AtomicU64,
    /// Records the receiver refused for good, set aside in the dead-letter
    /// file.
    pub dead_lettered: AtomicU64,
    /// Spooled records dropped, oldest first, to keep the spool within
    /// `spool_max`.
    pub spool_evicted: AtomicU64,
    /// Records waiting in the in-memory queue.
    pub queued: AtomicU64,
}

enum Msg {
    Item(Arc<Delivery>),
    /// Nothing more comes: deliver what is queued (until the close
    /// deadline), spool the rest, stop.
    Close,
}

/// A running sink.
pub struct Sink {
    name: String,
    tx: mpsc::SyncSender<Msg>,
    /// Overflow to the spool goes through its own thread: the caller never
    /// waits for the disk.
    overflow: Option<mpsc::Sender<Arc<Delivery>>>,
    spooler: Option<JoinHandle<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SinkStats>,
    close_at: Arc<Mutex<Option<Instant>>>,
}

/// Shared state the service hands to sinks: what they serve, what they send.
#[derive(Clone, Default)]
pub struct Exposed {
    /// The Prometheus registry, when a prometheus sink exists.
    pub metrics: Option<Arc<prometheus::Metrics>>,
    /// The runner's own metrics, which the otlp sink sends too.
    pub(crate) telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Starts every sink of `configs`; prometheus sinks register into `exposed`.
pub fn start_all(
    configs: &[SinkConfig],
    spool_dir: Option<&Path>,
    exposed: &mut Exposed,
) -> Result<Vec<Sink>, SinkError> {
    configs
        .iter()
        .map(|c| Sink::start(c, spool_dir, exposed))
        .collect()
}

/// The blocking HTTP client of the network sinks: a status code is an
/// answer to judge, not a transport error.
fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(format!("waymark/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// POSTs `body` with `headers`; a 2xx answer is a delivery, anything else
/// an error naming the URL.
fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), DeliverError> {
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send(body).map_err(|e| DeliverError::Transport {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    let code = resp.status().as_u16();
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(DeliverError::Status {
            url: url.to_string(),
            status: code,
        })
    }
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Waits between tries: doubling from 100 ms to 30 s, each with up to as
/// much again at random, so sinks that failed together do not come back in
/// step.
fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(BACKOFF_START)
        .with_max_delay(BACKOFF_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Sink {
    /// Opens the sink and starts its thread. With `spool_dir`, records that
    /// do not fit the queue go to `spool_dir/NAME/` (and what is found there
    /// from an earlier process is sent first).
    pub fn start(
        config: &SinkConfig,
        spool_dir: Option<&Path>,
        exposed: &mut Exposed,
    ) -> Result<Sink, SinkError> {
        let name = config.name.clone();
        let err = |source: DeliverError| SinkError {
            name: name.clone(),
            source,
        };
        let out = registry::build(&config.kind, exposed).map_err(err)?;
        let spool = match spool_dir {
            // Files and the registry do not go down: no spool for them.
            Some(dir)
                if matches!(
                    config.kind,
                    SinkKind::Webhook(_) | SinkKind::Otlp(_) | SinkKind::Alertmanager(_)
                ) =>
            {
                Some(Arc::new(
                    Spool::open(&dir.join(&name), config.spool_max).map_err(err)?,
                ))
            }
            _ => None,
        };
        Ok(Self::run(name, config.queue, out, spool))
    }

    /// A sink around any [`Deliver`] (tests and benchmarks use this).
    pub fn with(
        name: &str,
        queue: usize,
        out: Box<dyn Deliver>,
        spool: Option<&Path>,
    ) -> Result<Sink, SinkError> {
        let spool = match spool {
            Some(dir) => Some(Arc::new(Spool::open(dir, DEFAULT_SPOOL_MAX).map_err(
                |source| SinkError {
                    name: name.to_string(),
                    source,
                },
            )?)),
            None => None,
        };
        Ok(Self::run(name.to_string(), queue, out, spool))
    }

    fn run(name: String, queue: usize, out: Box<dyn Deliver>, spool: Option<Arc<Spool>>) -> Sink {
        let (tx, rx) = mpsc::sync_channel::<Msg>(queue);
        let stats = Arc::new(SinkStats::default());
        let close_at = Arc::new(Mutex::new(None));
        let worker = Worker {
            name: name.clone(),
            out,
            rx,
            spool: spool.clone(),
            stats: stats.clone(),
            close_at: close_at.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("waymark-sink-{name}"))
            .spawn(move || worker.run())
            .ok();
        if thread.is_none() {
            tracing::error!(sink = %name, "cannot start the sink's thread; its records go to the spool");
        }
        let (overflow, spooler) = match spool {
            Some(spool) => {
                let (otx, orx) = mpsc::channel::<Arc<Delivery>>();
                let (st, n) = (stats.clone(), name.clone());
                let h = std::thread::Builder::new()
                    .name(format!("waymark-spool-{name}"))
                    .spawn(move || {
                        while let Ok(first) = orx.recv() {
                            let mut batch = vec![first];
                            while batch.len() < 1000 {
                                match orx.try_recv() {
                                    Ok(d) => batch.push(d),
                                    Err(_) => break,
                                }
                            }
                            let k = batch.len() as u64;
                            match spool.append(&batch) {
                                Ok(evicted) => {
                                    st.spooled.fetch_add(k, Ordering::Relaxed);
                                    st.spool_evicted.fetch_add(evicted, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    st.dropped.fetch_add(k, Ordering::Relaxed);
                                    tracing::error!(sink = %n, error = %e, records = k, "cannot spool; records lost");
                                }
                            }
                        }
                    })
                    .ok();
                (h.is_some().then_some(otx), h)
            }
            None => (None, None),
        };
        Sink {
            name,
            tx,
            overflow,
            spooler,
            thread,
            stats,
            close_at,
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Its counters, readable after [`Sink::close`].
    pub fn stats_handle(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Queues `d`; never waits. A full queue sends it to the spool (or, with
    /// none, drops and counts it).
    pub fn send(&self, d: Arc<Delivery>) {
        match self.tx.try_send(Msg::Item(d)) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(Msg::Item(d)) | TrySendError::Disconnected(Msg::Item(d))) => {
                self.overflow(&d)
            }
            Err(_) => {}
        }
    }

    fn overflow(&self, d: &Arc<Delivery>) {
        match &self.overflow {
            Some(tx) if tx.send(d.clone()).is_ok() => {}
            _ => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(sink = %self.name, dropped = n, "sink queue full: a record was not delivered");
            }
        }
    }

    /// Delivers what is queued for up to `grace`, spools what is left, stops.
    pub fn close(mut self, grace: Duration) {
        if let Ok(mut d) = self.close_at.lock() {
            *d = Some(waymark_record::units::later(Instant::now(), grace));
        }
        // Blocking send: the close mark goes behind everything queued (a
        // worker giving up empties the queue, so this cannot hang).
        let _ = self.tx.send(Msg::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Then what overflowed: written before we return.
        self.overflow.take();
        if let Some(t) = self.spooler.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    name: String,
    out: Box<dyn Deliver>,
    rx: mpsc::Receiver<Msg>,
    spool: Option<Arc<Spool>>,
    stats: Arc<SinkStats>,
    close_at: Arc<Mutex<Option<Instant>>>,
}

impl Worker {
    fn deadline(&self) -> Option<Instant> {
        self.close_at.lock().ok().and_then(|d| *d)
    }

    fn run(mut self) {
        let max = self.out.max_batch().max(1);
        let mut closed = false;
        loop {
            let mut batch: Vec<Arc<Delivery>> = Vec::new();
            if !closed {
                match self.rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Msg::Item(d)) => self.took(&mut batch, d),
                    Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => closed = true,
                    Err(RecvTimeoutError::Timeout) => {}
                }
                if let Err(e) = self.out.tick() {
                    tracing::warn!(sink = %self.name, error = %e, "periodic send failed; will retry");
                }
                while batch.len() < max && !closed {
                    match self.rx.try_recv() {
                        Ok(Msg::Item(d)) => self.took(&mut batch, d),
                        Ok(Msg::Close) => closed = true,
                        Err(_) => break,
                    }
                }
            }
            if !batch.is_empty() {
                if let Err(rest) = self.deliver_with_retry(batch) {
                    // Out of time while the sink is down: keep it all on disk.
                    self.spool_rest(rest);
                    break;
                }
                continue;
            }
            if self.deadline().is_some_and(|d| Instant::now() >= d) {
                break;
            }
            // Queue empty: send what an overflow or an earlier process spooled.
            if let Some(spool) = self.spool.clone() {
                match spool.take(max) {
                    Ok(Some(chunk)) => {
                        if self.deliver_with_retry(chunk.items.clone()).is_err() {
                            // Still in the spool file for the next start.
                            self.spool_rest(Vec::new());
                            break;
                        }
                        if let Err(e) = spool.commit(chunk) {
                            tracing::error!(sink = %self.name, error = %e, "cannot update the spool");
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(sink = %self.name, error = %e, "cannot read the spool")
                    }
                }
            }
            if closed {
                break;
            }
        }
        if let Err(e) = self.out.flush() {
            tracing::error!(sink = %self.name, error = %e, "could not flush");
        }
    }

    fn took(&self, batch: &mut Vec<Arc<Delivery>>, d: Arc<Delivery>) {
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        batch.push(d);
    }

    /// Delivers `batch`, retrying what may pass and setting aside what the
    /// receiver refuses for good. `Err` holds what was not delivered when
    /// the close deadline came first.
    fn deliver_with_retry(&mut self, batch: Vec<Arc<Delivery>>) -> Result<(), Vec<Arc<Delivery>>> {
        let mut waits = backoff();
        let mut tries = 0u64;
        loop {
            tries += 1;
            if tries > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let e = match self.out.deliver(&batch) {
                Ok(()) => {
                    self.stats
                        .delivered
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => e,
            };
            let n = self.stats.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if !e.retryable() {
                if batch.len() > 1 {
                    // One refused record must not take the others with it:
                    // each goes alone, and only the refused are set aside.
                    tracing::warn!(sink = %self.name, error = %e, records = batch.len(), "the receiver refused a batch; sending its records one by one");
                    let mut rest = batch.into_iter();
                    while let Some(d) = rest.next() {
                        if let Err(mut left) = self.deliver_with_retry(vec![d]) {
                            left.extend(rest);
                            return Err(left);
                        }
                    }
                    return Ok(());
                }
                self.dead_letter(&batch, &e);
                return Ok(());
            }
            let wait = waits.next().unwrap_or(BACKOFF_MAX);
            tracing::warn!(sink = %self.name, error = %e, failures = n, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
            // While this waits, the queue fills and overflows to the spool.
            let mut until = waymark_record::units::later(Instant::now(), wait);
            if let Some(d) = self.deadline() {
                if Instant::now() >= d {
                    return Err(batch);
                }
                until = until.min(d);
            }
            while Instant::now() < until {
                // Wake early when a close begins.
                std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
                if self.deadline().is_some_and(|d| d < until) {
                    break;
                }
            }
        }
    }

    /// Sets aside records the receiver refused for good: to the dead-letter
    /// file beside the spool when there is one, and counted either way.
    fn dead_letter(&self, items: &[Arc<Delivery>], why: &DeliverError) {
        let n = items.len() as u64;
        self.stats.dead_lettered.fetch_add(n, Ordering::Relaxed);
        let ids: Vec<&str> = items.iter().map(|d| d.record.run_id.as_str()).collect();
        match &self.spool {
            Some(spool) => match spool.dead_letter(items, why) {
                Ok(path) => {
                    tracing::error!(sink = %self.name, error = %why, run_ids = ?ids, file = %path.display(), "the receiver refused a record for good; it is kept in the dead-letter file, not retried")
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %why, run_ids = ?ids, dead_letter_error = %e, "the receiver refused a record for good, and the dead-letter file could not be written; record dropped")
                }
            },
            None => {
                tracing::error!(sink = %self.name, error = %why, run_ids = ?ids, "the receiver refused a record for good; dropped (this sink has no spool)")
            }
        }
    }

    /// Spools `items` and everything still queued.
    fn spool_rest(&mut self, mut items: Vec<Arc<Delivery>>) {
        while let Ok(m) = self.rx.try_recv() {
            if let Msg::Item(d) = m {
                self.took(&mut items, d);
            }
        }
        if items.is_empty() {
            return;
        }
        let n = items.len() as u64;
        match &self.spool {
            Some(s) => match s.append(&items) {
                Ok(evicted) => {
                    self.stats.spooled.fetch_add(n, Ordering::Relaxed);
                    self.stats
                        .spool_evicted
                        .fetch_add(evicted, Ordering::Relaxed);
                    tracing::warn!(sink = %self.name, records = n, "sink unreachable at shutdown; records kept in the spool for the next start");
                }
                Err(e) => {
                    self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(sink = %self.name, error = %e, records = n, "cannot spool; records lost");
                }
            },
            None => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::error!(sink = %self.name, records = n, "sink unreachable at shutdown and it has no spool; records lost");
            }
        }
    }
}
