//! How hard the generator itself worked in a step. A load test measures the
//! slower of two programs: the target, or the process making the load. When
//! waymark's own CPU is spent, or its users start their iterations late
//! because the runtime cannot get to them, the throughput of that step is
//! waymark's, and a scalability fit through it would describe waymark. Such
//! steps are marked, said so in plain words, and left out of the USL fit.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Histo;

/// Above this share of the CPU it may use, the generator is saturated.
pub const CPU_LIMIT: f64 = 0.85;
/// Above this p99 of start delay, the generator is saturated: its users
/// were ready but the runtime could not start their iterations.
pub const START_DELAY_LIMIT: Duration = Duration::from_millis(10);

/// Why a step's figures describe the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Saturation {
    /// Its CPU time was above [`CPU_LIMIT`] of what it may use.
    Cpu,
    /// Its p99 start delay was above [`START_DELAY_LIMIT`].
    StartDelay,
    /// Its async runtime's workers were busy above [`CPU_LIMIT`] of the
    /// time: no worker was free to start or resume a user.
    Runtime,
}

/// The generator during one step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Generator {
    /// Process CPU time ÷ the step's wall time ÷ the cores it may use, 0–1.
    pub cpu: f64,
    /// Time its threads were ready to run but waited for a core (Linux's
    /// schedstat run delay), on the same scale: CPU the generator wanted
    /// and did not get, because of its own threads or other processes.
    #[serde(default)]
    pub cpu_wait: f64,
    /// The share of the step its async runtime's workers spent running
    /// tasks (tokio's busy time over wall time and workers), 0–1.
    #[serde(default)]
    pub runtime_busy: f64,
    /// The cores the process may use (affinity and quota).
    pub cores: u32,
    /// How late iterations started after they were ready: a closed user's
    /// previous iteration ended, or an open arrival got its slot.
    pub start_delay: Histo,
    /// Empty when the step measured the target.
    pub saturated: Vec<Saturation>,
}

impl Generator {
    /// Judges the step from its CPU and start delays.
    pub fn judge(&mut self) {
        self.saturated.clear();
        // What it used plus what it waited for: a generator starved by other
        // processes is as much the bottleneck as one busy with its own work.
        if self.cpu + self.cpu_wait > CPU_LIMIT {
            self.saturated.push(Saturation::Cpu);
        }
        if self.runtime_busy > CPU_LIMIT {
            self.saturated.push(Saturation::Runtime);
        }
        if self.start_delay.count() > 0
            && self.start_delay.quantile_ms(0.99) > START_DELAY_LIMIT.as_secs_f64() * 1000.0
        {
            self.saturated.push(Saturation::StartDelay);
        }
    }

    /// True when the step's figures describe waymark rather than the target.
    pub fn is_saturated(&self) -> bool {
        !self.saturated.is_empty()
    }

    /// Shards ran side by side on their own machines or cores: the busiest
    /// one speaks for the step.
    pub fn merge(&mut self, other: &Generator) {
        self.cpu = self.cpu.max(other.cpu);
        self.cpu_wait = self.cpu_wait.max(other.cpu_wait);
        self.runtime_busy = self.runtime_busy.max(other.runtime_busy);
        self.cores += other.cores;
        self.start_delay.merge(&other.start_delay);
        self.judge();
    }
}

impl Generator {
    /// Passes over the ramp ran one after the other on the same cores: the
    /// busiest speaks for the level.
    pub fn merge_pass(&mut self, other: &Generator) {
        self.cpu = self.cpu.max(other.cpu);
        self.cpu_wait = self.cpu_wait.max(other.cpu_wait);
        self.runtime_busy = self.runtime_busy.max(other.runtime_busy);
        self.cores = self.cores.max(other.cores);
        self.start_delay.merge(&other.start_delay);
        self.judge();
    }
}

/// CPU time this process has used so far (user and system).
pub fn process_cpu() -> Duration {
    let (user, system) = cpu_of(libc::RUSAGE_SELF);
    user + system
}

/// User and system CPU time of `who` (`libc::RUSAGE_SELF`, or
/// `RUSAGE_CHILDREN`: every child waited for so far); zero if it cannot be
/// read.
pub fn cpu_of(who: libc::c_int) -> (Duration, Duration) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given,
    // which points at one.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // SAFETY: initialised by the successful call above (and zeroed before).
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (tv(u.ru_utime), tv(u.ru_stime))
}

