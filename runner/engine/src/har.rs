//! `waymark run --har FILE`: the run as an HTTP Archive (HAR 1.2), which a
//! browser's developer tools open. Secrets are redacted in it as everywhere.

use serde_json::{Value, json};

pub use crate::tape::Captured;
use waymark_record::RunRecord;

/// Default cap on each body kept in a HAR file.
pub const DEFAULT_BODY_CAP: usize = 64 * 1024;

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
        "httpVersion": c.response.as_ref().map_or_else(|| "HTTP/1.1".to_string(), |r| r.http_version.clone()),
        "cookies": [],
        "headers": headers(&c.request_headers),
        "queryString": query(&c.url),
        "headersSize": -1,
        "bodySize": c.request_body.as_ref().map_or(0, |b| b.size),
    });
    if let Some(body) = &c.request_body {
        let (text, _) = content_text(&body.bytes());
        request["postData"] = json!({
            "mimeType": header(&c.request_headers, "content-type").unwrap_or("application/octet-stream"),
            "text": text,
        });
    }
    match &c.response {
        Some(r) => {
            let t = &r.timings;
            // HAR: -1 where a phase did not happen; ssl is also inside connect.
            let (dns, connect, ssl) = if r.reused {
                (-1.0, -1.0, -1.0)
            } else {
                let ssl = if r.tls.is_some() { ms(t.tls) } else { -1.0 };
                (ms(t.resolve), ms(t.connect) + ms(t.tls), ssl)
            };
            let wait = ms(t.processing);
            let receive = ms(t.transfer);
            let time = [dns, connect, wait, receive]
                .iter()
                .filter(|v| **v >= 0.0)
                .sum::<f64>();
            let kept = r.body.bytes();
            let (text, encoding) = content_text(&kept);
            let mut content = json!({
                "size": r.body.size,
                "compression": r.body.size as i64 - r.wire_bytes as i64,
                "mimeType": header(&r.headers, "content-type").unwrap_or("application/octet-stream"),
                "text": text,
            });
            if let Some(enc) = encoding {
                content["encoding"] = json!(enc);
            }
            if (kept.len() as u64) < r.body.size {
                content["comment"] = json!(format!(
                    "body cut at {} of {} bytes",
                    kept.len(),
                    r.body.size
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
                "serverIPAddress": r.remote_addr.parse::<std::net::SocketAddr>().map_or_else(|_| r.remote_addr.clone(), |a| a.ip().to_string()),
            })
        }
        // No response: status 0 and the reason, as browsers record a failed request.
        None => json!({
            "startedDateTime": started,
            "time": ms(c.elapsed),
            "request": request,
            "response": {
                "status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
                "content": {"size": 0, "mimeType": "x-unknown"},
                "redirectURL": "", "headersSize": -1, "bodySize": -1,
                "_error": c.error.as_ref().map(ToString::to_string).unwrap_or_default(),
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
