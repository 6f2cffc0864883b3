//! The runner's own metrics on `/metrics` (and sent by the otlp sink),
//! beside the journeys' (which the prometheus sink keeps): how late runs start, what is in flight, ticks
//! skipped or missed, each sink's deliveries and queue, the history's
//! batches. Counters that already exist as atomics (a sink's) are read at
//! scrape time rather than kept twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::sinks::SinkStats;

/// Each sink's name and counters.
type SinkList = Arc<Mutex<Vec<(String, Arc<SinkStats>)>>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TickLabels {
    journey: String,
    /// `overlap`: the previous run was still going; `missed`: the process
    /// could not act on the tick in time (paused, overloaded).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    /// `I/N`.
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    outcome: &'static str,
}

/// Why a tick came and went without a run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Skip {
    /// The journey's previous run was still going.
    Overlap,
    /// The tick passed while the process could not act on it.
    Missed,
}

/// The runner's metrics, shared by the scheduler, the runs, the history
/// writer and `/metrics`.
pub(crate) struct Telemetry {
    registry: Registry,
    sinks: SinkList,
    lag: Histogram,
    /// Runs going on now: the service counts them here, and `/metrics`
    /// reads them at scrape time.
    in_flight: Arc<AtomicUsize>,
    skipped: Family<TickLabels, Counter>,
    pub(crate) store_batch: Histogram,
    store_records: Family<StoreLabels, Counter>,
    store_queued: Gauge,
    shard: Family<ShardLabels, Gauge>,
    shard_journeys: Family<ShardLabels, Gauge>,
    shard_live: Family<ShardLabels, Gauge>,
    orphans: Gauge,
    /// The split the shard series above were last set for (index, count).
    split: Mutex<Option<(u32, u32)>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Telemetry {
    /// Every metric declared; the sinks' counters join with [`Telemetry::add_sinks`].
    pub(crate) fn new() -> Telemetry {
        let mut registry = Registry::default();
        let lag = Histogram::new(seconds_buckets());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let skipped = Family::<TickLabels, Counter>::default();
        let store_batch = Histogram::new(seconds_buckets());
        let store_records = Family::<StoreLabels, Counter>::default();
        let store_queued = Gauge::default();
        registry.register(
            "waymark_schedule_lag_seconds",
            "How late runs started against their due time (jitter excluded), waiting for a permit included",
            lag.clone(),
        );
        registry.register_collector(Box::new(InFlight(in_flight.clone())));
        registry.register(
            "waymark_ticks_skipped",
            "Ticks that came and went without a run, by journey and reason: overlap (the previous run was still going) or missed (the process could not act in time)",
            skipped.clone(),
        );
        registry.register(
            "waymark_store_batch_duration_seconds",
            "Time to write one batch of records to the history",
            store_batch.clone(),
        );
        registry.register(
            "waymark_store_records",
            "Records the history writer handled, by outcome: written (to the database, from the queue or the spool), spooled (kept on disk while the database is unreachable) or lost (neither)",
            store_records.clone(),
        );
        let sinks = Arc::new(Mutex::new(Vec::new()));
        registry.register(
            "waymark_store_queued_records",
            "Records waiting for the history writer",
            store_queued.clone(),
        );
        registry.register_collector(Box::new(SinkCollector {
            sinks: sinks.clone(),
        }));
        let info = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "waymark_build_info",
            "Always 1; the version in a label",
            info,
        );
        let shard = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "waymark_shard",
            "Always 1; this replica's share of the config (I/N) in a label",
            shard.clone(),
        );
        let shard_journeys = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "waymark_shard_journeys",
            "Journeys each shard of the config runs, by shard (every replica reports the whole split)",
            shard_journeys.clone(),
        );
        let shard_live = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "waymark_shard_live",
            "With leases in a shared PostgreSQL history: 1 for each shard whose replica beats and runs its share, 0 for one that stopped, is starting or never came",
            shard_live.clone(),
        );
        let orphans = Gauge::default();
        registry.register(
            "waymark_journeys_without_owner",
            "With leases: journeys whose shard stopped beating and whose lease has not run out yet, so nobody runs them (0 without leases: unknown)",
            orphans.clone(),
        );
        Telemetry {
            shard,
            shard_journeys,
            shard_live,
            orphans,
            split: Mutex::new(None),
            registry,
            sinks,
            lag,
            in_flight,
            skipped,
            store_batch,
            store_records,
            store_queued,
        }
    }

    /// The sinks whose counters to show (they start after the telemetry,
    /// which some of them send).
    pub(crate) fn add_sinks(&self, sinks: impl IntoIterator<Item = (String, Arc<SinkStats>)>) {
        if let Ok(mut s) = self.sinks.lock() {
            s.extend(sinks);
        }
    }

    /// The registry `/metrics` encodes.
    /// The split of the config's journeys over the replicas.
    pub(crate) fn shards(&self, view: &crate::serve::ShardView) {
        // A reload may change the split: the series of the old one go. Only
        // then, as the lease thread and a scrape both refresh these, and a
        // scrape must not find them cleared by the other.
        let split = (view.shard.index, view.shard.count);
        if let Ok(mut last) = self.split.lock()
            && *last != Some(split)
        {
            *last = Some(split);
            self.shard.clear();
            self.shard_journeys.clear();
            self.shard_live.clear();
        }
        let label = |i: usize| ShardLabels {
            shard: format!("{i}/{}", view.shard.count),
        };
        self.shard
            .get_or_create(&label(view.shard.index as usize))
            .set(1);
        let now = std::time::SystemTime::now();
        for (i, n) in view.counts(now).into_iter().enumerate() {
            self.shard_journeys
                .get_or_create(&label(i))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(l) = &view.leases {
            if let Some(st) = l.at(now).standings() {
                for (i, s) in st.iter().enumerate() {
                    self.shard_live
                        .get_or_create(&label(i))
                        .set(i64::from(*s == crate::serve::Standing::Live));
                }
            }
            self.orphans
                .set(i64::try_from(view.orphans(now).len()).unwrap_or(i64::MAX));
        }
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn lag(&self, lag: std::time::Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    /// The count of runs going on now.
    pub(crate) fn in_flight(&self) -> &AtomicUsize {
        &self.in_flight
    }

    pub(crate) fn skipped(&self, journey: &str, why: Skip, n: u64) {
        let reason = match why {
            Skip::Overlap => "overlap",
            Skip::Missed => "missed",
        };
        self.skipped
            .get_or_create(&TickLabels {
                journey: journey.to_string(),
                reason,
            })
            .inc_by(n);
    }

    /// Records handed to the history writer (or, negative, not after all).
    pub(crate) fn store_queued(&self, n: i64) {
        self.store_queued.inc_by(n);
    }

    /// A batch went to the history (or did not).
    /// Records taken off the writer's queue.
    pub(crate) fn store_taken(&self, records: usize) {
        self.store_queued
            .dec_by(i64::try_from(records).unwrap_or(i64::MAX));
    }

    /// A batch the writer committed, and how long it took.
    pub(crate) fn store_written(&self, took: std::time::Duration, records: usize) {
        self.store_batch.observe(took.as_secs_f64());
        self.store_outcome(records, "written");
    }

    /// Records by what became of them: `written`, `spooled` or `lost`.
    pub(crate) fn store_outcome(&self, records: usize, outcome: &'static str) {
        self.store_records
            .get_or_create(&StoreLabels { outcome })
            .inc_by(records as u64);
    }
}

/// `waymark_runs_in_flight`, read at scrape time.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Collector for InFlight {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let n = i64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let gauge = ConstGauge::new(n);
        let m = encoder.encode_descriptor(
            "waymark_runs_in_flight",
            "Runs going on now (retries included)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(m)
    }
}

/// Each sink's counters, read at scrape time.
#[derive(Debug)]
struct SinkCollector {
    sinks: SinkList,
}

impl Collector for SinkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let sinks: Vec<(String, Arc<SinkStats>)> =
            self.sinks.lock().map(|s| s.clone()).unwrap_or_default();
        {
            let mut family = encoder.encode_descriptor(
                "waymark_sink_records",
                "Records per sink by outcome: delivered, spooled (to disk while the sink was down or behind), dropped (lost: queue full without a spool, or the spool could not be written), dead_lettered (refused for good by the receiver), spool_evicted (dropped, oldest first, to keep the spool within spool_max)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (name, s) in &sinks {
                for (outcome, v) in [
                    ("delivered", load(&s.delivered)),
                    ("spooled", load(&s.spooled)),
                    ("dropped", load(&s.dropped)),
                    ("dead_lettered", load(&s.dead_lettered)),
                    ("spool_evicted", load(&s.spool_evicted)),
                ] {
                    let labels = [("sink", name.as_str()), ("outcome", outcome)];
                    ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (metric, help, read) in [
            (
                "waymark_sink_delivery_failures",
                "Delivery attempts per sink that failed",
                (|s: &SinkStats| s.failures.load(Ordering::Relaxed)) as fn(&SinkStats) -> u64,
            ),
            (
                "waymark_sink_retries",
                "Deliveries per sink tried again after a failure that may pass (no answer, 408, 429, 5xx)",
                |s: &SinkStats| s.retries.load(Ordering::Relaxed),
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                metric,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (name, s) in &sinks {
                let labels = [("sink", name.as_str())];
                ConstCounter::new(read(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "waymark_sink_queued_records",
            "Records waiting in each sink's in-memory queue",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (name, s) in &sinks {
            let labels = [("sink", name.as_str())];
            let v = i64::try_from(load(&s.queued)).unwrap_or(i64::MAX);
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
