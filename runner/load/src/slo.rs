//! SLO gates: `p95<500ms`, `p99(login)<=200ms`, `errors<1%`, `peak>=32`,
//! `throughput>=100/s`. Latency and error gates are judged on every
//! measured iteration of the run (all steps together, as k6 thresholds
//! are); `throughput` on the best step; `peak` and `sigma` on the USL fit.
//!
//! A gate's value may name the baseline, an earlier round's `--json`
//! result: `throughput>=0.95*baseline`, `p95<=1.1*baseline`,
//! `sigma<=baseline+1%`, `peak>=baseline`. The baseline's figure is found
//! the same way as the run's.
//!
//! Such a gate may end in `beyond spread`: it then fails only when the
//! change from the baseline is also larger than the run-to-run spread
//! (the range of the figure over the passes of `--repeat N`, the larger of
//! the two rounds'), so a noisy machine does not fail builds at random.

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
    /// USL serialization coefficient σ, 0..1.
    Sigma,
}

impl Metric {
    /// The gate's value in the metric's unit: ms, a share, a count, 1/s.
    fn parse_value(&self, value: &str) -> Result<f64, String> {
        match self {
            Metric::Quantile(..) | Metric::Mean(_) | Metric::Max(_) => {
                waymark_record::units::parse_duration(value)
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .map_err(|e| e.to_string())
            }
            Metric::Errors | Metric::Sigma => match value.strip_suffix('%') {
                Some(p) => p.parse::<f64>().map(|p| p / 100.0),
                None => value.parse::<f64>(),
            }
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("'{value}' is not a share like 1% or 0.01")),
            Metric::Peak => value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("'{value}' is not a concurrency like 32")),
            Metric::Throughput => super::parse_rate(value).map_err(|e| e.to_string()),
        }
    }

    /// A value in the metric's unit, in words.
    fn words(&self, v: f64) -> String {
        if v.is_infinite() {
            return "∞".into();
        }
        match self {
            Metric::Quantile(..) | Metric::Mean(_) | Metric::Max(_) => format!("{v:.1} ms"),
            Metric::Errors => format!("{:.2} %", v * 100.0),
            Metric::Sigma => format!("{:.1} %", v * 100.0),
            Metric::Peak => format!("{v:.0}"),
            Metric::Throughput => format!("{v:.1}/s"),
        }
    }
}

