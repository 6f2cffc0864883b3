//! The closed and open models: virtual users, the arrival timetable, and
//! the steps of the ramp.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::collect::{Budget, Collector, Scratch, When};
use crate::workers::{Workers, WorkersError};
use crate::*;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctl {
    step: usize,
    users: u32,
    stop: bool,
}

pub(crate) struct Shared {
    target: Target,
    collector: Collector,
    budget: Budget,
}

/// Runs `plan` against `target`. `stop` turning true (Ctrl-C) ends the run
/// early; what was measured is still reported. `on_tick` gets the live
/// figures about four times a second. Iterations run on threads of their
/// own, one per core this process may use.
pub async fn run(
    target: Target,
    plan: &Plan,
    mut stop: watch::Receiver<bool>,
    on_tick: &(dyn Fn(&Live) + Send + Sync),
) -> Result<LoadReport, WorkersError> {
    let workers = Workers::start(generator::cores() as usize)?;
    let journey = target.journey.name.clone();
    let location = target.opts.location.clone();
    let started_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let budget_limit = plan.iterations.map(|n| plan.shard.share(n));
    let shared = Arc::new(Shared {
        target,
        collector: Collector::new(workers.handles().to_vec()),
        budget: Budget::new(budget_limit),
    });
    let interrupted = AtomicBool::new(false);
    // Each step's measured window on the wall clock, for server-side
    // series (--observe) asked of Prometheus afterwards.
    let mut walls: Vec<[f64; 2]> = Vec::new();
    let unix = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let steps = plan.model.steps() * plan.repeat.max(1) as usize;

    match &plan.model {
        Model::Closed { users } => {
            let (ctl_tx, _) = watch::channel(Ctl {
                step: 0,
                users: 0,
                stop: false,
            });
            let mut vus = JoinSet::new();
            let mut spawned = 0u32;
            for (i, (pass, total_users)) in
                Model::schedule(users, plan.repeat).into_iter().enumerate()
            {
                let users = u32::try_from(plan.shard.share(u64::from(total_users))).unwrap_or(0);
                let start = Instant::now();
                shared.budget.reset(i);
                shared.collector.begin(
                    blank_step(i, pass, Some(users), None, plan.warmup),
                    start,
                    plan,
                    false,
                );
                ctl_tx.send_replace(Ctl {
                    step: i,
                    users,
                    stop: false,
                });
                while spawned < users {
                    let user =
                        closed_user(spawned, plan.instances, shared.clone(), ctl_tx.subscribe());
                    workers.spawn(&mut vus, spawned as usize, user);
                    spawned += 1;
                }
                let wall = unix();
                let cut = wait_step(&shared, plan, steps, start, &mut stop, on_tick).await;
                shared.collector.end(i, Instant::now());
                walls.push([wall + plan.warmup.as_secs_f64(), unix()]);
                if cut {
                    interrupted.store(true, Ordering::SeqCst);
                    mark_cut(&shared, i);
                    break;
                }
            }
            ctl_tx.send_replace(Ctl {
                step: 0,
                users: 0,
                stop: true,
            });
            // Iterations still in flight belong to no measured window.
            vus.abort_all();
            while vus.join_next().await.is_some() {}
        }
        Model::Open { rates, max_vus } => {
            // Never more lanes than --max-vus, so each has a slot and the
            // slots add up to it.
            let n = workers.handles().len().min(*max_vus as usize).max(1);
            // Each thread runs its share of the timetable and of the
            // in-flight limit, and keeps its own idle users (with their
            // connections, and instances under --reuse-instance): an arrival
            // then starts on the thread that timed it, with no hand-over.
            let lanes: Vec<Arc<Lane>> = (0..n)
                .map(|w| {
                    let share = (*max_vus as usize / n) + usize::from(w < *max_vus as usize % n);
                    Arc::new(Lane {
                        slots: Arc::new(Semaphore::new(share.max(1))),
                        idle: Mutex::new(Vec::new()),
                    })
                })
                .collect();
            // The iterations each thread started, kept to be awaited (or
            // cancelled) after the last step.
            let mut in_flight: Vec<JoinSet<()>> = Vec::new();
            for (i, (pass, total_rate)) in
                Model::schedule(rates, plan.repeat).into_iter().enumerate()
            {
                let rate = total_rate / f64::from(plan.shard.count);
                let start = Instant::now();
                shared.budget.reset(i);
                shared.collector.begin(
                    blank_step(i, pass, None, Some(rate), plan.warmup),
                    start,
                    plan,
                    true,
                );
                let timetable = Timetable {
                    step: i,
                    start,
                    end: waymark_record::units::later(start, plan.step_duration),
                    interval: Duration::from_secs_f64(1.0 / rate),
                    lanes: n,
                    mode: plan.instances,
                };
                let wall = unix();
                let mut arrivals = JoinSet::new();
                for (w, lane) in lanes.iter().enumerate() {
                    let fut = arrive(w, timetable, lane.clone(), shared.clone());
                    workers.spawn(&mut arrivals, w, fut);
                }
                let cut = wait_step(&shared, plan, steps, start, &mut stop, on_tick).await;
                if cut {
                    arrivals.abort_all();
                }
                while let Some(r) = arrivals.join_next().await {
                    if let Ok(set) = r {
                        in_flight.push(set);
                    }
                }
                shared.collector.end(i, timetable.end.min(Instant::now()));
                walls.push([wall + plan.warmup.as_secs_f64(), unix()]);
                for set in &mut in_flight {
                    while set.try_join_next().is_some() {}
                }
                if cut {
                    interrupted.store(true, Ordering::SeqCst);
                    mark_cut(&shared, i);
                    break;
                }
            }
            if interrupted.load(Ordering::SeqCst) {
                for set in &mut in_flight {
                    set.abort_all();
                }
            } else {
                // Journeys that arrived in the last step finish and count;
                // their own timeout bounds the wait.
                let grace = shared.target.opts.timeout + Duration::from_secs(1);
                let drain = async {
                    for set in &mut in_flight {
                        while set.join_next().await.is_some() {}
                    }
                };
                if tokio::time::timeout(grace, drain).await.is_err() {
                    for set in &mut in_flight {
                        set.abort_all();
                    }
                }
            }
            for set in &mut in_flight {
                while set.join_next().await.is_some() {}
            }
        }
    }

    let mut steps = shared.collector.finish();
    for (s, w) in steps.iter_mut().zip(walls) {
        // A step cut short in its warm-up has no measured window.
        s.measured_window = (w[0] < w[1]).then_some(w);
    }
    let mut report = LoadReport {
        format: FORMAT,
        waymark_version: env!("CARGO_PKG_VERSION").to_string(),
        journey,
        model: plan.model.name().to_string(),
        shard: plan.shard.label(),
        shards_merged: 1,
        location,
        instances: plan.instances.as_str().to_string(),
        started_at,
        step_duration_s: plan.step_duration.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        interrupted: interrupted.load(Ordering::SeqCst),
        passes: plan.repeat.max(1),
        steps,
        spread: None,
        observed: Vec::new(),
        warnings: Vec::new(),
        total: Counts::default(),
        usl: None,
        usl_refused: None,
        slo: Vec::new(),
    };
    report.analyse();
    Ok(report)
}

