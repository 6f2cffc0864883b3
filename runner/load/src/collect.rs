//! The figures of each step, as iterations report into them: one tally
//! per worker thread, merged when the step is read, and the step's
//! iteration budget.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use waymark_engine::{Observer, Verdict};
use waymark_record::units::later;
use waymark_record::{PhaseTimings, StepRecord};

use crate::*;

/// A step's clock and the generator's CPU around it; set when the step
/// begins and ends, read when it is reported.
struct StepClock {
    blank: StepResult,
    step_start: Instant,
    window_start: Instant,
    planned_end: Instant,
    ended: Option<Instant>,
    cpu_start: generator::CpuMark,
    cpu_end: Option<generator::CpuMark>,
}

/// What one worker's iterations added to one step.
struct Tally {
    window_start: Instant,
    /// When the plan ends the step (a budget may end it sooner).
    planned_end: Instant,
    /// Set when the step is over; closed-model iterations ending after it
    /// are not measured.
    ended: Option<Instant>,
    /// Open model: an iteration counts by its arrival, whenever it ends.
    by_arrival: bool,
    counts: Counts,
    start_delay: Histo,
    busy: Duration,
    /// Measured iterations that ended inside the window: the throughput.
    /// (In the open model the others still count for latency.)
    completed_in_window: u64,
    unmeasured: u64,
    waited_for_slot: u64,
    cut_short: bool,
}

impl Tally {
    fn window_end(&self) -> Instant {
        self.ended
            .map_or(self.planned_end, |e| e.min(self.planned_end))
    }
}

/// The steps of a run. Each worker thread reports into a tally of its own,
/// so iterations on different cores never wait for one another's lock.
pub(crate) struct Collector {
    clocks: Mutex<Vec<StepClock>>,
    tallies: Vec<Mutex<Vec<Tally>>>,
    /// The generator's runtimes, whose busy time each step reports.
    runtimes: Vec<tokio::runtime::Handle>,
}

/// One iteration's steps as the engine told them, kept until the iteration
/// is known to be measured. Reused from one iteration to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    steps: Vec<(String, Duration)>,
    len: usize,
    phases: Vec<PhaseTimings>,
    request_errors: u64,
}

impl Scratch {
    fn clear(&mut self) {
        self.len = 0;
        self.phases.clear();
        self.request_errors = 0;
    }
}

impl Observer for Scratch {
    fn step(&mut self, step: &StepRecord) {
        // The names' buffers are kept: a journey names the same steps each time.
        match self.steps.get_mut(self.len) {
            Some((name, d)) => {
                name.clear();
                name.push_str(&step.name);
                *d = step.duration;
            }
            None => self.steps.push((step.name.clone(), step.duration)),
        }
        self.len += 1;
        for q in &step.requests {
            self.phases.push(q.timings);
            if q.error.is_some() {
                self.request_errors += 1;
            }
        }
    }
}

