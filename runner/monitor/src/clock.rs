//! The scheduler's clock: the system's, or one a test (or an embedding
//! program) moves by hand.
//!
//! Only the scheduler reads it: due times, missed ticks and lag. Runs keep
//! real time (their timeouts, the journey's own sleeps and requests), so a
//! test can step the schedule tick by tick while journeys talk to real
//! servers. tokio's paused clock cannot do that: it jumps ahead whenever
//! the runtime waits on a socket, and fires the runs' timeouts early.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// Where the scheduler reads the time.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<watch::Sender<SystemTime>>>,
}

impl Clock {
    /// The system's wall clock (what `waymark serve` uses).
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that stands at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: SystemTime) -> Self {
        Clock {
            manual: Some(Arc::new(watch::Sender::new(start))),
        }
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        match &self.manual {
            Some(m) => *m.borrow(),
            None => SystemTime::now(),
        }
    }

    /// Moves a manual clock `by` forward, waking the scheduler if anything
    /// fell due; false (and nothing moves) for the system clock.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.manual {
            Some(m) => {
                m.send_modify(|t| *t += by);
                true
            }
            None => false,
        }
    }

    /// Waits until the clock reads `at` or later.
    pub(crate) async fn sleep_until(&self, at: SystemTime) {
        match &self.manual {
            Some(m) => {
                let mut rx = m.subscribe();
                // The sender lives as long as this clock does.
                let _ = rx.wait_for(|t| *t >= at).await;
            }
            None => {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved_past_their_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = Clock::manual(start);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(start + Duration::from_secs(2)).await }
        });
        assert!(clock.advance(Duration::from_secs(1)));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(clock.now(), start + Duration::from_secs(2));
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}
