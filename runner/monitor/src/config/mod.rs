//! `waymark.toml`: what `waymark serve` runs, and where every mistake in it is.
//!
//! The file is parsed once into a spanned tree, then each section is read on
//! its own, so one bad `[[journey]]` does not hide the problems of the next:
//! every error is collected and each names file, line, column and key, with
//! the line quoted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

mod journey;
mod maintenance;
mod sections;
pub use maintenance::{MaintenanceConfig, When, window_for};

use crate::schedule::Schedule;
pub use crate::sinks::{SinkConfig, SinkKind};
pub use crate::spans::{ConfigError, ConfigErrors, NotHttpUrl, Place, http_url};
use crate::spans::{Reader, substitute_env};
use journey::{RawJourney, read_journey};
use sections::{RawLoad, RawRunner, RawStore, RawUi, read_load, read_runner, read_store, read_ui};

/// The whole file, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// `[runner]`.
    pub runner: RunnerConfig,
    /// Every `[[journey]]`, defaults applied.
    pub journeys: Vec<JourneyConfig>,
    /// Every `[[sink]]`.
    pub sinks: Vec<SinkConfig>,
    /// `[store]`.
    pub store: StoreConfig,
    /// `[load]`: how `waymark load -c` audits one of the journeys.
    pub load: Option<LoadConfig>,
    /// `[ui]`: the web UI's links and its public status page.
    pub ui: UiConfig,
    /// Every `[[maintenance]]` window.
    pub maintenance: Vec<MaintenanceConfig>,
    /// The journeys of the file that other shards run, with the index of
    /// the shard that owns each (see [`Config::keep_own_share`]).
    pub elsewhere: Vec<(String, u32)>,
}

/// `[ui]`: the web UI's links and its public status page.
#[derive(Debug, Clone, PartialEq)]
pub struct UiConfig {
    /// Where a trace id links to: a URL holding `{trace_id}`.
    pub trace_url: Option<String>,
    /// The status page's title.
    pub title: String,
    /// The status page's groups: a name and its journeys, in order.
    pub groups: Vec<(String, Vec<String>)>,
    /// Each tag of the journeys (`tags`), and the journeys that carry it.
    pub tags: BTreeMap<String, Vec<String>>,
    /// The `[[maintenance]]` windows, which the UI shows.
    pub maintenance: Vec<MaintenanceConfig>,
}

impl UiConfig {
    /// The maintenance window open at `at` for `journey`, if any.
    pub fn maintenance_at(&self, journey: &str, at: std::time::SystemTime) -> Option<&str> {
        let tags: Vec<String> = self
            .tags
            .iter()
            .filter(|(_, js)| js.iter().any(|j| j == journey))
            .map(|(t, _)| t.clone())
            .collect();
        self.maintenance
            .iter()
            .find(|w| w.covers(journey, &tags) && w.open_at(at))
            .map(|w| w.name.as_str())
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            trace_url: None,
            title: "Status".into(),
            groups: Vec::new(),
            tags: BTreeMap::new(),
            maintenance: Vec::new(),
        }
    }
}

/// `[runner]`: this process.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    /// Label on every result.
    pub location: String,
    /// Most journeys running at once.
    pub max_concurrent_runs: usize,
    /// Address of `/healthz` and `/status`; none turns the listener off.
    pub listen: Option<SocketAddr>,
    /// How long SIGTERM waits for in-flight runs.
    pub shutdown_grace: Duration,
    /// Reload when the config or a journey's wasm file changes on disk.
    pub watch: bool,
    /// Where sinks keep records they could not deliver yet.
    pub spool_dir: PathBuf,
    /// This replica's share of the journeys when several `waymark serve`
    /// processes run the same config (`[runner] shard`, `--shard`).
    pub shard: waymark_load::Shard,
    /// How long a replica that stopped beating keeps its share before the
    /// others take it over (`[runner] lease`; with a PostgreSQL history).
    pub lease: Duration,
}

