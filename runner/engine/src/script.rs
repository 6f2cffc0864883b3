//! Journeys run from their source. One runtime component per language is
//! carried in the binary (JavaScript, which also takes TypeScript: its
//! types are stripped by sucrase, which the binary carries beside the
//! runtime and hands to it when it prepares a file; and Python), compiled
//! once per machine (the compile cache) and once per process, and shared by
//! every journey of that language: a journey adds only its modules' text.
//!
//! Loading a journey prepares each of its files once (the runtime's
//! `prepare`: JavaScript's types stripped and imports turned into
//! `require`, lines kept; Python's syntax checked) and follows its imports
//! of its own files, which must stay inside the journey's directory. Every
//! run then hands the prepared modules to the runtime's `run` through
//! `waymark:journey/script`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::JourneyPre;
use crate::host::RunState;
use crate::runtime::{LoadError, LoadedJourney, RunOptions, Runtime};
use crate::script_bindings::waymark::journey::script::Module;
use crate::script_bindings::{ScriptRuntime, ScriptRuntimePre};

/// A file the binary carries, with its SHA-256 (hex) as build.rs computed
/// it.
struct Carried<T: ?Sized + 'static> {
    content: &'static T,
    sha256: &'static str,
}

macro_rules! carried {
    ($include:ident, $name:literal) => {
        Carried {
            content: $include!(concat!(env!("OUT_DIR"), "/", $name)),
            sha256: include_str!(concat!(env!("OUT_DIR"), "/", $name, ".sha256")),
        }
    };
}

/// The JavaScript runtime component (`sdk/js/runtime`, built by build.rs).
static JS_RUNTIME: Carried<[u8]> = carried!(include_bytes, "js-runtime.wasm");
/// sucrase as one script, which the JavaScript runtime evaluates when an
/// instance first prepares a file (`script.preparer`): not in the
/// runtime's own heap, which every fresh instance of a journey maps and
/// resets (evaluated, about 4 MB: a third of a no-request iteration).
static JS_PREPARER: Carried<str> = carried!(include_str, "js-preparer.js");
/// The Python runtime component (`sdk/python/runtime`, built by build.rs).
static PY_RUNTIME: Carried<[u8]> = carried!(include_bytes, "py-runtime.wasm");

/// A journey's modules beyond this many are refused: imports are followed
/// at load time and a cycle of generated names must not go on for ever.
const MAX_MODULES: usize = 256;
/// A source file larger than this is refused.
const MAX_SOURCE_BYTES: u64 = 4 << 20;
/// Preparing all of a journey's files may take this long.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);
/// What the runtime needs to prepare a file: sucrase's parse of a large
/// file, beside the engine's own heap.
const PREPARE_MEMORY: usize = 256 << 20;
/// The name a journey imports the SDK by (`import { step } from 'waymark'`).
const SDK: &str = "waymark";

/// The languages a journey can be written in and run from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// `.js`, `.mjs`
    JavaScript,
    /// `.ts`, `.mts`: types are stripped, not checked.
    TypeScript,
    /// `.py`
    Python,
}

impl Language {
    /// The language of a source file, by its extension; `None` for anything
    /// else (a component, say).
    pub fn of(path: &Path) -> Option<Language> {
        match path.extension()?.to_str()? {
            "js" | "mjs" => Some(Language::JavaScript),
            "ts" | "mts" => Some(Language::TypeScript),
            "py" => Some(Language::Python),
            _ => None,
        }
    }

    /// The runtime that runs it: TypeScript is JavaScript once stripped.
    fn runtime(self) -> Language {
        match self {
            Language::TypeScript => Language::JavaScript,
            l => l,
        }
    }

    fn runtime_name(self) -> &'static str {
        match self.runtime() {
            Language::Python => "Python runtime",
            _ => "JavaScript runtime",
        }
    }
}

