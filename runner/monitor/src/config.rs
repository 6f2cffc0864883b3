//! `waymark.toml`: what `waymark serve` runs, and where every mistake in it is.
//!
//! The file is parsed once into a spanned tree, then each section is read on
//! its own, so one bad `[[journey]]` does not hide the problems of the next:
//! every error is collected and each names file, line, column and key, with
//! the line quoted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::schedule::Schedule;
use waymark_record::units::{parse_duration, parse_size};

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
    /// Plain variables.
    pub vars: BTreeMap<String, String>,
    /// Secrets: `***` in every output.
    pub secrets: BTreeMap<String, String>,
    /// What the journey may reach and how.
    pub http: HttpSettings,
    /// Where `wasm` is written in the file, for errors found later
    /// (a file that does not load).
    pub wasm_at: Place,
}

/// The HTTP side of a journey; journeys with equal settings share one client config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpSettings {
    /// Allow-list patterns.
    pub allow_hosts: Vec<String>,
    /// `HOST:ADDR` overrides of DNS.
    pub resolve: Vec<String>,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate.
    pub insecure: bool,
    /// Most requests per run.
    pub max_requests: u32,
    /// Largest response body.
    pub max_body: u64,
    /// Most body bytes per run.
    pub max_total_bytes: u64,
}

/// One `[[sink]]`: where it sends, and its name (spool files are kept by name).
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Unique name; default: the type (with a number when repeated).
    pub name: String,
    /// Records waiting in memory before new ones spill to the disk spool.
    pub queue: usize,
    /// What kind.
    pub kind: SinkKind,
}

/// The kinds of sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// The waterfall of each run, on standard output.
    Pretty,
    /// The record, one JSON line per attempt, appended to `path` (`-`: stdout).
    Jsonl {
        /// File, or `-` for standard output.
        path: PathBuf,
        /// Rotate when the file would grow past this (0: never).
        max_size: u64,
        /// Rotated files kept (`path.1` … `path.N`).
        keep: u32,
    },
    /// A JSON POST on state changes (and optionally every failure or run).
    Webhook(WebhookConfig),
    /// Traces and metrics over OTLP/HTTP (protobuf).
    Otlp(OtlpConfig),
    /// Alerts to Alertmanager's v2 API while a journey fails.
    Alertmanager(AlertmanagerConfig),
    /// `/metrics` in the Prometheus exposition format.
    Prometheus {
        /// Where `/metrics` answers; none: on `[runner] listen`.
        listen: Option<SocketAddr>,
        /// Also push to this remote-write URL (e.g. `http://prom:9090/api/v1/write`).
        remote_write: Option<String>,
        /// How often to push.
        push_interval: Duration,
    },
}

/// An Alertmanager sink.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
    /// Re-send firing alerts this often.
    pub resend_interval: Duration,
    /// The `severity` label.
    pub severity: String,
    /// Extra labels on every alert.
    pub labels: BTreeMap<String, String>,
    /// The alert's `generatorURL`; `{journey}` and `{run_id}` are filled in.
    pub link: Option<String>,
    /// Per request.
    pub timeout: Duration,
}

/// An OTLP sink.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Base URL of the collector's OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`;
    /// `/v1/traces` and `/v1/metrics` are added.
    pub endpoint: String,
    /// Extra request headers (e.g. an API key).
    pub headers: BTreeMap<String, String>,
    /// Per request.
    pub timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

/// A webhook sink.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Which events: `failing`, `recovered`, `failure`, `run`.
    pub events: Vec<String>,
    /// `json` (the event with its record) or `slack` (a `text` line).
    pub slack: bool,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Key of the `X-Waymark-Signature` HMAC-SHA256.
    pub secret: Option<String>,
    /// Per request.
    pub timeout: Duration,
}

/// `[store]`: the run history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// SQLite file; none keeps no history.
    pub path: Option<PathBuf>,
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
    /// SLO gates.
    pub slo: Vec<waymark_load::slo::Gate>,
    /// HTML report file.
    pub report: Option<PathBuf>,
    /// JSON results file.
    pub json: Option<PathBuf>,
}

/// A place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// The line itself.
    pub text: String,
    /// Width of the marked part, characters.
    pub width: usize,
}

