//! The server's resources beside the ramp (`--observe NAME=PROMQL` with
//! `--prometheus URL`): each query is asked of Prometheus's range API over
//! every step's measured window, and its average and largest value there
//! go into the report next to the throughput they came with. A team reads
//! "the database's CPU was saturated from 8 users on" in the same table as
//! the knee of the curve.
//!
//! A query that fails is a warning in the report, not a failed audit: the
//! load was measured either way.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One `--observe NAME=PROMQL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observe {
    /// What the column is called (`db_cpu`).
    pub name: String,
    /// The PromQL expression.
    pub query: String,
}

/// An observed series (`--observe`, `[load] observe`) that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not NAME=PROMQL, e.g. db_cpu=rate(process_cpu_seconds_total{{job=\"db\"}}[30s]) (NAME is letters, digits, _ or -)"
)]
pub struct ObserveError(pub String);

impl Observe {
    /// Parses `NAME=PROMQL`.
    pub fn parse(text: &str) -> Result<Observe, ObserveError> {
        let bad = || ObserveError(text.to_string());
        let (name, query) = text.split_once('=').ok_or_else(bad)?;
        let (name, query) = (name.trim(), query.trim());
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok || query.is_empty() {
            return Err(bad());
        }
        Ok(Observe {
            name: name.to_string(),
            query: query.to_string(),
        })
    }
}

/// A series over one step's measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Mean of the samples.
    pub avg: f64,
    /// Largest sample.
    pub max: f64,
    /// Samples Prometheus returned in the window.
    pub samples: usize,
}

/// One observed query across the steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// `db_cpu`.
    pub name: String,
    /// The PromQL asked.
    pub query: String,
    /// Per step of the run, in order: none where Prometheus had no sample.
    pub steps: Vec<Option<Observed>>,
}

/// A step's measured window in wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start of the measured part (after the warm-up).
    pub from: SystemTime,
    /// End of the step.
    pub to: SystemTime,
}

