//! How a run ended, in the record's words: status, error kind and message,
//! the closed steps, the logs, secrets redacted.

use std::time::{Duration, SystemTime};

use waymark_record::{ErrorKind, RunError, RunRecord, Status};

use crate::host::{MemoryExceeded, RunState};
use crate::recorder::ms;
use crate::runtime::{DeadlineReached, RunOptions, human_bytes};

/// What awaiting the guest's `run` gave: the wall-clock limit, a trap, or
/// the journey's own result.
pub(crate) type Outcome = Result<wasmtime::Result<Result<(), String>>, tokio::time::error::Elapsed>;

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
    let logs = state
        .logs
        .lock()
        .map(|mut l| l.finish())
        .unwrap_or_default();
    let memory_exceeded = state.limiter.exceeded;

    let (status, error) = match outcome {
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
        Ok(Err(e)) => (
            Status::Error,
            Some(RunError {
                kind: ErrorKind::Trap,
                message: trap_message(&e, &logs),
            }),
        ),
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
    let mut record = RunRecord {
        journey: journey.to_string(),
        run_id: opts
            .run_id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string()),
        location: opts.location.clone(),
        attempt: opts.attempt,
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        duration_ms: ms(duration),
        status,
        error,
        steps,
        logs,
    };
    if record.status == Status::Pass {
        let failed: Vec<&str> = record.failed_checks().map(|c| c.name.as_str()).collect();
        if !failed.is_empty() {
            record.error = Some(RunError {
                kind: ErrorKind::Check,
                message: format!(
                    "{} check{} failed: {}",
                    failed.len(),
                    if failed.len() == 1 { "" } else { "s" },
                    failed.join("; ")
                ),
            });
            record.status = Status::Fail;
        }
    }
    let secrets: Vec<String> = opts.secrets.values().cloned().collect();
    record.redact(&secrets);
    record
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
fn trap_message(e: &wasmtime::Error, logs: &[waymark_record::LogRecord]) -> String {
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