/// One `[[journey]]` with `[defaults]` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyConfig {
    /// Unique name: the `journey` label of every result.
    pub name: String,
    /// The component, resolved against the config file's directory.
    pub wasm: PathBuf,
    /// When it runs.
    pub schedule: Schedule,
    /// Each run starts up to this much after its due time (random).
    pub jitter: Duration,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Attempts after a failed one before the run counts as failed.
    pub retries: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
    /// Linear memory cap, bytes.
    pub memory_limit: usize,
    /// Budget of each run's record, bytes.
    pub max_record: usize,
    /// Which runs keep their exchanges in the history, for `waymark replay`.
    pub keep_exchanges: KeepExchanges,
    /// Labels the web UI filters by.
    pub tags: Vec<String>,
    /// Plain variables.
    pub vars: BTreeMap<String, String>,
    /// Secrets: `***` in every output.
    pub secrets: BTreeMap<String, String>,
    /// What the journey may reach and how.
    pub http: HttpSettings,
    /// Where `wasm` is written in the file, for errors found later
    /// (a file that does not load).
    pub wasm_at: Place,
    /// `journey "name" (#N)`, as every error about it starts.
    pub label: String,
}

pub use waymark_http::HttpSettings;

/// `keep_exchanges`: which runs are stored whole enough to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepExchanges {
    /// None (the default: recordings hold response bodies).
    #[default]
    Never,
    /// Attempts that did not pass.
    OnFailure,
    /// Every attempt.
    Always,
}
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// The SQLite file or PostgreSQL database; none keeps no history.
    pub database: Option<crate::store::Database>,
    /// Runs older than this are deleted.
    pub retention: Duration,
}

/// `[load]`: a scalability audit of one `[[journey]]` (its wasm, vars,
/// secrets, allow-list and limits); `waymark load` flags override it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// The `[[journey]]` to load.
    pub journey: String,
    /// Closed model: users per step.
    pub concurrency: Vec<u32>,
    /// Open model: arrivals per second per step.
    pub rate: Vec<f64>,
    /// Length of each step.
    pub step_duration: Option<Duration>,
    /// Unmeasured start of each step.
    pub warmup: Option<Duration>,
    /// Most iterations per step.
    pub iterations: Option<u64>,
    /// Open model: most journeys in flight.
    pub max_vus: Option<u32>,
    /// Each virtual user keeps one instance and calls `run` in it again.
    pub reuse_instance: bool,
    /// Passes over the ramp.
    pub repeat: Option<u32>,
    /// Prometheus to ask the `observe` queries of.
    pub prometheus: Option<String>,
    /// Server-side series to put beside each step.
    pub observe: Vec<waymark_load::observe::Observe>,
    /// SLO gates.
    pub slo: Vec<waymark_load::slo::Gate>,
    /// HTML report file.
    pub report: Option<PathBuf>,
    /// JSON results file.
    pub json: Option<PathBuf>,
}

/// The file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// Reading failed.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Read, but wrong.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

pub use waymark_engine::{DEFAULT_LOCATION, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT};
/// Default history retention.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `[runner] lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shortest `[runner] lease`: a beat is a fifth of it, one database round
/// trip each.
pub const MIN_LEASE: Duration = Duration::from_millis(500);
/// Shortest `every`: below this a journey would be a load test.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

impl Config {
    /// Keeps only the journeys `runner.shard` owns, moving the others to
    /// `elsewhere`. Every replica reads the same file and computes the same
    /// split from the journeys' names, so each journey runs in exactly one.
    ///
    /// Not with [`Config::takes_over`]: then every replica loads every
    /// journey, so it can take over the share of one that stopped.
    pub fn keep_own_share(&mut self) {
        let shard = self.runner.shard;
        if shard.count <= 1 || self.takes_over() {
            return;
        }
        let (mine, theirs): (Vec<JourneyConfig>, Vec<JourneyConfig>) =
            std::mem::take(&mut self.journeys)
                .into_iter()
                .partition(|j| shard.owns(&j.name));
        self.journeys = mine;
        self.elsewhere = theirs
            .into_iter()
            .map(|j| {
                let owner = waymark_load::Shard::owner(shard.count, &j.name);
                (j.name, owner)
            })
            .collect();
    }

