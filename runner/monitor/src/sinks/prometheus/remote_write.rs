//! Prometheus remote write (1.0): the prometheus sink's current values,
//! pushed as a snappy-compressed protobuf `WriteRequest`, for runners that
//! cannot be scraped.

use prost::Message;

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

/// Samples of the exposition text (our own encoder's output), with `job`
/// added, all stamped `timestamp_ms`. Remote write wants labels sorted by name.
pub fn from_exposition(text: &str, job: &str, timestamp_ms: i64) -> WriteRequest {
    let mut timeseries = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, value)) = parse_line(line) else {
            continue;
        };
        let (name, mut labels) = series;
        labels.push(Label {
            name: "__name__".into(),
            value: name,
        });
        labels.push(Label {
            name: "job".into(),
            value: job.into(),
        });
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        timeseries.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: timestamp_ms,
            }],
        });
    }
    WriteRequest { timeseries }
}

/// `name{a="x",b="y"} 1.5` → ((name, labels), value). Our encoder writes
/// no timestamps or exemplars, so the value is the last field.
fn parse_line(line: &str) -> Option<((String, Vec<Label>), f64)> {
    let (series, value) = line.trim_end().rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
    };
    let v = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(((name.to_string(), labels), v))
}

/// `a="x",b="y \"q\""` → labels, unescaping `\\`, `\"` and `\n`.
fn parse_labels(mut rest: &str) -> Option<Vec<Label>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in after.char_indices() {
            if escaped {
                value.push(if c == 'n' { '\n' } else { c });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        out.push(Label {
            name: name.to_string(),
            value,
        });
        rest = &after[end? + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(out)
}

/// The request body: protobuf, then snappy (block format).
pub fn encode(req: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_become_series() {
        let text = "# TYPE x counter\nwaymark_journey_runs_total{journey=\"a \\\"b\\\"\",location=\"l\",status=\"pass\"} 3\n\
                    waymark_http_phase_duration_seconds_bucket{journey=\"a\",le=\"+Inf\"} 7\nup 1\n# EOF\n";
        let w = from_exposition(text, "waymark", 1000);
        assert_eq!(w.timeseries.len(), 3);
        let first: Vec<(&str, &str)> = w.timeseries[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            first,
            [
                ("__name__", "waymark_journey_runs_total"),
                ("job", "waymark"),
                ("journey", "a \"b\""),
                ("location", "l"),
                ("status", "pass")
            ]
        );
        assert_eq!(w.timeseries[0].samples[0].value, 3.0);
        assert_eq!(w.timeseries[1].labels[2].value, "a");
        assert_eq!(w.timeseries[1].labels[3].value, "+Inf");
        assert_eq!(w.timeseries[2].labels.len(), 2);
        let body = encode(&w).expect("encode");
        let back = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        assert_eq!(WriteRequest::decode(&back[..]).expect("protobuf"), w);
    }
}
