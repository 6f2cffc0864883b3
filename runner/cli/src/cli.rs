//! The command line: `waymark run` and `waymark demo`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::cli_sinks::{send_to_sinks, sink_specs};
use crate::http::{AllowList, HttpConfig, HttpSettingsError};
use crate::record::{RunRecord, Status};
use crate::{RunOptions, Runtime, demo, pretty};

/// The help's defaults, written from the constants the libraries use, so the
/// help, the config and the engine cannot disagree.
mod defaults {
    use std::sync::LazyLock;

    use crate::units::format_size;

    pub(super) static TIMEOUT: LazyLock<String> =
        LazyLock::new(|| humantime::format_duration(waymark_engine::DEFAULT_TIMEOUT).to_string());
    pub(super) static MEMORY_LIMIT: LazyLock<String> =
        LazyLock::new(|| format_size(waymark_engine::DEFAULT_MEMORY_LIMIT as u64));
    pub(super) static MAX_RECORD: LazyLock<String> =
        LazyLock::new(|| format_size(waymark_engine::DEFAULT_MAX_RECORD as u64));
    pub(super) static MAX_BODY: LazyLock<String> =
        LazyLock::new(|| format_size(crate::http::DEFAULT_MAX_BODY));
    pub(super) static MAX_TOTAL_BYTES: LazyLock<String> =
        LazyLock::new(|| format_size(crate::http::DEFAULT_MAX_TOTAL_BYTES));
}

/// Synthetic journeys in a sandbox, timed phase by phase.
#[derive(Parser, Debug)]
#[command(name = "waymark", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one journey once and print what it did.
    Run(Box<RunArgs>),
    /// Run a recorded run again against its recorded responses, clocks and
    /// random numbers, and say where it differs from the recording.
    Replay(Box<crate::cli_replay::ReplayArgs>),
    /// Start the embedded demo API on loopback and run the example journeys against it.
    Demo(DemoArgs),
    /// Run the journeys of a config on their schedules until SIGTERM.
    Serve(ServeArgs),
    /// Validate a config and instantiate every journey, without running any.
    Check(CheckArgs),
    /// Past runs from the history store.
    History(HistoryArgs),
    /// A scalability audit: virtual users loop the journey through a ramp;
    /// throughput, latency, a Universal Scalability Law fit and SLO gates.
    Load(Box<crate::cli_load::LoadArgs>),
    /// Start a journey project (Rust, JavaScript or Python) that builds with
    /// one command and passes `waymark run DIR --demo` as it is.
    New(NewArgs),
}

#[derive(clap::Args, Debug)]
struct NewArgs {
    /// The journey's name; the project is written to ./NAME (or --dir).
    name: String,
    /// The language of the journey.
    #[arg(long, value_enum, default_value = "rust")]
    lang: crate::project::Lang,
    /// Where to write the project (default: ./NAME); must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The config file.
    #[arg(short = 'c', long, default_value = "waymark.toml")]
    config: PathBuf,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Run only this replica's share of the journeys, I of N (I from 0):
    /// N replicas with the same config run each journey exactly once.
    /// Overrides `[runner] shard`.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<crate::load::Shard>,
}

