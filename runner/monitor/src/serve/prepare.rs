//! From a parsed config to journeys ready to run: compiled, linked, their
//! run options built; and `waymark check`, which does the same and reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError, HttpSettings, JourneyConfig, Place};
use waymark_engine::{LoadedJourney, RunOptions, Runtime};
use waymark_http::HttpConfig;

/// A journey ready to run: config, compiled code, run options.
pub struct Prepared {
    /// As configured.
    pub config: JourneyConfig,
    /// Compiled code.
    pub loaded: LoadedJourney,
    /// Limits, vars and client settings of its runs.
    pub opts: RunOptions,
    /// The `[[maintenance]]` windows that cover it.
    pub maintenance: Vec<crate::config::MaintenanceConfig>,
    wasm_hash: [u8; 32],
}

/// A validated config with every journey loaded: what the scheduler runs.
pub struct Plan {
    /// The config it came from.
    pub config: Config,
    /// One per `[[journey]]`.
    pub journeys: Vec<Arc<Prepared>>,
}

fn error_at(place: &Place, key: String, message: String) -> ConfigError {
    ConfigError {
        place: place.clone(),
        key,
        message,
    }
}

/// Loads every journey of `config`: reads and compiles each distinct wasm
/// file once (journeys sharing a file share its code), builds one client
/// config per distinct HTTP setting. Code already loaded in `old` is reused.
/// All problems are returned together.
pub fn prepare(
    runtime: &Runtime,
    config: Config,
    old: Option<&Plan>,
) -> Result<Plan, Vec<ConfigError>> {
    let (plan, errors) = prepare_partial(runtime, config, old);
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// As [`prepare`], keeping the journeys that did load beside the errors.
pub fn prepare_partial(
    runtime: &Runtime,
    config: Config,
    old: Option<&Plan>,
) -> (Plan, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut by_path: HashMap<PathBuf, Result<([u8; 32], LoadedJourney), String>> = HashMap::new();
    let mut by_hash: HashMap<[u8; 32], LoadedJourney> = HashMap::new();
    if let Some(old) = old {
        for p in &old.journeys {
            by_hash.insert(p.wasm_hash, p.loaded.clone());
        }
    }
    let mut https: HashMap<
        HttpSettings,
        Result<Arc<HttpConfig>, Arc<waymark_http::HttpSettingsError>>,
    > = HashMap::new();
    let mut journeys = Vec::with_capacity(config.journeys.len());
    for j in &config.journeys {
        let label = j.label.clone();
        let loaded = by_path
            .entry(j.wasm.clone())
            .or_insert_with(|| {
                if waymark_engine::Language::of(&j.wasm).is_some() {
                    // From its source: the files it imports count too, so
                    // the key is the prepared journey's own digest.
                    let l = runtime.load_file(&j.wasm).map_err(|e| e.to_string())?;
                    let hash: [u8; 32] = Sha256::digest(l.sha256.as_bytes()).into();
                    return Ok((hash, by_hash.entry(hash).or_insert(l).clone()));
                }
                let bytes = std::fs::read(&j.wasm)
                    .map_err(|e| format!("cannot read {}: {e}", j.wasm.display()))?;
                if !bytes.starts_with(b"\0asm") {
                    return Err(format!(
                        "{} is not a Wasm component (it lacks the \\0asm header)",
                        j.wasm.display()
                    ));
                }
                let hash: [u8; 32] = Sha256::digest(&bytes).into();
                if let Some(l) = by_hash.get(&hash) {
                    return Ok((hash, l.clone()));
                }
                let l = runtime.load(&j.name, &bytes).map_err(|e| e.to_string())?;
                by_hash.insert(hash, l.clone());
                Ok((hash, l))
            })
            .clone();
        let (hash, mut loaded) = match loaded {
            Ok(v) => v,
            Err(e) => {
                errors.push(error_at(&j.wasm_at, format!("{label} → wasm"), e));
                continue;
            }
        };
        loaded.name = j.name.clone();
        let http = match https
            .entry(j.http.clone())
            .or_insert_with(|| j.http.build().map(Arc::new).map_err(Arc::new))
        {
            Ok(h) => h.clone(),
            Err(e) => {
                errors.push(error_at(&j.wasm_at, label, e.to_string()));
                continue;
            }
        };
        let mut opts = RunOptions::new(http);
        opts.vars = j.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        opts.secrets = j
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        opts.timeout = j.timeout;
        opts.memory_limit = j.memory_limit;
        opts.max_record = j.max_record;
        opts.location = config.runner.location.clone();
        let maintenance = config
            .maintenance
            .iter()
            .filter(|w| w.covers(&j.name, &j.tags))
            .cloned()
            .collect();
        journeys.push(Arc::new(Prepared {
            config: j.clone(),
            loaded,
            opts,
            maintenance,
            wasm_hash: hash,
        }));
    }
    // Every journey is loaded: the instance that prepared their files is
    // not needed until the config changes.
    runtime.release_preparers();
    (Plan { config, journeys }, errors)
}

/// `waymark check`: every problem of the file, then every journey loaded
/// and instantiated (not run). Returns the number of journeys and the
/// problems (none: all good).
pub async fn check(
    runtime: &Runtime,
    path: &Path,
) -> Result<(usize, Vec<String>), crate::config::LoadConfigError> {
    let (config, mut errors) = Config::load_partial(path)?;
    let mut out: Vec<String> = Vec::new();
    let count = config.as_ref().map_or(0, |c| c.journeys.len());
    if let Some(config) = config {
        let (plan, load_errors) = prepare_partial(runtime, config, None);
        errors.extend(load_errors);
        for p in &plan.journeys {
            if let Err(e) = runtime.instantiate(&p.loaded, &p.opts).await {
                errors.push(error_at(
                    &p.config.wasm_at,
                    format!("{} → wasm", p.config.label),
                    e.to_string(),
                ));
            }
        }
    }
    errors.sort_by_key(|e| (e.place.line, e.place.column));
    out.extend(errors.iter().map(ToString::to_string));
    Ok((count, out))
}
