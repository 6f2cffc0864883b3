//! SLO gates: `p95<500ms`, `p99(login)<=200ms`, `errors<1%`, `peak>=32`,
//! `throughput>=100/s`. Latency and error gates are judged on every
//! measured iteration of the run (all steps together, as k6 thresholds
//! are); `throughput` on the best step; `peak` on the USL fit.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::LoadReport;

/// What a gate measures.
#[derive(Debug, Clone, PartialEq)]
enum Metric {
    /// A latency quantile (0..1), of the whole journey or of one of its steps.
    Quantile(f64, Option<String>),
    /// Mean latency.
    Mean(Option<String>),
    /// Largest latency.
    Max(Option<String>),
    /// Share of iterations that did not pass.
    Errors,
    /// USL peak concurrency N*.
    Peak,
    /// Highest step throughput, iterations/s.
    Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
}

/// One parsed gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    text: String,
    metric: Metric,
    op: Op,
    /// ms for latencies, 0..1 for errors, a count for peak, 1/s for throughput.
    limit: f64,
}

/// How a gate went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// As written.
    pub gate: String,
    /// Whether it held.
    pub passed: bool,
    /// The measured value in words (`23.4 ms`, `0.12 %`, `41`).
    pub measured: String,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const HELP: &str = "a gate is METRIC OP VALUE: p50/p90/p95/p99/max/mean (optionally p95(STEP)) with a duration, \
errors with a percentage, peak with a concurrency, throughput with a rate; OP is <, <=, > or >=";

/// A gate that does not read: what was written, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}': {reason}")]
pub struct GateError {
    /// The gate as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl GateError {
    fn new(text: &str, reason: String) -> Self {
        GateError {
            text: text.to_string(),
            reason,
        }
    }
}

