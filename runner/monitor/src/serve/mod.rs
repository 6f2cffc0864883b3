//! `waymark serve`: journeys on their schedules, results to the history and
//! the sinks, `/healthz` and `/status`, reload without dropping runs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::Clock;

mod listen;
mod prepare;
use listen::listen;
pub use prepare::{Plan, Prepared, check, prepare, prepare_partial};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::sinks::{Delivery, Exposed};
use crate::store;
use waymark_engine::Runtime;
use waymark_record::{RunRecord, Status};

/// What the service knows about one journey; survives reloads (by name).
#[derive(Default)]
pub struct JourneyState {
    running: AtomicBool,
    due: AtomicU64,
    runs: AtomicU64,
    attempts: AtomicU64,
    failures: AtomicU64,
    skipped_overlap: AtomicU64,
    missed_ticks: AtomicU64,
    last: Mutex<Option<LastRun>>,
    next_due_ms: AtomicU64,
}

#[derive(Clone, Serialize)]
struct LastRun {
    status: Status,
    started_at: String,
    duration_ms: f64,
    attempts: u32,
}

/// One journey's line in `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct JourneyStatus {
    /// Name.
    pub name: String,
    /// Its schedule, as written.
    pub schedule: String,
    /// A run (or its retry) is going on now.
    pub running: bool,
    /// Ticks that came due.
    pub due: u64,
    /// Runs finished (retries included in one run).
    pub runs: u64,
    /// Attempts made (first tries and retries).
    pub attempts: u64,
    /// Runs that finished failing.
    pub failures: u64,
    /// Ticks skipped because the previous run was still going.
    pub skipped_overlap: u64,
    /// Ticks that passed while the process could not act on them
    /// (paused, overloaded) and were not replayed.
    pub missed_ticks: u64,
    /// Last finished run's status.
    pub last_status: Option<Status>,
    /// Its start (RFC 3339).
    pub last_started_at: Option<String>,
    /// Next due time (RFC 3339).
    pub next_due: Option<String>,
}

struct Outputs {
    store: Option<std::sync::mpsc::SyncSender<Option<store::Entry>>>,
    /// Taken out at shutdown to be flushed and closed.
    sinks: std::sync::RwLock<Vec<crate::sinks::Sink>>,
}

struct Shared {
    runtime: Arc<Runtime>,
    semaphore: Arc<Semaphore>,
    permits: AtomicUsize,
    outputs: Outputs,
    in_flight: AtomicUsize,
    idle: Notify,
    stopping: AtomicBool,
    heartbeat_ms: AtomicU64,
    states: Mutex<Vec<(Arc<Prepared>, Arc<JourneyState>)>>,
    location: Mutex<String>,
    /// The prometheus sink's registry, served at `/metrics`.
    metrics: Option<Arc<crate::sinks::prometheus::Metrics>>,
    /// How long sinks get at shutdown to deliver what they hold.
    grace: Duration,
    /// What the schedule is read from.
    clock: Clock,
}

enum Control {
    Reload(Box<Plan>, oneshot::Sender<()>),
    Stop,
}

/// A running `waymark serve`.
pub struct Service {
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
    scheduler: tokio::task::JoinHandle<()>,
    listener: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    extra_listeners: Vec<tokio::task::JoinHandle<()>>,
    store: Option<store::Writer>,
    config_path: PathBuf,
}

/// How the shutdown went.
#[derive(Debug)]
pub struct Drained {
    /// Runs still going when the grace period ended (their records are lost).
    pub abandoned: Vec<String>,
    /// Every journey's counters once the runs in flight were done.
    pub status: Vec<JourneyStatus>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The history store.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A sink.
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    /// The `/healthz` listener.
    #[error("cannot listen on {addr} ([runner] listen): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Service {
    /// Opens the store and sinks, binds the listener, starts the scheduler
    /// on the system clock.
    pub async fn start(runtime: Arc<Runtime>, plan: Plan) -> Result<Service, StartError> {
        Self::start_with(runtime, plan, Clock::system()).await
    }

