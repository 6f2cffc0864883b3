//! The command line of the long-lived side: `serve`, `check`, `history`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};

use crate::config::{Config, ConfigErrors};
use crate::load::Shard;
use crate::record::Status;
use crate::serve::{Service, prepare};
use crate::store::{Database, Filter, Postgres, Store};
use crate::{Runtime, serve};

/// Size and modification time of each watched file, to notice edits.
#[derive(PartialEq, Eq, Clone, Debug)]
struct Stamps(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

impl Stamps {
    fn of(files: &[PathBuf]) -> Stamps {
        Stamps(
            files
                .iter()
                .map(|f| {
                    let m = std::fs::metadata(f).ok();
                    (
                        f.clone(),
                        m.and_then(|m| Some((m.modified().ok()?, m.len()))),
                    )
                })
                .collect(),
        )
    }

    fn changed(&self, other: &Stamps) -> Vec<String> {
        self.0
            .iter()
            .zip(other.0.iter())
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.display().to_string())
            .collect()
    }
}

/// Reads, validates and loads `path` (this replica's share of it),
/// compiling on a blocking thread.
async fn load_plan(
    runtime: &Arc<Runtime>,
    path: &Path,
    shard: Option<Shard>,
) -> anyhow::Result<serve::Plan> {
    let mut config = Config::load(path)?;
    if let Some(s) = shard {
        config.runner.shard = s;
    }
    config.keep_own_share();
    let runtime = runtime.clone();
    tokio::task::spawn_blocking(move || prepare(&runtime, config, None))
        .await
        .context("loading the journeys stopped")?
        .map_err(|errors| anyhow!("{}", ConfigErrors(errors)))
}

/// `waymark serve`.
pub fn serve(path: &Path, shard: Option<Shard>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Name lookups run on blocking threads; one kept between runs a
        // minute apart is not started again inside a run's resolve phase.
        .thread_keep_alive(Duration::from_secs(3600))
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let runtime = Arc::new(Runtime::new(Runtime::default_cache_dir())?);
        let plan = load_plan(&runtime, path, shard).await?;
        let mut grace = plan.config.runner.shutdown_grace;
        let mut watch = plan.config.runner.watch;
        let mut applied = Stamps::of(&plan.config.watched_files());
        let journeys = plan.journeys.len();
        let location = plan.config.runner.location.clone();
        let share = plan.config.runner.shard;
        let elsewhere = plan.config.elsewhere.len();
        let leases = plan.config.takes_over();
        let store = plan.config.store.database.clone();
        let service = Service::start(runtime.clone(), plan).await?;
        tracing::info!(
            config = %path.display(),
            journeys,
            location,
            shard = %share,
            elsewhere,
            leases,
            listen = %service.listen_addr().map_or("off".to_string(), |a| a.to_string()),
            store = %store.as_ref().map_or("off".to_string(), ToString::to_string),
            "waymark serve started"
        );
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut poll = tokio::time::interval(Duration::from_secs(1));
        let mut pending: Option<Stamps> = None;
        loop {
            let why = tokio::select! {
                _ = hup.recv() => "SIGHUP".to_string(),
                _ = term.recv() => { tracing::info!("SIGTERM: no new runs; waiting for the runs in flight"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: no new runs; waiting for the runs in flight"); break; }
                _ = poll.tick(), if watch => {
                    let files = applied.0.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
                    let now = Stamps::of(&files);
                    if now == applied {
                        pending = None;
                        continue;
                    }
                    // Reload once the files stopped changing for a second, so
                    // a half-written file is not read.
                    if pending.as_ref() != Some(&now) {
                        pending = Some(now);
                        continue;
                    }
                    pending = None;
                    format!("changed: {}", applied.changed(&now).join(", "))
                }
            };
            match load_plan(&runtime, path, shard).await {
                Ok(plan) => {
                    grace = plan.config.runner.shutdown_grace;
                    watch = plan.config.runner.watch;
                    applied = Stamps::of(&plan.config.watched_files());
                    let n = plan.journeys.len();
                    service.reload(plan).await;
                    tracing::info!(reason = %why, journeys = n, "reloaded");
                }
                Err(e) => {
                    // Don't try the same broken files again every second.
                    applied = Stamps::of(&applied.0.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());
                    tracing::error!(reason = %why, "reload failed; the running config stays in force:\n{e:#}");
                }
            }
        }
        let drained = service.shutdown(grace).await;
        if drained.abandoned.is_empty() {
            tracing::info!("stopped: every run finished and was recorded");
        } else {
            tracing::warn!(
                journeys = ?drained.abandoned,
                "stopped after the grace period of {}; these runs were cut short and are not recorded",
                humantime::format_duration(grace)
            );
        }
        Ok(())
    })
}