fn parse_shard(s: &str) -> Result<crate::load::Shard, crate::load::ShardError> {
    crate::load::Shard::parse(s)
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// The config file.
    #[arg(short = 'c', long, default_value = "waymark.toml")]
    config: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StatsBy {
    /// Each journey at each location.
    Location,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum HistoryFormat {
    /// A table.
    Table,
    /// The stored records, one JSON object per line (with --stats: one JSON document).
    Json,
}

#[derive(clap::Args, Debug)]
struct HistoryArgs {
    /// Only this journey.
    journey: Option<String>,
    /// The config file naming the store ([store] path).
    #[arg(short = 'c', long, default_value = "waymark.toml")]
    config: PathBuf,
    /// The history itself instead of the config's: a SQLite file, or a
    /// PostgreSQL URL (postgres://user:password@host/db).
    #[arg(long, value_name = "FILE or URL")]
    db: Option<PathBuf>,
    /// Runs since this long ago (e.g. 1h, 7d) or since an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only runs with this status: pass, fail, error, timeout.
    #[arg(long)]
    status: Option<String>,
    /// Per journey: runs, availability, p50/p95 duration, incidents and time to recovery.
    #[arg(long)]
    stats: bool,
    /// With --stats: one row per journey and location, to compare locations.
    #[arg(long, value_enum, requires = "stats")]
    by: Option<StatsBy>,
    /// Most runs listed (newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: HistoryFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A waterfall of steps, checks and request phases.
    Pretty,
    /// The result record (one JSON object).
    Json,
}

/// How each run of a journey may behave: shared by `run` and `load`.
#[derive(clap::Args, Debug)]
pub(crate) struct JourneyArgs {
    /// A variable for the journey, NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// A secret, NAME=VALUE, or NAME alone to read it from the environment
    /// variable NAME; shown as *** in every output (repeatable).
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,
    /// A host the journey may reach: host, *.domain, with optional :port (repeatable).
    /// Nothing else is reachable.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    allow_hosts: Vec<String>,
    /// Resolve HOST to these addresses instead of asking DNS, HOST:ADDR[,ADDR] (repeatable).
    /// The addresses still pass the allow-list's address rules.
    #[arg(long = "resolve", value_name = "HOST:ADDR")]
    resolve: Vec<String>,
    /// Most requests the run may send.
    #[arg(long, default_value_t = crate::http::DEFAULT_MAX_REQUESTS)]
    max_requests: u32,
    /// Largest response body, e.g. 10MiB.
    #[arg(long, default_value = defaults::MAX_BODY.as_str(), value_parser = parse_size)]
    max_body: usize,
    /// Most body bytes the whole run may receive, e.g. 256MiB.
    #[arg(long, default_value = defaults::MAX_TOTAL_BYTES.as_str(), value_parser = parse_size)]
    max_total_bytes: usize,
    /// Extra CA certificates (PEM) trusted for https, beside the webpki roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented for mTLS; needs --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Accept any server certificate. Every record and waterfall says so.
    #[arg(long)]
    insecure: bool,
    /// Wall-clock limit of the run, e.g. 30s, 500ms.
    #[arg(long, default_value = defaults::TIMEOUT.as_str(), value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Memory limit of the journey, e.g. 64MiB.
    #[arg(long, default_value = defaults::MEMORY_LIMIT.as_str(), value_parser = parse_size)]
    pub(crate) memory_limit: usize,
    /// Budget of the run's record (steps, checks, requests the host keeps
    /// for the journey); a journey that reports more is stopped (kind limit).
    #[arg(long, default_value = defaults::MAX_RECORD.as_str(), value_parser = parse_size)]
    pub(crate) max_record: usize,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The journey: a Wasm component built for the waymark:journey world, or
    /// a project directory (Cargo.toml, package.json, pyproject.toml or
    /// app.py), which is built first.
    journey: PathBuf,
    /// Run against the embedded demo API on loopback: sets base_url, user
    /// and the password secret (unless given) and allows the API's address.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    settings: JourneyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "pretty")]
    format: Format,
    /// Also write the run as an HTTP Archive (HAR 1.2) to FILE, for a browser's developer tools.
    #[arg(long, value_name = "FILE")]
    har: Option<PathBuf>,
    /// Largest body kept per request in the HAR file.
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    har_body_cap: usize,
    /// Also keep the run whole enough to replay it (`waymark replay FILE`):
    /// every request and response with heads and bodies, the clock readings
    /// and random seed the journey saw, and the record; secrets redacted.
    #[arg(long, value_name = "FILE")]
    record_exchanges: Option<PathBuf>,
    /// Largest body kept per request by --record-exchanges.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    exchange_body_cap: usize,
    /// Show each request's and response's heads and the first lines of the
    /// bodies under it in the waterfall, as `curl -v` does (secrets redacted).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Run against a recorded run (from --record-exchanges) instead of the
    /// network: its responses, clocks and random numbers, as `waymark
    /// replay` does, with this journey.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["demo", "record_exchanges", "har", "junit", "sinks"])]
    replay: Option<PathBuf>,
    /// Watch DIR (a project's sources, or the component's directory) and
    /// run again, rebuilt, after every save, clearing the screen: the
    /// edit-run loop. Until Ctrl-C.
    #[arg(long, value_name = "DIR")]
    watch: Option<PathBuf>,
    /// Also write the run as a JUnit XML test report to FILE: one test case
    /// per check, grouped by step, for the CI's test view.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Journey name in the record (default: the file name).
    #[arg(long)]
    name: Option<String>,
    /// Location label in the record.
    #[arg(long, default_value = waymark_engine::DEFAULT_LOCATION)]
    location: String,
    /// Also send the record to a sink: jsonl:FILE (appended), webhook:URL
    /// (a JSON POST of the run) or otlp:URL (the run as a trace, OTLP/HTTP);
    /// a network sink that is down keeps the record in a spool for the next
    /// run; remote_write:URL pushes the run's Prometheus metrics (repeatable).
    #[arg(long = "sink", value_name = "KIND:TARGET")]
    sinks: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "pretty")]
    format: Format,
}

