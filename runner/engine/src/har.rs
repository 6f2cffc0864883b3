//! `waymark run --har FILE`: the run as an HTTP Archive (HAR 1.2), which a
//! browser's developer tools open. Secrets are redacted in it as everywhere.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use waymark_http::{Exchange, Request};
use waymark_record::RunRecord;

/// Default cap on each body kept in a HAR file.
pub const DEFAULT_BODY_CAP: usize = 64 * 1024;

/// One request as the HAR needs it: what was sent and what came back.
#[derive(Debug, Clone)]
pub struct Captured {
    started: SystemTime,
    method: String,
    url: String,
    request_headers: Vec<(String, String)>,
    request_body: Option<Vec<u8>>,
    outcome: Result<CapturedResponse, waymark_http::HttpError>,
    elapsed: Duration,
}

#[derive(Debug, Clone)]
struct CapturedResponse {
    status: u16,
    http_version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    body_size: usize,
    wire_bytes: u64,
    timings: waymark_http::Timings,
    reused: bool,
    https: bool,
    server_ip: String,
}

impl Captured {
    /// Keep `req` and its outcome; bodies cut at `cap` bytes.
    pub fn new(
        run_started: SystemTime,
        run_t0: std::time::Instant,
        req: &Request,
        ex: &Exchange,
        cap: usize,
    ) -> Self {
        let started = run_started + ex.started.saturating_duration_since(run_t0);
        let cut = |b: &[u8]| b[..b.len().min(cap)].to_vec();
        let outcome = match &ex.result {
            Ok(r) => Ok(CapturedResponse {
                status: r.status,
                http_version: r.http_version.to_string(),
                headers: r.headers.clone(),
                body: cut(&r.body),
                body_size: r.body.len(),
                wire_bytes: r.wire_bytes,
                timings: r.timings,
                reused: r.reused_connection,
                https: r.tls.is_some(),
                server_ip: r.remote_addr.ip().to_string(),
            }),
            Err(e) => Err(e.clone()),
        };
        let request_headers = match &ex.result {
            Ok(r) => r.request_headers.clone(),
            Err(_) => req.headers.clone(),
        };
        Captured {
            started,
            method: req.method.to_ascii_uppercase(),
            url: req.url.clone(),
            request_headers,
            request_body: req.body.as_ref().map(|b| cut(b)),
            outcome,
            elapsed: ex.elapsed,
        }
    }
}

use waymark_record::serde_time::as_millis as ms;

fn headers(h: &[(String, String)]) -> Value {
    Value::Array(
        h.iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect(),
    )
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn query(url: &str) -> Value {
    let pairs = url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect()
        })
        .unwrap_or_default();
    Value::Array(pairs)
}

/// Text as text; other bytes as base64, as HAR allows.
fn content_text(body: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), None),
        Err(_) => {
            use base64::Engine as _;
            (
                base64::engine::general_purpose::STANDARD.encode(body),
                Some("base64"),
            )
        }
    }
}

fn entry(c: &Captured) -> Value {
    let started = humantime::format_rfc3339_millis(c.started).to_string();
    let mut request = json!({
        "method": c.method,
        "url": c.url,
        "httpVersion": c.outcome.as_ref().map(|r| r.http_version.clone()).unwrap_or_else(|_| "HTTP/1.1".into()),
        "cookies": [],
        "headers": headers(&c.request_headers),
        "queryString": query(&c.url),
        "headersSize": -1,
        "bodySize": c.request_body.as_ref().map(|b| b.len() as i64).unwrap_or(0),
    });
    if let Some(body) = &c.request_body {
        let (text, _) = content_text(body);
        request["postData"] = json!({
            "mimeType": header(&c.request_headers, "content-type").unwrap_or("application/octet-stream"),
            "text": text,
        });
    }
    match &c.outcome {
        Ok(r) => {
            let t = &r.timings;
            // HAR: -1 where a phase did not happen; ssl is also inside connect.
            let (dns, connect, ssl) = if r.reused {
                (-1.0, -1.0, -1.0)
            } else {
                let ssl = if r.https { ms(t.tls) } else { -1.0 };
                (ms(t.resolve), ms(t.connect) + ms(t.tls), ssl)
            };
            let wait = ms(t.processing);
            let receive = ms(t.transfer);
            let time = [dns, connect, wait, receive]
                .iter()
                .filter(|v| **v >= 0.0)
                .sum::<f64>();
            let (text, encoding) = content_text(&r.body);
            let mut content = json!({
                "size": r.body_size,
                "compression": r.body_size as i64 - r.wire_bytes as i64,
                "mimeType": header(&r.headers, "content-type").unwrap_or("application/octet-stream"),
                "text": text,
            });
            if let Some(enc) = encoding {
                content["encoding"] = json!(enc);
            }
            if r.body.len() < r.body_size {
                content["comment"] = json!(format!(
                    "body cut at {} of {} bytes",
                    r.body.len(),
                    r.body_size
                ));
            }
            json!({
                "startedDateTime": started,
                "time": time,
                "request": request,
                "response": {
                    "status": r.status,
                    "statusText": hyper::StatusCode::from_u16(r.status).ok().and_then(|s| s.canonical_reason()).unwrap_or(""),
                    "httpVersion": r.http_version,
                    "cookies": [],
                    "headers": headers(&r.headers),
                    "content": content,
                    "redirectURL": header(&r.headers, "location").unwrap_or(""),
                    "headersSize": -1,
                    "bodySize": r.wire_bytes,
                },
                "cache": {},
                "timings": {
                    "blocked": -1, "dns": dns, "connect": connect, "ssl": ssl,
                    "send": 0, "wait": wait, "receive": receive,
                },
                "serverIPAddress": r.server_ip,
            })
        }
        // No response: status 0 and the reason, as browsers record a failed request.
        Err(e) => json!({
            "startedDateTime": started,
            "time": ms(c.elapsed),
            "request": request,
            "response": {
                "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
                "content": {"size": 0, "mimeType": "x-unknown"},
                "redirectURL": "", "headersSize": -1, "bodySize": -1,
                "_error": e.to_string(),
            },
            "cache": {},
            "timings": {"blocked": -1, "dns": -1, "connect": -1, "ssl": -1, "send": 0, "wait": ms(c.elapsed), "receive": 0},
        }),
    }
}

/// The HAR document of one run.
pub fn to_har(record: &RunRecord, captured: &[Captured], secrets: &[String]) -> Value {
    let mut har = json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "waymark", "version": env!("CARGO_PKG_VERSION")},
            "pages": [{
                "startedDateTime": humantime::format_rfc3339_millis(record.started_at).to_string(),
                "id": record.run_id,
                "title": format!("{} ({})", record.journey, record.status.as_str()),
                "pageTimings": {"onContentLoad": -1, "onLoad": ms(record.duration)},
            }],
            "entries": captured.iter().map(|c| {
                let mut e = entry(c);
                e["pageref"] = json!(record.run_id);
                e
            }).collect::<Vec<_>>(),
        }
    });
    redact(&mut har, &waymark_record::Redactor::new(secrets));
    har
}

fn redact(v: &mut Value, r: &waymark_record::Redactor) {
    match v {
        Value::String(s) => r.redact(s),
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, r)),
        Value::Object(o) => o.values_mut().for_each(|x| redact(x, r)),
        _ => {}
    }
}
