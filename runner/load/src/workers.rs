//! The generator's threads: one single-threaded async runtime per core, each
//! holding its share of the virtual users.
//!
//! On one shared work-stealing runtime a user's task, its connection's task
//! and the timer that wakes it hop between threads; every hop is a futex
//! wake and a context switch, which on loopback cost about as much as the
//! request. Pinning each user (and the connection tasks it spawns) to one
//! thread keeps its wake-ups local, as wrk's threads do. Measured with the
//! load bench against nginx (3 runs each): 8 users 27-29k → 38-40k
//! requests/s, 32 users 32-37k → 46-49k. One user alone is slower (20k →
//! 8.5k): there each request now waits for its one thread to wake up, as
//! wrk's and oha's do (both about 13k there).

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};

/// The threads could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the load generator's threads: {0}")]
pub struct WorkersError(#[from] std::io::Error);

/// N threads, each running one current-thread runtime until dropped.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Dropping these ends the threads' `block_on`, and so their runtimes.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    pub(crate) fn start(threads: usize) -> Result<Self, WorkersError> {
        let mut handles = Vec::new();
        let mut stop = Vec::new();
        for i in 0..threads.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("waymark-load-{i}"))
                .spawn(move || {
                    let _ = rt.block_on(rx);
                    // Users still running are cancelled, not waited for.
                    rt.shutdown_timeout(Duration::from_millis(100));
                })?;
        }
        Ok(Workers {
            handles,
            _stop: stop,
        })
    }

    /// Runs `fut` on the thread chosen by `n` (round robin), in `set`.
    pub(crate) fn spawn<F, T>(&self, set: &mut JoinSet<T>, n: usize, fut: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let h = &self.handles[n % self.handles.len()];
        set.spawn_on(fut, h)
    }

    /// The threads' runtimes.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }
}