pub use crate::units::{parse_duration, parse_size};

pub(crate) fn pairs(
    items: &[String],
    what: &str,
    from_env: bool,
) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                let v = std::env::var(item).with_context(|| {
                    format!("--{what} {item}: environment variable {item} is not set")
                })?;
                out.insert(item.clone(), v);
            }
            _ => bail!("--{what} '{item}': expected NAME=VALUE"),
        }
    }
    Ok(out)
}

/// One thread: the journey, its connections and their timers share it, so
/// no measurement includes a hop between threads.
pub(crate) fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_record(rec: &RunRecord, format: Format) -> anyhow::Result<()> {
    print_verbose(rec, format, None)
}

/// As [`print_record`]; the waterfall shows `exchanges` under their requests.
pub(crate) fn print_verbose(
    rec: &RunRecord,
    format: Format,
    exchanges: Option<&[waymark_engine::tape::Captured]>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Pretty => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            write!(out, "{}", pretty::render_verbose(rec, color, exchanges))?;
        }
        Format::Json => writeln!(out, "{}", serde_json::to_string(rec)?)?,
    }
    out.flush()?;
    Ok(())
}

impl JourneyArgs {
    /// Run options (vars, secrets, client settings, limits) from the flags.
    pub(crate) fn options(&self) -> anyhow::Result<RunOptions> {
        let vars = pairs(&self.vars, "var", false)?;
        let secrets = pairs(&self.secrets, "secret", true)?;
        let settings = crate::http::HttpSettings {
            allow_hosts: self.allow_hosts.clone(),
            resolve: self.resolve.clone(),
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            insecure: self.insecure,
            max_requests: self.max_requests,
            max_body: self.max_body as u64,
            max_total_bytes: self.max_total_bytes as u64,
        };
        // The library names the setting; here it is a flag.
        let http = settings.build().map_err(|e| match e {
            HttpSettingsError::Allow(e) => anyhow::Error::new(e).context("--allow-host"),
            HttpSettingsError::Resolve(e) => anyhow::Error::new(e).context("--resolve"),
            HttpSettingsError::Tls(e) => anyhow::Error::new(e),
        })?;
        let mut opts = RunOptions::new(Arc::new(http));
        opts.vars = vars;
        opts.secrets = secrets;
        opts.timeout = self.timeout;
        opts.memory_limit = self.memory_limit;
        opts.max_record = self.max_record;
        Ok(opts)
    }

    /// Flags that a config's `[[journey]]` would silently override.
    pub(crate) fn given_lists(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (given, flag) in [
            (!self.vars.is_empty(), "--var"),
            (!self.secrets.is_empty(), "--secret"),
            (!self.allow_hosts.is_empty(), "--allow-host"),
            (!self.resolve.is_empty(), "--resolve"),
            (self.ca_file.is_some(), "--ca-file"),
            (self.client_cert.is_some(), "--client-cert"),
            (self.insecure, "--insecure"),
        ] {
            if given {
                out.push(flag);
            }
        }
        out
    }
}

