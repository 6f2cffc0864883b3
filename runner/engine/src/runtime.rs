//! The wasmtime host: one Engine per process, compiled components cached on
//! disk, one Store per run with memory, CPU and wall-clock limits.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};

use crate::bindings::{Journey, JourneyPre};
use crate::host::RunState;
use crate::outcome::{Observer, Outcome, Verdict, conclude, observe};
use waymark_http::HttpConfig;
use waymark_record::RunRecord;

/// How often the epoch advances: the granularity of CPU-runaway checks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A journey could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read journey {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid component.
    #[error("journey '{name}' is not a valid Wasm component: {message}")]
    Compile {
        /// Journey name.
        name: String,
        /// wasmtime's reason.
        message: String,
    },
    /// A journey's source could not be prepared: a file it names is
    /// missing or outside its directory, or a syntax error.
    #[error("journey '{name}': {message}")]
    Script {
        /// Journey name.
        name: String,
        /// What and where (file, line and column).
        message: String,
    },
    /// The component does not fit the `waymark:journey` world.
    #[error("journey '{name}' does not fit the waymark:journey world: {message}")]
    Link {
        /// Journey name.
        name: String,
        /// wasmtime's reason.
        message: String,
    },
}

/// What the compiled components in the cache may take unless
/// `WAYMARK_CACHE_SIZE` says otherwise: about a hundred components built
/// with a JavaScript engine inside, or as many snapshots.
pub const DEFAULT_CACHE_LIMIT: u64 = 4 << 30;

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Wasm engine: {0}")]
pub struct EngineError(String);

