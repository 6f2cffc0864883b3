//! The waterfall a person reads: steps, checks, requests and a phase bar per
//! request, placed on the run's time axis.

use std::fmt::Write as _;

use waymark_engine::tape::Captured;
use waymark_record::serde_time::as_millis as ms;
use waymark_record::{Level, RequestRecord, RunRecord, Status};

/// Width of the time axis, in columns.
const BAR_WIDTH: usize = 40;

/// Phase glyphs, in phase order: resolve, connect, tls, processing, transfer.
const GLYPHS: [char; 5] = ['░', '▒', '▓', '█', '▄'];
/// The phases a bar is made of (all but `total`).
const PHASES: &[&str] = waymark_record::PHASE_NAMES.split_at(5).0;
/// ANSI colours of the phases (terminal only).
const COLOURS: [&str; 5] = ["36", "33", "35", "32", "34"];

struct Paint {
    on: bool,
}

impl Paint {
    fn code(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn status(&self, status: Status) -> String {
        let (code, text) = match status {
            Status::Pass => ("1;32", "PASS"),
            Status::Fail => ("1;31", "FAIL"),
            Status::Error => ("1;31", "ERROR"),
            Status::Timeout => ("1;31", "TIMEOUT"),
        };
        self.code(code, text)
    }
    fn mark(&self, ok: bool) -> String {
        if ok {
            self.code("32", "✓")
        } else {
            self.code("31", "✗")
        }
    }
    fn dim(&self, s: &str) -> String {
        self.code("2", s)
    }
}

/// Lines of a body shown under a request by `run -v`.
const BODY_LINES: usize = 12;
/// Longest body line shown by `run -v`, in characters.
const LINE_CHARS: usize = 200;

/// Render one run as a waterfall. `color` adds ANSI colours.
pub fn render(rec: &RunRecord, color: bool) -> String {
    render_verbose(rec, color, None)
}

/// As [`render`]; with `exchanges` (the run's, in order), each request is
/// followed by its request and response heads and the first lines of the
/// bodies, JSON pretty-printed, as `curl -v` shows them (`run -v`).
pub fn render_verbose(rec: &RunRecord, color: bool, exchanges: Option<&[Captured]>) -> String {
    let p = Paint { on: color };
    let mut exchanges = exchanges.unwrap_or_default().iter().peekable();
    let mut out = String::new();
    let checks: Vec<_> = rec.steps.iter().flat_map(|s| &s.checks).collect();
    let failed = checks.iter().filter(|c| !c.passed).count();
    let requests = rec.requests().count();
    let _ = writeln!(
        out,
        "{} {}  {}  {:.1} ms  {}",
        p.mark(rec.status == Status::Pass),
        p.status(rec.status),
        p.code("1", &rec.journey),
        ms(rec.duration),
        p.dim(&format!(
            "run {} · {} · attempt {}",
            rec.run_id, rec.location, rec.attempt
        )),
    );
    if rec
        .requests()
        .any(|r| r.tls.as_ref().is_some_and(|t| !t.verified))
    {
        let _ = writeln!(
            out,
            "  {}",
            p.code(
                "1;33",
                "⚠ INSECURE: server certificates were not verified (--insecure)"
            )
        );
    }
    let axis = ms(rec.duration).max(0.001);
    for step in &rec.steps {
        let _ = writeln!(
            out,
            "  {} {}  {}",
            p.code("1", &format!("▸ {}", step.name)),
            match step.status {
                Status::Pass => p.mark(true),
                Status::Fail => p.mark(false),
                other => p.status(other),
            },
            p.dim(&format!("{:.1} ms", ms(step.duration))),
        );
        for req in &step.requests {
            render_request(&mut out, &p, req, axis);
            // The record and the exchanges list requests in the same order;
            // one the record holds without an exchange (stopped in flight)
            // is passed over.
            if let Some(x) = exchanges
                .next_if(|x| x.method.eq_ignore_ascii_case(&req.method) && x.url == req.url)
            {
                render_exchange(&mut out, &p, x);
            }
        }
        for c in &step.checks {
            let detail = c
                .detail
                .as_deref()
                .map(|d| p.dim(&format!(" — {d}")))
                .unwrap_or_default();
            let _ = writeln!(out, "      {} {}{detail}", p.mark(c.passed), c.name);
        }
    }
    if !rec.logs.is_empty() {
        let _ = writeln!(out, "  {}", p.dim("logs"));
        for l in &rec.logs {
            let level = match l.level {
                Level::Debug => p.dim("debug"),
                Level::Info => "info ".to_string(),
                Level::Warn => p.code("33", "warn "),
                Level::Error => p.code("31", "error"),
            };
            let _ = writeln!(out, "    {level} {}", l.message);
        }
    }
    if let Some(e) = &rec.error {
        let kind = e.kind.as_str();
        // A journey that passes an HTTP error on as its own says its kind
        // already ("denied: …"): said once.
        let message = e
            .message
            .strip_prefix(kind)
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&e.message);
        let _ = writeln!(out, "  {} {message}", p.code("1;31", &format!("{kind}:")),);
    }
    let _ = writeln!(
        out,
        "  {}",
        p.dim(&format!(
            "{} · {} ({failed} failed) · {}",
            plural(rec.steps.len(), "step"),
            plural(checks.len(), "check"),
            plural(requests, "request"),
        ))
    );
    if requests > 0 {
        let legend: Vec<String> = GLYPHS
            .iter()
            .zip(PHASES)
            .zip(COLOURS)
            .map(|((g, name), c)| format!("{} {name}", p.code(c, &g.to_string())))
            .collect();
        let _ = writeln!(out, "  {}", p.dim(&legend.join("  ")));
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn render_request(out: &mut String, p: &Paint, req: &RequestRecord, axis: f64) {
    let t = &req.timings;
    let total = ms(t.total);
    let start = ms(req.start);
    let head = match (&req.status, &req.error) {
        (Some(status), _) => {
            let code = if *status < 400 { "32" } else { "31" };
            p.code(code, &status.to_string())
        }
        (None, Some(e)) => p.code("31", e.kind.as_str()),
        (None, None) => "-".into(),
    };
    let conn = if req.reused_connection {
        "reused connection"
    } else if req.status.is_some() {
        "new connection"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "      {} {}  {head}  {:.1} ms  {}",
        req.method,
        req.url,
        total,
        p.dim(
            &[req.http_version.as_deref().unwrap_or(""), conn]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" · ")
        ),
    );
    let phases = [t.resolve, t.connect, t.tls, t.processing, t.transfer].map(ms);
    let scale = BAR_WIDTH as f64 / axis;
    let mut bar = String::new();
    let offset = ((start * scale).round() as usize).min(BAR_WIDTH - 1);
    bar.push_str(&" ".repeat(offset));
    let mut used = offset;
    if req.error.is_some() {
        let width = ((total * scale).round() as usize).clamp(1, BAR_WIDTH - used);
        bar.push_str(&p.code("31", &"╳".repeat(width)));
        used += width;
    } else {
        // Cumulative rounding keeps the bar's end where the request ended.
        let mut acc = start;
        for (i, d) in phases.iter().enumerate() {
            let end = ((acc + d) * scale).round() as usize;
            let width = end.saturating_sub(used).min(BAR_WIDTH - used);
            acc += d;
            if width > 0 {
                bar.push_str(&p.code(COLOURS[i], &GLYPHS[i].to_string().repeat(width)));
                used += width;
            }
        }
        if used == offset && used < BAR_WIDTH {
            bar.push_str(&p.code(COLOURS[3], &GLYPHS[3].to_string()));
            used += 1;
        }
    }
    bar.push_str(&" ".repeat(BAR_WIDTH.saturating_sub(used)));
    let figures: Vec<String> = PHASES
        .iter()
        .zip(phases)
        .filter(|(name, d)| *d > 0.0 || matches!(**name, "processing" | "transfer"))
        .map(|(name, d)| format!("{name} {d:.2}"))
        .collect();
    let figures = match &req.error {
        None => figures.join("  "),
        // A failure shows how far it got: the phases it went through, the
        // last one timed up to the failure.
        Some(e) => e.phase.map_or_else(String::new, |failed_in| {
            t.reached(failed_in)
                .map(|(phase, d)| format!("{phase} {:.2}", ms(d)))
                .collect::<Vec<_>>()
                .join("  ")
                + " ✗"
        }),
    };
    let _ = writeln!(out, "        │{bar}│ {}", p.dim(&figures));
    if let Some(e) = &req.error {
        let _ = writeln!(out, "        {} {}", p.code("31", "✗"), e.message);
    }
}

fn render_exchange(out: &mut String, p: &Paint, x: &Captured) {
    // What we sent: HTTP/2 where the server took it, else HTTP/1.1 (a
    // server may answer that in HTTP/1.0).
    let version = match &x.response {
        Some(r) if r.http_version.starts_with("HTTP/2") => "HTTP/2",
        _ => "HTTP/1.1",
    };
    let target = url::Url::parse(&x.url).map_or_else(
        |_| x.url.clone(),
        |u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
    );
    let line = |out: &mut String, mark: &str, text: &str| {
        let _ = writeln!(out, "        {} {text}", p.dim(mark));
    };
    line(out, ">", &format!("{} {target} {version}", x.method));
    for (k, v) in &x.request_headers {
        line(out, ">", &format!("{k}: {v}"));
    }
    if let Some(b) = &x.request_body {
        body_lines(out, p, ">", b, &x.request_headers);
    }
    if let Some(r) = &x.response {
        let reason = hyper::StatusCode::from_u16(r.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        line(
            out,
            "<",
            &format!("{} {} {reason}", r.http_version, r.status),
        );
        for (k, v) in &r.headers {
            line(out, "<", &format!("{k}: {v}"));
        }
        body_lines(out, p, "<", &r.body, &r.headers);
    }
}

/// The first lines of a body: JSON pretty-printed, other text as it is,
/// binary as its size.
fn body_lines(
    out: &mut String,
    p: &Paint,
    mark: &str,
    body: &waymark_engine::tape::Body,
    headers: &[(String, String)],
) {
    if body.size == 0 {
        return;
    }
    let _ = writeln!(out, "        {}", p.dim(mark));
    let Some(text) = &body.text else {
        let kind = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map_or("binary", |(_, v)| v.as_str());
        let _ = writeln!(
            out,
            "        {} {}",
            p.dim(mark),
            p.dim(&format!("({} bytes of {kind})", body.size))
        );
        return;
    };
    let pretty = serde_json::from_str::<serde::de::IgnoredAny>(text)
        .is_ok()
        .then(|| indent_json(text));
    let shown = pretty.as_deref().unwrap_or(text);
    let lines: Vec<&str> = shown.lines().collect();
    for l in lines.iter().take(BODY_LINES) {
        let cut: String = l.chars().take(LINE_CHARS).collect();
        let more = if cut.len() < l.len() { " …" } else { "" };
        let _ = writeln!(out, "        {} {cut}{more}", p.dim(mark));
    }
    let mut rest = Vec::new();
    if lines.len() > BODY_LINES {
        rest.push(format!("{} more lines", lines.len() - BODY_LINES));
    }
    if body.is_cut() {
        rest.push(format!("{} bytes in all", body.size));
    }
    if !rest.is_empty() {
        let _ = writeln!(
            out,
            "        {} {}",
            p.dim(mark),
            p.dim(&format!("… ({})", rest.join(", ")))
        );
    }
}

/// Valid JSON laid out two spaces per level, its keys in the order the
/// server sent them (a parsed map would sort them).
fn indent_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on its line.
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use waymark_record::*;

    fn request(start: f64, total: f64, reused: bool) -> RequestRecord {
        let d = |ms: f64| Duration::from_secs_f64(ms / 1000.0);
        RequestRecord {
            method: "GET".into(),
            url: "http://127.0.0.1:1/pairs".into(),
            status: Some(200),
            http_version: Some("HTTP/1.1".into()),
            remote_addr: None,
            reused_connection: reused,
            start: d(start),
            timings: PhaseTimings {
                resolve: Duration::ZERO,
                connect: d(if reused { 0.0 } else { total / 4.0 }),
                tls: Duration::ZERO,
                processing: d(total / 2.0),
                transfer: d(if reused { total / 2.0 } else { total / 4.0 }),
                total: d(total),
            },
            bytes_received: 10,
            bytes_decoded: 10,
            tls: None,
            trace_id: None,
            span_id: None,
            error: None,
        }
    }

    #[test]
    fn json_bodies_keep_their_key_order() {
        let text = r#"{"z":1, "a":[1,{"b":"x,\"}"}],"e":{},"f":[ ]}"#;
        assert_eq!(
            indent_json(text),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    {\n      \"b\": \"x,\\\"}\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}"
        );
    }

    #[test]
    fn waterfall_places_requests_on_the_time_axis() {
        let rec = RunRecord {
            journey: "market".into(),
            run_id: "01".into(),
            location: "local".into(),
            attempt: 1,
            started_at: std::time::SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(100),
            status: Status::Fail,
            error: Some(RunError {
                kind: ErrorKind::Check,
                message: "1 check failed: b".into(),
            }),
            steps: vec![StepRecord {
                name: "list pairs".into(),
                status: Status::Fail,
                start: Duration::ZERO,
                duration: Duration::from_millis(100),
                checks: vec![
                    CheckRecord {
                        name: "a".into(),
                        passed: true,
                        detail: None,
                    },
                    CheckRecord {
                        name: "b".into(),
                        passed: false,
                        detail: Some("got 3".into()),
                    },
                ],
                requests: vec![request(0.0, 50.0, false), request(50.0, 50.0, true)],
            }],
            logs: vec![],
            maintenance: None,
        };
        let text = render(&rec, false);
        assert!(text.contains("✗ FAIL  market  100.0 ms"), "{text}");
        assert!(text.contains("✓ a\n"), "{text}");
        assert!(text.contains("✗ b — got 3"), "{text}");
        assert!(text.contains("check: 1 check failed: b"), "{text}");
        // A journey's message that already names its kind is said once.
        let mut denied = rec.clone();
        denied.error = Some(RunError {
            kind: ErrorKind::Denied,
            message: "denied: host 'x' is not in the allow-list".into(),
        });
        let text = render(&denied, false);
        assert!(
            text.contains("denied: host 'x'") && !text.contains("denied: denied"),
            "{text}"
        );
        let bars: Vec<&str> = text.lines().filter(|l| l.contains('│')).collect();
        assert_eq!(bars.len(), 2, "{text}");
        // First request fills the first half of the axis, the second the rest.
        let first: String = bars[0].split('│').nth(1).expect("bar").to_string();
        let second: String = bars[1].split('│').nth(1).expect("bar").to_string();
        assert_eq!(first.chars().count(), BAR_WIDTH);
        assert_eq!(first.trim_end().chars().count(), BAR_WIDTH / 2, "{first:?}");
        assert!(second.starts_with(&" ".repeat(BAR_WIDTH / 2)), "{second:?}");
        assert!(text.contains("reused connection"));
        assert!(!bars[1].contains("connect"), "reused: no connect figure");
    }
}