/// Why a query gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No answer.
    #[error("{url}: {source}")]
    Transport {
        /// The URL asked.
        url: String,
        /// What the client said.
        #[source]
        source: Box<ureq::Error>,
    },
    /// An answer that is not a success.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// Prometheus's `error`, or the body's start.
        message: String,
    },
    /// A success that does not read as the range API's.
    #[error("{0}")]
    Shape(String),
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The samples of a `query_range` answer: (series count, values). Several
/// series are summed at each instant, as `sum()` would.
pub fn parse_matrix(body: &str) -> Result<(usize, Vec<f64>), QueryError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| QueryError::Shape(format!("the answer is not JSON: {e}")))?;
    if v["status"] != "success" {
        return Err(QueryError::Shape(format!(
            "Prometheus said {}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let data = &v["data"];
    let Some(result) = data["result"].as_array() else {
        return Err(QueryError::Shape("the answer has no data.result".into()));
    };
    match data["resultType"].as_str() {
        Some("matrix") => {}
        other => {
            return Err(QueryError::Shape(format!(
                "expected a range (matrix) result, got {}",
                other.unwrap_or("none")
            )));
        }
    }
    let mut at: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for series in result {
        for pair in series["values"].as_array().into_iter().flatten() {
            let t = pair[0].as_f64();
            let val = pair[1].as_str().and_then(|s| s.parse::<f64>().ok());
            if let (Some(t), Some(val)) = (t, val)
                && val.is_finite()
            {
                // Milliseconds: Prometheus's own resolution.
                *at.entry((t * 1000.0).round() as u64).or_default() += val;
            }
        }
    }
    Ok((result.len(), at.into_values().collect()))
}

/// Average and largest of `values`; none when empty.
pub fn summarise(values: &[f64]) -> Option<Observed> {
    if values.is_empty() {
        return None;
    }
    let sum: f64 = values.iter().sum();
    Some(Observed {
        avg: sum / values.len() as f64,
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        samples: values.len(),
    })
}

/// Resolution of a window's query: about 30 points, at least 1 s.
fn resolution(w: &Window) -> Duration {
    let len = w.to.duration_since(w.from).unwrap_or_default();
    (len / 30).max(Duration::from_secs(1))
}

fn query_range(
    agent: &ureq::Agent,
    base: &str,
    query: &str,
    w: &Window,
) -> Result<(usize, Vec<f64>), QueryError> {
    let url = format!("{}/api/v1/query_range", base.trim_end_matches('/'));
    let resp = agent
        .get(&url)
        .query("query", query)
        .query("start", format!("{:.3}", unix(w.from)))
        .query("end", format!("{:.3}", unix(w.to)))
        .query("step", format!("{:.3}", resolution(w).as_secs_f64()))
        .call()
        .map_err(|e| QueryError::Transport {
            url: url.clone(),
            source: Box::new(e),
        })?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| QueryError::Transport {
            url: url.clone(),
            source: Box::new(e),
        })?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(QueryError::Status {
            url,
            status,
            message,
        });
    }
    parse_matrix(&body)
}

/// Asks `prometheus` each of `observes` over each of `windows` (blocking).
/// Returns the series and, in words, what went wrong.
pub fn query_all(
    prometheus: &str,
    observes: &[Observe],
    windows: &[Option<Window>],
) -> (Vec<Series>, Vec<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .user_agent(format!("waymark/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for o in observes {
        let mut steps = Vec::with_capacity(windows.len());
        let mut several = 0usize;
        let mut failed: Option<String> = None;
        let mut empty = 0usize;
        for w in windows {
            let got = match (w, &failed) {
                // After one failure the same query would fail again: say it once.
                (Some(w), None) => match query_range(&agent, prometheus, &o.query, w) {
                    Ok((n, values)) => {
                        several = several.max(n);
                        let s = summarise(&values);
                        empty += usize::from(s.is_none());
                        s
                    }
                    Err(e) => {
                        tracing::warn!(observe = %o.name, error = %e, "query failed");
                        failed = Some(e.to_string());
                        None
                    }
                },
                _ => None,
            };
            steps.push(got);
        }
        if let Some(e) = failed {
            warnings.push(format!("--observe {}: the query failed: {e}", o.name));
        } else if empty > 0 {
            warnings.push(format!(
                "--observe {}: no sample in {empty} of {} steps (is the series scraped, and more often than a step lasts?)",
                o.name,
                windows.len()
            ));
        }
        if several > 1 {
            warnings.push(format!(
                "--observe {}: the query returned {several} series; they were summed (wrap it in sum(), max() or avg() to say which)",
                o.name
            ));
        }
        out.push(Series {
            name: o.name.clone(),
            query: o.query.clone(),
            steps,
        });
    }
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observes_read_as_name_equals_query() {
        let o = Observe::parse("db_cpu=rate(process_cpu_seconds_total{job=\"db\"}[30s])")
            .expect("reads");
        assert_eq!(o.name, "db_cpu");
        assert_eq!(o.query, "rate(process_cpu_seconds_total{job=\"db\"}[30s])");
        for bad in ["", "db_cpu", "=up", "db cpu=up", "db_cpu="] {
            assert!(Observe::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn range_answers_sum_their_series_per_instant() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"i":"a"},"values":[[1.0,"1"],[2.0,"3"]]},
            {"metric":{"i":"b"},"values":[[1.0,"2"],[2.0,"NaN"],[3.0,"5"]]}]}}"#;
        let (n, v) = parse_matrix(body).expect("reads");
        assert_eq!(n, 2);
        assert_eq!(v, vec![3.0, 3.0, 5.0]);
        let s = summarise(&v).expect("samples");
        assert!((s.avg - 11.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.max, 5.0);
        assert_eq!(summarise(&[]), None);
        let err = parse_matrix(
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
        )
        .expect_err("an error");
        assert!(err.to_string().contains("parse error at char 5"), "{err}");
        assert!(parse_matrix("<html>").is_err());
        assert!(
            parse_matrix(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
                .is_err()
        );
    }
}