/// One per process: the wasmtime Engine, the linker with the host's
/// imports, the epoch ticker, and the on-disk compile cache.
pub struct Runtime {
    engine: Engine,
    pub(crate) linker: Linker<RunState>,
    pub(crate) cache_dir: Option<PathBuf>,
    /// The compiled components in `cache_dir` are kept under this many
    /// bytes in all, the least recently used removed first.
    cache_limit: u64,
    ticker_stop: Arc<AtomicBool>,
    /// The script runtime, once a journey from source needed it.
    pub(crate) scripts:
        std::sync::Mutex<HashMap<crate::Language, Arc<crate::script::ScriptEngine>>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Cranelift's incremental cache on disk, one file per compiled function
/// under the hash of its key. A snapshot of a journey from source holds
/// its runtime's code unchanged, so compiling it takes every function from
/// here instead of compiling the whole engine again.
#[derive(Debug)]
struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    fn path(&self, key: &[u8]) -> PathBuf {
        let name = hex::encode(Sha256::digest(key));
        // Two levels: a directory of tens of thousands of files is slow.
        self.dir.join(&name[..2]).join(&name[2..])
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        std::fs::read(self.path(key))
            .ok()
            .map(std::borrow::Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = self.path(key);
        let Some(dir) = path.parent() else {
            return false;
        };
        // Written aside and renamed: compiling threads and processes may
        // store the same function at once, and a reader never sees half.
        let tmp = dir.join(format!(
            ".{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let stored = std::fs::create_dir_all(dir).is_ok()
            && std::fs::write(&tmp, &value).is_ok()
            && std::fs::rename(&tmp, &path).is_ok();
        if !stored {
            let _ = std::fs::remove_file(&tmp);
        }
        stored
    }
}

/// A compiled journey, ready to instantiate many times.
#[derive(Clone)]
pub struct LoadedJourney {
    /// Journey name (used in records).
    pub name: String,
    pub(crate) pre: JourneyPre<RunState>,
    /// True when the compiled code came from the disk cache.
    pub from_cache: bool,
    /// SHA-256 of the component's bytes, hex (of a journey run from its
    /// source: of the runtime and the prepared modules).
    pub sha256: String,
    /// A journey run from its source: its modules, handed to the runtime.
    pub(crate) script: Option<Arc<Vec<crate::script_bindings::waymark::journey::script::Module>>>,
    /// The language of a journey run from its source.
    pub(crate) language: Option<crate::Language>,
}

/// One run with everything kept of it.
pub struct FullRun {
    /// The record.
    pub record: RunRecord,
    /// Every exchange, when `capture_bodies` or a tape asked for them.
    pub captured: Vec<crate::har::Captured>,
    /// The recording, when `opts.tape` asked for one.
    pub tape: Option<crate::tape::Tape>,
    /// Where a replay first asked for a request the recording lacks.
    pub divergence: Option<crate::tape::Divergence>,
}

/// Wall-clock limit of a run unless its settings say otherwise (every
/// command and the config read this one).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Linear memory cap of a journey unless its settings say otherwise.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;
/// Budget of a run's record (steps, checks, requests) unless its settings
/// say otherwise.
pub const DEFAULT_MAX_RECORD: usize = 16 << 20;
/// The location label of a runner that names none.
pub const DEFAULT_LOCATION: &str = "local";

/// Per-run settings.
#[derive(Clone)]
pub struct RunOptions {
    /// Plain variables.
    pub vars: HashMap<String, String>,
    /// Secrets: readable by the journey, replaced by `***` in all output.
    pub secrets: HashMap<String, String>,
    /// Allow-list, TLS roots, body cap.
    pub http: Arc<HttpConfig>,
    /// Wall-clock limit of the whole run.
    pub timeout: Duration,
    /// Linear memory cap, bytes.
    pub memory_limit: usize,
    /// Budget of the record, bytes: what the host keeps of the guest's
    /// steps, checks and requests ([`DEFAULT_MAX_RECORD`]).
    pub max_record: usize,
    /// Runner location label.
    pub location: String,
    /// Attempt number (1 = first try).
    pub attempt: u32,
    /// Keep every exchange, bodies cut at this many bytes, for a HAR file.
    pub capture_bodies: Option<usize>,
    /// Run id for the record; the retries of one scheduled run share it.
    /// None: a fresh ULID.
    pub run_id: Option<String>,
    /// Record the run for a replay (with `capture_bodies` as the body cap,
    /// [`crate::tape::DEFAULT_BODY_CAP`] if unset), or replay one.
    pub tape: crate::tape::TapeMode,
}

impl RunOptions {
    /// The defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_MEMORY_LIMIT`],
    /// [`DEFAULT_LOCATION`], a first attempt.
    pub fn new(http: Arc<HttpConfig>) -> Self {
        RunOptions {
            vars: HashMap::new(),
            secrets: HashMap::new(),
            http,
            timeout: DEFAULT_TIMEOUT,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            max_record: DEFAULT_MAX_RECORD,
            location: DEFAULT_LOCATION.into(),
            attempt: 1,
            capture_bodies: None,
            run_id: None,
            tape: crate::tape::TapeMode::Off,
        }
    }
}

/// Why a journey could not be instantiated (`waymark check`).
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    /// Its memory at start is above its `memory_limit`.
    #[error("it needs {asked} of memory at start, above its memory_limit of {limit}")]
    Memory {
        /// What it asked for.
        asked: String,
        /// The limit.
        limit: String,
    },
    /// It does not link against the world, or its start traps.
    #[error("it cannot be instantiated: {0}")]
    Link(String),
    /// Starting took longer than its `timeout`.
    #[error("instantiating it took longer than its timeout")]
    Timeout,
}

/// Why the epoch callback stopped the guest.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock timeout")]
pub(crate) struct DeadlineReached;

/// The record's budget is spent: the epoch callback stops the guest.
#[derive(Debug, thiserror::Error)]
#[error("the record's budget is spent")]
pub(crate) struct RecordFull;

impl Runtime {
    /// The engine, with the compile cache in `cache_dir` (none: no cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        Self::build(cache_dir, None)
    }

    /// As [`Runtime::new`], with instances taken from a pre-reserved pool of
    /// `slots` (memories up to `max_memory` bytes each) instead of fresh
    /// mappings: `waymark load` instantiates thousands of times a second,
    /// and mapping and unmapping memories and stacks for each (with the TLB
    /// shootdowns that brings on every core) would cost more than the
    /// journeys. An instance beyond `slots` fails to start.
    pub fn pooled(
        cache_dir: Option<PathBuf>,
        slots: u32,
        max_memory: usize,
    ) -> Result<Self, EngineError> {
        Self::build(cache_dir, Some((slots, max_memory)))
    }

    fn build(cache_dir: Option<PathBuf>, pool: Option<(u32, usize)>) -> Result<Self, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        if let Some(dir) = &cache_dir {
            config
                .enable_incremental_compilation(Arc::new(FunctionCache {
                    dir: dir.join("functions"),
                }))
                .map_err(|e| EngineError(format!("{e:#}")))?;
        }
        if let Some((slots, max_memory)) = pool {
            let slots = slots.max(1);
            let mut p = wasmtime::PoolingAllocationConfig::new();
            // A component built by today's toolchains holds a few core
            // instances (the program, shims, adapters), one or two memories
            // and a few tables; these bounds leave room for that.
            let spare = 2 * slots.min(64) + 2;
            p.total_component_instances(slots + spare)
                .total_core_instances((slots + spare).saturating_mul(10))
                .total_memories((slots + spare).saturating_mul(2))
                .total_tables((slots + spare).saturating_mul(4))
                .total_stacks(slots + spare)
                .max_memory_size(max_memory.next_multiple_of(65536));
            // Handing a slot back with madvise flushes the TLB of every core
            // the process runs on. Instead, PAGEMAP_SCAN (Linux 6.7+; off
            // elsewhere) finds the pages an instance wrote and only those are
            // reset by hand, and the decommits left are batched. Measured on
            // the load bench (8 users, one GET): 4.8k → 16.7k iterations/s.
            p.decommit_batch_size(slots.min(64) as usize)
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(4 << 20)
                .table_keep_resident(64 << 10)
                .async_stack_keep_resident(128 << 10);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        }
        let engine = Engine::new(&config).map_err(|e| EngineError(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError(format!("{e:#}")))?;
        Journey::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(|e| EngineError(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| EngineError(format!("{e:#}")))?;
        crate::script_bindings::waymark::journey::script::add_to_linker::<
            RunState,
            HasSelf<RunState>,
        >(&mut linker, |s| s)
        .map_err(|e| EngineError(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = ticker_stop.clone();
        let ticking = engine.clone();
        std::thread::Builder::new()
            .name("waymark-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| EngineError(format!("cannot start the epoch thread: {e}")))?;

        if let Some(dir) = &cache_dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "compile cache disabled");
        }
        let cache_limit = match std::env::var("WAYMARK_CACHE_SIZE") {
            Ok(v) if !v.is_empty() => waymark_record::units::parse_size(&v)
                .map_err(|e| EngineError(format!("WAYMARK_CACHE_SIZE: {e}")))?
                as u64,
            _ => DEFAULT_CACHE_LIMIT,
        };
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
            cache_limit,
            ticker_stop,
            scripts: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The default cache directory: `$WAYMARK_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/waymark`, else `~/.cache/waymark`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("WAYMARK_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("waymark")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("waymark")))
    }

    /// Read and load the component at `path`, or the journey's source if
    /// `path` is one ([`crate::Language::of`]); its name is the file stem.
    pub fn load_file(&self, path: &Path) -> Result<LoadedJourney, LoadError> {
        if crate::Language::of(path).is_some() {
            return self.load_script(path);
        }
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "journey".into());
        self.load(&name, &bytes)
    }

    /// Compile (or take from the cache) and link a component.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<LoadedJourney, LoadError> {
        let sha256 = crate::tape::Tape::sha256(wasm);
        let (component, from_cache) = self.compile(name, wasm, &sha256)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                name: name.to_string(),
                message: format!("{e:#}"),
            })?;
        let pre = JourneyPre::new(pre).map_err(|e| LoadError::Link {
            name: name.to_string(),
            message: format!("{e:#}"),
        })?;
        Ok(LoadedJourney {
            name: name.to_string(),
            pre,
            from_cache,
            sha256,
            script: None,
            language: None,
        })
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        // The engine's settings and wasmtime's version decide whether
        // compiled code is usable, so they are part of the key.
        let mut settings = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut settings);
        let mut h = Sha256::new();
        h.update(sha256.as_bytes());
        h.update(settings.finish().to_le_bytes());
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        Some(dir.join(format!("{}.cwasm", hex::encode(h.finalize()))))
    }

    /// Keep the compiled components in the cache under `bytes` in all
    /// (default [`DEFAULT_CACHE_LIMIT`], or `WAYMARK_CACHE_SIZE`): each
    /// new one removes the least recently used beyond it.
    pub fn set_cache_limit(&mut self, bytes: u64) {
        self.cache_limit = bytes;
    }

    /// Remove the least recently used compiled components (by modification
    /// time, which a hit renews) until the rest fit the limit; `kept`, just
    /// written, stays whatever its size. Instances already loaded are in
    /// memory: removing their file takes nothing from them.
    fn prune_cache(&self, kept: &Path) {
        let Some(dir) = &self.cache_dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total <= self.cache_limit {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.cache_limit {
                break;
            }
            if path == kept {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    tracing::debug!(path = %path.display(), bytes = len, "compile cache: removed the least recently used");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compile cache: cannot remove")
                }
            }
        }
    }

    /// The compiled component the cache holds under `key`, if any.
    pub(crate) fn cached(&self, key: &str) -> Option<Component> {
        let path = self.cache_path(key)?;
        let bytes = std::fs::read(&path).ok()?;
        // A hit is a use: the pruning removes the least recently used.
        if let Err(e) = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
        {
            tracing::debug!(path = %path.display(), error = %e, "compile cache: cannot mark a use");
        }
        // Read, not mapped: a cache file replaced or truncated by another
        // process must not pull pages out from under a running journey.
        // SAFETY: the bytes come from `Component::serialize` of this same
        // engine configuration (the key covers it) in our own cache
        // directory; wasmtime checks the header and version, and a file
        // that fails to load is recompiled.
        match unsafe { Component::deserialize(&self.engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a bad compile cache entry");
                None
            }
        }
    }

    /// Compile `wasm`, or take it from the cache under `key` (the SHA-256
    /// of `wasm`, or of what it was made from).
    pub(crate) fn compile(
        &self,
        name: &str,
        wasm: &[u8],
        key: &str,
    ) -> Result<(Component, bool), LoadError> {
        if let Some(c) = self.cached(key) {
            return Ok((c, true));
        }
        let path = self.cache_path(key);
        let component = Component::new(&self.engine, wasm).map_err(|e| LoadError::Compile {
            name: name.to_string(),
            message: format!("{e:#}"),
        })?;
        if let Some(path) = path {
            match write_cache(&component, &path) {
                Ok(()) => self.prune_cache(&path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not write the compile cache")
                }
            }
        }
        Ok((component, false))
    }

    /// A Store for one run of `journey`, with its limits armed.
    pub(crate) fn new_store(
        &self,
        journey: &LoadedJourney,
        opts: &RunOptions,
        started_at: SystemTime,
        t0: Instant,
        conns: waymark_http::Connections,
    ) -> Store<RunState> {
        self.store_for(
            &journey.name,
            journey.script.clone(),
            opts,
            started_at,
            t0,
            conns,
        )
    }

    /// A Store for one run of the journey `name` (with its modules when it
    /// runs from its source), with its limits armed.
    pub(crate) fn store_for(
        &self,
        name: &str,
        script: Option<Arc<Vec<crate::script_bindings::waymark::journey::script::Module>>>,
        opts: &RunOptions,
        started_at: SystemTime,
        t0: Instant,
        conns: waymark_http::Connections,
    ) -> Store<RunState> {
        let mut all_vars = opts.vars.clone();
        all_vars.extend(opts.secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut state = RunState::new(
            name,
            Arc::new(all_vars),
            opts,
            t0..waymark_record::units::later(t0, opts.timeout),
            started_at,
            conns,
        );
        state.script = script;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        // Each tick, a running guest yields to the executor (so other runs
        // and the timers go on) and stops for good once its time is up.
        // The deadline is read from the state: a kept instance's next run
        // sets its own.
        store.epoch_deadline_callback(move |ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(DeadlineReached.into())
            } else if ctx.data().rec.budget.full.is_some() {
                Err(RecordFull.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Instantiates `journey` under `opts`' limits without calling `run`:
    /// proves it links against the world and starts within its memory limit.
    pub async fn instantiate(
        &self,
        journey: &LoadedJourney,
        opts: &RunOptions,
    ) -> Result<(), InstantiateError> {
        let mut store = self.new_store(
            journey,
            opts,
            SystemTime::now(),
            Instant::now(),
            Default::default(),
        );
        match tokio::time::timeout(opts.timeout, journey.pre.instantiate_async(&mut store)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                if let Some(asked) = store.data().limiter.exceeded {
                    Err(InstantiateError::Memory {
                        asked: human_bytes(asked),
                        limit: human_bytes(opts.memory_limit),
                    })
                } else {
                    Err(InstantiateError::Link(format!("{e:#}")))
                }
            }
            Err(_) => Err(InstantiateError::Timeout),
        }
    }

    /// Run `journey` once under `opts`' limits; the record says how it went.
    /// Never fails: every failure is in the record.
    pub async fn run(&self, journey: &LoadedJourney, opts: &RunOptions) -> RunRecord {
        self.run_captured(journey, opts).await.0
    }

    /// As [`Runtime::run`], also returning every exchange when
    /// `opts.capture_bodies` is set (for [`crate::har`]).
    pub async fn run_captured(
        &self,
        journey: &LoadedJourney,
        opts: &RunOptions,
    ) -> (RunRecord, Vec<crate::har::Captured>) {
        let full = self.run_full(journey, opts).await;
        (full.record, full.captured)
    }

    /// As [`Runtime::run`], with everything `opts` asks to keep: the
    /// exchanges, a recording for a replay, or a replay's divergence.
    pub async fn run_full(&self, journey: &LoadedJourney, opts: &RunOptions) -> FullRun {
        let recording;
        let opts = match (&opts.tape, opts.capture_bodies) {
            (crate::tape::TapeMode::Record, None) => {
                let mut o = opts.clone();
                o.capture_bodies = Some(crate::tape::DEFAULT_BODY_CAP);
                recording = o;
                &recording
            }
            _ => opts,
        };
        let mut kept = None;
        let (record, captured, _) = self
            .run_inner(
                journey,
                opts,
                Default::default(),
                |state, outcome, started_at, duration| {
                    kept = Some((
                        state.recording.take(),
                        state
                            .replay
                            .take()
                            .and_then(|r| r.lock().ok().and_then(|mut r| r.divergence.take())),
                    ));
                    conclude(&journey.name, opts, state, outcome, started_at, duration)
                },
            )
            .await;
        let (recording, divergence) = kept.unwrap_or_default();
        let tape = recording.map(|(log, seed)| {
            let log = log
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default();
            let mut secrets: Vec<String> = opts.secrets.keys().cloned().collect();
            secrets.sort();
            crate::tape::Tape {
                format: crate::tape::FORMAT.into(),
                journey: journey.name.clone(),
                component: None,
                component_sha256: journey.sha256.clone(),
                vars: opts
                    .vars
                    .iter()
                    .filter(|(k, _)| !opts.secrets.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                secrets,
                seed: hex::encode(seed),
                wall_clock_ns: log.wall_ns,
                monotonic_ns: log.monotonic_ns,
                clock_reads_dropped: log.dropped,
                exchanges: captured.clone(),
                record: record.clone(),
            }
        });
        FullRun {
            record,
            captured,
            tape,
            divergence,
        }
    }

    /// As [`Runtime::run`], starting with `conns`' open connections and
    /// handing back those still open, and telling `observer` the steps in
    /// place of a record: `waymark load` keeps a virtual user's
    /// connections across its iterations. A reused connection's resolve,
    /// connect and tls phases are 0, as within one run.
    pub(crate) async fn observe_reusing(
        &self,
        journey: &LoadedJourney,
        opts: &RunOptions,
        conns: waymark_http::Connections,
        observer: &mut dyn Observer,
        redactor: &waymark_record::Redactor,
    ) -> (Verdict, waymark_http::Connections) {
        let (verdict, _, conns) = self
            .run_inner(journey, opts, conns, |state, outcome, _, _| {
                observe(opts, state, outcome, observer, redactor)
            })
            .await;
        (verdict, conns)
    }

    async fn run_inner<T>(
        &self,
        journey: &LoadedJourney,
        opts: &RunOptions,
        conns: waymark_http::Connections,
        finish: impl FnOnce(&mut RunState, Outcome, SystemTime, Duration) -> T,
    ) -> (T, Vec<crate::har::Captured>, waymark_http::Connections) {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let mut store = self.new_store(journey, opts, started_at, t0, conns);
        let outcome = tokio::time::timeout(opts.timeout, async {
            let instance = journey.pre.instantiate_async(&mut store).await?;
            instance.call_run(&mut store).await
        })
        .await;

        let duration = t0.elapsed();
        let mut state = store.into_data();
        state.stop_wasi_http();
        let captured = std::mem::take(&mut state.captured);
        let result = finish(&mut state, outcome, started_at, duration);
        // A wasi:http request the guest left running may still hold the
        // client; its connections are then not handed on.
        let conns = state.take_connections();
        (result, captured, conns)
    }
}

fn write_cache(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    // Rename is atomic: a concurrent reader sees the old file or the whole new one.
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn human_bytes(n: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = n as f64 / MIB;
    if mib >= 1.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{n} bytes")
    }
}
