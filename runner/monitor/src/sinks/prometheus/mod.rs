//! The `prometheus` sink: the metrics listed in the README, served at
//! `/metrics` in the exposition format (by `waymark serve`'s listener, or the
//! sink's own `listen`).

pub mod classic;
mod config;
pub mod remote_write;
pub(crate) use config::read;
pub use config::*;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Deliver, DeliverError, Delivery};
use waymark_record::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JourneyLabels {
    journey: String,
    location: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    journey: String,
    location: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    journey: String,
    step: String,
    phase: String,
    location: String,
    /// `ok` for a response, else the error's kind: failures keep their
    /// phases out of the success latencies.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    journey: String,
    check: String,
    location: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    journey: String,
    host: String,
    location: String,
}

type PhaseFamily = Family<PhaseLabels, Histogram, fn() -> Histogram>;

fn phase_histogram() -> Histogram {
    // Seconds: 1 ms to 10 s, the range of a request phase.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    success: Family<JourneyLabels, Gauge>,
    duration: Family<JourneyLabels, Gauge<f64, AtomicU64>>,
    runs: Family<RunLabels, Counter>,
    phases: PhaseFamily,
    check_failures: Family<CheckLabels, Counter>,
    cert_not_after: Family<CertLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every metric declared.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let success = Family::<JourneyLabels, Gauge>::default();
        let duration = Family::<JourneyLabels, Gauge<f64, AtomicU64>>::default();
        let runs = Family::<RunLabels, Counter>::default();
        let phases: PhaseFamily = Family::new_with_constructor(phase_histogram);
        let check_failures = Family::<CheckLabels, Counter>::default();
        let cert_not_after = Family::<CertLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "waymark_journey_success",
            "1 if the journey's last run passed, else 0",
            success.clone(),
        );
        registry.register(
            "waymark_journey_duration_seconds",
            "Duration of the journey's last run",
            duration.clone(),
        );
        // The crate adds the `_total` suffix of counters.
        registry.register(
            "waymark_journey_runs",
            "Runs by final status (retries count once)",
            runs.clone(),
        );
        registry.register(
            "waymark_http_phase_duration_seconds",
            "Request phases (resolve, connect, tls, processing, transfer, total) by result: ok, or the error kind of a failed request for the phases it got through",
            phases.clone(),
        );
        registry.register(
            "waymark_check_failures",
            "Failed checks of deciding attempts",
            check_failures.clone(),
        );
        registry.register(
            "waymark_tls_cert_not_after_timestamp_seconds",
            "Expiry of the server certificate last seen, Unix seconds",
            cert_not_after.clone(),
        );
        Metrics {
            registry,
            success,
            duration,
            runs,
            phases,
            check_failures,
            cert_not_after,
        }
    }

    /// The exposition of the journeys' metrics alone (see [`exposition`]).
    pub fn exposition(&self, accept: &str) -> (&'static str, String) {
        exposition(&[&self.registry], accept)
    }

    /// The registry, for [`exposition`] beside others.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Takes one attempt into account.
    pub fn observe(&self, d: &Delivery) {
        let r = &d.record;
        for step in &r.steps {
            for req in &step.requests {
                let observe = |phase: &str, d: std::time::Duration, result: &str| {
                    self.phases
                        .get_or_create(&PhaseLabels {
                            journey: r.journey.clone(),
                            step: step.name.clone(),
                            phase: phase.into(),
                            location: r.location.clone(),
                            result: result.into(),
                        })
                        .observe(d.as_secs_f64());
                };
                match &req.error {
                    None => {
                        for (phase, d) in req.timings.named() {
                            observe(phase, d, "ok");
                        }
                    }
                    // Only what the request got through: a phase it never
                    // reached is absent, not a zero.
                    Some(e) => {
                        if let Some(failed_in) = e.phase {
                            for (phase, d) in req.timings.reached(failed_in) {
                                observe(phase.as_str(), d, e.kind.as_str());
                            }
                            observe("total", req.timings.total, e.kind.as_str());
                        }
                    }
                }
                if let Some(tls) = &req.tls
                    && let Some(t) = tls.cert_not_after
                    && let Ok(host) = url::Url::parse(&req.url)
                {
                    let secs = t
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    self.cert_not_after
                        .get_or_create(&CertLabels {
                            journey: r.journey.clone(),
                            host: host.host_str().unwrap_or("").to_string(),
                            location: r.location.clone(),
                        })
                        .set(secs);
                }
            }
        }
        if !d.final_attempt {
            return;
        }
        let jl = JourneyLabels {
            journey: r.journey.clone(),
            location: r.location.clone(),
        };
        self.success
            .get_or_create(&jl)
            .set(i64::from(r.status == Status::Pass));
        self.duration
            .get_or_create(&jl)
            .set(r.duration.as_secs_f64());
        self.runs
            .get_or_create(&RunLabels {
                journey: r.journey.clone(),
                location: r.location.clone(),
                status: r.status.as_str().into(),
            })
            .inc();
        for c in r
            .steps
            .iter()
            .flat_map(|s| s.checks.iter())
            .filter(|c| !c.passed)
        {
            self.check_failures
                .get_or_create(&CheckLabels {
                    journey: r.journey.clone(),
                    check: c.name.clone(),
                    location: r.location.clone(),
                })
                .inc();
        }
    }
}

