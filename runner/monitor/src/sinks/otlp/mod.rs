//! The `otlp` sink: each attempt as one trace, and its outcome as metrics,
//! over OTLP/HTTP in protobuf (the message types of `opentelemetry-proto`).
//!
//! The trace id is the one the run's `traceparent` headers carried, and a
//! request's span id is the one its `traceparent` named, so the server's own
//! spans hang under ours. Spans: the run (root), a span per step, a span per
//! request with the phases as `waymark.phase.*_ms` attributes; checks are
//! events on their step's span.
//!
//! Under `waymark serve` it also sends the runner's own metrics (those of
//! `/metrics` that are not the journeys') every 15 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;

use super::{Deliver, DeliverError, Delivery};
mod config;
mod runner;
pub(crate) use config::read;
pub use config::*;
use waymark_record::serde_time::as_millis as ms;
use waymark_record::{RunRecord, Status as RunStatus};

pub struct Otlp {
    cfg: OtlpConfig,
    agent: ureq::Agent,
    /// Cumulative runs per (journey, location, status), and since when.
    runs: HashMap<(String, String, String), u64>,
    start: u64,
    /// The runner's own metrics, sent every [`RUNNER_EVERY`] under serve.
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    last_runner: Option<std::time::Instant>,
    /// The location of the records seen: the runner's resource.
    location: Option<String>,
}

/// How often the runner's own metrics go out.
const RUNNER_EVERY: Duration = Duration::from_secs(15);

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn f(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn random_id(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn hex_id(h: Option<&str>, n: usize) -> Option<Vec<u8>> {
    let v = hex::decode(h?).ok()?;
    (v.len() == n && v.iter().any(|b| *b != 0)).then_some(v)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        message: message.to_string(),
        code: status::StatusCode::Error as i32,
    })
}

/// The spans of one record, all in one trace.
pub fn spans(r: &RunRecord) -> Vec<Span> {
    let start = nanos(r.started_at);
    let trace_id = r
        .steps
        .iter()
        .flat_map(|s| s.requests.iter())
        .find_map(|q| hex_id(q.trace_id.as_deref(), 16))
        .unwrap_or_else(|| random_id(16));
    let root_id = random_id(8);
    let mut root = Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: r.journey.clone(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(ns(r.duration)),
        attributes: vec![
            s("waymark.journey", r.journey.clone()),
            s("waymark.run_id", r.run_id.clone()),
            i("waymark.attempt", i64::from(r.attempt)),
            s("waymark.status", r.status.as_str()),
            s("waymark.location", r.location.clone()),
        ],
        ..Default::default()
    };
    if let Some(e) = &r.error {
        root.attributes
            .push(s("waymark.error.kind", e.kind.as_str()));
        root.status = error_status(&e.message);
    } else {
        root.status = Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        });
    }
    let mut out = vec![root];
    for step in &r.steps {
        let step_id = random_id(8);
        let step_start = start.saturating_add(ns(step.start));
        let mut sp = Span {
            trace_id: trace_id.clone(),
            span_id: step_id.clone(),
            parent_span_id: root_id.clone(),
            name: step.name.clone(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: step_start,
            end_time_unix_nano: step_start.saturating_add(ns(step.duration)),
            attributes: vec![s("waymark.step.status", step.status.as_str())],
            ..Default::default()
        };
        if step.status != RunStatus::Pass {
            sp.status = error_status(&format!("step {}", step.status.as_str()));
        }
        for c in &step.checks {
            let mut attrs = vec![
                s("waymark.check.name", c.name.clone()),
                b("waymark.check.passed", c.passed),
            ];
            if let Some(d) = &c.detail {
                attrs.push(s("waymark.check.detail", d.clone()));
            }
            sp.events.push(span::Event {
                time_unix_nano: sp.end_time_unix_nano,
                name: "check".into(),
                attributes: attrs,
                ..Default::default()
            });
        }
        out.push(sp);
        for q in &step.requests {
            let qs = start.saturating_add(ns(q.start));
            let t = &q.timings;
            let mut attrs = vec![
                s("http.request.method", q.method.clone()),
                s("url.full", q.url.clone()),
                f("waymark.phase.resolve_ms", ms(t.resolve)),
                f("waymark.phase.connect_ms", ms(t.connect)),
                f("waymark.phase.tls_ms", ms(t.tls)),
                f("waymark.phase.processing_ms", ms(t.processing)),
                f("waymark.phase.transfer_ms", ms(t.transfer)),
                f("waymark.phase.total_ms", ms(t.total)),
                i("waymark.bytes_received", q.bytes_received as i64),
            ];
            if let Some(code) = q.status {
                attrs.push(i("http.response.status_code", i64::from(code)));
            }
            let mut rs = Span {
                trace_id: trace_id.clone(),
                span_id: hex_id(q.span_id.as_deref(), 8).unwrap_or_else(|| random_id(8)),
                parent_span_id: step_id.clone(),
                name: q.method.clone(),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: qs,
                end_time_unix_nano: qs.saturating_add(ns(t.total)),
                attributes: attrs,
                ..Default::default()
            };
            if let Some(e) = &q.error {
                rs.attributes.push(s("error.type", e.kind.as_str()));
                rs.status = error_status(&e.message);
            }
            out.push(rs);
        }
    }
    out
}