/// One language's runtime, compiled and linked.
pub(crate) struct ScriptEngine {
    /// The component as the binary carries it: what a snapshot is made of.
    bytes: &'static [u8],
    run: JourneyPre<RunState>,
    /// The same component, as what prepares files.
    prepare: ScriptRuntimePre<RunState>,
    /// What the runtime evaluates to prepare files (`script.preparer`).
    preparer: &'static str,
    /// An instance that has prepared files, kept for the next journey that
    /// has a file to prepare: a JavaScript instance's first file costs
    /// evaluating sucrase (about 55 ms), which 100 journeys loaded one
    /// after the other would pay 100 times.
    kept: Mutex<Option<Preparing>>,
    sha256: String,
    from_cache: bool,
}

/// An instance of a runtime that prepares files, with its store.
struct Preparing {
    store: Store<RunState>,
    runtime: ScriptRuntime,
}

/// The world's interfaces a journey may import as a component would.
const WORLD: [&str; 3] = [
    "waymark:journey/http@0.2.0",
    "waymark:journey/report@0.2.0",
    "waymark:journey/vars@0.2.0",
];

/// One journey being prepared: its runtime, language and directory.
struct Job<'a> {
    engine: &'a ScriptEngine,
    lang: Language,
    /// The journey's directory, resolved.
    root: &'a Path,
    /// The same as the user named it, for messages.
    shown_root: &'a Path,
    name: &'a str,
}

impl Job<'_> {
    fn fail(&self, message: String) -> LoadError {
        LoadError::Script {
            name: self.name.to_string(),
            message,
        }
    }
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
enum ImportError {
    #[error("it is outside the journey's directory")]
    Outside,
    #[error("it leads outside the journey's directory")]
    LeadsOutside,
    #[error(
        "only '{SDK}', the world's interfaces ({}) and the journey's own files ('./…') can be imported",
        WORLD.join(", ")
    )]
    NotAllowed,
    #[error("{0} is not a .js or .ts file")]
    NotScript(String),
    #[error("no such file in the journey's directory (tried {})", .0.join(", "))]
    NotFound(Vec<String>),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where an import leads.
enum Link {
    Sdk,
    World(&'static str),
    Module(String),
    /// Python: not one of the journey's files, so the runtime's own (the
    /// standard library), or an ImportError when the journey runs.
    Runtime,
}

impl Runtime {
    /// The runtime of `lang`, compiled (or taken from the cache) the first
    /// time a process needs it.
    fn script_engine(&self, lang: Language) -> Result<Arc<ScriptEngine>, LoadError> {
        let lang = lang.runtime();
        let mut engines = self
            .scripts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = engines.get(&lang) {
            return Ok(e.clone());
        }
        let name = lang.runtime_name();
        let (runtime, preparer) = match lang {
            Language::Python => (&PY_RUNTIME, None),
            _ => (&JS_RUNTIME, Some(&JS_PREPARER)),
        };
        let link = |e: wasmtime::Error| LoadError::Link {
            name: name.to_string(),
            message: format!("{e:#}"),
        };
        let (component, from_cache) = self.compile(name, runtime.content, runtime.sha256)?;
        let pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let prepare = ScriptRuntimePre::new(pre.clone()).map_err(link)?;
        let run = JourneyPre::new(pre).map_err(link)?;
        // What a journey is prepared and run by: the runtime and its preparer.
        let sha256 = match preparer {
            None => runtime.sha256.to_string(),
            Some(p) => {
                let mut h = Sha256::new();
                h.update(runtime.sha256.as_bytes());
                h.update(p.sha256.as_bytes());
                hex::encode(h.finalize())
            }
        };
        let engine = Arc::new(ScriptEngine {
            bytes: runtime.content,
            run,
            prepare,
            preparer: preparer.map_or("", |p| p.content),
            kept: Mutex::new(None),
            sha256,
            from_cache,
        });
        engines.insert(lang, engine.clone());
        Ok(engine)
    }

