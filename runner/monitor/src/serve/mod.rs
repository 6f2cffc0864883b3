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

mod lease;
mod listen;
mod prepare;
mod run;
mod schedule;
mod status;
use crate::telemetry::{Skip, Telemetry};
pub use lease::{Leases, Split, Standing};
use listen::listen;
pub use prepare::{Plan, Prepared, check, prepare, prepare_partial};
use run::dispatch;
use schedule::{Slot, arrange, publish, schedule_loop};

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
    /// When the last warning about skipped ticks was logged (Unix ms), and
    /// the skips since: one line per journey per minute at most.
    warned_ms: AtomicU64,
    unwarned_overlap: AtomicU64,
    unwarned_missed: AtomicU64,
}

#[derive(Clone, Serialize)]
struct LastRun {
    status: Status,
    started_at: SystemTime,
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
    /// Its start (RFC 3339 in JSON).
    #[serde(with = "waymark_record::serde_time::rfc3339_millis_opt")]
    pub last_started_at: Option<SystemTime>,
    /// Next due time (RFC 3339 in JSON).
    #[serde(with = "waymark_record::serde_time::rfc3339_millis_opt")]
    pub next_due: Option<SystemTime>,
}

struct Outputs {
    store: Option<std::sync::mpsc::SyncSender<Option<store::Entry>>>,
    /// Taken out at shutdown to be flushed and closed.
    sinks: std::sync::RwLock<Vec<crate::sinks::Sink>>,
}

/// This replica's part of a config split over several (`[runner] shard`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardView {
    pub(crate) shard: waymark_load::Shard,
    /// Journeys here (without leases).
    pub(crate) here: usize,
    /// Journeys other shards run, with the shard that owns each (without
    /// leases).
    pub(crate) elsewhere: Arc<HashMap<String, u32>>,
    /// With leases: who runs what changes with the replicas alive.
    pub(crate) leases: Option<Arc<Leases>>,
    /// With leases: every journey of the config.
    pub(crate) names: Arc<Vec<String>>,
}

impl ShardView {
    fn of(cfg: &crate::config::Config, leases: Option<&Arc<Leases>>) -> ShardView {
        ShardView {
            shard: cfg.runner.shard,
            here: cfg.journeys.len(),
            elsewhere: Arc::new(cfg.elsewhere.iter().cloned().collect()),
            leases: leases.cloned(),
            names: Arc::new(cfg.journeys.iter().map(|j| j.name.clone()).collect()),
        }
    }

    /// The shard that runs `journey` at `t` (none: no live owner), or none
    /// when it is not in the config.
    pub(crate) fn owner_at(&self, journey: &str, t: SystemTime) -> Option<Option<u32>> {
        match &self.leases {
            Some(l) => self
                .names
                .iter()
                .any(|n| n == journey)
                .then(|| l.owner_at(journey, t)),
            None => self.elsewhere.get(journey).map(|&o| Some(o)),
        }
    }

    /// How many journeys each shard runs at `t`, this one's included.
    pub(crate) fn counts(&self, t: SystemTime) -> Vec<usize> {
        let mut per = vec![0; self.shard.count as usize];
        if let Some(l) = &self.leases {
            let split = l.at(t);
            for n in self.names.iter() {
                if let Some(c) = split.owner(n).and_then(|o| per.get_mut(o as usize)) {
                    *c += 1;
                }
            }
            return per;
        }
        if let Some(c) = per.get_mut(self.shard.index as usize) {
            *c = self.here;
        }
        for &owner in self.elsewhere.values() {
            if let Some(c) = per.get_mut(owner as usize) {
                *c += 1;
            }
        }
        per
    }

    /// The journeys with no live owner at `t` (known only with leases).
    pub(crate) fn orphans(&self, t: SystemTime) -> Vec<String> {
        let Some(l) = &self.leases else {
            return Vec::new();
        };
        let split = l.at(t);
        self.names
            .iter()
            .filter(|n| split.orphaned(n))
            .cloned()
            .collect()
    }
}