    /// Whether the replicas hold their shares by leases in the shared
    /// history, so the survivors take over the share of one that stops:
    /// when the config is sharded and the history is PostgreSQL (a SQLite
    /// file is each replica's own, so it cannot tell who else is alive).
    pub fn takes_over(&self) -> bool {
        self.runner.shard.count > 1
            && matches!(
                self.store.database,
                Some(crate::store::Database::Postgres(_))
            )
    }

    /// Reads and validates `path`; environment variables from the process.
    pub fn load(path: &Path) -> Result<Config, LoadConfigError> {
        let src = read(path)?;
        Ok(Config::parse(path, &src, &|n| std::env::var(n).ok())?)
    }

    /// As [`Config::load`], keeping what was valid (see [`Config::parse_partial`]).
    pub fn load_partial(
        path: &Path,
    ) -> Result<(Option<Config>, Vec<ConfigError>), LoadConfigError> {
        let src = read(path)?;
        Ok(Config::parse_partial(path, &src, &|n| {
            std::env::var(n).ok()
        }))
    }

    /// Only the `[store]` section of `path`, for readers of the history
    /// (`waymark history`): problems elsewhere in the file, such as a
    /// sink's secret whose environment variable this shell does not set,
    /// are not theirs to fix.
    pub fn load_store(path: &Path) -> Result<StoreConfig, LoadConfigError> {
        let (config, errors) = Config::load_partial(path)?;
        let (theirs, _): (Vec<ConfigError>, Vec<ConfigError>) = errors
            .into_iter()
            .partition(|e| e.key.starts_with("[store]") || e.key == "syntax");
        match config {
            Some(c) if theirs.is_empty() => Ok(c.store),
            _ => Err(ConfigErrors(theirs).into()),
        }
    }

