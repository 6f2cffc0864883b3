//! The HTML page of `waymark load compare`: each round's measured points and
//! fitted USL curve on one chart with its N* marked, the tables of the
//! terminal, and each shared level's request phases side by side.

use std::fmt::Write as _;

use super::html::{Frame, STYLE, esc, usl_curve};
use crate::compare::Comparison;

/// A colour per round (after the fifth they repeat).
const ROUND_COLORS: [&str; 5] = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700"];

fn overlay(c: &Comparison) -> String {
    let closed = c.rounds[0].report.model == "closed";
    let max_n = c
        .rounds
        .iter()
        .flat_map(|r| r.report.steps.iter().map(|s| s.concurrency()))
        .fold(1.0, f64::max);
    let peaks: Vec<Option<f64>> = c
        .rounds
        .iter()
        .map(|r| {
            r.report
                .usl
                .as_ref()
                .and_then(|f| f.peak_concurrency)
                .filter(|n| *n <= 3.0 * max_n)
        })
        .collect();
    let xmax = peaks.iter().flatten().fold(max_n, |a, b| a.max(*b)) * 1.1;
    let curves: Vec<Vec<(f64, f64)>> = c
        .rounds
        .iter()
        .map(|r| usl_curve(r.report.usl.as_ref(), xmax))
        .collect();
    let ymax = c
        .rounds
        .iter()
        .flat_map(|r| r.report.steps.iter().map(|s| s.throughput))
        .chain(curves.iter().flatten().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let f = Frame::new(xmax, ymax);
    let mut svg = f.open("Throughput against concurrency, every round");
    f.axes(
        &mut svg,
        if closed {
            "concurrent users (N)"
        } else {
            "journeys in flight, mean (N)"
        },
        "journeys per second",
    );
    for (i, r) in c.rounds.iter().enumerate() {
        let color = ROUND_COLORS[i % ROUND_COLORS.len()];
        if !curves[i].is_empty() {
            let path: Vec<String> = curves[i]
                .iter()
                .map(|(n, x)| format!("{:.1},{:.1}", f.x(*n), f.y(*x)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
                path.join(" ")
            );
        }
        if let Some(n) = peaks[i] {
            let x = f.x(n);
            let _ = write!(
                svg,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" class="label" fill="{color}">N* = {n:.0}</text>"#,
                f.top,
                f.h - f.bottom,
                x + 4.0,
                f.top + 14.0 + 14.0 * i as f64,
            );
        }
        for s in r.report.steps.iter().filter(|s| s.counts.iterations > 0) {
            let fill = if s.generator.is_saturated() {
                "none"
            } else {
                color
            };
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{fill}" stroke="{color}" stroke-width="2"/>"#,
                f.x(s.concurrency()),
                f.y(s.throughput)
            );
        }
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}" class="label">{}</text>"#,
            f.w - 200.0,
            f.h - f.bottom - 20.0 - 18.0 * (c.rounds.len() - 1 - i) as f64,
            f.w - 182.0,
            f.h - f.bottom - 10.0 - 18.0 * (c.rounds.len() - 1 - i) as f64,
            esc(&r.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The comparison as one self-contained HTML file.
pub fn compare_html(c: &Comparison) -> String {
    let mut h = String::new();
    let names: Vec<&str> = c.rounds.iter().map(|r| r.name.as_str()).collect();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>waymark load compare: {journey}</title>
<style>
{STYLE}</style></head><body>
<h1>waymark load compare: {journey}</h1>
<div class="sub">{n} rounds: {rounds}</div>
"#,
        journey = esc(&c.rounds[0].report.journey),
        n = c.rounds.len(),
        rounds = esc(&names.join(" → ")),
    );
    if !c.summary.is_empty() {
        h.push_str("<h2>In words</h2><ul>");
        for s in &c.summary {
            let _ = write!(h, "<li>{}</li>", esc(s));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Throughput and the USL fit of each round</h2>");
    h.push_str(&overlay(c));
    h.push_str(r#"<div class="note">Hollow points: steps where waymark itself was saturated, left out of the fit.</div>"#);
    let head = |h: &mut String, first: &str| {
        let _ = write!(h, "<table><tr><th>{}</th>", esc(first));
        for n in &names {
            let _ = write!(h, "<th>{}</th>", esc(n));
        }
        h.push_str("<th>change (first → last)</th></tr>");
    };
    head(&mut h, "USL fit");
    for r in &c.fit {
        let _ = write!(h, "<tr><td>{}</td>", esc(&r.name));
        for s in &r.shown {
            let _ = write!(h, "<td>{}</td>", esc(s));
        }
        let _ = write!(h, "<td>{}</td></tr>", esc(&r.change));
    }
    h.push_str("</table>");
    if !c.levels.is_empty() {
        h.push_str("<h2>At each level every round measured</h2>");
        head(&mut h, "throughput /s · p95");
        for l in &c.levels {
            let _ = write!(h, "<tr><td>{}</td>", esc(&l.level.label()));
            for (t, p) in l.throughput.iter().zip(&l.p95_ms) {
                let _ = write!(h, "<td>{t:.1}/s · {p:.1} ms</td>");
            }
            let _ = write!(
                h,
                "<td>{} · {}</td></tr>",
                esc(&l.throughput_change),
                esc(&l.p95_change)
            );
        }
        h.push_str("</table>");
        h.push_str(
            "<h2>Mean request phases, ms, side by side</h2><table><tr><th>level</th><th>round</th>",
        );
        for p in waymark_record::PhaseTimings::PHASES {
            let _ = write!(h, "<th>{p}</th>");
        }
        h.push_str("</tr>");
        for l in &c.levels {
            for (name, ph) in names.iter().zip(&l.phases_ms) {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td>",
                    esc(&l.level.label()),
                    esc(name)
                );
                for v in ph {
                    let _ = write!(h, "<td>{v:.2}</td>");
                }
                h.push_str("</tr>");
            }
        }
        h.push_str("</table>");
    }
    if !c.unshared.is_empty() {
        h.push_str("<h2>Levels not in every round</h2><ul>");
        for u in &c.unshared {
            let _ = write!(h, "<li>{}</li>", esc(u));
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    h
}