    /// As [`Service::start`], with the schedule read from `clock` (a
    /// [`Clock::manual`] lets a test step it tick by tick).
    pub async fn start_with(
        runtime: Arc<Runtime>,
        plan: Plan,
        clock: Clock,
    ) -> Result<Service, StartError> {
        let cfg = &plan.config;
        let store = match &cfg.store.path {
            Some(p) => Some(store::Writer::start(p, cfg.store.retention)?),
            None => None,
        };
        let mut exposed = Exposed::default();
        let sinks = crate::sinks::start_all(&cfg.sinks, Some(&cfg.runner.spool_dir), &mut exposed)?;
        let shared = Arc::new(Shared {
            runtime,
            semaphore: Arc::new(Semaphore::new(cfg.runner.max_concurrent_runs)),
            permits: AtomicUsize::new(cfg.runner.max_concurrent_runs),
            outputs: Outputs {
                store: store.as_ref().map(store::Writer::sender),
                sinks: std::sync::RwLock::new(sinks),
            },
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(now_ms()),
            states: Mutex::new(Vec::new()),
            location: Mutex::new(cfg.runner.location.clone()),
            metrics: exposed.metrics.clone(),
            grace: cfg.runner.shutdown_grace,
            clock,
        });
        let listener = match cfg.runner.listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?;
                let bound = l
                    .local_addr()
                    .map_err(|source| StartError::Listen { addr, source })?;
                let task = tokio::spawn(listen(l, shared.clone()));
                Some((bound, task))
            }
            None => None,
        };
        // A prometheus sink with a `listen` of its own gets its own listener.
        let mut extra = Vec::new();
        for sink in &cfg.sinks {
            if let crate::sinks::SinkKind::Prometheus(p) = &sink.kind
                && let Some(addr) = p.listen
                && Some(addr) != cfg.runner.listen
            {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?;
                extra.push(tokio::spawn(listen(l, shared.clone())));
            }
        }
        let config_path = cfg.path.clone();
        let (control, rx) = mpsc::channel(4);
        // Arranged here, not in the task, so `status()` answers from the start.
        let (slots, heap) = arrange(&plan, &[], &HashMap::new(), shared.clock.now());
        publish(&shared, &slots);
        let scheduler = tokio::spawn(schedule_loop(shared.clone(), plan, slots, heap, rx));
        Ok(Service {
            shared,
            control,
            scheduler,
            listener,
            extra_listeners: extra,
            store,
            config_path,
        })
    }

    /// Where `/healthz` and `/status` answer.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(|(a, _)| *a)
    }

    /// The config file this service was started from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Swaps in `plan`: runs in flight finish under the old settings,
    /// journeys that keep their schedule keep their next due time.
    pub async fn reload(&self, plan: Plan) {
        let (tx, rx) = oneshot::channel();
        if self
            .control
            .send(Control::Reload(Box::new(plan), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Every journey's counters.
    pub fn status(&self) -> Vec<JourneyStatus> {
        status(&self.shared)
    }

    /// Stops scheduling, waits up to `grace` for runs in flight, then
    /// commits the history and flushes the sinks.
    pub async fn shutdown(mut self, grace: Duration) -> Drained {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.control.send(Control::Stop).await;
        let _ = (&mut self.scheduler).await;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.shared.idle.notified();
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        let abandoned: Vec<String> = self
            .shared
            .states
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(_, st)| st.running.load(Ordering::SeqCst))
                    .map(|(p, _)| p.config.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let final_status = status(&self.shared);
        if let Some((_, task)) = self.listener.take() {
            task.abort();
        }
        for t in self.extra_listeners.drain(..) {
            t.abort();
        }
        // The store and sink threads drain their queues before they stop.
        if let Some(w) = self.store.take() {
            let _ = tokio::task::spawn_blocking(move || w.close()).await;
        }
        let sinks = self
            .shared
            .outputs
            .sinks
            .write()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let grace = self.shared.grace;
        let _ = tokio::task::spawn_blocking(move || {
            // In parallel: one slow sink does not eat the others' grace.
            std::thread::scope(|scope| {
                for s in sinks {
                    scope.spawn(move || s.close(grace));
                }
            });
        })
        .await;
        Drained {
            abandoned,
            status: final_status,
        }
    }
}

fn status(shared: &Shared) -> Vec<JourneyStatus> {
    let Ok(states) = shared.states.lock() else {
        return Vec::new();
    };
    states
        .iter()
        .map(|(p, s)| {
            let last = s.last.lock().ok().and_then(|l| l.clone());
            let next = s.next_due_ms.load(Ordering::Relaxed);
            JourneyStatus {
                name: p.config.name.clone(),
                schedule: format!("{:?}", p.config.schedule),
                running: s.running.load(Ordering::Relaxed),
                due: s.due.load(Ordering::Relaxed),
                runs: s.runs.load(Ordering::Relaxed),
                attempts: s.attempts.load(Ordering::Relaxed),
                failures: s.failures.load(Ordering::Relaxed),
                skipped_overlap: s.skipped_overlap.load(Ordering::Relaxed),
                missed_ticks: s.missed_ticks.load(Ordering::Relaxed),
                last_status: last.as_ref().map(|l| l.status),
                last_started_at: last.map(|l| l.started_at),
                next_due: (next > 0).then(|| rfc3339_ms(next)),
            }
        })
        .collect()
}

/// One heap entry: when, which slot, and the tick it stands for (the due
/// time before jitter).
type Due = Reverse<(SystemTime, usize, SystemTime)>;

struct Slot {
    prepared: Arc<Prepared>,
    state: Arc<JourneyState>,
}

fn jittered(tick: SystemTime, jitter: Duration) -> SystemTime {
    if jitter.is_zero() {
        return tick;
    }
    tick + jitter.mul_f64(rand::random::<f64>())
}

/// Builds the slots and the heap for `plan`, keeping each journey's state
/// (by name) and, when its schedule did not change, its next tick.
fn arrange(
    plan: &Plan,
    old_slots: &[Slot],
    old_ticks: &HashMap<String, SystemTime>,
    now: SystemTime,
) -> (Vec<Slot>, BinaryHeap<Due>) {
    let by_name: HashMap<&str, &Slot> = old_slots
        .iter()
        .map(|s| (s.prepared.config.name.as_str(), s))
        .collect();
    let mut slots = Vec::with_capacity(plan.journeys.len());
    let mut heap = BinaryHeap::with_capacity(plan.journeys.len());
    for p in &plan.journeys {
        let name = p.config.name.as_str();
        let old = by_name.get(name);
        let state = old.map_or_else(|| Arc::new(JourneyState::default()), |s| s.state.clone());
        let kept = old
            .filter(|s| s.prepared.config.schedule == p.config.schedule)
            .and_then(|_| old_ticks.get(name).copied());
        let tick = kept.or_else(|| p.config.schedule.next_after(now, name));
        if let Some(tick) = tick {
            state.next_due_ms.store(
                tick.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                Ordering::Relaxed,
            );
            heap.push(Reverse((
                jittered(tick, p.config.jitter),
                slots.len(),
                tick,
            )));
        }
        slots.push(Slot {
            prepared: p.clone(),
            state,
        });
    }
    (slots, heap)
}

fn publish(shared: &Shared, slots: &[Slot]) {
    if let Ok(mut s) = shared.states.lock() {
        *s = slots
            .iter()
            .map(|s| (s.prepared.clone(), s.state.clone()))
            .collect();
    }
}

/// The scheduler: one task, a heap of due times. It wakes at least every
/// second so `/healthz` can tell it is alive.
async fn schedule_loop(
    shared: Arc<Shared>,
    mut plan: Plan,
    mut slots: Vec<Slot>,
    mut heap: BinaryHeap<Due>,
    mut control: mpsc::Receiver<Control>,
) {
    loop {
        let now = shared.clock.now();
        shared.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        while let Some(Reverse((at, idx, tick))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            let slot = &slots[idx];
            dispatch(&shared, slot, at);
            // The next tick after now, not after the last one: ticks missed
            // while the process was paused are counted, not replayed.
            let name = slot.prepared.config.name.as_str();
            let schedule = &slot.prepared.config.schedule;
            let mut next = schedule.next_after(tick, name);
            let mut missed = 0u64;
            while let Some(n) = next
                && n <= now
            {
                missed += 1;
                if missed > 1_000 {
                    next = schedule.next_after(now, name);
                    break;
                }
                next = schedule.next_after(n, name);
            }
            if missed > 0 {
                slot.state.missed_ticks.fetch_add(missed, Ordering::Relaxed);
                tracing::warn!(
                    journey = name,
                    missed,
                    "ticks passed without a run (the process was paused or overloaded); not replayed"
                );
            }
            if let Some(n) = next {
                slot.state.next_due_ms.store(
                    n.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    Ordering::Relaxed,
                );
                heap.push(Reverse((jittered(n, slot.prepared.config.jitter), idx, n)));
            }
        }
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            _ = async {
                match next {
                    Some(at) => shared.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            // The heartbeat goes on whatever the clock does.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            msg = control.recv() => match msg {
                Some(Control::Reload(new_plan, done)) => {
                    let ticks: HashMap<String, SystemTime> = heap
                        .iter()
                        .map(|Reverse((_, idx, tick))| (slots[*idx].prepared.config.name.clone(), *tick))
                        .collect();
                    let new_plan = *new_plan;
                    apply_runner(&shared, &plan, &new_plan);
                    let (s, h) = arrange(&new_plan, &slots, &ticks, shared.clock.now());
                    slots = s;
                    heap = h;
                    publish(&shared, &slots);
                    plan = new_plan;
                    tracing::debug!(journeys = slots.len(), "scheduler swapped in the new config");
                    let _ = done.send(());
                }
                Some(Control::Stop) | None => break,
            }
        }
    }
}

/// Settings of `[runner]` that take effect on reload.
fn apply_runner(shared: &Shared, old: &Plan, new: &Plan) {
    let (o, n) = (&old.config, &new.config);
    let want = n.runner.max_concurrent_runs;
    let have = shared.permits.swap(want, Ordering::SeqCst);
    if want > have {
        shared.semaphore.add_permits(want - have);
    } else if want < have {
        // Permits held by running journeys are taken back as they finish.
        let sem = shared.semaphore.clone();
        tokio::spawn(async move {
            if let Ok(p) = sem.acquire_many_owned((have - want) as u32).await {
                p.forget();
            }
        });
    }
    if let Ok(mut l) = shared.location.lock() {
        l.clone_from(&n.runner.location);
    }
    if o.runner.listen != n.runner.listen || o.sinks != n.sinks || o.store != n.store {
        tracing::warn!(
            "changes to [runner] listen, [[sink]] and [store] take effect at the next restart"
        );
    }
}

/// Holds the in-flight count up while a run task lives, even if it panics.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn dispatch(shared: &Arc<Shared>, slot: &Slot, due: SystemTime) {
    let state = slot.state.clone();
    state.due.fetch_add(1, Ordering::Relaxed);
    if state.running.swap(true, Ordering::SeqCst) {
        let n = state.skipped_overlap.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            journey = %slot.prepared.config.name,
            skipped = n,
            "the previous run is still going; this tick is skipped"
        );
        return;
    }
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight(shared.clone());
    let prepared = slot.prepared.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        run_scheduled(&shared, &prepared, &state, due).await;
        state.running.store(false, Ordering::SeqCst);
    });
}