    /// Validates `src` as if read from `path` (relative paths in it are
    /// resolved against `path`'s directory).
    pub fn parse(
        path: &Path,
        src: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let (config, errors) = Config::parse_partial(path, src, env);
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// As [`Config::parse`], but also returns what was valid beside the
    /// errors, so `waymark check` can go on to load the good journeys.
    /// None when the file is not TOML at all.
    pub fn parse_partial(
        path: &Path,
        src: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Option<Config>, Vec<ConfigError>) {
        let mut r = Reader {
            file: path,
            src,
            errors: Vec::new(),
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut doc = match DeTable::parse(src) {
            Ok(d) => d,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let first = e.message().lines().next().unwrap_or("invalid TOML");
                r.error(span, "syntax", first.to_string());
                return (None, r.errors);
            }
        };
        let mut missing = Vec::new();
        let doc_span = doc.span();
        for (_, v) in doc.get_mut().iter_mut() {
            substitute_env(v, env, &mut missing);
        }
        for (span, name) in missing {
            r.error(
                span,
                "${env:…}",
                format!("environment variable {name} is not set"),
            );
        }

        let mut runner_raw = RawRunner::default();
        let mut defaults = RawJourney::default();
        let mut journeys_raw: Vec<(Spanned<DeValue>, RawJourney)> = Vec::new();
        let mut sinks_raw: Vec<Spanned<DeValue>> = Vec::new();
        let mut store_raw = RawStore::default();
        let mut ui_raw = RawUi::default();
        let mut maintenance_raw: Vec<(Range<usize>, maintenance::RawMaintenance)> = Vec::new();
        let mut load_raw: Option<(Range<usize>, RawLoad)> = None;
        let mut defaults_value = None;
        for (key, value) in doc.get_ref().iter() {
            match key.get_ref().as_ref() {
                "runner" => {
                    if let Some(v) = r.section(value, "[runner]") {
                        runner_raw = v;
                    }
                }
                "defaults" => {
                    if let Some(v) = r.section::<RawJourney>(value, "[defaults]") {
                        defaults = v;
                        defaults_value = Some(value.clone());
                    }
                }
                "journey" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            // Named in errors even when the table does not read.
                            let label = match item.get_ref().get("name").map(|n| n.get_ref()) {
                                Some(DeValue::String(n)) => format!("journey \"{n}\" (#{})", i + 1),
                                _ => format!("journey #{}", i + 1),
                            };
                            if let Some(j) = r.section(item, &label) {
                                journeys_raw.push((item.clone(), j));
                            }
                        }
                    }
                    _ => r.error(
                        key.span(),
                        "journey",
                        "journeys are written as [[journey]] tables",
                    ),
                },
                "sink" => match value.get_ref() {
                    DeValue::Array(items) => {
                        sinks_raw.extend(items.iter().cloned());
                    }
                    _ => r.error(key.span(), "sink", "sinks are written as [[sink]] tables"),
                },
                "store" => {
                    if let Some(v) = r.section(value, "[store]") {
                        store_raw = v;
                    }
                }
                "maintenance" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let label = format!("[[maintenance]] #{}", i + 1);
                            if let Some(m) = r.section(item, &label) {
                                maintenance_raw.push((item.span(), m));
                            }
                        }
                    }
                    _ => r.error(
                        key.span(),
                        "maintenance",
                        "maintenance windows are written as [[maintenance]] tables",
                    ),
                },
                "ui" => {
                    if let Some(v) = r.section(value, "[ui]") {
                        ui_raw = v;
                    }
                }
                "load" => {
                    if let Some(v) = r.section(value, "[load]") {
                        load_raw = Some((key.span(), v));
                    }
                }
                other => r.error(
                    key.span(),
                    other.to_string(),
                    format!(
                        "unknown key '{other}' (the file holds [runner], [defaults], [[journey]], [[sink]], [store], [ui], [[maintenance]] and [load])"
                    ),
                ),
            }
        }

        if defaults_value.is_some() {
            for (field, what) in [(&defaults.name, "name"), (&defaults.wasm, "wasm")] {
                if let Some(v) = field {
                    r.error(
                        v.span(),
                        format!("[defaults] → {what}"),
                        format!("'{what}' belongs to each [[journey]], not to [defaults]"),
                    );
                }
            }
        }

        let runner = read_runner(&mut r, &base, runner_raw);
        let mut journeys = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, (item, raw)) in journeys_raw.iter().enumerate() {
            let label = match &raw.name {
                Some(n) => format!("journey \"{}\" (#{})", n.get_ref(), i + 1),
                None => format!("journey #{}", i + 1),
            };
            if let Some(name) = &raw.name
                && let Some(first) = seen.insert(name.get_ref().clone(), i + 1)
            {
                {
                    r.error(
                        name.span(),
                        format!("{label} → name"),
                        format!(
                            "the name '{}' is already used by journey #{first}; names must be unique",
                            name.get_ref()
                        ),
                    );
                }
            }
            if let Some(j) = read_journey(&mut r, &base, item.span(), &label, raw, &defaults) {
                journeys.push(j);
            }
        }
        if journeys_raw.is_empty() && r.errors.is_empty() {
            r.error(
                doc_span.start..doc_span.start,
                "journey",
                "no [[journey]] in the file: there is nothing to run",
            );
        }
        let mut sinks: Vec<SinkConfig> = Vec::new();
        let mut explicit: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in sinks_raw.iter().enumerate() {
            let span = item.span();
            let raw_name = match item.get_ref().get("name") {
                Some(n) => match n.get_ref() {
                    DeValue::String(s) => Some((s.to_string(), n.span())),
                    _ => None,
                },
                None => None,
            };
            let named = raw_name.is_some();
            // Checked on the raw names, so a duplicate shows even when the
            // sink has other problems.
            if let Some((n, at)) = &raw_name
                && let Some(first) = explicit.insert(n.clone(), i + 1)
            {
                r.error(
                    at.clone(),
                    format!("sink #{} → name", i + 1),
                    format!(
                        "the sink name '{n}' is already used by sink #{first}; names must be unique"
                    ),
                );
                continue;
            }
            if let Some(mut sink) = crate::sinks::read(&mut r, &base, i, item) {
                if let SinkKind::Prometheus(p) = &sink.kind
                    && p.listen.is_none()
                    && p.remote_write.is_none()
                    && runner.listen.is_none()
                {
                    r.error(
                        span.start..span.start,
                        format!("sink #{} (prometheus)", i + 1),
                        "nothing would serve /metrics: [runner] listen is off; give this sink a 'listen' or a 'remote_write'",
                    );
                    continue;
                }
                if sinks.iter().any(|o| o.name == sink.name) {
                    if named {
                        r.error(
                            span.start..span.start,
                            format!("sink #{}", i + 1),
                            format!(
                                "the sink name '{}' is already used; names must be unique",
                                sink.name
                            ),
                        );
                        continue;
                    }
                    // Two unnamed sinks of one type: number the second.
                    sink.name = format!("{}-{}", sink.name, i + 1);
                }
                sinks.push(sink);
            }
        }
        let store = read_store(&mut r, &base, store_raw);
        let mut ui = read_ui(&mut r, ui_raw, &journeys);
        let maintenance: Vec<MaintenanceConfig> = maintenance_raw
            .into_iter()
            .enumerate()
            .filter_map(|(i, (span, raw))| {
                maintenance::read_maintenance(&mut r, i, span, raw, &journeys)
            })
            .collect();
        ui.maintenance = maintenance.clone();
        let load =
            load_raw.and_then(|(span, raw)| read_load(&mut r, &base, span, raw, &journeys_raw));
        r.errors.sort_by_key(|e| (e.place.line, e.place.column));
        // A bad value in [defaults] shows once, not once per journey.
        r.errors.dedup();
        let config = Config {
            path: path.to_path_buf(),
            runner,
            journeys,
            sinks,
            store,
            load,
            ui,
            maintenance,
            elsewhere: Vec::new(),
        };
        (Some(config), r.errors)
    }

    /// The files whose change triggers a reload: this config and every wasm.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        for j in &self.journeys {
            if !files.contains(&j.wasm) {
                files.push(j.wasm.clone());
            }
        }
        files
    }
}

