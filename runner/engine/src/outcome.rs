//! How a run ended, in the record's words: status, error kind and message,
//! the closed steps, the logs, secrets redacted.

use std::time::{Duration, SystemTime};

use waymark_record::Redactor;
use waymark_record::{ErrorKind, LogRecord, RunError, RunRecord, Status, StepRecord};

use crate::host::{MemoryExceeded, RunState};
use crate::runtime::{DeadlineReached, RunOptions, human_bytes};

/// What awaiting the guest's `run` gave: the wall-clock limit, a trap, or
/// the journey's own result.
pub(crate) type Outcome = Result<wasmtime::Result<Result<(), String>>, tokio::time::error::Elapsed>;

/// How a run ended, before anything is written about it.
struct Ending {
    status: Status,
    error: Option<RunError>,
    steps: Vec<StepRecord>,
}

/// Reads `outcome` and closes the steps in `state`. `logs` gives the
/// guest's output, asked for only when a trap needs the panic's words.
fn ending(
    opts: &RunOptions,
    state: &mut RunState,
    outcome: Outcome,
    logs: impl FnOnce(&mut RunState) -> Vec<LogRecord>,
) -> (Ending, Option<Vec<LogRecord>>) {
    let memory_exceeded = state.limiter.exceeded;
    let mut logs_read = None;
    let full = state.rec.budget.full;
    let (status, error) = match outcome {
        // A record with entries dropped cannot say the run passed.
        _ if full.is_some() => (Status::Error, Some(record_full(state))),
        Err(_) => (Status::Timeout, Some(timeout_error(opts.timeout))),
        Ok(Err(e)) if memory_exceeded.is_some() || e.downcast_ref::<MemoryExceeded>().is_some() => {
            (
                Status::Error,
                Some(RunError {
                    kind: ErrorKind::Memory,
                    message: format!(
                        "the journey exceeded its memory limit of {} (it asked for {})",
                        human_bytes(opts.memory_limit),
                        human_bytes(memory_exceeded.unwrap_or(opts.memory_limit)),
                    ),
                }),
            )
        }
        Ok(Err(e)) if e.downcast_ref::<DeadlineReached>().is_some() => {
            (Status::Timeout, Some(timeout_error(opts.timeout)))
        }
        Ok(Err(e)) => {
            let read = logs(state);
            let message = trap_message(&e, &read);
            logs_read = Some(read);
            (
                Status::Error,
                Some(RunError {
                    kind: ErrorKind::Trap,
                    message,
                }),
            )
        }
        Ok(Ok(Err(message))) => {
            let kind = if state.rec.requests_denied > 0 {
                ErrorKind::Denied
            } else if state.rec.requests_failed > 0 {
                ErrorKind::Http
            } else {
                ErrorKind::Journey
            };
            let status = if kind == ErrorKind::Denied {
                Status::Error
            } else {
                Status::Fail
            };
            (status, Some(RunError { kind, message }))
        }
        Ok(Ok(Ok(()))) => (Status::Pass, None),
    };
    let stopped = !matches!(status, Status::Pass | Status::Fail);
    let steps = state.rec.finish(stopped);
    let mut end = Ending {
        status,
        error,
        steps,
    };
    if end.status == Status::Pass {
        let failed: Vec<&str> = end
            .steps
            .iter()
            .flat_map(|s| s.checks.iter())
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        if !failed.is_empty() {
            end.error = Some(RunError {
                kind: ErrorKind::Check,
                message: format!(
                    "{} check{} failed: {}",
                    failed.len(),
                    if failed.len() == 1 { "" } else { "s" },
                    failed.join("; ")
                ),
            });
            end.status = Status::Fail;
        }
    }
    (end, logs_read)
}

fn finish_logs(state: &mut RunState) -> Vec<LogRecord> {
    state
        .logs
        .lock()
        .map(|mut l| l.finish())
        .unwrap_or_default()
}

/// The record of a run of `journey` that ended with `outcome`. Takes the
/// steps and logs out of `state`, which may then run again.
pub(crate) fn conclude(
    journey: &str,
    opts: &RunOptions,
    state: &mut RunState,
    outcome: Outcome,
    started_at: SystemTime,
    duration: Duration,
) -> RunRecord {
    let (end, logs) = ending(opts, state, outcome, finish_logs);
    let logs = logs.unwrap_or_else(|| finish_logs(state));
    let mut record = RunRecord {
        journey: journey.to_string(),
        run_id: opts
            .run_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string()),
        location: opts.location.clone(),
        attempt: opts.attempt,
        started_at,
        duration,
        status: end.status,
        error: end.error,
        steps: end.steps,
        logs,
        maintenance: None,
    };
    let secrets: Vec<String> = opts.secrets.values().cloned().collect();
    record.redact(&secrets);
    record
}

/// What a caller that aggregates many runs (`waymark load`) is told of one,
/// in place of a record.
pub trait Observer: Send {
    /// One step of the run, closed, in the order steps started. Texts that
    /// hold a secret are already redacted.
    fn step(&mut self, step: &StepRecord);
}

/// How a run ended, without its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Outcome.
    pub status: Status,
    /// Why it did not pass (secrets redacted).
    pub error: Option<RunError>,
}

/// As [`conclude`], telling `observer` the steps instead of building a
/// record: no run id, no timestamps, no logs, no JSON-shaped copies.
pub(crate) fn observe(
    opts: &RunOptions,
    state: &mut RunState,
    outcome: Outcome,
    observer: &mut dyn Observer,
    redactor: &Redactor,
) -> Verdict {
    // The logs are read only to explain a trap; a reused instance starts
    // its next run with an empty buffer.
    let (mut end, _) = ending(opts, state, outcome, finish_logs);
    if let Some(e) = &mut end.error {
        redactor.redact(&mut e.message);
    }
    for step in &mut end.steps {
        redactor.redact(&mut step.name);
        observer.step(step);
    }
    Verdict {
        status: end.status,
        error: end.error,
    }
}

fn record_full(state: &RunState) -> RunError {
    let b = &state.rec.budget;
    RunError {
        kind: ErrorKind::Limit,
        message: format!(
            "the record reached its budget of {} (max_record) with the journey's {}; \
             the run was stopped, and {} steps, {} checks and {} requests were not recorded",
            human_bytes(b.limit()),
            b.full.unwrap_or("entries"),
            b.dropped_steps,
            b.dropped_checks,
            b.dropped_requests,
        ),
    }
}

fn timeout_error(limit: Duration) -> RunError {
    RunError {
        kind: ErrorKind::Timeout,
        message: format!(
            "the run exceeded its wall-clock timeout of {} and was stopped",
            humantime::format_duration(limit)
        ),
    }
}

/// A trap in words: for a Rust panic, the panic message and where it was
/// raised (from the guest's stderr), else wasmtime's description.
fn trap_message(e: &wasmtime::Error, logs: &[LogRecord]) -> String {
    let lines: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
        let location = lines[i]
            .split("panicked at ")
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(':');
        let message: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("note: "))
            .copied()
            .collect();
        return format!(
            "the journey panicked: {} (at {location})",
            message.join(" ").trim()
        );
    }
    let trap = e
        .downcast_ref::<wasmtime::Trap>()
        .map(|t| t.to_string())
        .unwrap_or_else(|| format!("{e:#}"));
    format!("the journey trapped: {trap}")
}