    /// Drops the instances kept for preparing files (for JavaScript, with
    /// sucrase evaluated in its heap): a process that has loaded its
    /// journeys (`waymark serve` after its config) need not hold them. The
    /// next file to prepare starts one again.
    pub fn release_preparers(&self) {
        let engines = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
        for e in engines.values() {
            e.kept.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }

    /// Load a journey from its source file (see [`Language::of`]): its
    /// name is the file stem, and the files it imports come from its
    /// directory and the directories below.
    pub fn load_script(&self, path: &Path) -> Result<LoadedJourney, LoadError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "journey".into());
        let fail = |message: String| LoadError::Script {
            name: name.clone(),
            message,
        };
        let read_err = |source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        let canonical = path.canonicalize().map_err(read_err)?;
        let (Some(root), Some(entry)) = (canonical.parent(), canonical.file_name()) else {
            return Err(fail(format!("{} is not a file", path.display())));
        };
        // Messages name files as the user's path does.
        let shown_root = path.parent().unwrap_or(Path::new(""));
        let lang = Language::of(path).ok_or_else(|| {
            fail(format!(
                "{} is not a .js, .mjs, .ts, .mts or .py file",
                path.display()
            ))
        })?;
        let engine = self.script_engine(lang)?;
        let job = Job {
            engine: &engine,
            lang,
            root,
            shown_root,
            name: &name,
        };
        let entry = entry.to_string_lossy().into_owned();
        let modules = std::thread::scope(|s| {
            s.spawn(|| self.prepare_all(&job, entry))
                .join()
                .unwrap_or_else(|_| Err(job.fail("preparing the journey's files panicked".into())))
        })?;
        let mut h = Sha256::new();
        h.update(engine.sha256.as_bytes());
        for m in &modules {
            h.update(m.path.as_bytes());
            h.update([0]);
            h.update(m.code.as_bytes());
            h.update([0]);
        }
        Ok(LoadedJourney {
            name,
            pre: engine.run.clone(),
            from_cache: engine.from_cache,
            sha256: hex::encode(h.finalize()),
            script: Some(Arc::new(modules)),
            language: Some(lang),
        })
    }