impl Place {
    fn at(file: &Path, src: &str, span: Range<usize>) -> Place {
        let start = span.start.min(src.len());
        let line_start = src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[start..].find('\n').map_or(src.len(), |i| start + i);
        let text = src[line_start..line_end].trim_end_matches('\r').to_string();
        let column = src[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        Place {
            file: file.to_path_buf(),
            line: src[..start].matches('\n').count() + 1,
            column,
            width: src[start..end].chars().count().max(1),
            text,
        }
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where.
    pub place: Place,
    /// Which key, e.g. `journey "login" (#2) → timeout`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.place;
        let n = p.line.to_string();
        let pad = " ".repeat(n.len());
        writeln!(
            f,
            "{}:{}:{}: {}: {}",
            p.file.display(),
            p.line,
            p.column,
            self.key,
            self.message
        )?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{n} | {}", p.text)?;
        write!(
            f,
            "{pad} | {}{}",
            " ".repeat(p.column - 1),
            "^".repeat(p.width)
        )
    }
}

/// Everything wrong with a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{e}")?;
        }
        write!(
            f,
            "{} problem{} in {}",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" },
            self.0
                .first()
                .map(|e| e.place.file.display().to_string())
                .unwrap_or_default()
        )
    }
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

/// Defaults of DESIGN.md sections 5 and 7.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default memory cap of a journey.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;
/// Default history retention.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest `every`: below this a journey would be a load test.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRunner {
    location: Option<Spanned<String>>,
    max_concurrent_runs: Option<Spanned<i64>>,
    listen: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    watch: Option<bool>,
    spool_dir: Option<Spanned<String>>,
}

/// Both `[defaults]` and `[[journey]]`: `name` and `wasm` are refused in
/// `[defaults]` after reading.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawJourney {
    name: Option<Spanned<String>>,
    wasm: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    retry_delay: Option<Spanned<String>>,
    memory_limit: Option<Spanned<Size>>,
    allow_hosts: Option<Vec<Spanned<String>>>,
    resolve: Option<Vec<Spanned<String>>>,
    ca_file: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    insecure: Option<bool>,
    max_requests: Option<Spanned<i64>>,
    max_body: Option<Spanned<Size>>,
    max_total_bytes: Option<Spanned<Size>>,
    vars: Option<BTreeMap<String, Spanned<String>>>,
    secrets: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    name: Option<Spanned<String>>,
    queue: Option<Spanned<i64>>,
    path: Option<Spanned<String>>,
    max_size: Option<Spanned<Size>>,
    keep: Option<Spanned<i64>>,
    url: Option<Spanned<String>>,
    events: Option<Vec<Spanned<String>>>,
    format: Option<Spanned<String>>,
    headers: Option<BTreeMap<String, String>>,
    secret: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    service_name: Option<Spanned<String>>,
    resend_interval: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    labels: Option<BTreeMap<String, String>>,
    link: Option<Spanned<String>>,
    remote_write: Option<Spanned<String>>,
    push_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    journey: Option<Spanned<String>>,
    concurrency: Option<Vec<Spanned<i64>>>,
    rate: Option<Vec<Spanned<String>>>,
    step_duration: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
    iterations: Option<Spanned<i64>>,
    max_vus: Option<Spanned<i64>>,
    slo: Option<Vec<Spanned<String>>>,
    report: Option<Spanned<String>>,
    json: Option<Spanned<String>>,
}

/// A size as `"64MiB"` or a plain integer of bytes.
#[derive(Clone, Debug)]
enum Size {
    Text(String),
    Bytes(i64),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"64MiB\" or a number of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Collects errors while reading one file.
struct Reader<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            place: Place::at(self.file, self.src, span),
            key: key.into(),
            message: message.into(),
        });
    }

    /// Reads one section with serde; on error, names the key whose key or
    /// value holds the error's position.
    fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let key = key_at(value, span.start)
                    .map(|k| format!("{what} → {k}"))
                    .unwrap_or_else(|| what.to_string());
                // serde speaks Rust types; the reader wrote TOML.
                let message = e
                    .message()
                    .replace("expected i64", "expected an integer")
                    .replace("expected a boolean", "expected true or false");
                self.error(span, key, message);
                None
            }
        }
    }

    fn duration(&mut self, v: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(v.span(), key, e);
                None
            }
        }
    }

    fn size(&mut self, v: &Spanned<Size>, key: &str) -> Option<u64> {
        match v.get_ref() {
            Size::Text(t) => match parse_size(t) {
                Ok(n) => Some(n as u64),
                Err(e) => {
                    self.error(v.span(), key, e);
                    None
                }
            },
            Size::Bytes(n) if *n > 0 => Some(*n as u64),
            Size::Bytes(n) => {
                self.error(
                    v.span(),
                    key,
                    format!("{n} is not a size; it must be above 0"),
                );
                None
            }
        }
    }

    fn http_url(&mut self, v: &Spanned<String>, key: &str) -> Option<String> {
        match http_url(v.get_ref()) {
            Ok(u) => Some(u),
            Err(e) => {
                self.error(v.span(), key, e);
                None
            }
        }
    }

    fn count(&mut self, v: &Spanned<i64>, key: &str, min: i64, max: i64) -> Option<i64> {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            self.error(
                v.span(),
                key,
                format!("{n} is out of range: it must be from {min} to {max}"),
            );
            None
        }
    }
}

