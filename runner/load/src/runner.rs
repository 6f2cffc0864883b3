//! The closed and open models: virtual users, the arrival timetable, and
//! the steps of the ramp.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::collect::{Budget, Collector};
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
        collector: Collector {
            steps: Mutex::new(Vec::new()),
            runtimes: workers.handles().to_vec(),
        },
        budget: Budget::new(budget_limit),
    });
    let interrupted = AtomicBool::new(false);
    let steps = plan.model.steps();

    match &plan.model {
        Model::Closed { users } => {
            let (ctl_tx, _) = watch::channel(Ctl {
                step: 0,
                users: 0,
                stop: false,
            });
            let mut vus = JoinSet::new();
            let mut spawned = 0u32;
            for (i, &total_users) in users.iter().enumerate() {
                let users = u32::try_from(plan.shard.share(u64::from(total_users))).unwrap_or(0);
                let start = Instant::now();
                shared.budget.reset();
                shared.collector.begin(
                    blank_step(i, Some(users), None, plan.warmup),
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
                let cut = wait_step(&shared, plan, steps, start, &mut stop, on_tick).await;
                shared.collector.end(i, Instant::now());
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
            let slots = Arc::new(Semaphore::new(*max_vus as usize));
            // Idle users, each with its open connections (and its instance
            // under --reuse-instance), taken by the next arrival.
            let pool: Arc<Mutex<Vec<VirtualUser>>> = Arc::new(Mutex::new(Vec::new()));
            let mode = plan.instances;
            let mut tasks = JoinSet::new();
            'steps: for (i, &total_rate) in rates.iter().enumerate() {
                let rate = total_rate / f64::from(plan.shard.count);
                let start = Instant::now();
                shared.budget.reset();
                shared.collector.begin(
                    blank_step(i, None, Some(rate), plan.warmup),
                    start,
                    plan,
                    true,
                );
                let end = start + plan.step_duration;
                let interval = Duration::from_secs_f64(1.0 / rate);
                let mut next_tick = Instant::now();
                let mut k: u32 = 0;
                loop {
                    let intended = start + interval * k;
                    if intended >= end || shared.budget.exhausted() {
                        break;
                    }
                    if Instant::now() >= next_tick {
                        if let Some(l) = shared.collector.live(steps, plan.step_duration) {
                            on_tick(&l);
                        }
                        next_tick = Instant::now() + Duration::from_millis(250);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(intended.into()) => {}
                        _ = stop.wait_for(|s| *s) => {
                            interrupted.store(true, Ordering::SeqCst);
                            shared.collector.end(i, Instant::now());
                            mark_cut(&shared, i);
                            break 'steps;
                        }
                    }
                    let permit = match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => {
                            shared.collector.waited(i);
                            tokio::select! {
                                p = slots.clone().acquire_owned() => match p {
                                    Ok(p) => p,
                                    Err(_) => break 'steps,
                                },
                                _ = stop.wait_for(|s| *s) => {
                                    interrupted.store(true, Ordering::SeqCst);
                                    shared.collector.end(i, Instant::now());
                                    mark_cut(&shared, i);
                                    break 'steps;
                                }
                            }
                        }
                    };
                    if !shared.budget.take() {
                        break;
                    }
                    let ready = Instant::now();
                    let shared = shared.clone();
                    let pool = pool.clone();
                    let arrival = k as usize;
                    workers.spawn(&mut tasks, arrival, async move {
                        let mut user = pool
                            .lock()
                            .ok()
                            .and_then(|mut p| p.pop())
                            .unwrap_or_else(|| VirtualUser::new(mode));
                        let started = Instant::now();
                        let t = &shared.target;
                        let rec = user.run(&t.runtime, &t.journey, &t.opts).await;
                        let ended = Instant::now();
                        if let Ok(mut p) = pool.lock() {
                            p.push(user);
                        }
                        shared
                            .collector
                            .record(i, Some(ready), intended, started, ended, &rec);
                        shared.budget.finished();
                        drop(permit);
                    });
                    k = k.saturating_add(1);
                    // Finished tasks are reaped as we go, keeping the set small.
                    while tasks.try_join_next().is_some() {}
                }
                shared.collector.end(i, end.min(Instant::now()));
            }
            if interrupted.load(Ordering::SeqCst) {
                tasks.abort_all();
            } else {
                // Journeys that arrived in the last step finish and count;
                // their own timeout bounds the wait.
                let grace = shared.target.opts.timeout + Duration::from_secs(1);
                let drain = async { while tasks.join_next().await.is_some() {} };
                if tokio::time::timeout(grace, drain).await.is_err() {
                    tasks.abort_all();
                }
            }
            while tasks.join_next().await.is_some() {}
        }
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
        steps: shared.collector.finish(),
        total: Counts::default(),
        usl: None,
        usl_refused: None,
        slo: Vec::new(),
    };
    report.analyse();
    Ok(report)
}

fn blank_step(index: usize, users: Option<u32>, rate: Option<f64>, warmup: Duration) -> StepResult {
    StepResult {
        index,
        users,
        rate,
        warmup_s: warmup.as_secs_f64(),
        measured_s: 0.0,
        duration_s: 0.0,
        cut_short: false,
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
    if let Some(a) = shared.collector.lock().get_mut(step) {
        a.result.cut_short = true;
    }
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
    let end = start + plan.step_duration;
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

/// One virtual user of the closed model: loops while the step wants it.
async fn closed_user(
    id: u32,
    mode: InstanceMode,
    shared: Arc<Shared>,
    mut ctl: watch::Receiver<Ctl>,
) {
    let mut user = VirtualUser::new(mode);
    // When this user's previous iteration ended: it was ready from then.
    let mut ready: Option<Instant> = None;
    loop {
        let now = *ctl.borrow_and_update();
        if now.stop {
            return;
        }
        if id >= now.users || !shared.budget.take() {
            // Not wanted in this step, or its budget is spent: wait for the next.
            ready = None;
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        }
        let t = &shared.target;
        let started = Instant::now();
        let rec = user.run(&t.runtime, &t.journey, &t.opts).await;
        let ended = Instant::now();
        shared
            .collector
            .record(now.step, ready, started, started, ended, &rec);
        ready = Some(ended);
        shared.budget.finished();
        // A journey that never waits (no request, no sleep) would otherwise
        // hold its worker forever, and the timers ending the step would fire late.
        tokio::task::consume_budget().await;
    }
}
