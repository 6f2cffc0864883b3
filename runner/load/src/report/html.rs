//! The self-contained HTML report: inline SVG charts, no script, no
//! network, so it opens offline and prints.

use std::fmt::Write as _;

use super::{PHASES, colors, errors_cell, ms, plan_line};
use crate::{Histo, LoadReport, StepResult};

/// The pages' style sheet.
pub(super) const STYLE: &str = r#"body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#24292f;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.sub{color:#57606a} table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #d0d7de;text-align:right}
th{background:#f6f8fa} td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:600} .fail{color:#a40e26;font-weight:600}
.tick{font-size:11px;fill:#57606a} .label{font-size:12px;fill:#24292f}
.kv td{text-align:left} .note{color:#57606a}
svg{max-width:100%;height:auto;display:block}
"#;

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Round tick steps: 1, 2 or 5 times a power of ten, about `n` ticks.
fn ticks(max: f64, n: usize) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0, 1.0];
    }
    let raw = max / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let mut v = 0.0;
    while v <= max * 1.0001 + step {
        out.push(v);
        if v >= max {
            break;
        }
        v += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Plot area and scales of one chart.
pub(super) struct Frame {
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) left: f64,
    pub(super) top: f64,
    pub(super) right: f64,
    pub(super) bottom: f64,
    pub(super) xmax: f64,
    pub(super) ymax: f64,
}

impl Frame {
    pub(super) fn new(xmax: f64, ymax: f64) -> Frame {
        let xt = ticks(xmax, 6);
        let yt = ticks(ymax, 5);
        Frame {
            w: 720.0,
            h: 340.0,
            left: 64.0,
            top: 16.0,
            right: 16.0,
            bottom: 44.0,
            xmax: xt.last().copied().unwrap_or(1.0),
            ymax: yt.last().copied().unwrap_or(1.0),
        }
    }

    pub(super) fn x(&self, v: f64) -> f64 {
        self.left + v / self.xmax * (self.w - self.left - self.right)
    }

    pub(super) fn y(&self, v: f64) -> f64 {
        self.h - self.bottom - v / self.ymax * (self.h - self.top - self.bottom)
    }

    pub(super) fn axes(&self, svg: &mut String, xlabel: &str, ylabel: &str) {
        let (x0, y0) = (self.left, self.h - self.bottom);
        for t in ticks(self.ymax, 5) {
            let y = self.y(t);
            let _ = write!(
                svg,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d0d7de" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
                self.w - self.right,
                x0 - 6.0,
                y + 4.0,
                fmt_tick(t)
            );
        }
        for t in ticks(self.xmax, 6) {
            let x = self.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#57606a" stroke-width="1"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
                y0 + 5.0,
                y0 + 18.0,
                fmt_tick(t)
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y0}" x2="{:.1}" y2="{y0}" stroke="#57606a"/><line x1="{x0}" y1="{:.1}" x2="{x0}" y2="{y0}" stroke="#57606a"/><text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" class="label">{}</text>"##,
            self.w - self.right,
            self.top,
            (self.left + self.w - self.right) / 2.0,
            self.h - 6.0,
            esc(xlabel),
            (self.top + self.h - self.bottom) / 2.0,
            esc(ylabel)
        );
    }

    pub(super) fn open(&self, title: &str) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}">"#,
            self.w,
            self.h,
            self.w,
            self.h,
            esc(title)
        )
    }
}

/// The fitted curve from 0 to `xmax`, as points to draw (none without a fit).
pub(super) fn usl_curve(fit: Option<&crate::UslFit>, xmax: f64) -> Vec<(f64, f64)> {
    fit.map_or_else(Vec::new, |f| {
        (0..=120)
            .map(|i| {
                let n = xmax * f64::from(i) / 120.0;
                (n, f.predict(n))
            })
            .collect()
    })
}

/// The x axis: users in the closed model, the measured mean in flight in the open one.
fn concurrency_label(r: &LoadReport) -> &'static str {
    if r.model == "closed" {
        "concurrent users (N)"
    } else {
        "journeys in flight, mean (N)"
    }
}