/// `text` if it is an http or https URL (what every network sink posts to).
pub fn http_url(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(text.to_string()),
        _ => Err(format!("'{text}' is not an http(s) URL")),
    }
}

/// The key of `table` at byte `pos` (its key or its value), if any.
fn key_at(table: &Spanned<DeValue<'_>>, pos: usize) -> Option<String> {
    let DeValue::Table(t) = table.get_ref() else {
        return None;
    };
    t.iter()
        .find(|(k, v)| k.span().contains(&pos) || v.span().contains(&pos))
        .map(|(k, _)| k.get_ref().to_string())
}

/// Replaces `${env:NAME}` in every string of the tree; `$${` stays a literal `${`.
fn substitute_env(
    value: &mut Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<(Range<usize>, String)>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest: &str = s;
            while let Some(i) = rest.find("${") {
                if rest[..i].ends_with('$') {
                    out.push_str(&rest[..i - 1]);
                    out.push_str("${");
                    rest = &rest[i + 2..];
                    continue;
                }
                out.push_str(&rest[..i]);
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let inner = &after[..end];
                match inner.strip_prefix("env:") {
                    Some(name) => match env(name) {
                        Some(v) => out.push_str(&v),
                        None => missing.push((span.clone(), name.to_string())),
                    },
                    None => out.push_str(&rest[i..i + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out.into();
        }
        DeValue::Array(a) => {
            for v in a.iter_mut() {
                substitute_env(v, env, missing);
            }
        }
        DeValue::Table(t) => {
            for (_, v) in t.iter_mut() {
                substitute_env(v, env, missing);
            }
        }
        _ => {}
    }
}

impl Config {
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
        let mut sinks_raw: Vec<(Range<usize>, RawSink)> = Vec::new();
        let mut store_raw = RawStore::default();
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
                        for (i, item) in items.iter().enumerate() {
                            if let Some(s) = r.section(item, &format!("sink #{}", i + 1)) {
                                sinks_raw.push((item.span(), s));
                            }
                        }
                    }
                    _ => r.error(key.span(), "sink", "sinks are written as [[sink]] tables"),
                },
                "store" => {
                    if let Some(v) = r.section(value, "[store]") {
                        store_raw = v;
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
                        "unknown key '{other}' (the file holds [runner], [defaults], [[journey]], [[sink]], [store] and [load])"
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
        for (i, (span, s)) in sinks_raw.into_iter().enumerate() {
            let named = s.name.is_some();
            // Checked on the raw names, so a duplicate shows even when the
            // sink has other problems.
            if let Some(n) = &s.name
                && let Some(first) = explicit.insert(n.get_ref().clone(), i + 1)
            {
                r.error(
                    n.span(),
                    format!("sink #{} → name", i + 1),
                    format!(
                        "the sink name '{}' is already used by sink #{first}; names must be unique",
                        n.get_ref()
                    ),
                );
                continue;
            }
            if let Some(mut sink) = read_sink(&mut r, &base, span.clone(), i, s) {
                if let SinkKind::Prometheus {
                    listen: None,
                    remote_write: None,
                    ..
                } = sink.kind
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

fn read_runner(r: &mut Reader, base: &Path, raw: RawRunner) -> RunnerConfig {
    let mut out = RunnerConfig {
        spool_dir: base.join(
            raw.spool_dir
                .as_ref()
                .map_or("spool", |s| s.get_ref().as_str()),
        ),
        location: "local".into(),
        max_concurrent_runs: 64,
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        shutdown_grace: Duration::from_secs(30),
        watch: raw.watch.unwrap_or(true),
    };
    if let Some(l) = raw.location {
        if l.get_ref().trim().is_empty() {
            r.error(
                l.span(),
                "[runner] → location",
                "the location cannot be empty",
            );
        } else {
            out.location = l.into_inner();
        }
    }
    if let Some(n) = &raw.max_concurrent_runs
        && let Some(n) = r.count(n, "[runner] → max_concurrent_runs", 1, 100_000)
    {
        out.max_concurrent_runs = n as usize;
    }
    if let Some(l) = &raw.listen {
        let text = l.get_ref().trim();
        if text.is_empty() || text == "off" {
            out.listen = None;
        } else {
            match text.parse::<SocketAddr>() {
                Ok(a) => out.listen = Some(a),
                Err(_) => r.error(
                    l.span(),
                    "[runner] → listen",
                    format!("'{text}' is not an address like 127.0.0.1:9464 (or \"off\")"),
                ),
            }
        }
    }
    if let Some(g) = &raw.shutdown_grace
        && let Some(d) = r.duration(g, "[runner] → shutdown_grace")
    {
        out.shutdown_grace = d;
    }
    out
}

/// `journey.x` if set, else `defaults.x`.
fn pick<'a, T>(j: &'a Option<T>, d: &'a Option<T>) -> Option<&'a T> {
    j.as_ref().or(d.as_ref())
}

fn read_journey(
    r: &mut Reader,
    base: &Path,
    span: Range<usize>,
    label: &str,
    j: &RawJourney,
    d: &RawJourney,
) -> Option<JourneyConfig> {
    let before = r.errors.len();
    let key = |k: &str| format!("{label} → {k}");
    // A value taken from [defaults] is reported once, under [defaults].
    let src_key = |own: bool, k: &str| {
        if own {
            format!("{label} → {k}")
        } else {
            format!("[defaults] → {k}")
        }
    };
    // A missing key is reported at the table's first line: the `[[journey]]`
    // header is just before it.
    let header = span.start..span.start;
    let name = match &j.name {
        Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
        Some(n) => {
            r.error(n.span(), key("name"), "the name cannot be empty");
            String::new()
        }
        None => {
            r.error(header.clone(), label, "missing key 'name'");
            String::new()
        }
    };
    let (wasm, wasm_at) = match &j.wasm {
        Some(w) => (base.join(w.get_ref()), Place::at(r.file, r.src, w.span())),
        None => {
            r.error(
                header.clone(),
                label,
                "missing key 'wasm' (the journey's .wasm component)",
            );
            (PathBuf::new(), Place::at(r.file, r.src, header.clone()))
        }
    };
    let schedule = match (&j.schedule, &j.every) {
        (Some(_), Some(e)) => {
            r.error(
                e.span(),
                key("every"),
                "give 'schedule' or 'every', not both",
            );
            None
        }
        (Some(c), None) => cron(r, c, &key("schedule")),
        (None, Some(e)) => every(r, e, &key("every")),
        // Only when the journey names neither does [defaults] decide.
        (None, None) => match (&d.schedule, &d.every) {
            (Some(_), Some(e)) => {
                r.error(
                    e.span(),
                    "[defaults] → every",
                    "give 'schedule' or 'every', not both",
                );
                None
            }
            (Some(c), None) => cron(r, c, "[defaults] → schedule"),
            (None, Some(e)) => every(r, e, "[defaults] → every"),
            (None, None) => {
                r.error(
                    header.clone(),
                    label,
                    "missing key 'schedule' (cron with seconds, e.g. \"0 */5 * * * *\") or 'every' (e.g. \"30s\")",
                );
                None
            }
        },
    };
    // Each value with the key to blame: the journey's own, or [defaults].
    macro_rules! field {
        ($f:ident) => {
            (pick(&j.$f, &d.$f), src_key(j.$f.is_some(), stringify!($f)))
        };
    }
    let mut dur = |(v, k): (Option<&Spanned<String>>, String), default: Duration| {
        v.and_then(|v| r.duration(v, &k)).unwrap_or(default)
    };
    let jitter = dur(field!(jitter), Duration::ZERO);
    let timeout = dur(field!(timeout), DEFAULT_TIMEOUT);
    let retry_delay = dur(field!(retry_delay), Duration::from_secs(1));
    if timeout.is_zero()
        && let (Some(t), k) = field!(timeout)
    {
        r.error(t.span(), k, "the timeout must be above 0");
    }
    let mut count = |(v, k): (Option<&Spanned<i64>>, String), min: i64, max: i64| {
        v.and_then(|n| r.count(n, &k, min, max))
    };
    let retries = count(field!(retries), 0, 10).unwrap_or(0) as u32;
    let max_requests = count(field!(max_requests), 1, 1_000_000)
        .map_or(waymark_http::DEFAULT_MAX_REQUESTS, |n| n as u32);
    let mut size = |(v, k): (Option<&Spanned<Size>>, String), default: u64| {
        v.and_then(|v| r.size(v, &k)).unwrap_or(default)
    };
    let memory_limit = size(field!(memory_limit), DEFAULT_MEMORY_LIMIT as u64) as usize;
    let max_body = size(field!(max_body), waymark_http::DEFAULT_MAX_BODY);
    let max_total_bytes = size(
        field!(max_total_bytes),
        waymark_http::DEFAULT_MAX_TOTAL_BYTES,
    );

    let (allow, allow_key) = field!(allow_hosts);
    let allow: Vec<Spanned<String>> = allow.cloned().unwrap_or_default();
    for p in &allow {
        if let Err(e) = waymark_http::allow::HostPattern::parse(p.get_ref()) {
            r.error(p.span(), allow_key.clone(), e.to_string());
        }
    }
    let (resolve, resolve_key) = field!(resolve);
    let resolve: Vec<Spanned<String>> = resolve.cloned().unwrap_or_default();
    for e in &resolve {
        if let Err(msg) = waymark_http::Overrides::parse_entry(e.get_ref()) {
            r.error(e.span(), resolve_key.clone(), msg);
        }
    }
    let file = |v: Option<&Spanned<String>>| v.map(|v| base.join(v.get_ref()));
    let ca_file = file(pick(&j.ca_file, &d.ca_file));
    let cert = pick(&j.client_cert, &d.client_cert);
    let cert_key = pick(&j.client_key, &d.client_key);
    let client_cert = match (cert, cert_key) {
        (Some(c), Some(k)) => Some((base.join(c.get_ref()), base.join(k.get_ref()))),
        (Some(c), None) => {
            r.error(
                c.span(),
                field!(client_cert).1,
                "client_cert needs client_key too",
            );
            None
        }
        (None, Some(k)) => {
            r.error(
                k.span(),
                field!(client_key).1,
                "client_key needs client_cert too",
            );
            None
        }
        (None, None) => None,
    };
    let merge = |a: &Option<BTreeMap<String, Spanned<String>>>,
                 b: &Option<BTreeMap<String, Spanned<String>>>| {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        for m in [b, a].into_iter().flatten() {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())));
        }
        out
    };
    let vars = merge(&j.vars, &d.vars);
    let secrets = merge(&j.secrets, &d.secrets);
    if r.errors.len() > before {
        return None;
    }
    Some(JourneyConfig {
        name,
        wasm,
        schedule: schedule?,
        jitter,
        timeout,
        retries,
        retry_delay,
        memory_limit,
        vars,
        secrets,
        http: HttpSettings {
            allow_hosts: allow.into_iter().map(Spanned::into_inner).collect(),
            resolve: resolve.into_iter().map(Spanned::into_inner).collect(),
            ca_file,
            client_cert,
            insecure: pick(&j.insecure, &d.insecure).copied().unwrap_or(false),
            max_requests,
            max_body,
            max_total_bytes,
        },
        wasm_at,
    })
}

fn cron(r: &mut Reader, v: &Spanned<String>, key: &str) -> Option<Schedule> {
    match Schedule::cron(v.get_ref()) {
        Ok(s) => Some(s),
        Err(e) => {
            r.error(v.span(), key, e);
            None
        }
    }
}

fn every(r: &mut Reader, v: &Spanned<String>, key: &str) -> Option<Schedule> {
    let d = r.duration(v, key)?;
    if d < MIN_EVERY {
        r.error(
            v.span(),
            key,
            format!(
                "every {} is too often; the shortest interval is {}",
                humantime::format_duration(d),
                humantime::format_duration(MIN_EVERY)
            ),
        );
        return None;
    }
    Some(Schedule::Every(d))
}

const SINK_TYPES: &str = "pretty, jsonl, webhook, otlp, alertmanager, prometheus";
const WEBHOOK_EVENTS: [&str; 4] = ["failing", "recovered", "failure", "run"];

fn read_sink(
    r: &mut Reader,
    base: &Path,
    span: Range<usize>,
    i: usize,
    s: RawSink,
) -> Option<SinkConfig> {
    let kind_name = s.kind.get_ref().clone();
    let label = format!("sink #{} ({kind_name})", i + 1);
    let key = |k: &str| format!("{label} → {k}");
    let before = r.errors.len();
    // Keys that belong to other kinds are mistakes, not silently ignored.
    let allowed: &[&str] = match kind_name.as_str() {
        "pretty" => &[],
        "jsonl" => &["path", "max_size", "keep"],
        "webhook" => &["url", "events", "format", "headers", "secret", "timeout"],
        "prometheus" => &["listen", "remote_write", "push_interval"],
        "otlp" => &["endpoint", "headers", "timeout", "service_name"],
        "alertmanager" => &[
            "url",
            "resend_interval",
            "severity",
            "labels",
            "link",
            "timeout",
        ],
        other => {
            r.error(
                s.kind.span(),
                format!("sink #{} → type", i + 1),
                format!("unknown sink type '{other}' (this version has: {SINK_TYPES})"),
            );
            return None;
        }
    };
    let present: [(&str, Option<Range<usize>>); 18] = [
        ("remote_write", s.remote_write.as_ref().map(Spanned::span)),
        ("push_interval", s.push_interval.as_ref().map(Spanned::span)),
        (
            "resend_interval",
            s.resend_interval.as_ref().map(Spanned::span),
        ),
        ("severity", s.severity.as_ref().map(Spanned::span)),
        ("labels", s.labels.as_ref().map(|_| span.start..span.start)),
        ("link", s.link.as_ref().map(Spanned::span)),
        ("endpoint", s.endpoint.as_ref().map(Spanned::span)),
        ("service_name", s.service_name.as_ref().map(Spanned::span)),
        ("path", s.path.as_ref().map(Spanned::span)),
        ("max_size", s.max_size.as_ref().map(Spanned::span)),
        ("keep", s.keep.as_ref().map(Spanned::span)),
        ("url", s.url.as_ref().map(Spanned::span)),
        (
            "events",
            s.events.as_ref().and_then(|e| e.first()).map(Spanned::span),
        ),
        ("format", s.format.as_ref().map(Spanned::span)),
        (
            "headers",
            s.headers.as_ref().map(|_| span.start..span.start),
        ),
        ("secret", s.secret.as_ref().map(Spanned::span)),
        ("timeout", s.timeout.as_ref().map(Spanned::span)),
        ("listen", s.listen.as_ref().map(Spanned::span)),
    ];
    for (k, at) in present {
        if let Some(at) = at
            && !allowed.contains(&k)
        {
            r.error(at, key(k), format!("a {kind_name} sink takes no '{k}'"));
        }
    }
    let name = s
        .name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| kind_name.clone());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        let at = s.name.as_ref().map_or(span.clone(), Spanned::span);
        r.error(
            at,
            key("name"),
            "a sink name is letters, digits, '-', '_' and '.'",
        );
    }
    let queue = s
        .queue
        .as_ref()
        .and_then(|q| r.count(q, &key("queue"), 1, 10_000_000))
        .unwrap_or(10_000) as usize;
    let kind = match kind_name.as_str() {
        "pretty" => SinkKind::Pretty,
        "jsonl" => {
            let Some(p) = &s.path else {
                r.error(
                    span.start..span.start,
                    label,
                    "missing key 'path' (a file, or \"-\" for standard output)",
                );
                return None;
            };
            let path = if p.get_ref() == "-" {
                PathBuf::from("-")
            } else {
                base.join(p.get_ref())
            };
            let max_size = s
                .max_size
                .as_ref()
                .and_then(|v| r.size(v, &key("max_size")))
                .unwrap_or(0);
            let keep = s
                .keep
                .as_ref()
                .and_then(|k| r.count(k, &key("keep"), 1, 1000))
                .unwrap_or(5) as u32;
            SinkKind::Jsonl {
                path,
                max_size,
                keep,
            }
        }
        "webhook" => {
            let url = match &s.url {
                Some(u) => r.http_url(u, &key("url")).unwrap_or_default(),
                None => {
                    r.error(span.start..span.start, label.clone(), "missing key 'url'");
                    String::new()
                }
            };
            let mut events = Vec::new();
            for e in s.events.iter().flatten() {
                if WEBHOOK_EVENTS.contains(&e.get_ref().as_str()) {
                    events.push(e.get_ref().clone());
                } else {
                    r.error(
                        e.span(),
                        key("events"),
                        format!(
                            "unknown event '{}' (events: {})",
                            e.get_ref(),
                            WEBHOOK_EVENTS.join(", ")
                        ),
                    );
                }
            }
            if s.events.is_none() {
                events = vec!["failing".into(), "recovered".into()];
            }
            let slack = match s.format.as_ref().map(|f| f.get_ref().as_str()) {
                None | Some("json") => false,
                Some("slack") => true,
                Some(other) => {
                    let at = s.format.as_ref().map_or(span.clone(), Spanned::span);
                    r.error(
                        at,
                        key("format"),
                        format!("unknown format '{other}' (json or slack)"),
                    );
                    false
                }
            };
            let timeout = s
                .timeout
                .as_ref()
                .and_then(|t| r.duration(t, &key("timeout")))
                .unwrap_or(Duration::from_secs(10));
            SinkKind::Webhook(WebhookConfig {
                url,
                events,
                slack,
                headers: s.headers.clone().unwrap_or_default(),
                secret: s.secret.as_ref().map(|v| v.get_ref().clone()),
                timeout,
            })
        }
        "otlp" => {
            let endpoint = match &s.endpoint {
                Some(u) => r.http_url(u, &key("endpoint")).unwrap_or_default(),
                None => {
                    r.error(
                        span.start..span.start,
                        label.clone(),
                        "missing key 'endpoint' (e.g. \"http://127.0.0.1:4318\")",
                    );
                    String::new()
                }
            };
            let timeout = s
                .timeout
                .as_ref()
                .and_then(|t| r.duration(t, &key("timeout")))
                .unwrap_or(Duration::from_secs(10));
            SinkKind::Otlp(OtlpConfig {
                endpoint,
                headers: s.headers.clone().unwrap_or_default(),
                timeout,
                service_name: s
                    .service_name
                    .as_ref()
                    .map_or_else(|| "waymark".to_string(), |n| n.get_ref().clone()),
            })
        }
        "alertmanager" => {
            let url = match &s.url {
                Some(u) => r.http_url(u, &key("url")).unwrap_or_default(),
                None => {
                    r.error(
                        span.start..span.start,
                        label.clone(),
                        "missing key 'url' (e.g. \"http://127.0.0.1:9093\")",
                    );
                    String::new()
                }
            };
            let resend_interval = s
                .resend_interval
                .as_ref()
                .and_then(|t| r.duration(t, &key("resend_interval")))
                .unwrap_or(crate::sinks::alertmanager::DEFAULT_RESEND);
            let timeout = s
                .timeout
                .as_ref()
                .and_then(|t| r.duration(t, &key("timeout")))
                .unwrap_or(Duration::from_secs(10));
            SinkKind::Alertmanager(AlertmanagerConfig {
                url,
                resend_interval,
                severity: s
                    .severity
                    .as_ref()
                    .map_or_else(|| "critical".to_string(), |v| v.get_ref().clone()),
                labels: s.labels.clone().unwrap_or_default(),
                link: s.link.as_ref().map(|v| v.get_ref().clone()),
                timeout,
            })
        }
        "prometheus" => {
            let listen = match &s.listen {
                Some(l) => match l.get_ref().parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        r.error(
                            l.span(),
                            key("listen"),
                            format!("'{}' is not an address like 127.0.0.1:9464", l.get_ref()),
                        );
                        None
                    }
                },
                None => None,
            };
            let remote_write = s
                .remote_write
                .as_ref()
                .and_then(|u| r.http_url(u, &key("remote_write")));
            let push_interval = s
                .push_interval
                .as_ref()
                .and_then(|t| r.duration(t, &key("push_interval")))
                .unwrap_or(Duration::from_secs(15));
            SinkKind::Prometheus {
                listen,
                remote_write,
                push_interval,
            }
        }
        _ => return None,
    };
    if r.errors.len() > before {
        return None;
    }
    Some(SinkConfig { name, queue, kind })
}

