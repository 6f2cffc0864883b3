//! `waymark load` and `waymark load merge`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::JourneyArgs;
use crate::load::{self, LoadReport, Model, Plan, Shard, slo::Gate};
use crate::units::parse_duration;
use crate::{Runtime, serve};

/// Exit codes of `waymark load`.
pub(crate) const EXIT_SLO_FAILED: u8 = 1;
/// Ctrl-C, as shells report it.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

const DEFAULT_USERS: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];
const DEFAULT_STEP: Duration = Duration::from_secs(30);
const DEFAULT_MAX_VUS: u32 = 1000;

/// `waymark load`'s flags: everything it was asked, over the config's `[load]`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct LoadArgs {
    #[command(subcommand)]
    pub merge: Option<LoadCommand>,
    /// The journey: a Wasm component or a project directory, built first (or
    /// give -c with a [load] section).
    pub journey: Option<PathBuf>,
    /// A config whose [load] section names one of its [[journey]]s and the ramp.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: JourneyArgs,
    /// Closed model: concurrent users of each step, e.g. 1,2,4,8,16,32,64 (the default).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    pub concurrency: Vec<u32>,
    /// Open model: arrivals of each step, e.g. 50/s,100/s,200/s; latency is
    /// measured from each journey's intended start.
    #[arg(long, value_delimiter = ',', value_name = "RATE,...")]
    pub rate: Vec<String>,
    /// Length of each step [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub step_duration: Option<Duration>,
    /// Start of each step not measured [default: a fifth of the step, at most 5s].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Most iterations started in each step (a step ends at its time or at this count).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Open model: most journeys in flight; an arrival beyond waits, and the wait is in its latency [default: 1000].
    #[arg(long)]
    pub max_vus: Option<u32>,
    /// Each virtual user keeps one instance and calls the journey's `run`
    /// again in it (memory and globals carry over), as k6's users keep
    /// their runtime. Only for journeys written to allow it; the default is
    /// a fresh instance per iteration.
    #[arg(long)]
    pub reuse_instance: bool,
    /// Run the whole ramp N times over: each level's figure is the mean of
    /// the passes, and their spread (shown per level) is the run-to-run
    /// noise that 'beyond spread' gates see past [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: Option<u32>,
    /// A server-side series to put beside each step, as NAME=PROMQL, e.g.
    /// 'db_cpu=rate(process_cpu_seconds_total{job="db"}[30s])' (repeatable;
    /// needs --prometheus): its average and max over each step's measured
    /// window go into the table, the JSON and the HTML.
    #[arg(long, value_name = "NAME=PROMQL")]
    pub observe: Vec<String>,
    /// The Prometheus the --observe queries are asked of, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    #[command(flatten)]
    pub out: LoadOutputs,
    /// Run part I of N (I from 0, as a Kubernetes Indexed Job's index): users,
    /// rates and iterations are split; merge the --json parts with `load merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Journey name in the results (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Location label.
    #[arg(long, default_value = waymark_engine::DEFAULT_LOCATION)]
    pub location: String,
    /// No progress display (it is off anyway when standard error is not a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum LoadCommand {
    /// Merge the --json results of shards into one (histograms merged, USL fitted on the whole).
    Merge(MergeArgs),
    /// Compare rounds of an audit (--json results, the first is the baseline):
    /// λ, σ, κ, N*, X(N*), R², and throughput and p95 at each level they share.
    Compare(CompareArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct CompareArgs {
    /// The rounds, oldest first (files written by `waymark load --json FILE`).
    #[arg(required = true, num_args = 2..)]
    pub rounds: Vec<PathBuf>,
    /// Write a self-contained HTML page: every round's points and fitted
    /// curve on one chart, the tables, the phases side by side.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct MergeArgs {
    /// The parts (files written by `waymark load --shard I/N --json FILE`).
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    #[command(flatten)]
    pub out: LoadOutputs,
}

/// Gates and output files, of a run or of a merge.
#[derive(clap::Args, Debug)]
pub(crate) struct LoadOutputs {
    /// A gate for CI, e.g. 'p95<500ms', 'p99(login)<1s', 'errors<1%', 'peak>=32',
    /// 'throughput>=100/s' (repeatable); exit 1 when one fails.
    #[arg(long = "slo", value_name = "GATE")]
    pub slo: Vec<String>,
    /// An earlier round's --json result, for gates relative to it:
    /// 'throughput>=0.95*baseline', 'p95<=1.1*baseline', 'sigma<=baseline+1%',
    /// 'peak>=baseline'.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write every figure (and the histograms, for `load merge`) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the gates as a JUnit XML test report (one test case per gate),
    /// for the CI's test view.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `waymark load` or `waymark load merge`, as asked.
pub(crate) fn dispatch(args: LoadArgs) -> anyhow::Result<u8> {
    match args.merge {
        Some(LoadCommand::Merge(m)) => merge(&m.parts, &m.out),
        Some(LoadCommand::Compare(c)) => compare(&c.rounds, c.report.as_deref()),
        None => load(args),
    }
}

fn gates(texts: &[String]) -> anyhow::Result<Vec<Gate>> {
    texts
        .iter()
        .map(|t| Gate::parse(t).map_err(|e| anyhow::anyhow!("--slo {e}")))
        .collect()
}

fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The `--baseline` round, read before anything runs; an error when a
/// gate needs one and none is given.
fn baseline(path: Option<&Path>, gates: &[Gate]) -> anyhow::Result<Option<LoadReport>> {
    match path {
        Some(p) => Ok(Some(read_result(p)?)),
        None => match gates.iter().find(|g| g.needs_baseline()) {
            Some(g) => anyhow::bail!(
                "--slo '{g}' compares with a baseline: pass --baseline FILE (the --json result of an earlier round)"
            ),
            None => Ok(None),
        },
    }
}

/// Where the results go: `--report`, `--json`, `--junit`.
struct Files<'a> {
    baseline: Option<&'a LoadReport>,
    html: Option<&'a Path>,
    json: Option<&'a Path>,
    junit: Option<&'a Path>,
}

/// Writes the outputs and says how the run ends.
fn finish(report: &mut LoadReport, gates: &[Gate], files: Files<'_>) -> anyhow::Result<u8> {
    let Files {
        baseline,
        html,
        json,
        junit,
    } = files;
    let all_pass = report.gate(gates, baseline);
    print!("{}", load::report::terminal(report));
    // Written even when a gate failed: the report says why.
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the JSON results to {}", path.display()))?;
        eprintln!("waymark: results written to {}", path.display());
    }
    if let Some(path) = html {
        std::fs::write(path, load::report::html(report))
            .with_context(|| format!("cannot write the HTML report to {}", path.display()))?;
        eprintln!("waymark: report written to {}", path.display());
    }
    if let Some(path) = junit {
        std::fs::write(path, load::report::junit(report)?)
            .with_context(|| format!("cannot write the JUnit report to {}", path.display()))?;
        eprintln!("waymark: JUnit report written to {}", path.display());
    }
    Ok(if report.interrupted {
        EXIT_INTERRUPTED
    } else if all_pass {
        0
    } else {
        EXIT_SLO_FAILED
    })
}