/// The throughput chart's x axis (and the observed series', drawn on the
/// same one): the largest level, or the peak if it is near; and the peak
/// to mark.
fn x_extent(r: &LoadReport) -> (f64, Option<f64>) {
    let max_n = r
        .steps
        .iter()
        .filter(|s| s.counts.iterations > 0)
        .map(|s| s.concurrency())
        .fold(1.0, f64::max);
    let peak = r
        .usl
        .as_ref()
        .and_then(|f| f.peak_concurrency)
        .filter(|n| *n <= 3.0 * max_n);
    // The predictions beyond the ramp are drawn too.
    let predicted = r
        .usl
        .as_ref()
        .map(|f| {
            f.predictions
                .iter()
                .map(|p| p.concurrency)
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    (
        peak.map_or(max_n, |n| n.max(max_n)).max(predicted) * 1.1,
        peak,
    )
}

/// One `--observe` series against the load level: the average of each
/// step as a filled point, its max as a ring above it.
fn observed_chart(r: &LoadReport, o: &crate::observe::Series) -> String {
    let (xmax, _) = x_extent(r);
    let points: Vec<(f64, crate::observe::Observed)> = r
        .steps
        .iter()
        .zip(&o.steps)
        .filter_map(|(s, v)| Some((s.concurrency(), (*v)?)))
        .collect();
    let ymax = points.iter().map(|p| p.1.max).fold(0.0, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let f = Frame::new(xmax, ymax);
    let mut svg = f.open(&format!("{} against concurrency", o.name));
    f.axes(&mut svg, concurrency_label(r), &o.name);
    for (n, v) in &points {
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#57606a"/><circle cx="{x:.1}" cy="{:.1}" r="4" fill="none" stroke="#57606a" stroke-width="2"/><circle cx="{x:.1}" cy="{:.1}" r="6" fill="#0a3069"/>"##,
            f.y(v.avg),
            f.y(v.max),
            f.y(v.max),
            f.y(v.avg),
            x = f.x(*n),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn throughput_chart(r: &LoadReport) -> String {
    // Steps where waymark was saturated are drawn hollow: not the target's.
    let points: Vec<(f64, f64, bool)> = r
        .steps
        .iter()
        .filter(|s| s.counts.iterations > 0)
        .map(|s| (s.concurrency(), s.throughput, s.generator.is_saturated()))
        .collect();
    let (xmax, peak) = x_extent(r);
    let curve = usl_curve(r.usl.as_ref(), xmax);
    let predictions: &[crate::usl::Prediction] =
        r.usl.as_ref().map_or(&[], |f| f.predictions.as_slice());
    let ymax = points
        .iter()
        .map(|p| p.1)
        .chain(curve.iter().map(|p| p.1))
        .chain(predictions.iter().map(|p| p.high))
        .fold(1.0, f64::max)
        * 1.1;
    let f = Frame::new(xmax, ymax);
    let mut svg = f.open("Throughput against concurrency");
    let xlabel = concurrency_label(r);
    f.axes(&mut svg, xlabel, "journeys per second");
    if !curve.is_empty() {
        let path: Vec<String> = curve
            .iter()
            .map(|(n, x)| format!("{:.1},{:.1}", f.x(*n), f.y(*x)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="3"/>"#,
            path.join(" "),
            colors::USL
        );
    }
    if let (Some(n), Some(fit)) = (peak, &r.usl) {
        let x = f.x(n);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#24292f" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" class="label">N* = {n:.0} ({:.0}/s)</text>"##,
            f.top,
            f.h - f.bottom,
            x + 6.0,
            f.top + 14.0,
            fit.predict(n)
        );
    }
    // Each prediction as a bar over its 95 % interval, capped.
    for p in predictions {
        let x = f.x(p.concurrency);
        let (lo, hi) = (f.y(p.low), f.y(p.high));
        // Near the right edge the label goes to the bar's left.
        let (tx, anchor) = if x > f.x(xmax * 0.7) {
            (x - 10.0, "end")
        } else {
            (x + 8.0, "start")
        };
        let _ = write!(
            svg,
            r#"<g stroke="{c}" stroke-width="2"><line x1="{x:.1}" y1="{lo:.1}" x2="{x:.1}" y2="{hi:.1}"/><line x1="{:.1}" y1="{lo:.1}" x2="{:.1}" y2="{lo:.1}"/><line x1="{:.1}" y1="{hi:.1}" x2="{:.1}" y2="{hi:.1}"/></g><text x="{tx:.1}" y="{:.1}" class="label" text-anchor="{anchor}">predicted {:.0}/s ({:.0}–{:.0})</text>"#,
            x - 6.0,
            x + 6.0,
            x - 6.0,
            x + 6.0,
            f.y(p.throughput) + 4.0,
            p.throughput,
            p.low,
            p.high,
            c = colors::PREDICTED,
        );
    }
    for (n, x, saturated) in &points {
        let fill = if *saturated { "none" } else { colors::MEASURED };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="6" fill="{fill}" stroke="{}" stroke-width="2"/>"#,
            f.x(*n),
            f.y(*x),
            colors::MEASURED
        );
    }
    svg.push_str("</svg>");
    svg
}

fn latency_chart(r: &LoadReport) -> String {
    // One line through the levels: repeated passes are folded, or the
    // line would run back to the first level for each pass.
    let levels = r.levels();
    let steps: Vec<&StepResult> = levels.iter().filter(|s| s.counts.iterations > 0).collect();
    let xmax = steps.iter().map(|s| s.concurrency()).fold(1.0, f64::max) * 1.05;
    let ymax = steps
        .iter()
        .map(|s| s.counts.latency.quantile_ms(0.99))
        .fold(1.0, f64::max)
        * 1.1;
    let f = Frame::new(xmax, ymax);
    let mut svg = f.open("Latency percentiles against concurrency");
    let xlabel = concurrency_label(r);
    f.axes(&mut svg, xlabel, "journey latency, ms");
    for (i, (name, color)) in colors::PERCENTILES.iter().enumerate() {
        let q = [0.50, 0.90, 0.95, 0.99][i];
        let pts: Vec<String> = steps
            .iter()
            .map(|s| {
                format!(
                    "{:.1},{:.1}",
                    f.x(s.concurrency()),
                    f.y(s.counts.latency.quantile_ms(q))
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{color}"/>"#);
        }
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}" class="tick">{name}</text>"#,
            f.left + 12.0 + 64.0 * i as f64,
            f.top + 4.0,
            f.left + 28.0 + 64.0 * i as f64,
            f.top + 14.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn phase_chart(r: &LoadReport) -> String {
    let folded = r.passes > 1;
    let rows: Vec<(String, [f64; 5])> = r
        .levels()
        .iter()
        .filter(|s| s.counts.requests > 0)
        .map(|s| {
            let mut means = [0.0; 5];
            for (i, ph) in PHASES.iter().enumerate() {
                means[i] = s.counts.phases.get(*ph).map_or(0.0, Histo::mean_ms);
            }
            let name = if folded {
                format!("{} (all passes)", s.label())
            } else {
                format!("{} · {}", s.index + 1, s.label())
            };
            (name, means)
        })
        .collect();
    let total_max = rows
        .iter()
        .map(|(_, m)| m.iter().sum::<f64>())
        .fold(0.001, f64::max);
    let bar = 22.0;
    let gap = 10.0;
    let mut f = Frame::new(total_max * 1.05, 1.0);
    f.left = 130.0;
    f.top = 34.0;
    f.h = f.top + f.bottom + rows.len().max(1) as f64 * (bar + gap);
    let mut svg = f.open("Mean request phases per step");
    for t in ticks(f.xmax, 6) {
        let x = f.x(t);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#d0d7de"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            f.top,
            f.h - f.bottom,
            f.h - f.bottom + 16.0,
            fmt_tick(t)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">mean time per request, ms</text>"#,
        (f.left + f.w - f.right) / 2.0,
        f.h - 6.0
    );
    for (i, (label, means)) in rows.iter().enumerate() {
        let y = f.top + i as f64 * (bar + gap);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            f.left - 8.0,
            y + bar * 0.7,
            esc(label)
        );
        let mut acc = 0.0;
        for (j, m) in means.iter().enumerate() {
            let x0 = f.x(acc);
            let x1 = f.x(acc + m);
            acc += m;
            if x1 - x0 > 0.0 {
                let _ = write!(
                    svg,
                    r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{bar}" fill="{}"><title>{}: {:.3} ms</title></rect>"#,
                    x1 - x0,
                    colors::PHASES[j],
                    PHASES[j],
                    m
                );
            }
        }
    }
    for (j, ph) in PHASES.iter().enumerate() {
        let x = f.left + 100.0 * j as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="8" width="12" height="12" fill="{}"/><text x="{:.1}" y="18" class="tick">{ph}</text>"#,
            colors::PHASES[j],
            x + 16.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The whole report as one HTML file.
pub fn html(r: &LoadReport) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>waymark load: {journey}</title>
<style>
{style}</style></head><body>
<h1>waymark load: {journey}</h1>
<div class="sub">{sub}</div>
"#,
        style = STYLE,
        journey = esc(&r.journey),
        sub = esc(&format!(
            "{} · started {} · location {} · waymark {}",
            plan_line(r),
            r.started_at,
            r.location,
            r.waymark_version
        )),
    );
    if r.interrupted {
        h.push_str(r#"<p class="fail">Interrupted: the figures are what was measured before the run was stopped.</p>"#);
    }
    if !r.slo.is_empty() {
        h.push_str(
            "<h2>SLO gates</h2><table><tr><th>gate</th><th>result</th><th>measured</th></tr>",
        );
        for g in &r.slo {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="{}">{}</td><td>{}</td></tr>"#,
                esc(&g.gate),
                if g.passed { "pass" } else { "fail" },
                if g.passed { "pass" } else { "FAIL" },
                esc(&g.figures())
            );
        }
        h.push_str("</table><div class=\"note\">Latency and error gates are judged on all measured iterations of all steps.</div>");
    }

    h.push_str("<h2>Throughput and the Universal Scalability Law</h2>");
    h.push_str(&throughput_chart(r));
    match (&r.usl, &r.usl_refused) {
        (Some(f), _) => {
            let _ = write!(
                h,
                r#"<table class="kv"><tr><td>λ (one {unit}'s throughput)</td><td>{:.3} /s</td></tr><tr><td>σ (serialization)</td><td>{:.3} %</td></tr><tr><td>κ (crosstalk)</td><td>{:.6}</td></tr><tr><td>R²</td><td>{:.4}</td></tr><tr><td>peak concurrency N*</td><td>{}</td></tr><tr><td>predicted throughput at N*</td><td>{}</td></tr></table>"#,
                f.lambda,
                f.sigma * 100.0,
                f.kappa,
                f.r_squared,
                f.peak_concurrency
                    .map_or("none (throughput does not fall)".into(), |n| format!(
                        "{n:.1}"
                    )),
                f.peak_throughput
                    .map_or("-".into(), |x| format!("{x:.1} /s")),
                unit = if r.model == "closed" {
                    "user"
                } else {
                    "journey in flight"
                },
            );
            if !f.predictions.is_empty() {
                h.push_str("<table><tr><th>concurrency</th><th>predicted throughput</th><th>95 % prediction interval</th></tr>");
                for p in &f.predictions {
                    let _ = write!(
                        h,
                        "<tr><td>{:.0}</td><td>{:.1} /s</td><td>{:.1} – {:.1} /s</td></tr>",
                        p.concurrency, p.throughput, p.low, p.high
                    );
                }
                h.push_str("</table><div class=\"note\">Where a measurement at that concurrency should fall, 19 times in 20, if the server keeps behaving as it did in the ramp (a bootstrap of the fit's residuals).</div>");
            }
            for n in &f.notes {
                let _ = write!(h, r#"<div class="note">{}</div>"#, esc(n));
            }
        }
        (None, Some(why)) => {
            let _ = write!(h, r#"<p class="note">No USL fit: {}</p>"#, esc(why));
        }
        _ => {}
    }

    if !r.observed.is_empty() {
        h.push_str("<h2>Server series beside the ramp</h2><div class=\"note\">From Prometheus over each step's measured window: the filled point is the average, the ring the largest value.</div>");
        for o in &r.observed {
            h.push_str(&observed_chart(r, o));
            let _ = write!(
                h,
                r#"<div class="note"><code>{}</code> = <code>{}</code></div>"#,
                esc(&o.name),
                esc(&o.query)
            );
        }
        h.push_str("<table><tr><th>step</th><th>load</th>");
        for o in &r.observed {
            let _ = write!(h, "<th>{} avg / max</th>", esc(&o.name));
        }
        h.push_str("</tr>");
        for (i, st) in r.steps.iter().enumerate() {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td>",
                st.index + 1,
                esc(&st.label())
            );
            for o in &r.observed {
                let cell = o.steps.get(i).copied().flatten().map_or("-".into(), |v| {
                    format!(
                        "{} / {}",
                        super::observed_value(v.avg),
                        super::observed_value(v.max)
                    )
                });
                let _ = write!(h, "<td>{}</td>", esc(&cell));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    for w in &r.warnings {
        let _ = write!(h, r#"<p class="fail">Warning: {}</p>"#, esc(w));
    }

    h.push_str("<h2>Latency percentiles</h2>");
    h.push_str(&latency_chart(r));

    h.push_str("<h2>Steps</h2><table><tr><th>step</th><th>load</th><th>measured</th><th>iterations</th><th>it/s</th><th>req/s</th><th>errors</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th><th>waymark CPU</th><th>start delay p99</th></tr>");
    for s in &r.steps {
        let p = s.counts.latency.percentiles();
        let _ = write!(
            h,
            "<tr><td>{}{}{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} % + {:.0} % waited</td><td>{}</td></tr>",
            s.index + 1,
            if s.cut_short { " (cut short)" } else { "" },
            if s.generator.is_saturated() {
                " (waymark saturated)"
            } else {
                ""
            },
            esc(&s.label()),
            s.measured_s,
            s.counts.iterations,
            s.throughput,
            s.request_rate,
            errors_cell(s),
            ms(p.p50_ms),
            ms(p.p90_ms),
            ms(p.p95_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            s.generator.cpu * 100.0,
            s.generator.cpu_wait * 100.0,
            ms(s.generator.start_delay.quantile_ms(0.99))
        );
    }
    h.push_str("</table>");
    if let Some(sp) = &r.spread {
        let _ = write!(
            h,
            "<h2>Run-to-run spread over {} passes</h2><table><tr><th>load</th><th>it/s: mean (lowest–highest, ±half the range)</th><th>p95</th></tr>",
            sp.passes
        );
        for l in &sp.levels {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.level),
                esc(&super::spread_words(&l.throughput, &|v| format!("{v:.1}"))),
                esc(&super::spread_words(&l.p95_ms, &ms)),
            );
        }
        let _ = write!(
            h,
            "</table><div class=\"note\">σ of each pass fitted alone: {}</div>",
            esc(&super::spread_words(&sp.sigma, &|v| format!(
                "{:.2} %",
                v * 100.0
            )))
        );
    }
    if let Some(words) = crate::generator::summary(&r.steps) {
        let _ = write!(h, r#"<div class="note">{}</div>"#, esc(&words));
    }
    if !r.total.errors.is_empty() {
        let kinds: Vec<String> = r
            .total
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = write!(
            h,
            r#"<div class="note">Errors by kind: {}</div>"#,
            esc(&kinds.join(", "))
        );
        for (k, m) in &r.total.error_examples {
            let _ = write!(h, r#"<div class="note">first {}: {}</div>"#, esc(k), esc(m));
        }
    }

    h.push_str("<h2>Request phases per step</h2>");
    h.push_str(&phase_chart(r));

    if !r.total.journey_steps.is_empty() {
        h.push_str("<h2>Journey steps (all measured iterations)</h2><table><tr><th>step</th><th>count</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>max</th></tr>");
        for (name, hist) in &r.total.journey_steps {
            let p = hist.percentiles();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                p.count,
                ms(p.p50_ms),
                ms(p.p90_ms),
                ms(p.p95_ms),
                ms(p.p99_ms),
                ms(p.max_ms)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(73.0, 6);
        assert_eq!(t.first(), Some(&0.0));
        assert!(*t.last().expect("some") >= 73.0);
        assert!(
            t.windows(2).all(|w| (w[1] - w[0] - 20.0).abs() < 1e-9),
            "{t:?}"
        );
    }
}