fn read_store(r: &mut Reader, base: &Path, raw: RawStore) -> StoreConfig {
    let mut out = StoreConfig {
        path: Some(base.join("waymark.db")),
        retention: DEFAULT_RETENTION,
    };
    if let Some(p) = &raw.path {
        let t = p.get_ref().trim();
        out.path = if t.is_empty() || t == "off" {
            None
        } else {
            Some(base.join(t))
        };
    }
    if let Some(v) = &raw.retention
        && let Some(d) = r.duration(v, "[store] → retention")
    {
        if d.is_zero() {
            r.error(
                v.span(),
                "[store] → retention",
                "the retention must be above 0",
            );
        } else {
            out.retention = d;
        }
    }
    out
}

fn read_load(
    r: &mut Reader,
    base: &Path,
    span: Range<usize>,
    raw: RawLoad,
    journeys: &[(Spanned<DeValue>, RawJourney)],
) -> Option<LoadConfig> {
    let errors_before = r.errors.len();
    let names: Vec<&str> = journeys
        .iter()
        .filter_map(|(_, j)| j.name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let journey = match &raw.journey {
        Some(n) if names.contains(&n.get_ref().as_str()) => n.get_ref().clone(),
        Some(n) => {
            r.error(
                n.span(),
                "[load] → journey",
                format!(
                    "no [[journey]] is named '{}' (the file has: {})",
                    n.get_ref(),
                    names.join(", ")
                ),
            );
            String::new()
        }
        None if names.len() == 1 => names[0].to_string(),
        None => {
            r.error(
                span.clone(),
                "[load] → journey",
                "name the [[journey]] to load: the file has more than one",
            );
            String::new()
        }
    };
    let mut concurrency = Vec::new();
    for v in raw.concurrency.iter().flatten() {
        if let Some(n) = r.count(v, "[load] → concurrency", 1, 1_000_000) {
            concurrency.push(n as u32);
        }
    }
    let mut rate = Vec::new();
    for v in raw.rate.iter().flatten() {
        match waymark_load::parse_rate(v.get_ref()) {
            Ok(x) => rate.push(x),
            Err(e) => r.error(v.span(), "[load] → rate", e),
        }
    }
    if let (Some(c), Some(rt)) = (&raw.concurrency, &raw.rate)
        && !c.is_empty()
        && !rt.is_empty()
    {
        r.error(
            rt[0].span(),
            "[load] → rate",
            "give 'concurrency' (closed model) or 'rate' (open model), not both",
        );
    }
    let step_duration = raw.step_duration.as_ref().and_then(|v| {
        let d = r.duration(v, "[load] → step_duration")?;
        if d.is_zero() {
            r.error(
                v.span(),
                "[load] → step_duration",
                "a step must last above 0",
            );
            None
        } else {
            Some(d)
        }
    });
    let warmup = raw
        .warmup
        .as_ref()
        .and_then(|v| r.duration(v, "[load] → warmup"));
    if let (Some(w), Some(d), Some(v)) = (warmup, step_duration, &raw.warmup)
        && w >= d
    {
        r.error(
            v.span(),
            "[load] → warmup",
            "the warm-up must be shorter than step_duration, or nothing is measured",
        );
    }
    let iterations = raw
        .iterations
        .as_ref()
        .and_then(|v| r.count(v, "[load] → iterations", 1, i64::MAX))
        .map(|n| n as u64);
    let max_vus = raw
        .max_vus
        .as_ref()
        .and_then(|v| r.count(v, "[load] → max_vus", 1, 1_000_000))
        .map(|n| n as u32);
    let mut slo = Vec::new();
    for v in raw.slo.iter().flatten() {
        match waymark_load::slo::Gate::parse(v.get_ref()) {
            Ok(g) => slo.push(g),
            Err(e) => r.error(v.span(), "[load] → slo", e),
        }
    }
    let path = |v: &Option<Spanned<String>>| v.as_ref().map(|p| base.join(p.get_ref()));
    (r.errors.len() == errors_before).then(|| LoadConfig {
        journey,
        concurrency,
        rate,
        step_duration,
        warmup,
        iterations,
        max_vus,
        slo,
        report: path(&raw.report),
        json: path(&raw.json),
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
    fn place_counts_characters() {
        // The value "x" of line 2: bytes 12..15, after a two-byte 'é'.
        let p = Place::at(Path::new("f"), "a = 1\nbé = \"x\"\n", 12..15);
        assert_eq!((p.line, p.column, p.width), (2, 6, 3));
        assert_eq!(p.text, "bé = \"x\"");
    }
}
