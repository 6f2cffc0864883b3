//! The web UI of `waymark serve`: pages carried inside the binary (nothing
//! is fetched from elsewhere) and the JSON API they draw from, read from
//! the history store.
//!
//! - `/`: every journey and location: status, since when, uptime over
//!   24 h / 7 d / 30 d / 90 d and a bar of daily cells, p95 with a
//!   sparkline, an open incident; filtered and paged by the API.
//! - `/journeys/{name}`: response time split into phases over a window, a
//!   series per location, and a before/after comparison of two windows.
//! - `/runs/{id}`: one run's steps, requests as phase bars, checks, logs.

pub mod api;
pub mod public;

use std::time::SystemTime;

use api::{ApiError, OverviewQuery, Window};
use waymark_record::Status;

use crate::config::UiConfig;
use crate::store::Store;

const INDEX: &str = include_str!("assets/index.html");
const JOURNEY: &str = include_str!("assets/journey.html");
const RUN: &str = include_str!("assets/run.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// What the UI is asked: method, path, query and body.
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The query, if any.
    pub query: Option<&'a str>,
    /// The body (POST).
    pub body: &'a [u8],
    /// When the journeys of this runner run next.
    pub next: &'a NextRuns,
}

/// When the journeys a runner schedules run next, at its location.
#[derive(Debug, Default, Clone)]
pub struct NextRuns {
    /// The runner's location.
    pub location: String,
    /// Journey → its next due time.
    pub due: std::collections::BTreeMap<String, SystemTime>,
}

/// An answer: status, content type, body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    fn json(v: &serde_json::Value) -> Reply {
        Reply::ok("application/json", v.to_string())
    }

    fn error(e: &ApiError) -> Reply {
        let status = match e {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::Store(_) => 500,
        };
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::json!({"error": e.to_string()})
                .to_string()
                .into_bytes(),
        }
    }
}

/// Whether `path` is the UI's (pages, assets or API).
pub fn owns(path: &str) -> bool {
    path == "/"
        || path.starts_with("/api/")
        || path.starts_with("/journeys/")
        || path.starts_with("/runs/")
        || path.starts_with("/ui/")
        || path.starts_with("/badge/")
        || path == "/status-page"
}

fn params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn number(p: &[(String, String)], name: &str, default: usize) -> Result<usize, ApiError> {
    param(p, name).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| ApiError::BadRequest(format!("{name}: '{v}' is not a whole number")))
    })
}

fn status(p: &[(String, String)]) -> Result<Option<Status>, ApiError> {
    param(p, "status")
        .map(|s| {
            Status::ALL
                .into_iter()
                .find(|x| x.as_str() == s)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "status: '{s}' is not one of pass, fail, error, timeout"
                    ))
                })
        })
        .transpose()
}

/// The page, asset or API answer for `path`, reading the history at `db`.
/// Blocking (the database): call it off the async threads.
pub fn answer(
    db: Option<&crate::store::Database>,
    ui: &UiConfig,
    request: &Request<'_>,
    now: SystemTime,
) -> Reply {
    let (path, query) = (request.path, request.query);
    match path {
        "/" => return Reply::ok("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => return Reply::ok("text/javascript; charset=utf-8", SCRIPT),
        "/ui/style.css" => return Reply::ok("text/css; charset=utf-8", STYLE),
        p if p.starts_with("/journeys/") => {
            return Reply::ok("text/html; charset=utf-8", JOURNEY);
        }
        p if p.starts_with("/runs/") => return Reply::ok("text/html; charset=utf-8", RUN),
        _ => {}
    }
    let Some(db) = db else {
        return Reply::error(&ApiError::NotFound(
            "no history is kept ([store] path is off), so the UI has nothing to show".into(),
        ));
    };
    if path == "/status-page" {
        return match Store::reader(db)
            .map_err(ApiError::from)
            .and_then(|store| public::status_page(&store, ui, now))
        {
            Ok(page) => Reply::ok("text/html; charset=utf-8", public::status_page_html(&page)),
            Err(e) => Reply::error(&e),
        };
    }
    if let Some(rest) = path.strip_prefix("/badge/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let Some((journey, what)) = parts.split_first() else {
            return Reply::error(&ApiError::NotFound("no badge".into()));
        };
        return match Store::reader(db)
            .map_err(ApiError::from)
            .and_then(|store| public::badge_svg(&store, ui, now, &decode(journey), what))
        {
            Ok(svg) => Reply::ok("image/svg+xml", svg),
            Err(e) => Reply::error(&e),
        };
    }
    let Some(rest) = path.strip_prefix("/api/") else {
        return Reply::error(&ApiError::NotFound(format!("no page {path}")));
    };
    let p = params(query);
    let result = Store::reader(db)
        .map_err(ApiError::from)
        .and_then(|store| api_answer(&store, ui, request, rest, &p, now));
    match result {
        Ok(v) => Reply::json(&v),
        Err(e) => Reply::error(&e),
    }
}