fn read(path: &Path) -> Result<String, LoadConfigError> {
    std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_substitution_and_escape() {
        let src = "[[journey]]\nname = \"a\"\nwasm = \"a.wasm\"\nevery = \"1m\"\nsecrets = { t = \"Bearer ${env:TOK}\", lit = \"$${env:TOK}\" }\n";
        let c = Config::parse(Path::new("w.toml"), src, &|n| {
            (n == "TOK").then(|| "s3cret".to_string())
        })
        .expect("valid");
        assert_eq!(c.journeys[0].secrets["t"], "Bearer s3cret");
        assert_eq!(c.journeys[0].secrets["lit"], "${env:TOK}");
    }

    #[test]
    fn a_shard_from_the_environment_keeps_its_share_and_a_bad_one_is_placed() {
        let src = "[runner]\nshard = \"${env:ORDINAL}/2\"\n\n[[journey]]\nname = \"a\"\nwasm = \"a.wasm\"\nevery = \"1m\"\n\n[[journey]]\nname = \"b\"\nwasm = \"a.wasm\"\nevery = \"1m\"\n";
        let mut shares = Vec::new();
        for ordinal in ["0", "1"] {
            let mut c =
                Config::parse(Path::new("w.toml"), src, &|_| Some(ordinal.into())).expect("valid");
            c.keep_own_share();
            let here: Vec<String> = c.journeys.iter().map(|j| j.name.clone()).collect();
            assert_eq!(here.len() + c.elsewhere.len(), 2);
            shares.extend(here);
        }
        shares.sort();
        assert_eq!(shares, ["a", "b"], "each journey in exactly one share");

        let e = Config::parse(Path::new("w.toml"), src, &|_| Some("2".into()))
            .expect_err("2/2 is no shard");
        let text = e.to_string();
        assert!(
            text.contains("w.toml:2:9: [runner] → shard: '2/2' is not a shard like 0/3"),
            "{text}"
        );
    }

    #[test]
    fn place_counts_characters() {
        // The value "x" of line 2: bytes 12..15, after a two-byte 'é'.
        let p = Place::at(Path::new("f"), "a = 1\nbé = \"x\"\n", 12..15);
        assert_eq!((p.line, p.column, p.width), (2, 6, 3));
        assert_eq!(p.text, "bé = \"x\"");
    }
}
