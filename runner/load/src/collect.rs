//! The figures of each step, as iterations report into them: one lock,
//! taken once per iteration, and the step's iteration budget.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::*;

/// The step being measured, as iterations report into it.
pub(crate) struct Acc {
    pub(crate) result: StepResult,
    step_start: Instant,
    window_start: Instant,
    /// When the plan ends the step (a budget may end it sooner).
    planned_end: Instant,
    /// Set when the step is over; closed-model iterations ending after it
    /// are not measured.
    ended: Option<Instant>,
    /// Open model: an iteration counts by its arrival, whenever it ends.
    by_arrival: bool,
    busy: Duration,
    /// Measured iterations that ended inside the window: the throughput.
    /// (In the open model the others still count for latency.)
    completed_in_window: u64,
    cpu_start: generator::CpuMark,
    cpu_end: Option<generator::CpuMark>,
}

pub(crate) struct Collector {
    pub(crate) steps: Mutex<Vec<Acc>>,
    /// The generator's runtimes, whose busy time each step reports.
    pub(crate) runtimes: Vec<tokio::runtime::Handle>,
}

impl Collector {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Acc>> {
        // A panic while holding it would be a bug in this file; the figures
        // stay readable.
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn begin(&self, result: StepResult, start: Instant, plan: &Plan, by_arrival: bool) {
        // Read /proc before taking the lock the iterations record under.
        let cpu_start = generator::CpuMark::now(&self.runtimes);
        self.lock().push(Acc {
            result,
            step_start: start,
            window_start: start + plan.warmup,
            planned_end: start + plan.step_duration,
            ended: None,
            by_arrival,
            busy: Duration::ZERO,
            completed_in_window: 0,
            cpu_start,
            cpu_end: None,
        });
    }

    pub(crate) fn end(&self, step: usize, at: Instant) {
        let mark = generator::CpuMark::now(&self.runtimes);
        if let Some(a) = self.lock().get_mut(step) {
            a.ended = Some(at);
            a.cpu_end = Some(mark);
        }
    }

    /// One iteration: `ready` is when it could have started (none for a
    /// closed user's first), `intended` when the timetable wanted it.
    pub(crate) fn record(
        &self,
        step: usize,
        ready: Option<Instant>,
        intended: Instant,
        started: Instant,
        ended: Instant,
        rec: &RunRecord,
    ) {
        let mut steps = self.lock();
        let Some(acc) = steps.get_mut(step) else {
            return;
        };
        if let Some(ready) = ready {
            acc.result
                .generator
                .start_delay
                .record(started.saturating_duration_since(ready));
        }
        let window_end = acc
            .ended
            .map_or(acc.planned_end, |e| e.min(acc.planned_end));
        let late = !acc.by_arrival && ended > window_end;
        if intended < acc.window_start || late {
            acc.result.unmeasured += 1;
            return;
        }
        acc.busy += ended.saturating_duration_since(started);
        if ended <= window_end {
            acc.completed_in_window += 1;
        }
        let c = &mut acc.result.counts;
        c.iterations += 1;
        if rec.status == Status::Pass {
            c.passed += 1;
        } else {
            let kind = rec
                .error
                .as_ref()
                .map_or(rec.status.as_str(), |e| e.kind.as_str());
            *c.errors.entry(kind.to_string()).or_default() += 1;
            if let Some(e) = &rec.error {
                c.error_examples
                    .entry(kind.to_string())
                    .or_insert_with(|| e.message.clone());
            }
        }
        c.latency.record(ended.saturating_duration_since(intended));
        for step in &rec.steps {
            record_into(&mut c.journey_steps, &step.name, step.duration_ms);
            for q in &step.requests {
                c.requests += 1;
                if q.error.is_some() {
                    c.request_errors += 1;
                }
                for (name, v) in q.timings_ms.named() {
                    record_into(&mut c.phases, name, v);
                }
            }
        }
    }

    pub(crate) fn waited(&self, step: usize) {
        if let Some(a) = self.lock().get_mut(step) {
            a.result.waited_for_slot += 1;
        }
    }

    pub(crate) fn live(&self, steps: usize, step_duration: Duration) -> Option<Live> {
        let guard = self.lock();
        let acc = guard.last()?;
        let now = Instant::now();
        let measured = now
            .saturating_duration_since(acc.window_start)
            .as_secs_f64();
        let r = &acc.result;
        Some(Live {
            step: r.index,
            steps,
            label: r.label(),
            elapsed: now.saturating_duration_since(acc.step_start),
            step_duration,
            warming_up: now < acc.window_start,
            throughput: if measured > 0.0 {
                r.counts.iterations as f64 / measured
            } else {
                0.0
            },
            p95_ms: r.counts.latency.quantile_ms(0.95),
            error_rate: r.error_rate(),
        })
    }

    pub(crate) fn finish(&self) -> Vec<StepResult> {
        let mut steps = self.lock();
        steps
            .drain(..)
            .map(|a| {
                let mut r = a.result;
                let ended = a.ended.unwrap_or_else(Instant::now);
                let cores = generator::cores();
                r.generator.cores = cores;
                let end = a
                    .cpu_end
                    .unwrap_or_else(|| generator::CpuMark::now(&self.runtimes));
                (r.generator.cpu, r.generator.cpu_wait) = a.cpu_start.share_until(&end, cores);
                r.generator.runtime_busy = a.cpu_start.runtime_busy_until(&end);
                r.generator.judge();
                r.duration_s = ended.saturating_duration_since(a.step_start).as_secs_f64();
                let end = ended.min(a.planned_end);
                let measured = end.saturating_duration_since(a.window_start).as_secs_f64();
                r.measured_s = measured;
                if measured > 0.0 {
                    r.throughput = a.completed_in_window as f64 / measured;
                    // Requests follow their iterations' share of the window.
                    r.request_rate = if r.counts.iterations > 0 {
                        r.counts.requests as f64
                            * (a.completed_in_window as f64 / r.counts.iterations as f64)
                            / measured
                    } else {
                        0.0
                    };
                    r.mean_concurrency = a.busy.as_secs_f64() / measured;
                }
                r
            })
            .collect()
    }
}

/// Per-step iteration budget (`--iterations`).
pub(crate) struct Budget {
    pub(crate) limit: Option<u64>,
    pub(crate) started: AtomicU64,
    pub(crate) done: AtomicU64,
    pub(crate) all_done: Notify,
}

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Budget {
            limit,
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            all_done: Notify::new(),
        }
    }

    pub(crate) fn reset(&self) {
        self.started.store(0, Ordering::SeqCst);
        self.done.store(0, Ordering::SeqCst);
    }

    pub(crate) fn take(&self) -> bool {
        match self.limit {
            None => true,
            Some(l) => self.started.fetch_add(1, Ordering::SeqCst) < l,
        }
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.limit
            .is_some_and(|l| self.started.load(Ordering::SeqCst) >= l)
    }

    pub(crate) fn finished(&self) {
        if let Some(l) = self.limit
            && self.done.fetch_add(1, Ordering::SeqCst) + 1 == l
        {
            self.all_done.notify_one();
        }
    }
}
