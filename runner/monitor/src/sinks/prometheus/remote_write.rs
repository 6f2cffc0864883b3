//! Prometheus remote write (1.0): the prometheus sink's current values,
//! pushed as a snappy-compressed protobuf `WriteRequest`, for runners that
//! cannot be scraped.

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily;
use prost::Message;

use super::classic::for_each_sample;

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The sink's metric families (prometheus-client's typed model of the
/// registry) as series, with `job` added, all stamped `timestamp_ms`: a
/// counter or gauge is one series, a histogram its `_bucket`s, `_sum` and
/// `_count`, as a scrape would see them. Remote write wants labels sorted
/// by name.
pub fn from_families(families: &[MetricFamily], job: &str, timestamp_ms: i64) -> WriteRequest {
    let mut timeseries = Vec::new();
    for family in families {
        for_each_sample(family, |suffix, labels, extra, value| {
            let mut all: Vec<Label> = labels
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).to_string(),
                    value: (*v).to_string(),
                })
                .collect();
            if let Some((n, v)) = extra {
                all.push(Label {
                    name: n.to_string(),
                    value: v,
                });
            }
            all.push(Label {
                name: "__name__".into(),
                value: format!("{}{suffix}", family.name),
            });
            all.push(Label {
                name: "job".into(),
                value: job.into(),
            });
            all.sort_by(|a, b| a.name.cmp(&b.name));
            timeseries.push(TimeSeries {
                labels: all,
                samples: vec![Sample {
                    value,
                    timestamp: timestamp_ms,
                }],
            });
        });
    }
    WriteRequest { timeseries }
}

/// The request body: protobuf, then snappy (block format).
pub fn encode(req: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_protobuf::encode as families;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    #[test]
    fn families_become_the_series_a_scrape_sees() {
        let mut registry = Registry::default();
        let runs = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("waymark_journey_runs", "Runs", runs.clone());
        let phase = Histogram::new([0.005, 1.0]);
        registry.register("waymark_phase_seconds", "Phases", phase.clone());
        runs.get_or_create(&vec![
            ("journey".into(), "a \"b\"".into()),
            ("status".into(), "pass".into()),
        ])
        .inc_by(3);
        phase.observe(0.5);
        let w = from_families(&families(&registry).expect("encodes"), "waymark", 1000);
        let series: Vec<(Vec<(&str, &str)>, f64)> = w
            .timeseries
            .iter()
            .map(|t| {
                let labels = t
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect();
                (labels, t.samples[0].value)
            })
            .collect();
        assert_eq!(
            series[0],
            (
                vec![
                    ("__name__", "waymark_journey_runs_total"),
                    ("job", "waymark"),
                    ("journey", "a \"b\""),
                    ("status", "pass")
                ],
                3.0
            )
        );
        let buckets: Vec<(&str, f64)> = series[1..4]
            .iter()
            .map(|(l, v)| (l.iter().find(|(n, _)| *n == "le").expect("le").1, *v))
            .collect();
        assert_eq!(buckets, [("0.005", 0.0), ("1.0", 1.0), ("+Inf", 1.0)]);
        assert_eq!(series[4].0[0], ("__name__", "waymark_phase_seconds_sum"));
        assert_eq!(series[4].1, 0.5);
        assert_eq!(series[5].0[0], ("__name__", "waymark_phase_seconds_count"));
        assert_eq!(series.len(), 6);
        assert!(w.timeseries.iter().all(|t| t.samples[0].timestamp == 1000));
        let body = encode(&w).expect("encode");
        let back = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        assert_eq!(WriteRequest::decode(&back[..]).expect("protobuf"), w);
    }
}
