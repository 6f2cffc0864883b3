//! What may be shown to anyone: the status page (`/status-page`, the
//! journeys `[[ui.group]]` names, rendered on the server, no script) and
//! SVG badges for READMEs (`/badge/{journey}/uptime/7d.svg`,
//! `/badge/{journey}/p95.svg`).

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::api::{self, ApiError, OverviewQuery};
use crate::config::UiConfig;
use crate::store::Store;

/// The rows of the overview for some journeys (all their locations): only
/// theirs are read, however many journeys the history holds.
/// The overview's rows of `journeys` (every location of each).
fn rows_of(
    store: &Store,
    ui: &UiConfig,
    now: SystemTime,
    journeys: Vec<String>,
) -> Result<Vec<Value>, ApiError> {
    let v = api::overview(
        store,
        ui,
        &super::NextRuns::default(),
        now,
        &OverviewQuery {
            per_page: usize::MAX,
            journeys: Some(journeys),
            ..OverviewQuery::default()
        },
    )?;
    Ok(v["rows"].as_array().cloned().unwrap_or_default())
}

/// A journey over all its locations: the worst current status, runs and
/// passes per day and per window.
fn journey_summary(rows: &[Value], journey: &str) -> Value {
    let mine: Vec<&Value> = rows.iter().filter(|r| r["journey"] == journey).collect();
    let status = if mine.is_empty() {
        "unknown"
    } else if mine.iter().all(|r| r["status"] == "pass") {
        "pass"
    } else {
        "fail"
    };
    let mut days: Vec<(String, u64, u64)> = Vec::new();
    for r in &mine {
        for (i, d) in r["days"].as_array().into_iter().flatten().enumerate() {
            if days.len() <= i {
                days.push((d["day"].as_str().unwrap_or("").to_string(), 0, 0));
            }
            days[i].1 += d["runs"].as_u64().unwrap_or(0);
            days[i].2 += d["passed"].as_u64().unwrap_or(0);
        }
    }
    let (runs, passed) = days.iter().fold((0, 0), |(a, b), (_, r, p)| (a + r, b + p));
    json!({
        "journey": journey,
        "status": status,
        "uptime_90d": (runs > 0).then(|| passed as f64 / runs as f64),
        "days": days.iter().map(|(d, r, p)| json!({"day": d, "runs": r, "passed": p})).collect::<Vec<_>>(),
        "locations": mine.iter().map(|r| json!({"location": r["location"], "status": r["status"]})).collect::<Vec<_>>(),
    })
}