    /// `journey` (run from its source) with its modules evaluated once, in
    /// a snapshot: the runtime's `init` evaluates them in one instance,
    /// wizer writes that instance's memories and globals into a component
    /// of its own, and every instance of that component starts with them
    /// evaluated, as a built component's instance starts from the state its
    /// build left. A fresh instance per iteration then costs what a built
    /// component's does instead of evaluating the journey's modules each
    /// time (`waymark load`). The snapshot is compiled once per distinct
    /// state (the compile cache); a component journey comes back as it is.
    ///
    /// The modules are evaluated with the run options' vars, without their
    /// secrets (the snapshot is kept in the compile cache) and with no host
    /// reachable, as a built component's are evaluated without the
    /// network: what a journey's top level computes is fixed for the whole
    /// load, and it reads secrets in its body.
    pub fn snapshot_script(
        &self,
        journey: &LoadedJourney,
        opts: &RunOptions,
    ) -> Result<LoadedJourney, LoadError> {
        let (Some(lang), Some(modules)) = (journey.language, journey.script.clone()) else {
            return Ok(journey.clone());
        };
        let link = |e: wasmtime::Error| LoadError::Link {
            name: journey.name.clone(),
            message: format!("{e:#}"),
        };
        let linked = |component: Component, from_cache: bool| {
            let pre = self.linker.instantiate_pre(&component).map_err(link)?;
            Ok(LoadedJourney {
                pre: JourneyPre::new(pre).map_err(link)?,
                from_cache,
                ..journey.clone()
            })
        };
        // The snapshot's bytes differ from one making to the next (what
        // the runtime's start drew from the clock and the random source),
        // so it is kept under what it is made of: the runtime, the modules
        // (both in the journey's hash) and the vars handed to them.
        let mut h = Sha256::new();
        h.update(b"snapshot\0");
        h.update(journey.sha256.as_bytes());
        let vars: std::collections::BTreeMap<_, _> = opts.vars.iter().collect();
        for (k, v) in vars {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        let key = hex::encode(h.finalize());
        if let Some(component) = self.cached(&key) {
            return linked(component, true);
        }
        let engine = self.script_engine(lang)?;
        let fail = |message: String| LoadError::Script {
            name: journey.name.clone(),
            message,
        };
        let mut wizer = wasmtime_wizer::Wizer::new();
        wizer.init_func("init").keep_init_func(true);
        let (cx, instrumented) = wizer.instrument_component(engine.bytes).map_err(|e| {
            fail(format!(
                "cannot prepare the {} for a snapshot: {e:#}",
                lang.runtime_name()
            ))
        })?;
        let (component, _) = self.compile(
            &format!("{} (instrumented)", lang.runtime_name()),
            &instrumented,
            &crate::tape::Tape::sha256(&instrumented),
        )?;
        let mut init_opts = opts.clone();
        init_opts.http = no_hosts(fail)?;
        // The snapshot is kept on disk: no secret may be in it.
        init_opts.secrets.clear();
        let snapshot = std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| fail(format!("cannot start the snapshot's runtime: {e}")))?;
                rt.block_on(async {
                    let mut store = self.store_for(
                        &journey.name,
                        Some(modules),
                        &init_opts,
                        std::time::SystemTime::now(),
                        std::time::Instant::now(),
                        Default::default(),
                    );
                    let instance = self
                        .linker
                        .instantiate_async(&mut store, &component)
                        .await
                        .map_err(|e| {
                            fail(format!("cannot start the {}: {e:#}", lang.runtime_name()))
                        })?;
                    let init = instance
                        .get_typed_func::<(), (Result<(), String>,)>(&mut store, "init")
                        .map_err(|e| {
                            fail(format!("the {} has no init: {e:#}", lang.runtime_name()))
                        })?;
                    let (evaluated,) = init
                        .call_async(&mut store, ())
                        .await
                        .map_err(|e| {
                            fail(if e.is::<crate::runtime::DeadlineReached>() {
                                format!(
                                    "evaluating the journey's modules took longer than its time limit ({})",
                                    humantime::format_duration(init_opts.timeout)
                                )
                            } else {
                                format!("evaluating the journey's modules: {e:#}")
                            })
                        })?;
                    evaluated.map_err(fail)?;
                    // Reading the state back is wizer's work, not the
                    // journey's: it has a bound of its own.
                    store.data_mut().deadline =
                        waymark_record::units::later(std::time::Instant::now(), PREPARE_TIMEOUT);
                    wizer
                        .snapshot_component(
                            &cx,
                            &mut Snapshotted {
                                store: &mut store,
                                instance,
                            },
                        )
                        .await
                        .map_err(|e| fail(format!("cannot snapshot the journey: {e:#}")))
                })
            })
            .join()
            .unwrap_or_else(|_| Err(fail("snapshotting the journey panicked".into())))
        })?;
        let (component, _) = self.compile(&journey.name, &snapshot, &key)?;
        linked(component, false)
    }

    /// Prepare the entry and every file it imports, on a thread of its own
    /// (loading is synchronous; the runtime's calls are not).
    fn prepare_all(&self, job: &Job<'_>, entry: String) -> Result<Vec<Module>, LoadError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| job.fail(format!("cannot start the preparing thread's runtime: {e}")))?;
        rt.block_on(async {
            tokio::time::timeout(PREPARE_TIMEOUT, self.prepare_files(job, entry))
                .await
                .unwrap_or_else(|_| {
                    Err(job.fail(format!(
                        "preparing the journey's files took longer than {} s",
                        PREPARE_TIMEOUT.as_secs()
                    )))
                })
        })
    }

    /// A new instance that prepares `job`'s files.
    async fn preparing(&self, job: &Job<'_>) -> Result<Preparing, LoadError> {
        // No host may be reached while preparing.
        let mut opts = RunOptions::new(no_hosts(|m| job.fail(m))?);
        opts.memory_limit = PREPARE_MEMORY;
        opts.timeout = PREPARE_TIMEOUT;
        let mut store = self.store_for(
            "prepare",
            None,
            &opts,
            std::time::SystemTime::now(),
            Instant::now(),
            Default::default(),
        );
        store.data_mut().preparer = job.engine.preparer;
        let runtime = job
            .engine
            .prepare
            .instantiate_async(&mut store)
            .await
            .map_err(|e| {
                job.fail(format!(
                    "cannot start the {}: {e:#}",
                    job.lang.runtime_name()
                ))
            })?;
        Ok(Preparing { store, runtime })
    }

    /// Prepare `source` (the file `rel`) in the instance in `slot`, or in
    /// the engine's kept one, or in a new one. The instance is left in
    /// `slot` only if it prepared the file: one that failed may be unusable
    /// after (SpiderMonkey's heap after an out-of-memory fails the next
    /// file the same way). What a reused instance failed is tried again in
    /// a new one, so that what a file gives never depends on the files
    /// prepared before it.
    async fn prepare_one(
        &self,
        job: &Job<'_>,
        slot: &mut Option<Preparing>,
        rel: &str,
        source: &str,
    ) -> Result<crate::script_bindings::Prepared, LoadError> {
        let kept = || {
            job.engine
                .kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        };
        let (mut p, mut reused) = match slot.take().or_else(kept) {
            Some(p) => (p, true),
            None => (self.preparing(job).await?, false),
        };
        loop {
            p.store.data_mut().deadline =
                waymark_record::units::later(Instant::now(), PREPARE_TIMEOUT);
            let out = p.runtime.call_prepare(&mut p.store, rel, source).await;
            match out {
                Ok(Ok(prepared)) => {
                    *slot = Some(p);
                    return Ok(prepared);
                }
                Err(e) if reused => {
                    tracing::debug!(error = %format!("{e:#}"), file = rel, "a kept preparing instance failed; trying a new one");
                }
                Ok(Err(m)) if reused => {
                    tracing::debug!(error = %m, file = rel, "a kept preparing instance refused a file; trying a new one");
                }
                // The runtime's message begins with the path it was given.
                Ok(Err(m)) => {
                    return Err(job.fail(match m.strip_prefix(rel) {
                        Some(rest) => format!("{}{rest}", job.shown_root.join(rel).display()),
                        None => m,
                    }));
                }
                Err(e) => {
                    return Err(job.fail(format!(
                        "{}: the {} failed: {e:#}",
                        job.shown_root.join(rel).display(),
                        job.lang.runtime_name()
                    )));
                }
            }
            reused = false;
            p = self.preparing(job).await?;
        }
    }

    async fn prepare_files(&self, job: &Job<'_>, entry: String) -> Result<Vec<Module>, LoadError> {
        // The instance that prepared this journey's files goes back to the
        // engine for the next journey, unless a file failed in it.
        let mut slot = None;
        let out = self.prepare_files_in(job, entry, &mut slot).await;
        if let Some(p) = slot {
            *job.engine
                .kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(p);
        }
        out
    }

    async fn prepare_files_in(
        &self,
        job: &Job<'_>,
        entry: String,
        slot: &mut Option<Preparing>,
    ) -> Result<Vec<Module>, LoadError> {
        let Job {
            engine,
            lang,
            root,
            shown_root,
            ..
        } = *job;
        let shown = |rel: &str| shown_root.join(rel).display().to_string();
        let mut modules: Vec<Module> = Vec::new();
        let mut queue = vec![entry];
        while let Some(rel) = queue.pop() {
            if modules.iter().any(|m| m.path == rel) {
                continue;
            }
            if modules.len() >= MAX_MODULES {
                return Err(job.fail(format!("the journey imports more than {MAX_MODULES} files")));
            }
            let file = root.join(&rel);
            let size = std::fs::metadata(&file)
                .map_err(|e| job.fail(format!("cannot read {}: {e}", shown(&rel))))?
                .len();
            if size > MAX_SOURCE_BYTES {
                return Err(job.fail(format!(
                    "{} is {size} bytes, above the {MAX_SOURCE_BYTES} a journey's file may have",
                    shown(&rel)
                )));
            }
            let source = std::fs::read_to_string(&file)
                .map_err(|e| job.fail(format!("cannot read {}: {e}", shown(&rel))))?;
            let key = self.prepared_key(engine, &rel, &source);
            let prepared = match key.as_deref().and_then(read_prepared) {
                Some(p) => p,
                None => {
                    let p = self.prepare_one(job, slot, &rel, &source).await?;
                    let p = Prepared {
                        code: p.code,
                        imports: p.imports,
                        source_map: p.source_map,
                        compiled: p.compiled,
                    };
                    if let Some(key) = &key {
                        write_prepared(key, &p);
                    }
                    p
                }
            };
            let mut links = Vec::new();
            for spec in prepared.imports {
                let found = match lang.runtime() {
                    Language::Python => resolve_python(root, &spec),
                    _ => resolve(root, &rel, &spec),
                };
                let to = match found {
                    Ok(Link::Runtime) => continue,
                    Ok(Link::Sdk) => SDK.to_string(),
                    Ok(Link::World(w)) => w.to_string(),
                    Ok(Link::Module(p)) => {
                        queue.push(p.clone());
                        p
                    }
                    Err(why) => {
                        return Err(job.fail(format!("{} imports '{spec}': {why}", shown(&rel))));
                    }
                };
                links.push((spec, to));
            }
            modules.push(Module {
                path: rel,
                code: prepared.code,
                links,
                source_map: prepared.source_map,
                compiled: prepared.compiled,
            });
        }
        Ok(modules)
    }
}