/// `waymark check`: exit 0 when everything loads, 1 with every problem listed.
pub fn check(path: &Path) -> anyhow::Result<Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    let (journeys, problems) = rt.block_on(serve::check(&runtime, path))?;
    if problems.is_empty() {
        println!(
            "{}: ok ({journeys} journey{} load and instantiate)",
            path.display(),
            if journeys == 1 { "" } else { "s" }
        );
        Ok(Status::Pass)
    } else {
        for p in &problems {
            eprintln!("{p}\n");
        }
        eprintln!(
            "{}: {} problem{}",
            path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        Ok(Status::Fail)
    }
}

/// What `waymark history` was asked.
pub struct HistoryQuery {
    /// One journey.
    pub journey: Option<String>,
    /// Config naming the store.
    pub config: PathBuf,
    /// The store itself.
    pub db: Option<PathBuf>,
    /// `1h` or an RFC 3339 time.
    pub since: Option<String>,
    /// A status name.
    pub status: Option<String>,
    /// Per-journey figures.
    pub stats: bool,
    /// The figures per journey and location.
    pub by_location: bool,
    /// Most rows.
    pub limit: usize,
    /// JSON out.
    pub json: bool,
}

fn parse_since(s: &str) -> anyhow::Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let d = crate::units::parse_duration(s).map_err(|_| {
        anyhow!("--since '{s}': give a duration like 1h or 7d, or a time like 2026-11-22T10:00:00Z")
    })?;
    SystemTime::now()
        .checked_sub(d)
        .ok_or_else(|| anyhow!("--since '{s}' is too far back"))
}

fn parse_status(s: &str) -> anyhow::Result<Status> {
    Ok(match s {
        "pass" => Status::Pass,
        "fail" => Status::Fail,
        "error" => Status::Error,
        "timeout" => Status::Timeout,
        other => bail!("--status '{other}': use pass, fail, error or timeout"),
    })
}

/// `waymark history`.
/// The history a reader means: `--db` (a SQLite file, or a PostgreSQL URL),
/// else the config's `[store]`. A SQLite file must exist: reading must not
/// create an empty store where the user mistyped a path.
pub(crate) fn history_database(
    config: &Path,
    db: Option<&Path>,
    what: &str,
) -> anyhow::Result<Database> {
    let database = match db {
        Some(p) => {
            let text = p.to_string_lossy();
            if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                Database::Postgres(Postgres {
                    url: text.into_owned(),
                    ca_file: None,
                })
            } else {
                Database::Sqlite(p.to_path_buf())
            }
        }
        None => Config::load_store(config)
            .with_context(|| format!("finding the history store (or give --db FILE or URL){what}"))?
            .database
            .ok_or_else(|| {
                anyhow!(
                    "{}: [store] path is off, so no history is kept",
                    config.display()
                )
            })?,
    };
    if let Database::Sqlite(path) = &database
        && !path.exists()
    {
        bail!(
            "no history at {}: waymark serve has not written one there",
            path.display()
        );
    }
    Ok(database)
}