/// The cores this process may run on.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// Time this process's threads spent runnable but waiting for a core,
/// summed over its live threads (`/proc/self/task/*/schedstat`, second
/// field, ns). Zero where the kernel does not say.
pub fn process_run_delay() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ns: u64 = 0;
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
            && let Some(delay) = s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        {
            ns = ns.saturating_add(delay);
        }
    }
    Duration::from_nanos(ns)
}

/// A CPU reading at one instant, to measure a step between two of them.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    cpu: Duration,
    waited: Duration,
    /// Summed busy time of the current tokio runtime's workers, and their number.
    busy: Duration,
    workers: usize,
}

/// Busy time so far of the workers of the runtimes `handles` lead to, and
/// how many workers there are.
pub fn runtime_busy(handles: &[tokio::runtime::Handle]) -> (Duration, usize) {
    let mut busy = Duration::ZERO;
    let mut workers = 0;
    for h in handles {
        let m = h.metrics();
        let n = m.num_workers();
        busy += (0..n)
            .map(|w| m.worker_total_busy_duration(w))
            .sum::<Duration>();
        workers += n;
    }
    (busy, workers)
}

impl CpuMark {
    /// Now, with the busy time of the runtimes in `handles`.
    pub fn now(handles: &[tokio::runtime::Handle]) -> Self {
        let (busy, workers) = runtime_busy(handles);
        CpuMark {
            at: Instant::now(),
            cpu: process_cpu(),
            waited: process_run_delay(),
            busy,
            workers,
        }
    }

    /// The share of the time the runtime's workers were busy, from `self`
    /// to `end`.
    pub fn runtime_busy_until(&self, end: &CpuMark) -> f64 {
        let wall = end.at.saturating_duration_since(self.at).as_secs_f64();
        if wall <= 0.0 || end.workers == 0 {
            return 0.0;
        }
        end.busy.saturating_sub(self.busy).as_secs_f64() / wall / end.workers as f64
    }

    /// The shares of `cores` used, and waited for, from `self` to `end`.
    pub fn share_until(&self, end: &CpuMark, cores: u32) -> (f64, f64) {
        let wall = end.at.saturating_duration_since(self.at).as_secs_f64();
        if wall <= 0.0 || cores == 0 {
            return (0.0, 0.0);
        }
        let per = |d: Duration| d.as_secs_f64() / wall / f64::from(cores);
        (
            per(end.cpu.saturating_sub(self.cpu)),
            per(end.waited.saturating_sub(self.waited)),
        )
    }
}

/// The plain-words summary of the saturated steps, or none.
pub fn summary(steps: &[crate::StepResult]) -> Option<String> {
    let marked: Vec<&crate::StepResult> = steps
        .iter()
        .filter(|s| s.generator.is_saturated())
        .collect();
    if marked.is_empty() {
        return None;
    }
    let which: Vec<String> = marked
        .iter()
        .map(|s| {
            format!(
                "{} ({}: CPU {:.0} % used, {:.0} % waited for, runtime busy {:.0} %, start delay p99 {:.2} ms)",
                s.index + 1,
                s.label(),
                s.generator.cpu * 100.0,
                s.generator.cpu_wait * 100.0,
                s.generator.runtime_busy * 100.0,
                s.generator.start_delay.quantile_ms(0.99)
            )
        })
        .collect();
    Some(format!(
        "waymark itself was saturated in step{} {}: the figures at {} describe waymark, not the target, \
         and {} left out of the USL fit. Spread the load over processes or machines \
         (--shard I/N, then `waymark load merge`).",
        if marked.len() == 1 { "" } else { "s" },
        which.join(", "),
        if marked.len() == 1 {
            "that load"
        } else {
            "those loads"
        },
        if marked.len() == 1 {
            "it is"
        } else {
            "they are"
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_as_cpu() {
        let start = CpuMark::now(&[]);
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (share, _) = start.share_until(&CpuMark::now(&[]), 1);
        assert!(share > 0.5, "a busy loop on one core used {share}");
    }

    #[test]
    fn judged_by_either_limit() {
        let mut g = Generator {
            cpu: 0.9,
            cores: 2,
            ..Generator::default()
        };
        g.judge();
        assert_eq!(g.saturated, [Saturation::Cpu]);
        g.cpu = 0.2;
        for _ in 0..100 {
            g.start_delay.record(Duration::from_millis(20));
        }
        g.judge();
        assert_eq!(g.saturated, [Saturation::StartDelay]);
        g.start_delay = Histo::new();
        g.start_delay.record(Duration::from_micros(50));
        g.judge();
        assert!(!g.is_saturated());
    }
}