/// An HTTP client with an empty allow-list: what prepares files or
/// evaluates a snapshot's modules reaches no host.
fn no_hosts(
    fail: impl Fn(String) -> LoadError,
) -> Result<Arc<waymark_http::HttpConfig>, LoadError> {
    let allow = waymark_http::AllowList::parse::<&str>(&[])
        .map_err(|e| fail(format!("the empty allow-list: {e}")))?;
    let http = waymark_http::HttpConfig::new(allow, None)
        .map_err(|e| fail(format!("the HTTP client's TLS set-up: {e}")))?;
    Ok(Arc::new(http))
}

/// What the runtime's `prepare` made of a file, as the cache keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    code: String,
    imports: Vec<String>,
    source_map: String,
    compiled: Vec<u8>,
}

impl Runtime {
    /// Where the cache keeps what `prepare` makes of `source` at `rel`:
    /// the runtime, the path (messages and source maps name it) and the
    /// text decide it.
    fn prepared_key(&self, engine: &ScriptEngine, rel: &str, source: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut h = Sha256::new();
        h.update(engine.sha256.as_bytes());
        h.update([0]);
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(source.as_bytes());
        Some(
            dir.join("prepared")
                .join(format!("{}.json", hex::encode(h.finalize()))),
        )
    }
}