/// `waymark load`.
fn load(req: LoadArgs) -> anyhow::Result<u8> {
    let rt = multi_thread()?;
    // The config (if any) is read first: the engine's instance pool is sized
    // from the plan and the journey's memory limit, and the journey is
    // compiled for that engine.
    let (config, cfg) = match (&req.journey, &req.config) {
        (Some(_), Some(_)) => {
            bail!("give a journey file or -c CONFIG (with a [load] section), not both")
        }
        (None, None) => bail!(
            "which journey? give a Wasm component (waymark load journey.wasm) or -c CONFIG with a [load] section"
        ),
        (Some(_), None) => (None, None),
        (None, Some(path)) => {
            let given = req.settings.given_lists();
            if !given.is_empty() {
                bail!(
                    "with -c, the journey's settings come from its [[journey]] in {}; {} would be ignored, so write it there",
                    path.display(),
                    given.join(", ")
                );
            }
            let config = crate::config::Config::load(path)?;
            let Some(lc) = config.load.clone() else {
                bail!(
                    "{} has no [load] section: add one naming the journey to load (see the README)",
                    path.display()
                );
            };
            (Some(config), Some(lc))
        }
    };
    let concurrency = if req.concurrency.is_empty() {
        cfg.as_ref()
            .map(|c| c.concurrency.clone())
            .unwrap_or_default()
    } else {
        req.concurrency.clone()
    };
    let rates: Vec<f64> = if req.rate.is_empty() {
        cfg.as_ref().map(|c| c.rate.clone()).unwrap_or_default()
    } else {
        req.rate
            .iter()
            .map(|r| load::parse_rate(r).map_err(|e| anyhow::anyhow!("--rate {e}")))
            .collect::<anyhow::Result<_>>()?
    };
    if !req.concurrency.is_empty() && !req.rate.is_empty() {
        bail!("give --concurrency (closed model) or --rate (open model), not both");
    }
    if concurrency.contains(&0) {
        bail!("--concurrency: every step needs at least 1 user");
    }
    let model = if !rates.is_empty() && req.concurrency.is_empty() {
        Model::Open {
            rates,
            max_vus: req
                .max_vus
                .or(cfg.as_ref().and_then(|c| c.max_vus))
                .unwrap_or(DEFAULT_MAX_VUS),
        }
    } else {
        Model::Closed {
            users: if concurrency.is_empty() {
                DEFAULT_USERS.to_vec()
            } else {
                concurrency
            },
        }
    };
    let step_duration = req
        .step_duration
        .or(cfg.as_ref().and_then(|c| c.step_duration))
        .unwrap_or(DEFAULT_STEP);
    if step_duration.is_zero() {
        bail!("--step-duration must be above 0");
    }
    let warmup = req
        .warmup
        .or(cfg.as_ref().and_then(|c| c.warmup))
        .unwrap_or_else(|| Plan::default_warmup(step_duration));
    if warmup >= step_duration {
        bail!(
            "--warmup {} is not shorter than the step ({}): nothing would be measured",
            humantime::format_duration(warmup),
            humantime::format_duration(step_duration)
        );
    }
    let shard = match &req.shard {
        Some(s) => Shard::parse(s).map_err(|e| anyhow::anyhow!("--shard {e}"))?,
        None => Shard::WHOLE,
    };
    let mut all_gates = cfg.as_ref().map(|c| c.slo.clone()).unwrap_or_default();
    all_gates.extend(gates(&req.out.slo)?);
    let base = baseline(req.out.baseline.as_deref(), &all_gates)?;
    let html = req
        .out
        .report
        .clone()
        .or(cfg.as_ref().and_then(|c| c.report.clone()));
    let json = req
        .out
        .json
        .clone()
        .or(cfg.as_ref().and_then(|c| c.json.clone()));
    let mut observes = cfg.as_ref().map(|c| c.observe.clone()).unwrap_or_default();
    for o in &req.observe {
        observes
            .push(load::observe::Observe::parse(o).map_err(|e| anyhow::anyhow!("--observe {e}"))?);
    }
    let prometheus = req
        .prometheus
        .clone()
        .or(cfg.as_ref().and_then(|c| c.prometheus.clone()));
    if !observes.is_empty() && prometheus.is_none() {
        bail!("--observe asks Prometheus: give --prometheus URL (e.g. http://127.0.0.1:9090)");
    }
    let plan = Plan {
        model,
        step_duration,
        warmup,
        iterations: req.iterations.or(cfg.as_ref().and_then(|c| c.iterations)),
        shard,
        instances: if req.reuse_instance || cfg.as_ref().is_some_and(|c| c.reuse_instance) {
            load::InstanceMode::Reuse
        } else {
            load::InstanceMode::Fresh
        },
        repeat: req
            .repeat
            .or(cfg.as_ref().and_then(|c| c.repeat))
            .unwrap_or(1),
    };

    let show = !req.quiet && std::io::stderr().is_terminal();
    let bar = if show {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let tick_bar = bar.clone();
    let on_tick = move |l: &load::Live| {
        tick_bar.set_message(format!(
            "step {}/{} · {} · {:.0}/{:.0} s{} · {:.1} it/s · p95 {:.1} ms · errors {:.2} %",
            l.step + 1,
            l.steps,
            l.label,
            l.elapsed.as_secs_f64(),
            l.step_duration.as_secs_f64(),
            if l.warming_up { " (warm-up)" } else { "" },
            l.throughput,
            l.p95_ms,
            l.error_rate * 100.0
        ));
    };

    let memory_limit = match (&config, &cfg) {
        (Some(c), Some(lc)) => c
            .journeys
            .iter()
            .find(|j| j.name == lc.journey)
            .map_or(req.settings.memory_limit, |j| j.memory_limit),
        _ => req.settings.memory_limit,
    };
    let slots = match &plan.model {
        Model::Closed { users } => users
            .iter()
            .map(|&u| plan.shard.share(u64::from(u)))
            .max()
            .unwrap_or(1),
        Model::Open { max_vus, .. } => u64::from(*max_vus),
    };
    // A spare slot or two: nothing else instantiates, but a margin costs
    // only address space.
    let slots = u32::try_from(slots + 2).unwrap_or(u32::MAX);
    let runtime = Arc::new(
        Runtime::pooled(Runtime::default_cache_dir(), slots, memory_limit).with_context(|| {
            format!(
                "cannot reserve address space for {slots} journey instances; run fewer users per process and split the run with --shard I/N"
            )
        })?,
    );
    let (journey, opts) = match (config, &cfg, &req.journey) {
        (Some(config), Some(lc), _) => {
            let prepared = serve::prepare(&runtime, config, None).map_err(|errs| {
                anyhow::anyhow!(
                    "{}",
                    errs.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            let p = prepared
                .journeys
                .iter()
                .find(|p| p.config.name == lc.journey)
                .with_context(|| format!("journey '{}' did not load", lc.journey))?;
            (p.loaded.clone(), p.opts.clone())
        }
        (_, _, Some(path)) => {
            let mut opts = req.settings.options()?;
            opts.location = req.location.clone();
            let (wasm, project_name) = crate::project::component(path)?;
            let mut j = runtime.load_file(&wasm)?;
            if let Some(n) = req.name.clone().or(project_name) {
                j.name = n;
            }
            (j, opts)
        }
        _ => bail!("which journey? give a Wasm component or -c CONFIG"),
    };
    // A fresh instance per iteration of a journey from its source would
    // evaluate its modules every time; a snapshot evaluates them once.
    let journey = match plan.instances {
        load::InstanceMode::Fresh => runtime.snapshot_script(&journey, &opts)?,
        load::InstanceMode::Reuse => journey,
    };
    let target = load::Target {
        runtime,
        journey,
        opts,
    };
    let mut report = rt.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            match tokio::signal::ctrl_c().await {
                Ok(()) => {
                    let _ = stop_tx.send(true);
                }
                // No handler: keep the sender, so the run is not taken for stopped.
                Err(e) => {
                    tracing::warn!(error = %e, "Ctrl-C cannot be caught; the run goes to its end");
                    std::future::pending::<()>().await;
                    drop(stop_tx);
                }
            }
        });
        load::run(target, &plan, stop_rx, &on_tick).await
    })?;
    bar.finish_and_clear();
    if let Some(url) = prometheus.as_deref()
        && !observes.is_empty()
    {
        let windows: Vec<_> = report.steps.iter().map(|s| s.window()).collect();
        let (series, warnings) = load::observe::query_all(url, &observes, &windows);
        report.observed = series;
        report.warnings.extend(warnings);
    }
    finish(
        &mut report,
        &all_gates,
        Files {
            baseline: base.as_ref(),
            html: html.as_deref(),
            json: json.as_deref(),
            junit: req.out.junit.as_deref(),
        },
    )
}