async fn run_scheduled(shared: &Shared, p: &Prepared, state: &JourneyState, due: SystemTime) {
    let Ok(_permit) = shared.semaphore.acquire().await else {
        return;
    };
    let lag = shared.clock.now().duration_since(due).unwrap_or_default();
    let mut opts = p.opts.clone();
    if let Ok(l) = shared.location.lock() {
        opts.location.clone_from(&l);
    }
    opts.run_id = Some(ulid::Ulid::new().to_string());
    let attempts = 1 + p.config.retries;
    let mut first_started = None;
    for attempt in 1..=attempts {
        opts.attempt = attempt;
        let rec = shared.runtime.run(&p.loaded, &opts).await;
        state.attempts.fetch_add(1, Ordering::Relaxed);
        first_started.get_or_insert_with(|| rec.started_at.clone());
        let done = rec.status == Status::Pass
            || attempt == attempts
            || shared.stopping.load(Ordering::SeqCst);
        tracing::info!(
            journey = %rec.journey,
            run_id = %rec.run_id,
            attempt,
            status = rec.status.as_str(),
            duration_ms = rec.duration_ms,
            lag_ms = (lag.as_secs_f64() * 1e6).round() / 1e3,
            error = rec.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
            "{}",
            if done { "run finished" } else { "attempt failed; retrying" }
        );
        if done {
            state.runs.fetch_add(1, Ordering::Relaxed);
            if rec.status != Status::Pass {
                state.failures.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut last) = state.last.lock() {
                *last = Some(LastRun {
                    status: rec.status,
                    started_at: first_started.clone().unwrap_or_default(),
                    duration_ms: rec.duration_ms,
                    attempts: attempt,
                });
            }
        }
        deliver(shared, rec, done, due).await;
        if done {
            break;
        }
        tokio::time::sleep(p.config.retry_delay).await;
    }
}

async fn deliver(shared: &Shared, rec: RunRecord, final_attempt: bool, due: SystemTime) {
    let rec = Arc::new(Delivery {
        record: rec,
        final_attempt,
    });
    if let Ok(sinks) = shared.outputs.sinks.read() {
        for s in sinks.iter() {
            s.send(rec.clone());
        }
    }
    if let Some(tx) = &shared.outputs.store {
        let entry = store::Entry {
            record: rec.record.clone(),
            final_attempt,
            scheduled_at: Some(due),
        };
        match tx.try_send(Some(entry)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(e)) => {
                // The writer is behind: wait for room off the async threads
                // rather than lose the record.
                let tx = tx.clone();
                let _ = tokio::task::spawn_blocking(move || tx.send(e).is_ok()).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                tracing::error!(run_id = %rec.record.run_id, "the history writer has stopped; run not stored");
            }
        }
    }
}