impl Gate {
    /// Parses `p95<500ms` and friends.
    pub fn parse(text: &str) -> Result<Gate, GateError> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let pos = t
            .find(['<', '>'])
            .ok_or_else(|| GateError::new(text, format!("no comparison; {HELP}")))?;
        let (name, rest) = t.split_at(pos);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            (Op::Gt, &rest[1..])
        };
        if value.is_empty() {
            return Err(GateError::new(
                text,
                format!("no value after the comparison; {HELP}"),
            ));
        }
        let (base, step) = match name.split_once('(') {
            Some((b, s)) => {
                let s = s
                    .strip_suffix(')')
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| GateError::new(text, "write a step as p95(NAME)".to_string()))?;
                (b, Some(s.to_string()))
            }
            None => (name, None),
        };
        let latency = |m: Metric| -> Result<(Metric, f64), GateError> {
            let d = waymark_record::units::parse_duration(value)
                .map_err(|e| GateError::new(text, e.to_string()))?;
            Ok((m, d.as_secs_f64() * 1000.0))
        };
        let (metric, limit) = match base {
            "mean" | "avg" => latency(Metric::Mean(step))?,
            "max" => latency(Metric::Max(step))?,
            p if p.len() > 1 && p.starts_with('p') && p.as_bytes()[1].is_ascii_digit() => {
                let q: f64 = p[1..].parse().map_err(|_| {
                    GateError::new(
                        text,
                        format!("'{p}' is not a percentile like p95 or p99.9; {HELP}"),
                    )
                })?;
                if !(q > 0.0 && q < 100.0) {
                    return Err(GateError::new(
                        text,
                        "a percentile is between p0 and p100".to_string(),
                    ));
                }
                latency(Metric::Quantile(q / 100.0, step))?
            }
            _ if step.is_some() => {
                return Err(GateError::new(
                    text,
                    format!("only latency gates take a step name; {HELP}"),
                ));
            }
            "errors" | "error_rate" => {
                let v = match value.strip_suffix('%') {
                    Some(p) => p.parse::<f64>().map(|p| p / 100.0),
                    None => value.parse::<f64>(),
                }
                .map_err(|_| {
                    GateError::new(text, format!("'{value}' is not a share like 1% or 0.01"))
                })?;
                (Metric::Errors, v)
            }
            "peak" => {
                let v: f64 = value.parse().map_err(|_| {
                    GateError::new(text, format!("'{value}' is not a concurrency like 32"))
                })?;
                (Metric::Peak, v)
            }
            "throughput" | "rps" => (
                Metric::Throughput,
                super::parse_rate(value).map_err(|e| GateError::new(text, e.to_string()))?,
            ),
            other => {
                return Err(GateError::new(
                    text,
                    format!("unknown metric '{other}'; {HELP}"),
                ));
            }
        };
        Ok(Gate {
            text: text.trim().to_string(),
            metric,
            op,
            limit,
        })
    }

    /// Judges the gate on `report`.
    pub fn evaluate(&self, report: &LoadReport) -> GateResult {
        let total = &report.total;
        let latency_of = |step: &Option<String>| match step {
            None => Ok(&total.latency),
            Some(s) => total.journey_steps.get(s).ok_or_else(|| {
                let known: Vec<&str> = total.journey_steps.keys().map(String::as_str).collect();
                format!("no journey step named '{s}' (steps: {})", known.join(", "))
            }),
        };
        let ms = |v: f64| format!("{v:.1} ms");
        let outcome: Result<(f64, String), String> = match &self.metric {
            Metric::Quantile(q, step) => latency_of(step).and_then(|h| {
                if h.count() == 0 {
                    Err("no iteration was measured".into())
                } else {
                    let v = h.quantile_ms(*q);
                    Ok((v, ms(v)))
                }
            }),
            Metric::Mean(step) => latency_of(step).and_then(|h| {
                if h.count() == 0 {
                    Err("no iteration was measured".into())
                } else {
                    Ok((h.mean_ms(), ms(h.mean_ms())))
                }
            }),
            Metric::Max(step) => latency_of(step).and_then(|h| {
                if h.count() == 0 {
                    Err("no iteration was measured".into())
                } else {
                    let v = h.percentiles().max_ms;
                    Ok((v, ms(v)))
                }
            }),
            Metric::Errors => {
                if total.iterations == 0 {
                    Err("no iteration was measured".into())
                } else {
                    let v = total.error_rate();
                    Ok((
                        v,
                        format!(
                            "{:.2} % ({} of {})",
                            v * 100.0,
                            total.iterations - total.passed,
                            total.iterations
                        ),
                    ))
                }
            }
            Metric::Peak => match &report.usl {
                Some(f) => match f.peak_concurrency {
                    Some(n) => Ok((n, format!("{n:.0}"))),
                    None => {
                        // No coherency cost seen: throughput had not turned
                        // down at the largest concurrency measured.
                        let top = report
                            .steps
                            .iter()
                            .map(|s| s.concurrency())
                            .fold(0.0, f64::max);
                        Ok((
                            f64::INFINITY,
                            format!("no peak up to {top:.0} (throughput still rising)"),
                        ))
                    }
                },
                None => Err(format!(
                    "no USL fit: {}",
                    report.usl_refused.as_deref().unwrap_or("not computed")
                )),
            },
            Metric::Throughput => {
                let best = report
                    .steps
                    .iter()
                    .map(|s| s.throughput)
                    .fold(0.0, f64::max);
                Ok((best, format!("{best:.1}/s")))
            }
        };
        match outcome {
            Ok((value, measured)) => GateResult {
                gate: self.text.clone(),
                passed: self.op.holds(value, self.limit),
                measured,
            },
            Err(why) => GateResult {
                gate: self.text.clone(),
                passed: false,
                measured: why,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let g = Gate::parse("p95<500ms").expect("valid");
        assert_eq!(g.metric, Metric::Quantile(0.95, None));
        assert_eq!((g.op, g.limit), (Op::Lt, 500.0));
        let g = Gate::parse("p99.9(login) <= 1s").expect("valid");
        match &g.metric {
            Metric::Quantile(q, Some(step)) => {
                assert!((q - 0.999).abs() < 1e-12 && step == "login", "{q} {step}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((g.op, g.limit), (Op::Le, 1000.0));
        let g = Gate::parse("errors<1%").expect("valid");
        assert_eq!((g.metric, g.limit), (Metric::Errors, 0.01));
        let g = Gate::parse("peak>=32").expect("valid");
        assert_eq!((g.metric, g.op, g.limit), (Metric::Peak, Op::Ge, 32.0));
        let g = Gate::parse("throughput>100/s").expect("valid");
        assert_eq!(
            (g.metric, g.op, g.limit),
            (Metric::Throughput, Op::Gt, 100.0)
        );
    }

    #[test]
    fn refuses_with_reasons() {
        for (bad, says) in [
            ("p95", "no comparison"),
            ("p95<", "no value"),
            ("p95<fast", "not a duration"),
            ("p200<1s", "between p0 and p100"),
            ("latency<1s", "unknown metric 'latency'"),
            ("errors<lots", "not a share"),
            ("errors(login)<1%", "only latency gates"),
            ("p95()<1s", "p95(NAME)"),
        ] {
            let e = Gate::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