/// `waymark load merge`.
/// A `--json` result from `path`, or an error naming the file.
fn read_result(path: &Path) -> anyhow::Result<LoadReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a waymark load result: {e}", path.display()))
}

fn compare(rounds: &[PathBuf], html: Option<&Path>) -> anyhow::Result<u8> {
    let mut read = Vec::new();
    for p in rounds {
        let name = p.file_stem().map_or_else(
            || p.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        read.push(load::compare::Round {
            name,
            report: read_result(p)?,
        });
    }
    let c = load::compare::compare(read)?;
    print!("{}", load::compare::terminal(&c));
    if let Some(path) = html {
        std::fs::write(path, load::report::compare_html(&c))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nreport: {}", path.display());
    }
    Ok(0)
}

pub(crate) fn merge(parts: &[PathBuf], out: &LoadOutputs) -> anyhow::Result<u8> {
    let gates = gates(&out.slo)?;
    let base = baseline(out.baseline.as_deref(), &gates)?;
    let mut reports = Vec::new();
    for p in parts {
        reports.push((p.display().to_string(), read_result(p)?));
    }
    let mut merged = load::merge(reports)?;
    finish(
        &mut merged,
        &gates,
        Files {
            baseline: base.as_ref(),
            html: out.report.as_deref(),
            json: out.json.as_deref(),
            junit: out.junit.as_deref(),
        },
    )
}
