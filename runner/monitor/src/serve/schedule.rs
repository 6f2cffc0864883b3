//! The schedule: every journey's next tick in one heap, jitter, and the
//! loop that dispatches each tick when it comes due.

use super::*;

/// One heap entry: when, which slot, and the tick it stands for (the due
/// time before jitter).
type Due = Reverse<(SystemTime, usize, SystemTime)>;

pub(super) struct Slot {
    pub(super) prepared: Arc<Prepared>,
    pub(super) state: Arc<JourneyState>,
}

pub(super) fn jittered(tick: SystemTime, jitter: Duration) -> SystemTime {
    if jitter.is_zero() {
        return tick;
    }
    waymark_record::units::later_wall(tick, jitter.mul_f64(rand::random::<f64>()))
}

/// Builds the slots and the heap for `plan`, keeping each journey's state
/// (by name) and, when its schedule did not change, its next tick.
pub(super) fn arrange(
    plan: &Plan,
    old_slots: &[Slot],
    old_ticks: &HashMap<String, SystemTime>,
    now: SystemTime,
) -> (Vec<Slot>, BinaryHeap<Due>) {
    let by_name: HashMap<&str, &Slot> = old_slots
        .iter()
        .map(|s| (s.prepared.config.name.as_str(), s))
        .collect();
    let mut slots = Vec::with_capacity(plan.journeys.len());
    let mut heap = BinaryHeap::with_capacity(plan.journeys.len());
    for p in &plan.journeys {
        let name = p.config.name.as_str();
        let old = by_name.get(name);
        let state = old.map_or_else(|| Arc::new(JourneyState::default()), |s| s.state.clone());
        let kept = old
            .filter(|s| s.prepared.config.schedule == p.config.schedule)
            .and_then(|_| old_ticks.get(name).copied());
        let tick = kept.or_else(|| p.config.schedule.next_after(now, name));
        if let Some(tick) = tick {
            state.next_due_ms.store(
                tick.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                Ordering::Relaxed,
            );
            heap.push(Reverse((
                jittered(tick, p.config.jitter),
                slots.len(),
                tick,
            )));
        }
        slots.push(Slot {
            prepared: p.clone(),
            state,
        });
    }
    (slots, heap)
}

pub(super) fn publish(shared: &Shared, slots: &[Slot]) {
    if let Ok(mut s) = shared.states.lock() {
        *s = slots
            .iter()
            .map(|s| (s.prepared.clone(), s.state.clone()))
            .collect();
    }
    shared.generation.fetch_add(1, Ordering::SeqCst);
}

/// The scheduler: one task, a heap of due times. It wakes at least every
/// second so `/healthz` can tell it is alive.
pub(super) async fn schedule_loop(
    shared: Arc<Shared>,
    mut plan: Plan,
    mut slots: Vec<Slot>,
    mut heap: BinaryHeap<Due>,
    mut control: mpsc::Receiver<Control>,
) {
    loop {
        let now = shared.clock.now();
        shared.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        while let Some(Reverse((at, idx, tick))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            let slot = &slots[idx];
            let name = slot.prepared.config.name.as_str();
            // With leases, each replica decides from the tick's due time, so
            // all of them decide alike about the same tick.
            let here = shared.runs_here(name, tick);
            if here {
                dispatch(&shared, slot, at);
            }
            // The next tick after now, not after the last one: ticks missed
            // while the process was paused are counted, not replayed.
            let schedule = &slot.prepared.config.schedule;
            let mut next = schedule.next_after(tick, name);
            let mut missed = 0u64;
            while let Some(n) = next
                && n <= now
            {
                missed += 1;
                if missed > 1_000 {
                    next = schedule.next_after(now, name);
                    break;
                }
                next = schedule.next_after(n, name);
            }
            if missed > 0 && here {
                shared.skipped(name, &slot.state, Skip::Missed, missed);
            }
            if let Some(n) = next {
                slot.state.next_due_ms.store(
                    n.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    Ordering::Relaxed,
                );
                heap.push(Reverse((jittered(n, slot.prepared.config.jitter), idx, n)));
            }
        }
        let next = heap.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            _ = async {
                match next {
                    Some(at) => shared.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            // The heartbeat goes on whatever the clock does.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            msg = control.recv() => match msg {
                Some(Control::Reload(new_plan, done)) => {
                    let ticks: HashMap<String, SystemTime> = heap
                        .iter()
                        .map(|Reverse((_, idx, tick))| (slots[*idx].prepared.config.name.clone(), *tick))
                        .collect();
                    let new_plan = *new_plan;
                    apply_runner(&shared, &plan, &new_plan);
                    let (s, h) = arrange(&new_plan, &slots, &ticks, shared.clock.now());
                    slots = s;
                    heap = h;
                    publish(&shared, &slots);
                    plan = new_plan;
                    tracing::debug!(journeys = slots.len(), "scheduler swapped in the new config");
                    let _ = done.send(());
                }
                Some(Control::Stop) | None => break,
            }
        }
    }
}