fn run(mut args: RunArgs) -> anyhow::Result<Status> {
    let sink_configs = sink_specs(&args.sinks)?;
    let rt = tokio_runtime()?;
    let demo_api = if args.demo {
        let api = rt
            .block_on(demo::DemoApi::start())
            .context("cannot start the demo API")?;
        args.settings.allow_hosts.push(api.authority());
        Some(api)
    } else {
        None
    };
    let mut opts = args.settings.options()?;
    if let Some(api) = &demo_api {
        let (vars, secrets) = api.vars();
        for (k, v) in vars {
            opts.vars.entry(k).or_insert(v);
        }
        for (k, v) in secrets {
            opts.secrets.entry(k).or_insert(v);
        }
    }
    opts.location.clone_from(&args.location);
    let tape = args
        .replay
        .as_deref()
        .map(crate::cli_replay::read_tape)
        .transpose()?;
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    let once = || run_once(&args, &runtime, &rt, &opts, tape.as_ref(), &sink_configs);
    match &args.watch {
        Some(dir) => crate::cli_watch::watch(dir, once),
        None => once(),
    }
}

/// One run of `waymark run`: build the project if it is one, run it live
/// or against `--replay`'s recording, and write every output asked for.
fn run_once(
    args: &RunArgs,
    runtime: &Runtime,
    rt: &tokio::runtime::Runtime,
    opts: &RunOptions,
    tape: Option<&waymark_engine::tape::Tape>,
    sink_configs: &[crate::sinks::SinkConfig],
) -> anyhow::Result<Status> {
    let (path, project_name) = crate::project::component(&args.journey)?;
    let mut journey = runtime.load_file(&path)?;
    if let Some(tape) = tape {
        let how = crate::cli_replay::Replay {
            secrets: opts.secrets.clone(),
            vars: pairs(&args.settings.vars, "var", false)?,
            timeout: opts.timeout,
            format: args.format,
            verbose: args.verbose,
        };
        return crate::cli_replay::replay_with(runtime, rt, tape, journey, &how);
    }
    if let Some(name) = args.name.clone().or(project_name) {
        journey.name = name;
    }
    let mut opts = opts.clone();
    // What each output keeps of the bodies; one capture serves them all.
    let caps = [
        args.har.is_some().then_some(args.har_body_cap),
        args.record_exchanges
            .is_some()
            .then_some(args.exchange_body_cap),
        args.verbose.then_some(crate::VERBOSE_BODY_CAP),
    ];
    opts.capture_bodies = caps.into_iter().flatten().max();
    if args.record_exchanges.is_some() {
        opts.tape = waymark_engine::tape::TapeMode::Record;
    }
    let full = rt.block_on(runtime.run_full(&journey, &opts));
    let (rec, captured) = (full.record, full.captured);
    // The record is printed even if the HAR cannot be written: nothing
    // already measured is lost.
    print_verbose(&rec, args.format, args.verbose.then_some(&captured[..]))?;
    if let (Some(file), Some(mut tape)) = (&args.record_exchanges, full.tape) {
        tape.component = Some(
            std::path::absolute(&path)
                .unwrap_or(path.clone())
                .display()
                .to_string(),
        );
        crate::cli_replay::write_tape(&tape, args.exchange_body_cap, file)?;
    }
    if !sink_configs.is_empty() {
        send_to_sinks(sink_configs, &rec)?;
    }
    if let Some(path) = &args.junit {
        let xml =
            waymark_record::junit::to_xml("waymark run", &waymark_record::junit::run_suites(&rec))?;
        std::fs::write(path, xml)
            .with_context(|| format!("cannot write the JUnit report {}", path.display()))?;
    }
    if let Some(path) = &args.har {
        let secrets: Vec<String> = opts.secrets.values().cloned().collect();
        let har = crate::har::to_har(&rec, &captured, &secrets);
        let text = serde_json::to_string_pretty(&har)?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the HAR file {}", path.display()))?;
    }
    Ok(rec.status)
}