/// A cached preparation; none if absent or unreadable (then it is made again).
fn read_prepared(path: &Path) -> Option<Prepared> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_prepared(path: &Path, p: &Prepared) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(p).map_err(std::io::Error::other)?)?;
        // Atomic: a concurrent reader sees no file or the whole of it.
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "could not keep a prepared journey file");
    }
}

/// The module `spec`, imported by `from` (both relative to `root`, the
/// journey's directory, already canonical), names.
fn resolve(root: &Path, from: &str, spec: &str) -> Result<Link, ImportError> {
    if spec == SDK {
        return Ok(Link::Sdk);
    }
    if let Some(w) = WORLD.iter().find(|w| **w == spec) {
        return Ok(Link::World(w));
    }
    if !(spec.starts_with("./") || spec.starts_with("../")) {
        return Err(ImportError::NotAllowed);
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for seg in spec.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ImportError::Outside);
                }
            }
            s => parts.push(s),
        }
    }
    let base = parts.join("/");
    let tried = vec![
        base.clone(),
        format!("{base}.ts"),
        format!("{base}.js"),
        format!("{base}.mjs"),
        format!("{base}/index.ts"),
        format!("{base}/index.js"),
    ];
    for candidate in &tried {
        let p: PathBuf = root.join(candidate);
        if !p.is_file() {
            continue;
        }
        // A link may not lead out of the directory either.
        let real = p.canonicalize()?;
        if !real.starts_with(root) {
            return Err(ImportError::LeadsOutside);
        }
        if Language::of(&p).is_none_or(|l| l.runtime() != Language::JavaScript) {
            return Err(ImportError::NotScript(candidate.clone()));
        }
        return Ok(Link::Module(candidate.clone()));
    }
    // Journeys written for the component build import the SDK as the file
    // that build puts beside them.
    if matches!(base.rsplit('/').next(), Some("waymark.js" | "waymark")) {
        return Ok(Link::Sdk);
    }
    Err(ImportError::NotFound(tried))
}

