//! Waiting for an open-model arrival's intended start.
//!
//! tokio's timers tick in whole milliseconds and round a deadline up to the
//! next tick, so an arrival that waited for its own instant would start up to
//! a millisecond late; the open model measures latency from the intended
//! start (coordinated omission), so that lateness would read as the
//! server's: a 0.1 ms nginx read 1.3 ms at the median at 5,000/s. Waking a
//! thread for each arrival at its exact instant instead (a timerfd) was
//! measured too: right on time, but each wake-up costs this 2-core VM about
//! 44 µs of CPU, so 10,000/s took 97 % of a core against 53 %.
//!
//! So an arrival is released at the millisecond tick *before* its instant,
//! with the others of that millisecond, and the iteration's latency counts
//! from whichever came first, the intended start or the actual one: an
//! arrival that starts a little early is measured from when it started, one
//! that starts late (the generator or its slots behind) from when it should
//! have.

use std::time::{Duration, Instant};

/// How early an arrival may be released: one tick of tokio's timer.
pub(crate) const EARLY: Duration = Duration::from_millis(2);

/// Returns when an arrival intended for `at` may start: within [`EARLY`]
/// before it, at once when that time has come.
pub(crate) async fn until(at: Instant) {
    let Some(wake) = at.checked_sub(EARLY) else {
        return;
    };
    if wake <= Instant::now() {
        return;
    }
    tokio::time::sleep_until(wake.into()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrival_is_released_no_more_than_a_tick_early() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for _ in 0..20 {
                let at = Instant::now() + Duration::from_micros(2_500);
                until(at).await;
                let now = Instant::now();
                assert!(now + EARLY >= at, "released {:?} early", at - now);
            }
            // A past instant returns at once.
            let t = Instant::now();
            until(t - Duration::from_millis(5)).await;
            assert!(t.elapsed() < Duration::from_secs(1));
        });
    }
}
