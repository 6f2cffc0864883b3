//! `waymark replay`: a recorded run again, with the network replaced by its
//! recorded responses, and the difference from the recording named.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::cli::{Format, pairs, print_verbose, tokio_runtime};
use crate::http::{AllowList, HttpConfig};
use crate::record::Status;
use crate::{RunOptions, Runtime};
use waymark_engine::tape::{Tape, TapeMode, first_difference};

#[derive(clap::Args, Debug)]
pub(crate) struct ReplayArgs {
    /// The recorded run: a file written by `waymark run --record-exchanges`,
    /// or a run id from the history (runs kept by `keep_exchanges`).
    source: String,
    /// The journey to replay: a component or a project directory (built
    /// first). Default: the component the run was recorded with. A journey
    /// changed since the recording replays too; what differs is reported.
    #[arg(long, value_name = "PATH")]
    journey: Option<PathBuf>,
    /// The config naming the history store ([store] path), for a run id.
    #[arg(short = 'c', long, default_value = "waymark.toml")]
    config: PathBuf,
    /// The SQLite history file itself, for a run id.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Which attempt of the run (default: the last one kept).
    #[arg(long)]
    attempt: Option<u32>,
    /// A secret the recorded run used, NAME=VALUE, or NAME alone to read it
    /// from the environment variable NAME (which is also read when the flag
    /// is not given). Recordings never hold secrets.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,
    /// Replace a recorded variable, NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Wall-clock limit of the replay.
    #[arg(long, default_value = "30s", value_parser = crate::units::parse_duration)]
    timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value = "pretty")]
    format: Format,
    /// Show each request's heads and body under it, as `run -v` does.
    #[arg(short = 'v', long)]
    verbose: bool,
}

/// Writes a recording to `file` (whole or not at all).
pub(crate) fn write_tape(tape: &Tape, cap: usize, file: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(tape)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, file))
        .with_context(|| format!("cannot write the recorded exchanges to {}", file.display()))?;
    let cut = tape
        .exchanges
        .iter()
        .filter(|x| x.response.as_ref().is_some_and(|r| r.body.is_cut()))
        .count();
    if cut > 0 {
        eprintln!(
            "waymark: {cut} response bodies were longer than {} and were cut in {}: a replay gives the journey the cut bodies (raise --exchange-body-cap)",
            crate::units::format_size(cap as u64),
            file.display()
        );
    }
    Ok(())
}

fn load_tape(args: &ReplayArgs) -> anyhow::Result<Tape> {
    let as_file = Path::new(&args.source);
    if as_file.is_file() {
        return read_tape(as_file);
    }
    // Not a file: a run id in the history.
    let database = crate::cli_serve::history_database(
        &args.config,
        args.db.as_deref(),
        &format!(
            "; '{}' is not a file, so it is taken as a run id",
            args.source
        ),
    )?;
    let store = crate::store::Store::connect(&database)?;
    let text = store.tape(&args.source, args.attempt)?.ok_or_else(|| {
        anyhow!(
            "run '{}' has no recorded exchanges in {} (keep_exchanges = \"on-failure\" or \"always\" on the journey keeps them)",
            args.source,
            database
        )
    })?;
    Tape::from_json(&text).with_context(|| format!("run {} in {}", args.source, database))
}

/// `waymark replay`: exit code of the replay's own status.
pub(crate) fn replay(args: ReplayArgs) -> anyhow::Result<Status> {
    let tape = load_tape(&args)?;
    let component = match (&args.journey, &tape.component) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => bail!("the recording does not name its component: give --journey PATH"),
    };
    if !component.exists() {
        bail!(
            "the recorded journey {} is not there any more: give --journey PATH",
            component.display()
        );
    }
    let (path, _) = crate::project::component(&component)?;
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    let journey = runtime.load_file(&path)?;
    let rt = tokio_runtime()?;
    let how = Replay {
        secrets: pairs(&args.secrets, "secret", true)?,
        vars: pairs(&args.vars, "var", false)?,
        timeout: args.timeout,
        format: args.format,
        verbose: args.verbose,
    };
    replay_with(&runtime, &rt, &tape, journey, &how)
}