struct Shared {
    runtime: Arc<Runtime>,
    semaphore: Arc<Semaphore>,
    permits: AtomicUsize,
    outputs: Outputs,
    idle: Notify,
    stopping: AtomicBool,
    heartbeat_ms: AtomicU64,
    states: Mutex<Vec<(Arc<Prepared>, Arc<JourneyState>)>>,
    location: Mutex<String>,
    /// This replica's shard and the journeys other shards run.
    shard: Mutex<ShardView>,
    /// With leases, which ticks of which journeys are this replica's.
    leases: Option<Arc<Leases>>,
    /// The prometheus sink's registry, served at `/metrics`.
    metrics: Option<Arc<crate::sinks::prometheus::Metrics>>,
    /// The runner's own metrics, served at `/metrics` whatever the sinks.
    telemetry: Arc<Telemetry>,
    /// The last `/status` snapshot.
    status_cache: tokio::sync::Mutex<Option<Arc<status::Snapshot>>>,
    /// Counts the journey lists published, so a snapshot knows it is stale.
    generation: AtomicU64,
    /// The last sign of overload (when, and why), for `/healthz`.
    overload: Mutex<Option<(std::time::Instant, String)>>,
    /// How long sinks get at shutdown to deliver what they hold.
    grace: Duration,
    /// What the schedule is read from.
    clock: Clock,
    /// The history file the web UI reads.
    history: Option<Arc<store::Database>>,
    /// The web UI's settings.
    ui: Arc<crate::config::UiConfig>,
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
    beater: Option<lease::Beater>,
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

fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
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
    /// The thread that keeps this replica's lease.
    #[error("cannot start the lease thread: {0}")]
    Lease(std::io::Error),
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
        let telemetry = Arc::new(Telemetry::new());
        let leases = cfg.takes_over().then(|| {
            Arc::new(Leases::new(
                cfg.runner.shard,
                &cfg.runner.location,
                cfg.runner.lease,
            ))
        });
        telemetry.shards(&ShardView::of(cfg, leases.as_ref()));
        let mut exposed = Exposed {
            telemetry: Some(telemetry.clone()),
            ..Exposed::default()
        };
        let sinks = crate::sinks::start_all(&cfg.sinks, Some(&cfg.runner.spool_dir), &mut exposed)?;
        telemetry.add_sinks(
            sinks
                .iter()
                .map(|s| (s.name().to_string(), s.stats_handle())),
        );
        let store = match &cfg.store.database {
            Some(d) => Some(store::Writer::start_observed(
                d,
                cfg.store.retention,
                Some(telemetry.clone()),
                Some(&cfg.runner.spool_dir.join("history")),
            )?),
            None => None,
        };
        let shared = Arc::new(Shared {
            runtime,
            semaphore: Arc::new(Semaphore::new(cfg.runner.max_concurrent_runs)),
            permits: AtomicUsize::new(cfg.runner.max_concurrent_runs),
            outputs: Outputs {
                store: store.as_ref().map(store::Writer::sender),
                sinks: std::sync::RwLock::new(sinks),
            },
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(now_ms()),
            states: Mutex::new(Vec::new()),
            location: Mutex::new(cfg.runner.location.clone()),
            shard: Mutex::new(ShardView::of(cfg, leases.as_ref())),
            leases: leases.clone(),
            metrics: exposed.metrics.clone(),
            telemetry,
            status_cache: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            overload: Mutex::new(None),
            grace: cfg.runner.shutdown_grace,
            clock,
            history: cfg.store.database.clone().map(Arc::new),
            ui: Arc::new(cfg.ui.clone()),
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
        let beater = match (&leases, &cfg.store.database) {
            (Some(l), Some(db)) => {
                let weak = Arc::downgrade(&shared);
                let after = Box::new(move || {
                    if let Some(s) = weak.upgrade() {
                        s.shard_metrics();
                    }
                });
                let (l, db) = (l.clone(), db.clone());
                let started =
                    tokio::task::spawn_blocking(move || lease::Beater::start(l, db, after))
                        .await
                        .map_err(|e| StartError::Lease(std::io::Error::other(e)))?;
                Some(started.map_err(StartError::Lease)?)
            }
            _ => None,
        };
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
            beater,
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
        // No new runs here: the others take this replica's share at their
        // next beat rather than when its lease runs out.
        if let Some(b) = self.beater.take() {
            let _ = tokio::task::spawn_blocking(move || b.stop()).await;
        }
        let deadline = tokio::time::Instant::from_std(waymark_record::units::later(
            std::time::Instant::now(),
            grace,
        ));
        loop {
            let idle = self.shared.idle.notified();
            if self.shared.telemetry.in_flight().load(Ordering::SeqCst) == 0 {
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

/// How long one sign of overload keeps `/healthz` saying "degraded".
const DEGRADED_FOR: Duration = Duration::from_secs(60);

/// Runs starting this late mean the runner is behind.
const LATE: Duration = Duration::from_secs(1);

impl Shared {
    /// Sets the shard metrics from the split as it stands now.
    fn shard_metrics(&self) {
        if let Ok(v) = self.shard.lock() {
            self.telemetry.shards(&v);
        }
    }

    /// Whether this replica runs `journey`'s tick due at `tick`.
    fn runs_here(&self, journey: &str, tick: SystemTime) -> bool {
        self.leases.as_ref().is_none_or(|l| l.runs(journey, tick))
    }

    /// Notes a sign of overload for `/healthz`.
    fn overloaded(&self, why: String) {
        if let Ok(mut o) = self.overload.lock() {
            *o = Some((std::time::Instant::now(), why));
        }
    }

    /// Why the runner is degraded, if it was overloaded within [`DEGRADED_FOR`].
    fn degraded(&self) -> Option<String> {
        let o = self.overload.lock().ok()?;
        let (at, why) = o.as_ref()?;
        (at.elapsed() < DEGRADED_FOR).then(|| format!("{why} ({} s ago)", at.elapsed().as_secs()))
    }

    /// Counts ticks that came and went without a run, and says so in the
    /// log at most once a minute per journey, with the count since.
    fn skipped(&self, name: &str, state: &JourneyState, why: Skip, n: u64) {
        self.telemetry.skipped(name, why, n);
        match why {
            Skip::Overlap => {
                state.skipped_overlap.fetch_add(n, Ordering::Relaxed);
                state.unwarned_overlap.fetch_add(n, Ordering::Relaxed);
            }
            Skip::Missed => {
                state.missed_ticks.fetch_add(n, Ordering::Relaxed);
                state.unwarned_missed.fetch_add(n, Ordering::Relaxed);
                self.overloaded(format!(
                    "ticks missed (journey {name}): the scheduler could not act on time"
                ));
            }
        }
        let now = now_ms();
        let last = state.warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 60_000
            || state
                .warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let overlap = state.unwarned_overlap.swap(0, Ordering::Relaxed);
        let missed = state.unwarned_missed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            journey = name,
            skipped_overlap = overlap,
            missed_ticks = missed,
            "ticks passed without a run since the last warning: the previous run was still going (overlap) or the process could not act on time (missed; not replayed); next warning for this journey in a minute at the earliest"
        );
    }
}

/// When each journey this runner schedules runs next, and where it runs.
fn next_runs(shared: &Shared) -> crate::ui::NextRuns {
    let location = shared
        .location
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    let Ok(states) = shared.states.lock() else {
        return crate::ui::NextRuns::default();
    };
    let due = states
        .iter()
        .filter_map(|(p, s)| {
            let next = s.next_due_ms.load(Ordering::Relaxed);
            from_unix_ms(next)
                .filter(|_| next > 0)
                .map(|t| (p.config.name.clone(), t))
        })
        .collect();
    crate::ui::NextRuns { location, due }
}

fn status(shared: &Shared) -> Vec<JourneyStatus> {
    let Ok(states) = shared.states.lock() else {
        return Vec::new();
    };
    // With leases every replica schedules every journey: it lists those it
    // runs now and those it ran.
    let split = shared
        .leases
        .as_ref()
        .map(|l| (l.at(SystemTime::now()), l.index()));
    states
        .iter()
        .filter(|(p, s)| {
            split.as_ref().is_none_or(|(split, me)| {
                s.due.load(Ordering::Relaxed) > 0 || split.owner(&p.config.name) == Some(*me)
            })
        })
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
                next_due: (next > 0).then(|| from_unix_ms(next)).flatten(),
            }
        })
        .collect()
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
    let view = ShardView::of(n, shared.leases.as_ref());
    shared.telemetry.shards(&view);
    if let Ok(mut s) = shared.shard.lock() {
        *s = view;
    }
    if o.runner.listen != n.runner.listen || o.sinks != n.sinks || o.store != n.store {
        tracing::warn!(
            "changes to [runner] listen, [[sink]] and [store] take effect at the next restart"
        );
    }
    if shared.leases.is_some()
        && (o.runner.shard != n.runner.shard
            || o.runner.lease != n.runner.lease
            || o.runner.location != n.runner.location)
    {
        tracing::warn!(
            "with leases, changes to [runner] shard, lease and location take effect at the next restart"
        );
    }
}