/// One exposition of `registries` for a scraper that sent `accept`:
/// OpenMetrics when it asks for it (as Prometheus does), else the classic
/// text format, which every other reader of `/metrics` understands.
pub fn exposition(registries: &[&Registry], accept: &str) -> (&'static str, String) {
    if accept.contains("application/openmetrics-text") {
        let mut out = String::new();
        let ok = registries
            .iter()
            .try_for_each(|r| prometheus_client::encoding::text::encode_registry(&mut out, r))
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out));
        if ok.is_err() {
            out.clear();
        }
        return (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            out,
        );
    }
    let families: Vec<_> = registries
        .iter()
        .flat_map(|r| {
            prometheus_client::encoding::prometheus_protobuf::encode(r).unwrap_or_default()
        })
        .collect();
    (classic::CONTENT_TYPE, classic::encode(&families))
}

/// The sink's side: records in, metrics updated, and pushed by remote
/// write when configured.
pub struct Updater {
    metrics: Arc<Metrics>,
    remote: Option<(String, ureq::Agent)>,
    every: std::time::Duration,
    last_push: Option<std::time::Instant>,
    dirty: bool,
}

impl Updater {
    /// Updates `metrics`; with `remote_write`, pushes them every `every`.
    pub fn new(
        metrics: Arc<Metrics>,
        remote_write: Option<String>,
        every: std::time::Duration,
    ) -> Updater {
        let remote =
            remote_write.map(|url| (url, super::http_agent(std::time::Duration::from_secs(10))));
        Updater {
            metrics,
            remote,
            every,
            last_push: None,
            dirty: false,
        }
    }

    fn push(&mut self) -> Result<(), DeliverError> {
        let Some((url, agent)) = &self.remote else {
            return Ok(());
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let families =
            prometheus_client::encoding::prometheus_protobuf::encode(&self.metrics.registry)
                .map_err(|_| DeliverError::Metrics)?;
        let req = remote_write::from_families(&families, "waymark", now_ms);
        if req.timeseries.is_empty() {
            return Ok(());
        }
        let body = remote_write::encode(&req)?;
        let sent = super::post(
            agent,
            url,
            &[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "snappy"),
                ("x-prometheus-remote-write-version", "0.1.0"),
            ],
            &body,
        );
        self.last_push = Some(std::time::Instant::now());
        if sent.is_ok() {
            self.dirty = false;
        }
        sent
    }
}

impl Deliver for Updater {
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        for d in batch {
            self.metrics.observe(d);
        }
        self.dirty = true;
        Ok(())
    }

    fn tick(&mut self) -> Result<(), DeliverError> {
        if self.remote.is_some() && self.last_push.is_none_or(|t| t.elapsed() >= self.every) {
            return self.push();
        }
        Ok(())
    }

    /// The last values go out before the process ends.
    fn flush(&mut self) -> Result<(), DeliverError> {
        if self.dirty {
            return self.push();
        }
        Ok(())
    }

    fn max_batch(&self) -> usize {
        1000
    }
}