/// When an iteration ran: `ready` is when it could have started (none for
/// a closed user's first), `intended` when the timetable wanted it.
pub(crate) struct When {
    pub(crate) ready: Option<Instant>,
    pub(crate) intended: Instant,
    pub(crate) started: Instant,
    pub(crate) ended: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it would be a bug in this file; the figures
    // stay readable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Collector {
    pub(crate) fn new(runtimes: Vec<tokio::runtime::Handle>) -> Self {
        Collector {
            clocks: Mutex::new(Vec::new()),
            tallies: (0..runtimes.len().max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            runtimes,
        }
    }

    pub(crate) fn begin(&self, result: StepResult, start: Instant, plan: &Plan, by_arrival: bool) {
        let cpu_start = generator::CpuMark::now(&self.runtimes);
        let window_start = later(start, plan.warmup);
        let planned_end = later(start, plan.step_duration);
        for t in &self.tallies {
            lock(t).push(Tally {
                window_start,
                planned_end,
                ended: None,
                by_arrival,
                counts: Counts::default(),
                start_delay: Histo::default(),
                busy: Duration::ZERO,
                completed_in_window: 0,
                unmeasured: 0,
                waited_for_slot: 0,
                cut_short: false,
            });
        }
        lock(&self.clocks).push(StepClock {
            blank: result,
            step_start: start,
            window_start,
            planned_end,
            ended: None,
            cpu_start,
            cpu_end: None,
        });
    }

    pub(crate) fn end(&self, step: usize, at: Instant) {
        let mark = generator::CpuMark::now(&self.runtimes);
        if let Some(c) = lock(&self.clocks).get_mut(step) {
            c.ended = Some(at);
            c.cpu_end = Some(mark);
        }
        for t in &self.tallies {
            if let Some(t) = lock(t).get_mut(step) {
                t.ended = Some(at);
            }
        }
    }

    pub(crate) fn cut_short(&self, step: usize) {
        if let Some(t) = lock(&self.tallies[0]).get_mut(step) {
            t.cut_short = true;
        }
    }

    /// One iteration, run by worker `worker`, that ended with `verdict`
    /// after telling `scratch` its steps.
    pub(crate) fn record(
        &self,
        worker: usize,
        step: usize,
        when: When,
        verdict: &Verdict,
        scratch: &mut Scratch,
    ) {
        let mut tallies = lock(&self.tallies[worker % self.tallies.len()]);
        let Some(t) = tallies.get_mut(step) else {
            scratch.clear();
            return;
        };
        let window_end = t.window_end();
        let late = !t.by_arrival && when.ended > window_end;
        if when.intended < t.window_start || late {
            t.unmeasured += 1;
            scratch.clear();
            return;
        }
        // Measured iterations only: the warm-up's instances being made are
        // not the generator falling behind.
        if let Some(ready) = when.ready {
            t.start_delay
                .record(when.started.saturating_duration_since(ready));
        }
        t.busy += when.ended.saturating_duration_since(when.started);
        if when.ended <= window_end {
            t.completed_in_window += 1;
        }
        let c = &mut t.counts;
        c.iterations += 1;
        if verdict.status == Status::Pass {
            c.passed += 1;
        } else {
            let kind = verdict
                .error
                .as_ref()
                .map_or(verdict.status.as_str(), |e| e.kind.as_str());
            match c.errors.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    c.errors.insert(kind.to_string(), 1);
                    if let Some(e) = &verdict.error {
                        c.error_examples.insert(kind.to_string(), e.message.clone());
                    }
                }
            }
        }
        // From the intended start (coordinated omission), or from the
        // actual one for an arrival released a little early (see pace.rs).
        c.latency.record(
            when.ended
                .saturating_duration_since(when.intended.min(when.started)),
        );
        for (name, d) in &scratch.steps[..scratch.len] {
            record_into(&mut c.journey_steps, name, *d);
        }
        c.requests += scratch.phases.len() as u64;
        c.request_errors += scratch.request_errors;
        for p in &scratch.phases {
            for (name, v) in p.named() {
                record_into(&mut c.phases, name, v);
            }
        }
        scratch.clear();
    }

    pub(crate) fn waited(&self, worker: usize, step: usize) {
        if let Some(t) = lock(&self.tallies[worker % self.tallies.len()]).get_mut(step) {
            t.waited_for_slot += 1;
        }
    }

    /// Step `step` as the tallies have it so far: counts, start delays, cut
    /// short, busy time, completed in the window.
    fn gather(&self, step: usize, result: &mut StepResult) -> (Duration, u64) {
        let mut busy = Duration::ZERO;
        let mut completed = 0;
        for t in &self.tallies {
            if let Some(t) = lock(t).get(step) {
                result.counts.add(&t.counts);
                result.generator.start_delay.merge(&t.start_delay);
                result.unmeasured += t.unmeasured;
                result.waited_for_slot += t.waited_for_slot;
                result.cut_short |= t.cut_short;
                busy += t.busy;
                completed += t.completed_in_window;
            }
        }
        (busy, completed)
    }

    pub(crate) fn live(&self, steps: usize, step_duration: Duration) -> Option<Live> {
        let (index, step_start, window_start, mut r) = {
            let clocks = lock(&self.clocks);
            let c = clocks.last()?;
            (
                clocks.len() - 1,
                c.step_start,
                c.window_start,
                c.blank.clone(),
            )
        };
        self.gather(index, &mut r);
        let now = Instant::now();
        let measured = now.saturating_duration_since(window_start).as_secs_f64();
        Some(Live {
            step: r.index,
            steps,
            label: r.label(),
            elapsed: now.saturating_duration_since(step_start),
            step_duration,
            warming_up: now < window_start,
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
        let clocks = std::mem::take(&mut *lock(&self.clocks));
        clocks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut r = c.blank;
                let (busy, completed) = self.gather(i, &mut r);
                let ended = c.ended.unwrap_or_else(Instant::now);
                let cores = generator::cores();
                r.generator.cores = cores;
                let end = c
                    .cpu_end
                    .unwrap_or_else(|| generator::CpuMark::now(&self.runtimes));
                (r.generator.cpu, r.generator.cpu_wait) = c.cpu_start.share_until(&end, cores);
                r.generator.runtime_busy = c.cpu_start.runtime_busy_until(&end);
                r.generator.judge();
                r.duration_s = ended.saturating_duration_since(c.step_start).as_secs_f64();
                let end = ended.min(c.planned_end);
                let measured = end.saturating_duration_since(c.window_start).as_secs_f64();
                r.measured_s = measured;
                if measured > 0.0 {
                    r.throughput = completed as f64 / measured;
                    // Requests follow their iterations' share of the window.
                    r.request_rate = if r.counts.iterations > 0 {
                        r.counts.requests as f64 * (completed as f64 / r.counts.iterations as f64)
                            / measured
                    } else {
                        0.0
                    };
                    r.mean_concurrency = busy.as_secs_f64() / measured;
                }
                r
            })
            .collect()
    }
}