/// The right side of a gate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Limit {
    /// A value in the metric's unit.
    Fixed(f64),
    /// `factor` × the baseline's figure + `offset` (in the metric's unit).
    Baseline { factor: f64, offset: f64 },
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
    /// ms for latencies, 0..1 for errors and sigma, a count for peak, 1/s
    /// for throughput; or relative to the baseline.
    limit: Limit,
    /// Fails only when the change also exceeds the run-to-run spread.
    beyond_spread: bool,
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
    /// For a gate relative to the baseline: the baseline's figure in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// For a gate relative to the baseline: the limit it came to, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// For a `beyond spread` gate: the run-to-run spread it allowed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
    /// How the spread decided, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl GateResult {
    /// `measured X` and, for a baseline gate, `, baseline Y, limit Z`.
    pub fn figures(&self) -> String {
        let mut s = match (&self.baseline, &self.limit) {
            (Some(b), Some(l)) => format!("measured {}, baseline {b}, limit {l}", self.measured),
            (Some(b), None) => format!("measured {}, baseline {b}", self.measured),
            _ => format!("measured {}", self.measured),
        };
        if let Some(sp) = &self.spread {
            s.push_str(&format!(", spread {sp}"));
        }
        if let Some(n) = &self.note {
            s.push_str(&format!(" ({n})"));
        }
        s
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const HELP: &str = "a gate is METRIC OP VALUE: p50/p90/p95/p99/max/mean (optionally p95(STEP)) with a duration, \
errors and sigma with a percentage, peak with a concurrency, throughput with a rate; OP is <, <=, > or >=; \
VALUE may be relative to --baseline: 0.95*baseline, baseline+1%, baseline, and such a gate may end in 'beyond spread' to fail only on a change larger than the run-to-run spread of --repeat";

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
        let (core, beyond_spread) = match text
            .trim_end()
            .strip_suffix("spread")
            .map(str::trim_end)
            .and_then(|t| t.strip_suffix("beyond"))
        {
            Some(core) => (core, true),
            None => (text, false),
        };
        let t: String = core.chars().filter(|c| !c.is_whitespace()).collect();
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
        let metric = match base {
            "mean" | "avg" => Metric::Mean(step),
            "max" => Metric::Max(step),
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
                Metric::Quantile(q / 100.0, step)
            }
            _ if step.is_some() => {
                return Err(GateError::new(
                    text,
                    format!("only latency gates take a step name; {HELP}"),
                ));
            }
            "errors" | "error_rate" => Metric::Errors,
            "peak" => Metric::Peak,
            "throughput" | "rps" => Metric::Throughput,
            "sigma" | "serialization" => Metric::Sigma,
            other => {
                return Err(GateError::new(
                    text,
                    format!("unknown metric '{other}'; {HELP}"),
                ));
            }
        };
        let limit = match value.split_once("baseline") {
            None => Limit::Fixed(
                metric
                    .parse_value(value)
                    .map_err(|e| GateError::new(text, e))?,
            ),
            Some((before, after)) => {
                let factor = match before {
                    "" => 1.0,
                    f => f
                        .strip_suffix('*')
                        .and_then(|f| f.parse::<f64>().ok())
                        .filter(|f| f.is_finite() && *f > 0.0)
                        .ok_or_else(|| {
                            GateError::new(
                                text,
                                format!("'{before}' is not a factor like 0.95* before baseline"),
                            )
                        })?,
                };
                let offset = match after {
                    "" => 0.0,
                    a => {
                        let (sign, v) = match (a.strip_prefix('+'), a.strip_prefix('-')) {
                            (Some(v), _) => (1.0, v),
                            (_, Some(v)) => (-1.0, v),
                            _ => {
                                return Err(GateError::new(
                                    text,
                                    format!("write what follows baseline as +X or -X, not '{a}'"),
                                ));
                            }
                        };
                        sign * metric.parse_value(v).map_err(|e| GateError::new(text, e))?
                    }
                };
                Limit::Baseline { factor, offset }
            }
        };
        if beyond_spread && !matches!(limit, Limit::Baseline { .. }) {
            return Err(GateError::new(
                text,
                "'beyond spread' judges a change from the baseline: write the value against it, e.g. 'throughput>=0.95*baseline beyond spread'".into(),
            ));
        }
        Ok(Gate {
            text: text.trim().to_string(),
            metric,
            op,
            limit,
            beyond_spread,
        })
    }

    /// True when the gate's value names the baseline.
    pub fn needs_baseline(&self) -> bool {
        matches!(self.limit, Limit::Baseline { .. })
    }

    /// Judges the gate on `report`, against `baseline` for a relative gate
    /// (one without a baseline fails, saying so).
    pub fn evaluate(&self, report: &LoadReport, baseline: Option<&LoadReport>) -> GateResult {
        let failed = |measured: String, baseline: Option<String>| GateResult {
            gate: self.text.clone(),
            passed: false,
            measured,
            baseline,
            limit: None,
            spread: None,
            note: None,
        };
        let (value, measured) = match self.figure(report) {
            Ok(v) => v,
            Err(why) => return failed(why, None),
        };
        let (limit, base) = match self.limit {
            Limit::Fixed(l) => (l, None),
            Limit::Baseline { factor, offset } => {
                let Some(b) = baseline else {
                    return failed(measured, Some("none given (--baseline FILE)".into()));
                };
                match self.figure(b) {
                    Ok((v, words)) => (factor * v + offset, Some((v, words, b))),
                    Err(why) => return failed(measured, Some(why)),
                }
            }
        };
        let mut passed = self.op.holds(value, limit);
        let (mut spread, mut note) = (None, None);
        if let (true, Some((base_value, _, b))) = (self.beyond_spread, &base) {
            let widest = [self.spread(report), self.spread(b)]
                .into_iter()
                .flatten()
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            match widest {
                None => {
                    note = Some(
                        "no spread measured: neither round ran --repeat 2 or more, so the gate is judged as written".into(),
                    );
                }
                Some(w) => {
                    spread = Some(self.metric.words(w));
                    let change = (value - base_value).abs();
                    if !passed && change <= w {
                        passed = true;
                        note = Some(format!(
                            "beyond the limit, but the change from the baseline ({}) is within the run-to-run spread: noise",
                            self.metric.words(change)
                        ));
                    }
                }
            }
        }
        GateResult {
            gate: self.text.clone(),
            passed,
            measured,
            limit: base.as_ref().map(|_| self.metric.words(limit)),
            baseline: base.map(|(_, words, _)| words),
            spread,
            note,
        }
    }

    /// The range of the gate's figure over `report`'s passes; none with one
    /// pass, or fewer than two passes that give the figure.
    fn spread(&self, report: &LoadReport) -> Option<f64> {
        if report.passes < 2 {
            return None;
        }
        let values: Vec<f64> = (0..report.passes)
            .filter_map(|k| self.figure(&report.pass(k)).ok())
            .map(|(v, _)| v)
            .filter(|v| v.is_finite())
            .collect();
        if values.len() < 2 {
            return None;
        }
        let (lo, _, hi) = crate::passes::range(values.into_iter())?;
        Some(hi - lo)
    }

    /// The gate's figure in `report`, as a number and in words.
    fn figure(&self, report: &LoadReport) -> Result<(f64, String), String> {
        let total = &report.total;
        let latency_of = |step: &Option<String>| match step {
            None => Ok(&total.latency),
            Some(s) => total.journey_steps.get(s).ok_or_else(|| {
                let known: Vec<&str> = total.journey_steps.keys().map(String::as_str).collect();
                format!("no journey step named '{s}' (steps: {})", known.join(", "))
            }),
        };
        let ms = |v: f64| format!("{v:.1} ms");
        match &self.metric {
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
                // With repeated passes, each level's mean: the best single
                // pass would favour noise.
                let best = report
                    .levels()
                    .iter()
                    .map(|s| s.throughput)
                    .fold(0.0, f64::max);
                Ok((best, format!("{best:.1}/s")))
            }
            Metric::Sigma => match &report.usl {
                Some(f) => Ok((f.sigma, self.metric.words(f.sigma))),
                None => Err(format!(
                    "no USL fit: {}",
                    report.usl_refused.as_deref().unwrap_or("not computed")
                )),
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
        assert_eq!((g.op, g.limit), (Op::Lt, Limit::Fixed(500.0)));
        let g = Gate::parse("p99.9(login) <= 1s").expect("valid");
        match &g.metric {
            Metric::Quantile(q, Some(step)) => {
                assert!((q - 0.999).abs() < 1e-12 && step == "login", "{q} {step}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((g.op, g.limit), (Op::Le, Limit::Fixed(1000.0)));
        let g = Gate::parse("errors<1%").expect("valid");
        assert_eq!((g.metric, g.limit), (Metric::Errors, Limit::Fixed(0.01)));
        let g = Gate::parse("peak>=32").expect("valid");
        assert_eq!(
            (g.metric, g.op, g.limit),
            (Metric::Peak, Op::Ge, Limit::Fixed(32.0))
        );
        let g = Gate::parse("throughput>100/s").expect("valid");
        assert_eq!(
            (g.metric, g.op, g.limit),
            (Metric::Throughput, Op::Gt, Limit::Fixed(100.0))
        );
    }

    #[test]
    fn parses_gates_relative_to_the_baseline() {
        let base = |factor, offset| Limit::Baseline { factor, offset };
        for (text, metric, limit) in [
            (
                "throughput>=0.95*baseline",
                Metric::Throughput,
                base(0.95, 0.0),
            ),
            (
                "p95<=1.1*baseline",
                Metric::Quantile(0.95, None),
                base(1.1, 0.0),
            ),
            ("sigma<=baseline+1%", Metric::Sigma, base(1.0, 0.01)),
            ("peak>=baseline", Metric::Peak, base(1.0, 0.0)),
            (
                "p99(login)<baseline-5ms",
                Metric::Quantile(0.99, Some("login".into())),
                base(1.0, -5.0),
            ),
            ("sigma<2%", Metric::Sigma, Limit::Fixed(0.02)),
        ] {
            let g = Gate::parse(text).expect(text);
            assert_eq!(g.needs_baseline(), matches!(limit, Limit::Baseline { .. }));
            assert_eq!((g.metric, g.limit), (metric, limit), "{text}");
        }
        for (bad, says) in [
            ("throughput>=x*baseline", "not a factor"),
            ("throughput>=0.95baseline", "not a factor"),
            ("throughput>=-1*baseline", "not a factor"),
            ("p95<baseline*2", "+X or -X"),
            ("p95<baseline+lots", "not a duration"),
            ("sigma<baseline+much", "not a share"),
        ] {
            let e = Gate::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
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