/// `/api/status-page`: the groups of `[ui]`, each journey summed over its
/// locations.
pub fn status_page(store: &Store, ui: &UiConfig, now: SystemTime) -> Result<Value, ApiError> {
    let named: Vec<String> = ui.groups.iter().flat_map(|(_, js)| js.clone()).collect();
    let rows = rows_of(store, ui, now, named)?;
    let groups: Vec<Value> = ui
        .groups
        .iter()
        .map(|(name, journeys)| {
            json!({
                "name": name,
                "journeys": journeys.iter().map(|j| journey_summary(&rows, j)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let all_up = groups
        .iter()
        .flat_map(|g| g["journeys"].as_array().cloned().unwrap_or_default())
        .all(|j| j["status"] == "pass");
    Ok(json!({"title": ui.title, "operational": all_up, "groups": groups}))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `/status-page`: the same, as a page that needs no script.
pub fn status_page_html(page: &Value) -> String {
    let title = escape(page["title"].as_str().unwrap_or("Status"));
    let mut h = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body><header><b>{title}</b></header><main>"
    );
    let banner = if page["operational"] == true {
        "<h1 class=\"pass\">All systems operational</h1>"
    } else {
        "<h1 class=\"fail\">Some systems are failing</h1>"
    };
    h.push_str(banner);
    for g in page["groups"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<h2>{}</h2><table>",
            escape(g["name"].as_str().unwrap_or(""))
        );
        for j in g["journeys"].as_array().into_iter().flatten() {
            let status = j["status"].as_str().unwrap_or("unknown");
            let uptime = j["uptime_90d"]
                .as_f64()
                .map_or("–".to_string(), |u| format!("{:.2} %", u * 100.0));
            let mut cells = String::from("<div class=\"cells\">");
            for d in j["days"].as_array().into_iter().flatten() {
                let (runs, passed) = (
                    d["runs"].as_u64().unwrap_or(0),
                    d["passed"].as_u64().unwrap_or(0),
                );
                let class = match (runs, passed) {
                    (0, _) => "",
                    (r, p) if r == p => "up",
                    (_, 0) => "down",
                    _ => "part",
                };
                let _ = write!(
                    cells,
                    "<div class=\"cell {class}\" title=\"{}: {passed}/{runs}\"></div>",
                    escape(d["day"].as_str().unwrap_or(""))
                );
            }
            cells.push_str("</div>");
            let _ = write!(
                h,
                "<tr><td><span class=\"badge {status}\">{}</span></td><td>{}</td><td>{cells}</td><td>{uptime} over 90 days</td></tr>",
                if status == "pass" { "up" } else { status },
                escape(j["journey"].as_str().unwrap_or(""))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</main></body></html>");
    h
}

/// A badge in the usual two-part style.
fn badge(label: &str, value: &str, colour: &str) -> String {
    // Verdana 11px is about 6.5 px a character; a little room each side.
    let w = |s: &str| 10 + (s.chars().count() as u32) * 7;
    let (lw, vw) = (w(label), w(value));
    let (label, value) = (escape(label), escape(value));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{t}\" height=\"20\" role=\"img\" aria-label=\"{label}: {value}\">\
         <title>{label}: {value}</title>\
         <rect width=\"{lw}\" height=\"20\" fill=\"#555\"/><rect x=\"{lw}\" width=\"{vw}\" height=\"20\" fill=\"{colour}\"/>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"{lx}\" y=\"14\">{label}</text><text x=\"{vx}\" y=\"14\">{value}</text></g></svg>",
        t = lw + vw,
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

/// `/badge/{journey}/uptime/{window}.svg` and `/badge/{journey}/p95.svg`
/// (over every location; p95 of the last 24 h, the worst location's).
pub fn badge_svg(
    store: &Store,
    ui: &UiConfig,
    now: SystemTime,
    journey: &str,
    what: &[&str],
) -> Result<String, ApiError> {
    let rows = rows_of(store, ui, now, vec![journey.to_string()])?;
    let mine: Vec<&Value> = rows.iter().collect();
    if mine.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no runs of '{journey}' in the last 90 days"
        )));
    }
    match what {
        ["uptime", file] => {
            let window = file.strip_suffix(".svg").unwrap_or(file);
            if !["24h", "7d", "30d", "90d"].contains(&window) {
                return Err(ApiError::BadRequest(format!(
                    "uptime window '{window}': use 24h, 7d, 30d or 90d"
                )));
            }
            // Runs and passes of the window, over locations.
            let (mut runs, mut passed) = (0u64, 0u64);
            for r in &mine {
                runs += r["counts"][window]["runs"].as_u64().unwrap_or(0);
                passed += r["counts"][window]["passed"].as_u64().unwrap_or(0);
            }
            let (value, colour) = if runs == 0 {
                ("no runs".to_string(), "#9f9f9f")
            } else {
                let u = passed as f64 / runs as f64 * 100.0;
                let colour = if u >= 99.9 {
                    "#2da44e"
                } else if u >= 99.0 {
                    "#a4a61d"
                } else if u >= 95.0 {
                    "#d4a72c"
                } else {
                    "#c0262d"
                };
                (format!("{u:.2}%"), colour)
            };
            Ok(badge(&format!("uptime {window}"), &value, colour))
        }
        ["p95.svg"] => {
            let worst = mine
                .iter()
                .filter_map(|r| r["p95_ms_24h"].as_f64())
                .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
            let value = worst.map_or("no runs".to_string(), |v| {
                if v >= 1000.0 {
                    format!("{:.2} s", v / 1000.0)
                } else {
                    format!("{v:.0} ms")
                }
            });
            Ok(badge("p95", &value, "#0b5cad"))
        }
        _ => Err(ApiError::NotFound(
            "badges: /badge/JOURNEY/uptime/7d.svg or /badge/JOURNEY/p95.svg".into(),
        )),
    }
}