/// Per-step iteration budget (`--iterations`). Each count carries the
/// step it belongs to (high 32 bits), so a user still finishing the
/// previous step can neither spend nor complete the next step's budget.
pub(crate) struct Budget {
    limit: Option<u64>,
    started: AtomicU64,
    done: AtomicU64,
    pub(crate) all_done: Notify,
}

fn tagged(step: usize) -> u64 {
    (step as u64 & 0xffff_ffff) << 32
}

/// Adds one to `counter` if it is tagged with `step` and below `limit`;
/// the count before, if it was.
fn add_if(counter: &AtomicU64, step: usize, limit: u64) -> Option<u64> {
    let tag = tagged(step);
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            let n = v & 0xffff_ffff;
            (v & !0xffff_ffff == tag && n < limit).then_some(v + 1)
        })
        .ok()
        .map(|v| v & 0xffff_ffff)
}

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Budget {
            // Counted in 32 bits: more than 4 billion iterations per step
            // is no budget at all.
            limit: limit.map(|l| l.min(u64::from(u32::MAX))),
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            all_done: Notify::new(),
        }
    }

    pub(crate) fn reset(&self, step: usize) {
        self.started.store(tagged(step), Ordering::SeqCst);
        self.done.store(tagged(step), Ordering::SeqCst);
    }

    pub(crate) fn take(&self, step: usize) -> bool {
        match self.limit {
            None => true,
            Some(l) => add_if(&self.started, step, l).is_some(),
        }
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.limit
            .is_some_and(|l| self.started.load(Ordering::SeqCst) & 0xffff_ffff >= l)
    }

    pub(crate) fn finished(&self, step: usize) {
        if let Some(l) = self.limit
            && add_if(&self.done, step, l).is_some_and(|before| before + 1 == l)
        {
            self.all_done.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_spent_only_by_its_own_step() {
        let b = Budget::new(Some(2));
        b.reset(0);
        assert!(b.take(0) && b.take(0));
        assert!(!b.take(0), "spent");
        assert!(b.exhausted());
        b.reset(1);
        assert!(
            !b.take(0),
            "a late user of step 0 takes nothing from step 1"
        );
        b.finished(0);
        assert!(b.take(1) && b.take(1) && !b.take(1));
        b.finished(1);
        b.finished(1);
        b.finished(1);
        assert_eq!(b.done.load(Ordering::SeqCst) & 0xffff_ffff, 2);
    }
}