/// A tape read from `file` (`run --replay FILE`).
pub(crate) fn read_tape(file: &Path) -> anyhow::Result<Tape> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Tape::from_json(&text).with_context(|| file.display().to_string())
}

/// How to replay: what the command line gave.
pub(crate) struct Replay {
    /// Secrets given (the tape's others come from the environment).
    pub(crate) secrets: HashMap<String, String>,
    /// Variables replacing the recorded ones.
    pub(crate) vars: HashMap<String, String>,
    pub(crate) timeout: Duration,
    pub(crate) format: Format,
    pub(crate) verbose: bool,
}

/// Replays `tape` with `journey`, prints the replay and how it compares with
/// the recording; the replay's status.
pub(crate) fn replay_with(
    runtime: &Runtime,
    rt: &tokio::runtime::Runtime,
    tape: &Tape,
    mut journey: waymark_engine::LoadedJourney,
    how: &Replay,
) -> anyhow::Result<Status> {
    journey.name = tape.journey.clone();
    let changed = journey.sha256 != tape.component_sha256;
    let mut secrets = HashMap::new();
    let mut missing = Vec::new();
    for name in &tape.secrets {
        match how
            .secrets
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
        {
            Some(v) => {
                secrets.insert(name.clone(), v);
            }
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "the recorded run used the secrets {}, which recordings never keep: give each with --secret NAME=VALUE or in the environment variable NAME",
            missing.join(", ")
        );
    }
    let mut vars: HashMap<String, String> = tape.vars.clone().into_iter().collect();
    vars.extend(how.vars.clone());

    // No host is reachable: every answer comes from the recording.
    let http = HttpConfig::new(AllowList::parse::<&str>(&[])?, None)?;
    let mut opts = RunOptions::new(Arc::new(http));
    opts.vars = vars;
    opts.secrets = secrets;
    opts.timeout = how.timeout;
    opts.location = tape.record.location.clone();
    if how.verbose {
        opts.capture_bodies = Some(crate::VERBOSE_BODY_CAP);
    }
    let recorded = &tape.record;
    opts.tape = TapeMode::Replay(Arc::new(tape.clone()));

    let full = rt.block_on(runtime.run_full(&journey, &opts));
    let difference = first_difference(recorded, &full.record);
    match how.format {
        Format::Json => {
            let out = serde_json::json!({
                "record": full.record,
                "recorded": {
                    "run_id": recorded.run_id,
                    "attempt": recorded.attempt,
                    "status": recorded.status,
                    "started_at": humantime::format_rfc3339_millis(recorded.started_at).to_string(),
                },
                "component_changed": changed,
                "divergence": full.divergence,
                "difference": difference,
            });
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{out}")?;
        }
        Format::Pretty => {
            print_verbose(
                &full.record,
                Format::Pretty,
                how.verbose.then_some(&full.captured[..]),
            )?;
            let mut out = String::new();
            out.push_str(&format!(
                "\nreplay of run {} (attempt {}, {}, recorded {}); phase timings are the recorded ones\n",
                recorded.run_id,
                recorded.attempt,
                recorded.status.as_str(),
                humantime::format_rfc3339_seconds(recorded.started_at)
            ));
            if changed {
                out.push_str(&format!(
                    "  the journey changed since the recording (sha256 {} → {}): differences are findings\n",
                    short(&tape.component_sha256),
                    short(&journey.sha256)
                ));
            } else {
                out.push_str("  the same component as recorded\n");
            }
            if let Some(d) = &full.divergence {
                for line in d.to_string().lines() {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            match &difference {
                None => out.push_str("  same steps, checks and statuses as the recorded run\n"),
                Some(d) => out.push_str(&format!("  differs from the recorded run at {d}\n")),
            }
            let mut stdout = std::io::stdout().lock();
            write!(stdout, "{out}")?;
        }
    }
    Ok(full.record.status)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