impl Otlp {
    pub(crate) fn new(
        cfg: OtlpConfig,
        telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    ) -> Otlp {
        let agent = super::http_agent(cfg.timeout);
        Otlp {
            cfg,
            agent,
            runs: HashMap::new(),
            start: nanos(SystemTime::now()),
            telemetry,
            last_runner: None,
            location: None,
        }
    }

    fn metrics_request(&self, location: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: self.resource(location),
                scope_metrics: vec![ScopeMetrics {
                    scope: Self::scope(),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Sends the runner's own metrics.
    fn send_runner(&mut self) -> Result<(), DeliverError> {
        let (Some(t), Some(location)) = (&self.telemetry, &self.location) else {
            return Ok(());
        };
        let families = prometheus_client::encoding::prometheus_protobuf::encode(t.registry())
            .map_err(|_| DeliverError::Metrics)?;
        let metrics = runner::metrics(&families, self.start, nanos(SystemTime::now()));
        let req = self.metrics_request(location, metrics);
        self.last_runner = Some(std::time::Instant::now());
        self.post("/v1/metrics", req.encode_to_vec())
    }

    fn resource(&self, location: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![
                s("service.name", self.cfg.service_name.clone()),
                s("waymark.location", location),
            ],
            ..Default::default()
        })
    }

    fn scope() -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: "waymark".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn post(&self, path: &str, body: Vec<u8>) -> Result<(), DeliverError> {
        let url = format!("{}{path}", self.cfg.endpoint.trim_end_matches('/'));
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/x-protobuf")];
        headers.extend(
            self.cfg
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        super::post(&self.agent, &url, &headers, &body)
    }
}

impl Deliver for Otlp {
    fn deliver(&mut self, batch: &[Arc<Delivery>]) -> Result<(), DeliverError> {
        // Traces: one ResourceSpans per location in the batch.
        let mut by_location: HashMap<String, Vec<Span>> = HashMap::new();
        for d in batch {
            by_location
                .entry(d.record.location.clone())
                .or_default()
                .extend(spans(&d.record));
        }
        let traces = ExportTraceServiceRequest {
            resource_spans: by_location
                .into_iter()
                .map(|(loc, spans)| ResourceSpans {
                    resource: self.resource(&loc),
                    scope_spans: vec![ScopeSpans {
                        scope: Self::scope(),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        self.post("/v1/traces", traces.encode_to_vec())?;

        // Metrics of deciding attempts: last duration and success, and the
        // cumulative run count by status.
        let now = nanos(SystemTime::now());
        let mut runs = self.runs.clone();
        let mut metrics_by_location: HashMap<String, Vec<Metric>> = HashMap::new();
        for d in batch.iter().filter(|d| d.final_attempt) {
            let r = &d.record;
            let attrs = vec![
                s("journey", r.journey.clone()),
                s("location", r.location.clone()),
            ];
            let point = |v: f64, attrs: Vec<KeyValue>| NumberDataPoint {
                attributes: attrs,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(v)),
                ..Default::default()
            };
            let n = runs
                .entry((
                    r.journey.clone(),
                    r.location.clone(),
                    r.status.as_str().to_string(),
                ))
                .or_default();
            *n += 1;
            let mut run_attrs = attrs.clone();
            run_attrs.push(s("status", r.status.as_str()));
            let m = metrics_by_location.entry(r.location.clone()).or_default();
            m.push(Metric {
                name: "waymark.journey.duration".into(),
                unit: "s".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![point(r.duration.as_secs_f64(), attrs.clone())],
                })),
                ..Default::default()
            });
            m.push(Metric {
                name: "waymark.journey.success".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![point(
                        f64::from(u8::from(r.status == RunStatus::Pass)),
                        attrs,
                    )],
                })),
                ..Default::default()
            });
            m.push(Metric {
                name: "waymark.journey.runs".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        attributes: run_attrs,
                        start_time_unix_nano: self.start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(*n as i64)),
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            });
        }
        for (loc, metrics) in metrics_by_location {
            let req = self.metrics_request(&loc, metrics);
            self.post("/v1/metrics", req.encode_to_vec())?;
        }
        if let Some(d) = batch.last() {
            self.location = Some(d.record.location.clone());
        }
        // Counted only once both went out, so a retry does not count twice.
        self.runs = runs;
        Ok(())
    }

    fn tick(&mut self) -> Result<(), DeliverError> {
        if self.last_runner.is_none_or(|t| t.elapsed() >= RUNNER_EVERY) {
            return self.send_runner();
        }
        Ok(())
    }
}