fn new(args: NewArgs) -> anyhow::Result<Status> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    crate::project::create(&dir, &args.name, args.lang)?;
    let build = match args.lang {
        crate::project::Lang::Rust => "cargo build --release --target wasm32-wasip2",
        crate::project::Lang::Js | crate::project::Lang::Ts | crate::project::Lang::Python => {
            "none: it runs from its source"
        }
    };
    println!(
        "wrote {}\n  build: {build}\n  run:   waymark run {} --demo",
        dir.display(),
        dir.display()
    );
    Ok(Status::Pass)
}

fn demo(args: DemoArgs) -> anyhow::Result<Status> {
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let api = demo::DemoApi::start()
            .await
            .context("cannot start the demo API")?;
        if args.format == Format::Pretty {
            println!("demo API listening on {}\n", api.base_url());
        }
        let allow = AllowList::parse(&[api.authority()])?;
        let mut opts = RunOptions::new(Arc::new(HttpConfig::new(allow, None)?));
        (opts.vars, opts.secrets) = api.vars();
        opts.timeout = Duration::from_secs(10);
        let mut worst = Status::Pass;
        for (name, wasm) in demo::JOURNEYS {
            let journey = runtime.load(name, wasm)?;
            let rec = runtime.run(&journey, &opts).await;
            print_record(&rec, args.format)?;
            if args.format == Format::Pretty {
                println!();
            }
            if rec.status.exit_code() > worst.exit_code() {
                worst = rec.status;
            }
        }
        Ok(worst)
    })
}

fn init_logs(default: &str, format: LogFormat) {
    // refinery logs each check of the schema at info: only its warnings
    // are news.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WAYMARK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},refinery_core=warn"))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

/// Whether `args` (the program's name first) is a command line `waymark`
/// accepts, without running it: for checking command lines written
/// elsewhere, such as the Kubernetes manifests in `deploy/`.
pub fn parse_args<I, T>(args: I) -> Result<(), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map(|_| ())
}

/// Entry point of the binary: exit 0 pass, 1 fail, 2 error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(a) => init_logs("info", a.log_format),
        _ => init_logs("warn", LogFormat::Human),
    }
    let result = match cli.command {
        Command::Load(args) => return exit(crate::cli_load::dispatch(*args)),
        Command::Run(args) => run(*args),
        Command::Replay(args) => crate::cli_replay::replay(*args),
        Command::New(args) => new(args),
        Command::Demo(args) => demo(args),
        Command::Serve(args) => {
            crate::cli_serve::serve(&args.config, args.shard).map(|()| Status::Pass)
        }
        Command::Check(args) => crate::cli_serve::check(&args.config),
        Command::History(args) => crate::cli_serve::history(crate::cli_serve::HistoryQuery {
            journey: args.journey,
            config: args.config,
            db: args.db,
            since: args.since,
            status: args.status,
            stats: args.stats,
            by_location: args.by == Some(StatsBy::Location),
            limit: args.limit,
            json: args.format == HistoryFormat::Json,
        })
        .map(|()| Status::Pass),
    };
    exit(result.map(|status| status.exit_code() as u8))
}

/// The exit code of a command's outcome; errors are printed, once each.
fn exit(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        // `waymark run ... | head` closing the pipe is not an error to report.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(2)
        }
        Err(e) => {
            // Library errors often quote their cause already; say each thing once.
            let mut message = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !message.contains(&c) {
                    message = format!("{message}: {c}");
                }
            }
            eprintln!("waymark: error: {message}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_need_names() {
        assert!(pairs(&["=x".into()], "var", false).is_err());
        assert!(pairs(&["novalue".into()], "var", false).is_err());
        let p = pairs(&["a=b=c".into()], "var", false).expect("valid");
        assert_eq!(p["a"], "b=c");
    }
}
