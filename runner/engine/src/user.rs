//! A virtual user of `waymark load`: runs a journey again and again, with a
//! fresh instance each time or, when asked, the same one.

use std::time::{Instant, SystemTime};

use wasmtime::Store;

use crate::bindings::Journey;
use crate::host::RunState;
use crate::outcome::{Observer, Verdict, observe};
use crate::runtime::{LoadedJourney, RunOptions, Runtime};
use waymark_record::{Redactor, Status};

/// How a virtual user gets the instance each run calls `run` on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceMode {
    /// A new instance per run: no state carries from one run to the next
    /// (the journey's documented semantics).
    #[default]
    Fresh,
    /// One instance per user, as k6's virtual users keep their JavaScript
    /// runtime: `run` is called again in it, and its memory and globals
    /// carry over. Only for journeys written to allow that. A run that
    /// traps, times out or exceeds its memory is not trusted again: the
    /// next one starts a new instance.
    Reuse,
}

impl InstanceMode {
    /// `fresh` or `reuse`, as reports say it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceMode::Fresh => "fresh",
            InstanceMode::Reuse => "reuse",
        }
    }
}

/// One virtual user: its open connections (kept across runs either way)
/// and, in [`InstanceMode::Reuse`], its instance.
#[derive(Default)]
pub struct VirtualUser {
    mode: InstanceMode,
    conns: waymark_http::Connections,
    kept: Option<(Store<RunState>, Journey)>,
    /// The forms of the secrets it redacts, found once for the secrets they
    /// were found for rather than on every run.
    redactor: Option<(Vec<String>, Redactor)>,
}

impl VirtualUser {
    /// A user with nothing open yet.
    pub fn new(mode: InstanceMode) -> Self {
        VirtualUser {
            mode,
            ..Default::default()
        }
    }

    /// The redactor for `opts`' secrets, taken out of the user (put it
    /// back when done); found again only when the secrets change.
    fn take_redactor(&mut self, opts: &RunOptions) -> (Vec<String>, Redactor) {
        match self.redactor.take() {
            Some((secrets, r))
                if secrets.len() == opts.secrets.len()
                    && opts.secrets.values().all(|v| secrets.contains(v)) =>
            {
                (secrets, r)
            }
            _ => {
                let secrets: Vec<String> = opts.secrets.values().cloned().collect();
                let r = Redactor::new(&secrets);
                (secrets, r)
            }
        }
    }

    /// Runs `journey` once under `opts`' limits, telling `observer` its
    /// steps; no record is built. A connection kept from the user's
    /// previous run shows resolve, connect and tls of 0.
    pub async fn run(
        &mut self,
        runtime: &Runtime,
        journey: &LoadedJourney,
        opts: &RunOptions,
        observer: &mut dyn Observer,
    ) -> Verdict {
        let (secrets, redactor) = self.take_redactor(opts);
        let verdict = match self.mode {
            InstanceMode::Fresh => {
                let conns = std::mem::take(&mut self.conns);
                let (verdict, conns) = runtime
                    .observe_reusing(journey, opts, conns, observer, &redactor)
                    .await;
                self.conns = conns;
                verdict
            }
            InstanceMode::Reuse => {
                self.run_kept(runtime, journey, opts, observer, &redactor)
                    .await
            }
        };
        self.redactor = Some((secrets, redactor));
        verdict
    }

    async fn run_kept(
        &mut self,
        runtime: &Runtime,
        journey: &LoadedJourney,
        opts: &RunOptions,
        observer: &mut dyn Observer,
        redactor: &Redactor,
    ) -> Verdict {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let kept = self.kept.take();
        let fresh = kept.is_none();
        let (mut store, instance) = match kept {
            Some((mut store, instance)) => {
                store.data_mut().next_run(
                    &journey.name,
                    t0,
                    waymark_record::units::later(t0, opts.timeout),
                );
                (store, Some(instance))
            }
            None => {
                let conns = std::mem::take(&mut self.conns);
                (
                    runtime.new_store(journey, opts, started_at, t0, conns),
                    None,
                )
            }
        };
        let outcome = tokio::time::timeout(opts.timeout, async {
            let instance = match instance {
                Some(i) => i,
                None => journey.pre.instantiate_async(&mut store).await?,
            };
            let r = instance.call_run(&mut store).await;
            r.map(|r| (r, instance))
        })
        .await;
        // Only an instance whose run came back (passed or failed) is sound
        // to call again; the others are dropped with their store.
        let (outcome, instance) = match outcome {
            Ok(Ok((r, instance))) => (Ok(Ok(r)), Some(instance)),
            Ok(Err(e)) => (Ok(Err(e)), None),
            Err(e) => (Err(e), None),
        };
        let state = store.data_mut();
        state.stop_wasi_http();
        let verdict = observe(opts, state, outcome, observer, redactor);
        let sound =
            matches!(verdict.status, Status::Pass | Status::Fail) && !state.wasi_http_in_flight();
        match instance {
            Some(i) if sound => self.kept = Some((store, i)),
            _ => {
                if !fresh {
                    tracing::debug!(journey = %journey.name, "a kept instance is dropped after a stopped run");
                }
                self.conns = store.into_data().take_connections();
            }
        }
        verdict
    }
}