fn blank_step(
    index: usize,
    pass: u32,
    users: Option<u32>,
    rate: Option<f64>,
    warmup: Duration,
) -> StepResult {
    StepResult {
        index,
        pass,
        users,
        rate,
        warmup_s: warmup.as_secs_f64(),
        measured_s: 0.0,
        duration_s: 0.0,
        cut_short: false,
        measured_window: None,
        counts: Counts::default(),
        throughput: 0.0,
        request_rate: 0.0,
        mean_concurrency: 0.0,
        waited_for_slot: 0,
        unmeasured: 0,
        generator: generator::Generator::default(),
    }
}

fn mark_cut(shared: &Shared, step: usize) {
    shared.collector.cut_short(step);
}

/// Waits for the closed step to end (its time, or its iteration budget
/// done); true when `stop` came first.
async fn wait_step(
    shared: &Shared,
    plan: &Plan,
    steps: usize,
    start: Instant,
    stop: &mut watch::Receiver<bool>,
    on_tick: &(dyn Fn(&Live) + Send + Sync),
) -> bool {
    let end = waymark_record::units::later(start, plan.step_duration);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let budget_done = shared.budget.all_done.notified();
    tokio::pin!(budget_done);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => return false,
            _ = &mut budget_done => return false,
            _ = stop.wait_for(|s| *s) => return true,
            _ = tick.tick() => {
                if let Some(l) = shared.collector.live(steps, plan.step_duration) {
                    on_tick(&l);
                }
            }
        }
    }
}

