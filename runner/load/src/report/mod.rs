//! What a load run says: the terminal summary here, the self-contained
//! HTML report in [`html`].

use std::fmt::Write as _;

use super::{Histo, LoadReport, StepResult};

const PHASES: [&str; 5] = waymark_record::PhaseTimings::PHASES;

/// Colours of the charts. The HTML test looks for the first three in a
/// screenshot, so they appear nowhere else on the page.
pub mod colors {
    /// Measured throughput points.
    pub const MEASURED: &str = "#1f6feb";
    /// The fitted USL curve.
    pub const USL: &str = "#d1242f";
    /// The processing phase bars.
    pub const PROCESSING: &str = "#fb8f44";
    /// The prediction intervals beyond the ramp.
    pub(super) const PREDICTED: &str = "#7d4e00";
    pub(super) const PHASES: [&str; 5] = ["#54aeff", "#4ac26b", "#d4a72c", PROCESSING, "#a475f9"];
    pub(super) const PERCENTILES: [(&str, &str); 4] = [
        ("p50", "#2da44e"),
        ("p90", "#9a6700"),
        ("p95", "#bc4c00"),
        ("p99", "#8250df"),
    ];
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn header(r: &LoadReport) -> String {
    format!("waymark load: {} · {}", r.journey, plan_line(r))
}

/// The model, the steps, warm-up and shards in one line.
fn plan_line(r: &LoadReport) -> String {
    let mut s = format!(
        "{} model · {} step{} of {}s",
        r.model,
        r.steps.len(),
        if r.steps.len() == 1 { "" } else { "s" },
        r.step_duration_s
    );
    if r.warmup_s > 0.0 {
        let _ = write!(
            s,
            " · the first {}s of each step is warm-up, not measured",
            r.warmup_s
        );
    }
    if r.shards_merged > 1 {
        let _ = write!(s, " · {} shards merged", r.shards_merged);
    }
    if let Some(shard) = &r.shard {
        let _ = write!(s, " · shard {shard}");
    }
    s
}

fn errors_cell(s: &StepResult) -> String {
    format!("{:.2} %", s.error_rate() * 100.0)
}

/// The summary printed at the end of a run.
pub fn terminal(r: &LoadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(r));
    if r.interrupted {
        let _ = writeln!(
            out,
            "interrupted: the figures below are what was measured before Ctrl-C"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>4}  {:>10}  {:>10}  {:>9}  {:>9}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}",
        "step",
        "load",
        "iterations",
        "it/s",
        "req/s",
        "errors",
        "p50",
        "p90",
        "p95",
        "p99",
        "max",
        "gen CPU"
    );
    for s in &r.steps {
        let p = s.counts.latency.percentiles();
        let _ = writeln!(
            out,
            "{:>4}  {:>10}  {:>10}  {:>9.1}  {:>9.1}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>5.0} %{}{}{}",
            s.index + 1,
            s.label(),
            s.counts.iterations,
            s.throughput,
            s.request_rate,
            errors_cell(s),
            ms(p.p50_ms),
            ms(p.p90_ms),
            ms(p.p95_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            (s.generator.cpu + s.generator.cpu_wait) * 100.0,
            if s.generator.is_saturated() {
                "  (waymark saturated)"
            } else {
                ""
            },
            if s.cut_short { "  (cut short)" } else { "" },
            if r.passes > 1 {
                format!("  (pass {})", s.pass + 1)
            } else {
                String::new()
            }
        );
    }
    let t = &r.total;
    let p = t.latency.percentiles();
    let _ = writeln!(
        out,
        "{:>4}  {:>10}  {:>10}  {:>9}  {:>9}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}",
        "all",
        "",
        t.iterations,
        "",
        "",
        format!("{:.2} %", t.error_rate() * 100.0),
        ms(p.p50_ms),
        ms(p.p90_ms),
        ms(p.p95_ms),
        ms(p.p99_ms),
        ms(p.max_ms),
    );
    if !t.errors.is_empty() {
        let kinds: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "errors by kind: {}", kinds.join(", "));
        for (k, m) in &t.error_examples {
            let _ = writeln!(out, "  first {k}: {m}");
        }
    }
    if let Some(words) = crate::generator::summary(&r.steps) {
        let _ = writeln!(out, "{words}");
    }
    spread_section(&mut out, r);
    observed_section(&mut out, r);
    let waited: u64 = r.steps.iter().map(|s| s.waited_for_slot).sum();
    if waited > 0 {
        let _ = writeln!(
            out,
            "{waited} arrivals found every slot busy (--max-vus) and waited; the wait is in their latency"
        );
    }

    if !t.journey_steps.is_empty() {
        let _ = writeln!(out, "\njourney steps (all measured iterations)");
        if t.journey_steps.contains_key(crate::OTHER_STEPS) {
            let _ = writeln!(
                out,
                "  (the journey named more than {} distinct steps; the rest share \"{}\")",
                crate::MAX_STEP_NAMES - 1,
                crate::OTHER_STEPS
            );
        }
        for (name, h) in &t.journey_steps {
            let p = h.percentiles();
            let _ = writeln!(
                out,
                "  {name:<24} p50 {:>9}  p95 {:>9}  p99 {:>9}  max {:>9}",
                ms(p.p50_ms),
                ms(p.p95_ms),
                ms(p.p99_ms),
                ms(p.max_ms)
            );
        }
    }
    if t.requests > 0 {
        let _ = writeln!(
            out,
            "\nrequest phases, mean per request ({} requests)",
            t.requests
        );
        let _ = write!(out, " ");
        for ph in PHASES {
            let mean = t.phases.get(ph).map_or(0.0, Histo::mean_ms);
            let _ = write!(out, " {ph} {}", ms(mean));
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out);
    match (&r.usl, &r.usl_refused) {
        (Some(f), _) => {
            let unit = if r.model == "closed" {
                "user"
            } else {
                "in flight"
            };
            let _ = writeln!(
                out,
                "Universal Scalability Law fit ({} points): λ {:.2} it/s per {unit}, σ {:.2} % (serialization), κ {:.6} (crosstalk), R² {:.3}",
                f.points,
                f.lambda,
                f.sigma * 100.0,
                f.kappa,
                f.r_squared
            );
            match (f.peak_concurrency, f.peak_throughput) {
                (Some(n), Some(x)) => {
                    let _ = writeln!(
                        out,
                        "  peak at N* = {n:.0}, predicted throughput there {x:.1} it/s"
                    );
                }
                (None, Some(x)) => {
                    let _ = writeln!(out, "  no peak; throughput tends to {x:.1} it/s");
                }
                _ => {}
            }
            if !f.predictions.is_empty() {
                let said: Vec<String> = f
                    .predictions
                    .iter()
                    .map(|p| {
                        format!(
                            "{:.0} {unit}{} {:.1} it/s ({:.1}–{:.1})",
                            p.concurrency,
                            if r.model == "closed" && p.concurrency != 1.0 {
                                "s"
                            } else {
                                ""
                            },
                            p.throughput,
                            p.low,
                            p.high
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  predicted beyond the ramp (95 % prediction interval): {}",
                    said.join(" · ")
                );
            }
            for n in &f.notes {
                let _ = writeln!(out, "  note: {n}");
            }
            if r.model == "open" {
                let _ = writeln!(
                    out,
                    "  (open model: N is the mean number of journeys in flight, measured)"
                );
            }
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "no USL fit: {why}");
        }
        (None, None) => {}
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if !r.slo.is_empty() {
        let _ = writeln!(
            out,
            "\nSLO gates (latency and errors over all measured iterations)"
        );
        for g in &r.slo {
            let _ = writeln!(
                out,
                "  {}  {:<24} {}",
                if g.passed { "PASS" } else { "FAIL" },
                g.gate,
                g.figures()
            );
        }
    }
    out
}

/// `mean (lowest–highest, ±half the range in %)` of the passes.
pub(crate) fn spread_words(values: &[Option<f64>], unit: &dyn Fn(f64) -> String) -> String {
    match crate::LevelSpread::range(values) {
        Some((lo, mean, hi)) => {
            let pm = if mean > 0.0 {
                format!(", ±{:.1} %", (hi - lo) / 2.0 / mean * 100.0)
            } else {
                String::new()
            };
            format!("{} ({}–{}{pm})", unit(mean), unit(lo), unit(hi))
        }
        None => "-".into(),
    }
}

/// Each level's passes: mean, lowest and highest.
fn spread_section(out: &mut String, r: &LoadReport) {
    let Some(sp) = &r.spread else { return };
    let _ = writeln!(
        out,
        "\nrun-to-run spread over {} passes: mean (lowest–highest, ±half the range)",
        sp.passes
    );
    for l in &sp.levels {
        let _ = writeln!(
            out,
            "  {:>10}  it/s {:<34} p95 {}",
            l.level,
            spread_words(&l.throughput, &|v| format!("{v:.1}")),
            spread_words(&l.p95_ms, &ms)
        );
    }
    let _ = writeln!(
        out,
        "  σ of each pass alone: {}",
        spread_words(&sp.sigma, &|v| format!("{:.2} %", v * 100.0))
    );
    if sp.peak.iter().any(Option::is_some) {
        let _ = writeln!(
            out,
            "  N* of each pass alone: {}",
            spread_words(&sp.peak, &|v| format!("{v:.1}"))
        );
    }
}

/// A Prometheus value as read: enough digits for a CPU share or a byte count.
pub(crate) fn observed_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The `--observe` series beside each step: average / max.
fn observed_section(out: &mut String, r: &LoadReport) {
    if r.observed.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nserver series from Prometheus, average / max over each step's measured window"
    );
    let _ = write!(out, "{:>4}  {:>10}", "step", "load");
    for o in &r.observed {
        let _ = write!(out, "  {:>21}", o.name);
    }
    let _ = writeln!(out);
    for (i, s) in r.steps.iter().enumerate() {
        let _ = write!(out, "{:>4}  {:>10}", s.index + 1, s.label());
        for o in &r.observed {
            let cell = match o.steps.get(i).copied().flatten() {
                Some(v) => format!("{} / {}", observed_value(v.avg), observed_value(v.max)),
                None => "-".into(),
            };
            let _ = write!(out, "  {cell:>21}");
        }
        let _ = writeln!(out);
    }
    for o in &r.observed {
        let _ = writeln!(out, "  {}: {}", o.name, o.query);
    }
}

mod compare_html;
mod html;
pub use compare_html::compare_html;
pub use html::html;

/// The audit's gates as JUnit test cases, one per `--slo` gate, for the
/// CI's test report; a run that was interrupted adds an error case, so a
/// cut audit never reads as green.
pub fn junit(r: &LoadReport) -> std::io::Result<String> {
    use waymark_record::junit::{Case, Outcome, Suite, to_xml};
    let classname = format!("{}.load", r.journey);
    let mut cases: Vec<Case> = r
        .slo
        .iter()
        .map(|g| Case {
            classname: classname.clone(),
            name: g.gate.clone(),
            time: std::time::Duration::ZERO,
            outcome: if g.passed {
                Outcome::Passed
            } else {
                let message = format!("{}: {}", g.gate, g.figures());
                Outcome::Failure {
                    text: message.clone(),
                    message,
                }
            },
        })
        .collect();
    if r.interrupted {
        let message = "the audit was interrupted before its last step".to_string();
        cases.push(Case {
            classname: classname.clone(),
            name: "complete".into(),
            time: std::time::Duration::ZERO,
            outcome: Outcome::Error {
                text: message.clone(),
                message,
            },
        });
    }
    let time: f64 = r.steps.iter().map(|s| s.duration_s).sum();
    let suite = Suite {
        name: format!("waymark load {}", r.journey),
        timestamp: humantime::parse_rfc3339_weak(&r.started_at).ok(),
        time: std::time::Duration::try_from_secs_f64(time).unwrap_or_default(),
        cases,
    };
    to_xml("waymark load", &[suite])
}