fn attempt(p: &[(String, String)]) -> Result<Option<u32>, ApiError> {
    param(p, "attempt")
        .map(|a| {
            a.parse::<u32>()
                .map_err(|_| ApiError::BadRequest(format!("attempt: '{a}' is not a whole number")))
        })
        .transpose()
}

fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn api_answer(
    store: &Store,
    ui: &UiConfig,
    request: &Request<'_>,
    rest: &str,
    p: &[(String, String)],
    now: SystemTime,
) -> Result<serde_json::Value, ApiError> {
    let (method, body) = (request.method, request.body);
    let parts: Vec<&str> = rest.split('/').collect();
    let location = param(p, "location");
    if method == "POST" {
        return match parts.as_slice() {
            ["incidents", id, "ack"] => api::acknowledge(store, &decode(id), body, now),
            _ => Err(ApiError::NotFound(format!(
                "no POST at /api/{rest}: only /api/incidents/ID/ack"
            ))),
        };
    }
    match parts.as_slice() {
        ["incidents"] => api::incidents(store, now, param(p, "journey")),
        ["tags"] => Ok(serde_json::json!({"tags": ui.tags})),
        ["journeys"] => api::overview(
            store,
            ui,
            request.next,
            now,
            &OverviewQuery {
                status: status(p)?,
                location: location.map(str::to_string),
                search: param(p, "q").map(str::to_string),
                journeys: param(p, "tag").map(|t| ui.tags.get(t).cloned().unwrap_or_default()),
                page: number(p, "page", 0)?,
                per_page: number(p, "per_page", 100)?.clamp(1, 1000),
            },
        ),
        ["journeys", name, "phases"] => {
            let w = Window::parse(param(p, "window").unwrap_or("7d/now"), now, "window")?;
            api::phases(store, &decode(name), w, number(p, "buckets", 48)?, location)
        }
        ["journeys", name, "compare"] => {
            let need = |k: &str| {
                param(p, k).ok_or_else(|| {
                    ApiError::BadRequest(format!("{k}: give a window FROM/TO, e.g. {k}=14d/7d"))
                })
            };
            let before = Window::parse(need("before")?, now, "before")?;
            let after = Window::parse(need("after")?, now, "after")?;
            api::compare(store, &decode(name), before, after, location)
        }
        ["journeys", name, "runs"] => api::runs(
            store,
            &decode(name),
            status(p)?,
            location,
            number(p, "limit", 200)?,
        ),
        ["status-page"] => public::status_page(store, ui, now),
        ["runs", id] => api::run(store, &decode(id), attempt(p)?, ui.trace_url.as_deref()),
        ["runs", id, "har"] => api::har(store, &decode(id), attempt(p)?),
        _ => Err(ApiError::NotFound(format!(
            "no API at /api/{rest}: see the README (Web UI)"
        ))),
    }
}
