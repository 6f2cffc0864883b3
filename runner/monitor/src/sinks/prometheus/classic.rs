//! The classic Prometheus text format (`text/plain; version=0.0.4`), written
//! from prometheus-client's typed model of the registry. prometheus-client
//! itself only writes OpenMetrics; promtool, Telegraf, Datadog's check and
//! Prometheus servers before 2.5 read this one.

use std::fmt::Write as _;

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType,
};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The families as classic exposition text.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.r#type() {
            MetricType::Counter => "counter",
            MetricType::Gauge | MetricType::GaugeHistogram => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for_each_sample(f, |suffix, labels, extra, v| {
            out.push_str(&f.name);
            out.push_str(suffix);
            write_labels(
                &mut out,
                labels,
                extra.as_ref().map(|(k, v)| (*k, v.as_str())),
            );
            out.push(' ');
            out.push_str(&value(v));
            out.push('\n');
        });
    }
    out
}

/// Each sample of `family` as a scrape sees it: the suffix of its series
/// name (`""`, `_bucket`, `_sum`, `_count`), the family's labels, the
/// sample's own label (`le`, `quantile`) and its value. The one walk of the
/// model, for this text and for remote write.
pub fn for_each_sample(
    family: &MetricFamily,
    mut f: impl FnMut(&str, &[(&str, &str)], Option<(&'static str, String)>, f64),
) {
    for m in &family.metric {
        let labels: Vec<(&str, &str)> = m
            .label
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        let labels = labels.as_slice();
        if let Some(c) = &m.counter {
            f("", labels, None, c.value);
        }
        if let Some(g) = &m.gauge {
            f("", labels, None, g.value);
        }
        if let Some(u) = &m.untyped {
            f("", labels, None, u.value);
        }
        if let Some(h) = &m.histogram {
            for b in &h.bucket {
                f(
                    "_bucket",
                    labels,
                    Some(("le", bound(b.upper_bound))),
                    b.cumulative_count as f64,
                );
            }
            if h.bucket
                .last()
                .is_none_or(|b| b.upper_bound != f64::INFINITY)
            {
                f(
                    "_bucket",
                    labels,
                    Some(("le", bound(f64::INFINITY))),
                    h.sample_count as f64,
                );
            }
            f("_sum", labels, None, h.sample_sum);
            f("_count", labels, None, h.sample_count as f64);
        }
        if let Some(s) = &m.summary {
            for q in &s.quantile {
                f("", labels, Some(("quantile", bound(q.quantile))), q.value);
            }
            f("_sum", labels, None, s.sample_sum);
            f("_count", labels, None, s.sample_count as f64);
        }
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, v) in labels.iter().copied().chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A bucket bound as the OpenMetrics encoder writes it (`0.005`, `1.0`).
pub fn bound(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        dtoa::Buffer::new().format(v).to_string()
    }
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Counts read as integers, as every other exporter writes them.
        format!("{}", v as i64)
    } else {
        dtoa::Buffer::new().format(v).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_protobuf::encode as families;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    #[test]
    fn every_family_has_help_and_type_and_labels_are_escaped() {
        let mut registry = Registry::default();
        let runs = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("runs", "Runs, by \\ status\nand more", runs.clone());
        let up = Gauge::<i64>::default();
        registry.register("up", "Up", up.clone());
        let h = Histogram::new([0.5]);
        registry.register("phase_seconds", "Phases", h.clone());
        runs.get_or_create(&vec![("j".into(), "a \"b\"\nc\\".into())])
            .inc_by(2);
        up.set(1);
        h.observe(0.25);
        let text = encode(&families(&registry).expect("families"));
        assert_eq!(
            text,
            "# HELP runs_total Runs, by \\\\ status\\nand more.\n\
             # TYPE runs_total counter\n\
             runs_total{j=\"a \\\"b\\\"\\nc\\\\\"} 2\n\
             # HELP up Up.\n\
             # TYPE up gauge\n\
             up 1\n\
             # HELP phase_seconds Phases.\n\
             # TYPE phase_seconds histogram\n\
             phase_seconds_bucket{le=\"0.5\"} 1\n\
             phase_seconds_bucket{le=\"+Inf\"} 1\n\
             phase_seconds_sum 0.25\n\
             phase_seconds_count 1\n"
        );
    }
}