/// One thread's part of the open model: its in-flight limit and its idle users.
struct Lane {
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<(VirtualUser, Scratch)>>,
}

/// An open step's arrivals: the k-th is due at `start + k × interval`, and
/// thread `w` of `lanes` takes those with k ≡ w (mod lanes).
#[derive(Clone, Copy)]
struct Timetable {
    step: usize,
    start: Instant,
    end: Instant,
    interval: Duration,
    lanes: usize,
    mode: InstanceMode,
}

/// Starts thread `w`'s arrivals of one open step on time, each in a task
/// of this thread; returns them, still running, when the step's time is up.
async fn arrive(w: usize, tt: Timetable, lane: Arc<Lane>, shared: Arc<Shared>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let mut k = w as u64;
    while let Some(intended) = u32::try_from(k)
        .ok()
        .and_then(|k| tt.interval.checked_mul(k))
        .and_then(|d| tt.start.checked_add(d))
    {
        if intended >= tt.end || shared.budget.exhausted() {
            break;
        }
        crate::pace::until(intended).await;
        let permit = match lane.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                shared.collector.waited(w, tt.step);
                match lane.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        if !shared.budget.take(tt.step) {
            break;
        }
        let ready = Instant::now();
        let shared = shared.clone();
        let lane = lane.clone();
        tasks.spawn(async move {
            let popped = lane.idle.lock().ok().and_then(|mut p| p.pop());
            let (mut user, mut scratch) =
                popped.unwrap_or_else(|| (VirtualUser::new(tt.mode), Scratch::default()));
            let started = Instant::now();
            let t = &shared.target;
            let verdict = user
                .run(&t.runtime, &t.journey, &t.opts, &mut scratch)
                .await;
            let ended = Instant::now();
            let when = When {
                ready: Some(ready),
                intended,
                started,
                ended,
            };
            shared
                .collector
                .record(w, tt.step, when, &verdict, &mut scratch);
            if let Ok(mut p) = lane.idle.lock() {
                p.push((user, scratch));
            }
            shared.budget.finished(tt.step);
            drop(permit);
        });
        k = k.saturating_add(tt.lanes as u64);
        // Finished tasks are reaped as we go, keeping the set small.
        while tasks.try_join_next().is_some() {}
    }
    tasks
}

/// One virtual user of the closed model: loops while the step wants it.
async fn closed_user(
    id: u32,
    mode: InstanceMode,
    shared: Arc<Shared>,
    mut ctl: watch::Receiver<Ctl>,
) {
    let mut user = VirtualUser::new(mode);
    let mut scratch = Scratch::default();
    // When this user's previous iteration ended: it was ready from then.
    let mut ready: Option<Instant> = None;
    loop {
        let now = *ctl.borrow_and_update();
        if now.stop {
            return;
        }
        if id >= now.users || !shared.budget.take(now.step) {
            // Not wanted in this step, or its budget is spent: wait for the next.
            ready = None;
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        }
        let t = &shared.target;
        let started = Instant::now();
        let verdict = user
            .run(&t.runtime, &t.journey, &t.opts, &mut scratch)
            .await;
        let ended = Instant::now();
        let when = When {
            ready,
            intended: started,
            started,
            ended,
        };
        shared
            .collector
            .record(id as usize, now.step, when, &verdict, &mut scratch);
        ready = Some(ended);
        shared.budget.finished(now.step);
        // A journey that never waits (no request, no sleep) would otherwise
        // hold its worker forever, and the timers ending the step would fire late.
        tokio::task::consume_budget().await;
    }
}