/// The journey's file that the Python module `name` (`lib.auth`) is, if it
/// is one of them (`root` canonical); anything else is left to the runtime.
fn resolve_python(root: &Path, name: &str) -> Result<Link, ImportError> {
    if name == SDK {
        return Ok(Link::Sdk);
    }
    let base = name.replace('.', "/");
    for candidate in [format!("{base}.py"), format!("{base}/__init__.py")] {
        let p = root.join(&candidate);
        if !p.is_file() {
            continue;
        }
        let real = p.canonicalize()?;
        if !real.starts_with(root) {
            return Err(ImportError::LeadsOutside);
        }
        return Ok(Link::Module(candidate));
    }
    Ok(Link::Runtime)
}

/// The instance wizer reads the state of, through the accessors its
/// instrumentation exported.
struct Snapshotted<'a> {
    store: &'a mut wasmtime::Store<RunState>,
    instance: wasmtime::component::Instance,
}

impl Snapshotted<'_> {
    async fn call<R, T>(
        &mut self,
        instance: &str,
        func: &str,
        with: impl FnOnce(&wasmtime::Store<RunState>, R) -> T,
    ) -> T
    where
        R: wasmtime::component::Lift + Send + Sync + 'static,
    {
        // The accessors are wizer's own, made by its instrumentation just
        // before: a missing one or a trap is a bug there, not the journey's.
        let (_, group) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("wizer's accessor instance");
        let (_, index) = self
            .instance
            .get_export(&mut *self.store, Some(&group), func)
            .expect("wizer's accessor");
        let f = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, index)
            .expect("wizer's accessor type");
        let (r,) = f
            .call_async(&mut *self.store, ())
            .await
            .expect("wizer's accessor runs");
        with(self.store, r)
    }
}

impl wasmtime_wizer::ComponentInstanceState for Snapshotted<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        self.call(
            instance,
            func,
            |store, list: wasmtime::component::WasmList<u8>| contents(list.as_le_slice(store)),
        )
        .await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_resolve_inside_the_directory_only() {
        let dir = std::env::temp_dir().join(format!("waymark-resolve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).expect("dir");
        let dir = dir.canonicalize().expect("canonical");
        std::fs::write(dir.join("lib/auth.ts"), "export const a = 1;").expect("write");
        std::fs::write(dir.join("data.json"), "{}").expect("write");
        let to = |from: &str, spec: &str| match resolve(&dir, from, spec) {
            Ok(Link::Sdk) => "sdk".to_string(),
            Ok(Link::World(w)) => w.to_string(),
            Ok(Link::Module(p)) => p,
            Ok(Link::Runtime) => "runtime".to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(to("main.ts", "./lib/auth"), "lib/auth.ts");
        assert_eq!(to("lib/auth.ts", "../lib/./auth.ts"), "lib/auth.ts");
        assert_eq!(to("main.ts", "waymark"), "sdk");
        assert_eq!(to("main.js", "./waymark.js"), "sdk");
        assert_eq!(
            to("main.js", "waymark:journey/vars@0.2.0"),
            "waymark:journey/vars@0.2.0"
        );
        assert!(to("main.js", "waymark:journey/script@0.2.0").contains("only 'waymark'"));
        assert!(
            to("main.ts", "../etc/passwd").contains("outside"),
            "{}",
            to("main.ts", "../etc/passwd")
        );
        assert!(to("main.ts", "lodash").contains("only 'waymark'"));
        assert!(to("main.ts", "./data.json").contains("not a .js or .ts"));
        assert!(to("main.ts", "./nope").contains("tried nope, nope.ts"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
