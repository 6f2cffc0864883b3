//! The runner's own metrics (the registry behind `/metrics`) as OTLP
//! metrics, for operators whose metrics go through a collector rather than
//! a scrape. Names follow OpenTelemetry's style: `waymark_sink_records_total`
//! becomes `waymark.sink.records`, `waymark_schedule_lag_seconds` becomes
//! `waymark.schedule.lag` with unit `s`.

use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    metric, number_data_point,
};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType,
};

use super::s;

/// OTLP's name and unit for a Prometheus family name.
fn name_and_unit(prom: &str) -> (String, &'static str) {
    let base = prom.strip_suffix("_total").unwrap_or(prom);
    let (base, unit) = match base.strip_suffix("_seconds") {
        Some(b) => (b, "s"),
        None => (base, ""),
    };
    (base.replace('_', "."), unit)
}

/// `families` as OTLP metrics stamped `now` (Unix ns), cumulative since
/// `start`.
pub(super) fn metrics(families: &[MetricFamily], start: u64, now: u64) -> Vec<Metric> {
    let mut out = Vec::new();
    for f in families {
        let (name, unit) = name_and_unit(&f.name);
        let attrs = |m: &prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::Metric| {
            m.label
                .iter()
                .map(|l| s(&l.name, l.value.clone()))
                .collect::<Vec<_>>()
        };
        let number = |m, v: f64| NumberDataPoint {
            attributes: attrs(m),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let data = match f.r#type() {
            MetricType::Counter => metric::Data::Sum(Sum {
                data_points: f
                    .metric
                    .iter()
                    .filter_map(|m| m.counter.as_ref().map(|c| number(m, c.value)))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            MetricType::Gauge => metric::Data::Gauge(Gauge {
                data_points: f
                    .metric
                    .iter()
                    .filter_map(|m| m.gauge.as_ref().map(|g| number(m, g.value)))
                    .collect(),
            }),
            MetricType::Histogram => metric::Data::Histogram(Histogram {
                data_points: f
                    .metric
                    .iter()
                    .filter_map(|m| {
                        let h = m.histogram.as_ref()?;
                        // Prometheus counts are cumulative and end at +Inf;
                        // OTLP's are per bucket, one more than the bounds.
                        let mut bounds = Vec::new();
                        let mut counts = Vec::new();
                        let mut below = 0u64;
                        for b in &h.bucket {
                            if b.upper_bound.is_finite() {
                                bounds.push(b.upper_bound);
                                counts.push(b.cumulative_count.saturating_sub(below));
                                below = b.cumulative_count;
                            }
                        }
                        counts.push(h.sample_count.saturating_sub(below));
                        Some(HistogramDataPoint {
                            attributes: attrs(m),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.sample_count,
                            sum: Some(h.sample_sum),
                            bucket_counts: counts,
                            explicit_bounds: bounds,
                            ..Default::default()
                        })
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
            // The runner declares no other kind.
            _ => continue,
        };
        out.push(Metric {
            name,
            description: f.help.clone(),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_total_and_the_unit() {
        assert_eq!(
            name_and_unit("waymark_sink_records_total"),
            ("waymark.sink.records".to_string(), "")
        );
        assert_eq!(
            name_and_unit("waymark_schedule_lag_seconds"),
            ("waymark.schedule.lag".to_string(), "s")
        );
    }

    #[test]
    fn a_histogram_keeps_its_counts_per_bucket() {
        use prometheus_client::metrics::histogram::Histogram as H;
        use prometheus_client::registry::Registry;
        let mut r = Registry::default();
        let h = H::new([0.1, 1.0]);
        r.register("lag_seconds", "lag", h.clone());
        for v in [0.05, 0.5, 0.5, 5.0] {
            h.observe(v);
        }
        let families =
            prometheus_client::encoding::prometheus_protobuf::encode(&r).expect("encode");
        let m = metrics(&families, 1, 2);
        let Some(metric::Data::Histogram(hist)) = &m[0].data else {
            panic!("{m:?}");
        };
        let p = &hist.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![1, 2, 1]);
        assert_eq!(p.count, 4);
        assert_eq!(m[0].unit, "s");
    }
}
