//! One scheduled run: the permit, retries, the status line, and the
//! record handed to the history and the sinks.

use super::*;
use crate::config::KeepExchanges;

/// Holds the in-flight count up while a run task lives, even if it panics.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.telemetry.in_flight().fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

pub(super) fn dispatch(shared: &Arc<Shared>, slot: &Slot, due: SystemTime) {
    let state = slot.state.clone();
    state.due.fetch_add(1, Ordering::Relaxed);
    if state.running.swap(true, Ordering::SeqCst) {
        shared.skipped(&slot.prepared.config.name, &state, Skip::Overlap, 1);
        return;
    }
    shared.telemetry.in_flight().fetch_add(1, Ordering::SeqCst);
    let guard = InFlight(shared.clone());
    let prepared = slot.prepared.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _guard = guard;
        run_scheduled(&shared, &prepared, &state, due).await;
        state.running.store(false, Ordering::SeqCst);
    });
}

async fn run_scheduled(shared: &Shared, p: &Prepared, state: &JourneyState, due: SystemTime) {
    let Ok(_permit) = shared.semaphore.acquire().await else {
        return;
    };
    let lag = shared.clock.now().duration_since(due).unwrap_or_default();
    shared.telemetry.lag(lag);
    if lag > LATE {
        shared.overloaded(format!(
            "runs start late (journey {} by {} ms): max_concurrent_runs or the CPU is the limit",
            p.config.name,
            lag.as_millis()
        ));
    }
    let mut opts = p.opts.clone();
    if let Ok(l) = shared.location.lock() {
        opts.location.clone_from(&l);
    }
    opts.run_id = Some(ulid::Ulid::new().to_string());
    let attempts = 1 + p.config.retries;
    let mut first_started = None;
    for attempt in 1..=attempts {
        opts.attempt = attempt;
        let keep = p.config.keep_exchanges;
        let (mut rec, tape) = if keep == KeepExchanges::Never {
            (shared.runtime.run(&p.loaded, &opts).await, None)
        } else {
            opts.tape = waymark_engine::tape::TapeMode::Record;
            let full = shared.runtime.run_full(&p.loaded, &opts).await;
            let wanted = keep == KeepExchanges::Always || full.record.status != Status::Pass;
            let tape = full.tape.filter(|_| wanted).and_then(|mut t| {
                t.component = Some(p.config.wasm.display().to_string());
                serde_json::to_string(&t)
                    .inspect_err(|e| tracing::warn!(error = %e, "recording not kept"))
                    .ok()
            });
            (full.record, tape)
        };
        // Runs in a maintenance window go on and are stored, marked: the
        // alert sinks hold them and availability leaves them out.
        rec.maintenance = p
            .maintenance
            .iter()
            .find(|w| w.open_at(rec.started_at))
            .map(|w| w.name.clone());
        state.attempts.fetch_add(1, Ordering::Relaxed);
        first_started.get_or_insert(rec.started_at);
        let done = rec.status == Status::Pass
            || attempt == attempts
            || shared.stopping.load(Ordering::SeqCst);
        tracing::info!(
            journey = %rec.journey,
            run_id = %rec.run_id,
            attempt,
            status = rec.status.as_str(),
            duration_ms = waymark_record::serde_time::as_millis(rec.duration),
            lag_ms = (lag.as_secs_f64() * 1e6).round() / 1e3,
            error = rec.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
            "{}",
            if done { "run finished" } else { "attempt failed; retrying" }
        );
        if done {
            state.runs.fetch_add(1, Ordering::Relaxed);
            if rec.status != Status::Pass {
                state.failures.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut last) = state.last.lock() {
                *last = Some(LastRun {
                    status: rec.status,
                    started_at: first_started.unwrap_or(rec.started_at),
                    attempts: attempt,
                });
            }
        }
        deliver(shared, rec, tape, done, due).await;
        if done {
            break;
        }
        tokio::time::sleep(p.config.retry_delay).await;
    }
}

async fn deliver(
    shared: &Shared,
    rec: RunRecord,
    tape: Option<String>,
    final_attempt: bool,
    due: SystemTime,
) {
    let rec = Arc::new(Delivery {
        record: rec,
        final_attempt,
    });
    if let Ok(sinks) = shared.outputs.sinks.read() {
        for s in sinks.iter() {
            s.send(rec.clone());
        }
    }
    if let Some(tx) = &shared.outputs.store {
        let entry = store::Entry {
            record: rec.record.clone(),
            final_attempt,
            scheduled_at: Some(due),
            tape,
        };
        // Counted before it is sent, so the writer never takes away what
        // was not yet added.
        shared.telemetry.store_queued(1);
        match tx.try_send(Some(entry)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(e)) => {
                // The writer is behind: wait for room off the async threads
                // rather than lose the record.
                let tx = tx.clone();
                if !matches!(
                    tokio::task::spawn_blocking(move || tx.send(e).is_ok()).await,
                    Ok(true)
                ) {
                    shared.telemetry.store_queued(-1);
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                shared.telemetry.store_queued(-1);
                tracing::error!(run_id = %rec.record.run_id, "the history writer has stopped; run not stored");
            }
        }
    }
}