/// `waymark history`.
pub fn history(q: HistoryQuery) -> anyhow::Result<()> {
    let database = history_database(&q.config, q.db.as_deref(), "")?;
    let filter = Filter {
        journey: q.journey.clone(),
        since: q.since.as_deref().map(parse_since).transpose()?,
        status: q.status.as_deref().map(parse_status).transpose()?,
        final_only: false,
        limit: Some(q.limit),
        by_location: q.by_location,
    };
    let store = Store::connect(&database)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if q.stats {
        let stats = store.stats(&filter)?;
        if q.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
        } else {
            write!(out, "{}", stats_table(&stats))?;
        }
        return Ok(());
    }
    let entries = store.list(&filter)?;
    if q.json {
        for e in &entries {
            writeln!(out, "{}", serde_json::to_string(&e.record)?)?;
        }
        return Ok(());
    }
    let mut rows = vec![[
        "STARTED".to_string(),
        "JOURNEY".into(),
        "STATUS".into(),
        "TRY".into(),
        "DURATION".into(),
        "LOCATION".into(),
        "RUN ID".into(),
        "ERROR".into(),
    ]];
    for e in &entries {
        let r = &e.record;
        let status = if e.final_attempt {
            r.status.as_str().to_string()
        } else {
            format!("{} (retried)", r.status.as_str())
        };
        let error: String = r
            .error
            .as_ref()
            .map(|e| e.message.chars().take(80).collect())
            .unwrap_or_default();
        rows.push([
            humantime::format_rfc3339_millis(r.started_at).to_string(),
            r.journey.clone(),
            status,
            r.attempt.to_string(),
            format!(
                "{:.1} ms",
                waymark_record::serde_time::as_millis(r.duration)
            ),
            r.location.clone(),
            r.run_id.clone(),
            error,
        ]);
    }
    write!(out, "{}", table(&rows))?;
    if entries.is_empty() {
        writeln!(out, "(no runs match)")?;
    }
    Ok(())
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

fn human_secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0).round() as u64)).to_string()
}

fn stats_table(stats: &[crate::store::JourneyStats]) -> String {
    let mut rows = vec![[
        "JOURNEY".to_string(),
        "LOCATION".into(),
        "RUNS".into(),
        "AVAILABILITY".into(),
        "P50".into(),
        "P95".into(),
        "INCIDENTS".into(),
        "MEAN TIME TO ACKNOWLEDGE".into(),
        "MEAN TIME TO RECOVERY".into(),
    ]];
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            human_secs(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    for s in stats {
        let mtta = mean(
            s.incidents
                .iter()
                .filter_map(|i| i.time_to_acknowledge_s)
                .collect(),
        );
        let mttr = mean(
            s.incidents
                .iter()
                .filter_map(|i| i.time_to_recovery_s)
                .collect(),
        );
        rows.push([
            s.journey.clone(),
            s.location.clone().unwrap_or_default(),
            s.runs.to_string(),
            format!("{:.2}%", s.availability * 100.0),
            format!("{:.1} ms", s.p50_ms),
            format!("{:.1} ms", s.p95_ms),
            s.incidents.len().to_string(),
            mtta,
            mttr,
        ]);
    }
    // The location column only when asked per location: the default table
    // keeps its columns for whoever reads it.
    let mut out = if stats.iter().any(|s| s.location.is_some()) {
        table(&rows)
    } else {
        let rows: Vec<[String; 8]> = rows
            .into_iter()
            .map(|[j, _, a, b, c, d, e, f, g]| [j, a, b, c, d, e, f, g])
            .collect();
        table(&rows)
    };
    for s in stats.iter().filter(|s| !s.incidents.is_empty()) {
        out.push_str(&format!("\nincidents of {}:\n", s.journey));
        for i in &s.incidents {
            let runs = format!(
                "{} failed run{}",
                i.failed_runs,
                if i.failed_runs == 1 { "" } else { "s" }
            );
            let acked = match (&i.acknowledged_by, i.time_to_acknowledge_s) {
                (Some(by), Some(tta)) => {
                    format!(", acknowledged by {by} after {}", human_secs(tta))
                }
                _ => String::new(),
            };
            let runs = format!("{runs}{acked}");
            match (&i.recovered_at, i.time_to_recovery_s) {
                (Some(end), Some(ttr)) => out.push_str(&format!(
                    "  {} → {}  recovered in {} ({runs})\n",
                    i.started_at,
                    end,
                    human_secs(ttr)
                )),
                _ => out.push_str(&format!("  {} → ongoing ({runs})\n", i.started_at)),
            }
        }
    }
    if stats.is_empty() {
        out.push_str("(no runs match)\n");
    }
    out
}
