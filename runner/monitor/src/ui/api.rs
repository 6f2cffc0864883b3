//! The JSON behind the pages, computed from the history: every figure here
//! is one the pages draw, and the API is documented in the README.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::store::{Filter, RunRow, Store, StoreError};
use waymark_record::serde_time::as_millis as ms;
use waymark_record::{PHASE_NAMES, RunRecord, Status};

const DAY: Duration = Duration::from_secs(86_400);
/// The overview's uptime windows.
const WINDOWS: [(&str, u64); 4] = [("24h", 1), ("7d", 7), ("30d", 30), ("90d", 90)];
/// Daily cells of the overview's uptime bar.
const DAYS: u64 = 90;
/// Durations in a sparkline.
const RECENT: usize = 30;
/// Most runs read for a phase chart or a comparison.
const MAX_RUNS: usize = 50_000;

/// Why a request to the API was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that name.
    #[error("{0}")]
    NotFound(String),
    /// The history could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `p` (0..1) of `values`, nearest rank; none when empty.
fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// `/api/journeys`: a row per journey and location, filtered by status
/// and location, a page at a time.
#[derive(Debug, Default)]
pub struct OverviewQuery {
    /// Only rows whose current status is this.
    pub status: Option<Status>,
    /// Only this location.
    pub location: Option<String>,
    /// Journey names containing this.
    pub search: Option<String>,
    /// Only these journeys (a tag's).
    pub journeys: Option<Vec<String>>,
    /// 0-based page.
    pub page: usize,
    /// Rows per page.
    pub per_page: usize,
}

/// The overview, as of `now`: the rows come from the latest status of
/// each journey and location, so filtering and paging read one small
/// table; only the page's rows read their days and runs.
pub fn overview(
    store: &Store,
    ui: &crate::config::UiConfig,
    next: &super::NextRuns,
    now: SystemTime,
    q: &OverviewQuery,
) -> Result<Value, ApiError> {
    let since = now.checked_sub(DAY * DAYS as u32).unwrap_or(UNIX_EPOCH);
    let rows: Vec<crate::store::Latest> = store
        .latest()?
        .into_iter()
        .filter(|l| {
            l.last >= since
                && q.status.is_none_or(|s| s == l.status)
                && q.location.as_ref().is_none_or(|x| *x == l.location)
                && q.search
                    .as_ref()
                    .is_none_or(|x| l.journey.contains(x.as_str()))
                && q.journeys.as_ref().is_none_or(|js| js.contains(&l.journey))
        })
        .collect();
    let total = rows.len();
    let per_page = q.per_page.max(1);
    let today = (unix_ms(now) / (DAY.as_millis() as u64)) as i64;
    let first_day = today - (DAYS as i64 - 1);
    let day_ago = now.checked_sub(DAY).unwrap_or(UNIX_EPOCH);
    let mut out = Vec::new();
    for l in rows
        .iter()
        .skip(q.page.saturating_mul(per_page))
        .take(per_page)
    {
        let daily = store.daily(&l.journey, &l.location, first_day)?;
        let mut cells: Vec<Value> = Vec::with_capacity(DAYS as usize);
        let mut by_day = daily.iter().peekable();
        for day in first_day..=today {
            let (runs, passed, held) = match by_day.next_if(|d| d.0 == day) {
                Some(&(_, r, p, m)) => (r, p, m),
                None => (0, 0, 0),
            };
            let date = humantime::format_rfc3339(UNIX_EPOCH + DAY * day.max(0) as u32).to_string();
            cells.push(
                json!({"day": &date[..10], "runs": runs, "passed": passed, "maintenance": held}),
            );
        }
        let last_day = store.rows(&l.journey, &l.location, day_ago)?;
        let counted: Vec<&RunRow> = last_day
            .iter()
            .filter(|r| r.maintenance.is_none())
            .collect();
        let mut uptime = serde_json::Map::new();
        let mut counts = serde_json::Map::new();
        for (name, days) in WINDOWS {
            let (runs, passed) = if days == 1 {
                (
                    counted.len() as u64,
                    counted.iter().filter(|r| r.status == Status::Pass).count() as u64,
                )
            } else {
                cells
                    .iter()
                    .rev()
                    .take(days as usize)
                    .fold((0, 0), |(a, b), c| {
                        (
                            a + c["runs"].as_u64().unwrap_or(0),
                            b + c["passed"].as_u64().unwrap_or(0),
                        )
                    })
            };
            uptime.insert(
                name.into(),
                (runs > 0).then(|| passed as f64 / runs as f64).into(),
            );
            counts.insert(name.into(), json!({"runs": runs, "passed": passed}));
        }
        let mut durations: Vec<f64> = counted.iter().map(|r| ms(r.duration)).collect();
        let recent: Vec<Value> = last_day
            .iter()
            .rev()
            .take(RECENT)
            .rev()
            .map(|r| json!({"ms": ms(r.duration), "status": r.status}))
            .collect();
        // The open incident as `history --stats` finds it (per journey).
        let incident = if l.status == Status::Pass {
            Value::Null
        } else {
            let stats = store.stats(&Filter {
                journey: Some(l.journey.clone()),
                since: Some(since),
                ..Filter::default()
            })?;
            let open = stats
                .iter()
                .flat_map(|s| s.incidents.last())
                .find(|i| i.recovered_at.is_none());
            json!({
                "since": rfc3339(l.since),
                "id": open.map(|i| &i.id),
                "acknowledged_by": open.and_then(|i| i.acknowledged_by.as_ref()),
                "acknowledged_at": open.and_then(|i| i.acknowledged_at.as_ref()),
            })
        };
        out.push(json!({
            "journey": l.journey,
            "location": l.location,
            "status": l.status,
            "since": rfc3339(l.since),
            "last_run": {"run_id": l.run_id, "attempt": l.attempt, "started_at": rfc3339(l.last)},
            "uptime": uptime,
            "counts": counts,
            "days": cells,
            "p95_ms_24h": percentile(&mut durations, 0.95),
            "recent": recent,
            "incident": incident,
            "maintenance": ui.maintenance_at(&l.journey, now),
            "next_run": next
                .due
                .get(&l.journey)
                .filter(|_| l.location == next.location)
                .map(|t| rfc3339(*t)),
        }));
    }
    Ok(json!({
        "generated_at": rfc3339(now),
        "total": total,
        "page": q.page,
        "per_page": per_page,
        "rows": out,
    }))
}

/// Each phase's share of one run: the sum over its requests (what the
/// run spent resolving, connecting, …), and the run's whole duration.
fn phases_of(rec: &RunRecord) -> [f64; 6] {
    let mut p = [0.0; 6];
    for r in rec.requests() {
        let t = &r.timings;
        for (i, d) in [t.resolve, t.connect, t.tls, t.processing, t.transfer]
            .into_iter()
            .enumerate()
        {
            p[i] += ms(d);
        }
    }
    p[5] = ms(rec.duration);
    p
}

/// A time window of the history.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// From (inclusive).
    pub from: SystemTime,
    /// To (exclusive).
    pub to: SystemTime,
}

impl Window {
    /// `FROM/TO`, each RFC 3339 (`2026-12-01T00:00:00Z`) or a duration ago
    /// (`7d`; `now` for the present).
    pub fn parse(text: &str, now: SystemTime, what: &str) -> Result<Window, ApiError> {
        let (a, b) = text.split_once('/').ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{what}: expected FROM/TO (RFC 3339 times, or durations ago such as 14d/7d), got '{text}'"
            ))
        })?;
        let at = |s: &str| -> Result<SystemTime, ApiError> {
            if s == "now" {
                return Ok(now);
            }
            if let Ok(t) = humantime::parse_rfc3339_weak(s) {
                return Ok(t);
            }
            waymark_record::units::parse_duration(s)
                .ok()
                .and_then(|d| now.checked_sub(d))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{what}: '{s}' is neither an RFC 3339 time nor a duration ago"
                    ))
                })
        };
        let w = Window {
            from: at(a)?,
            to: at(b)?,
        };
        if w.from >= w.to {
            return Err(ApiError::BadRequest(format!(
                "{what}: '{text}' ends before it starts"
            )));
        }
        Ok(w)
    }
}

fn records(
    store: &Store,
    journey: &str,
    w: Window,
    location: Option<&str>,
) -> Result<Vec<RunRecord>, ApiError> {
    let entries = store.list(&Filter {
        journey: Some(journey.to_string()),
        since: Some(w.from),
        final_only: true,
        limit: Some(MAX_RUNS),
        ..Filter::default()
    })?;
    Ok(entries
        .into_iter()
        .map(|e| e.record)
        .filter(|r| r.started_at < w.to && location.is_none_or(|l| r.location == l))
        .collect())
}

/// `/api/journeys/{name}/phases`: per location, the median of each phase
/// in `buckets` equal slices of the window.
pub fn phases(
    store: &Store,
    journey: &str,
    w: Window,
    buckets: usize,
    location: Option<&str>,
) -> Result<Value, ApiError> {
    let buckets = buckets.clamp(1, 500);
    let recs = records(store, journey, w, location)?;
    let span = w.to.duration_since(w.from).unwrap_or_default();
    let width = span / buckets as u32;
    let mut by: BTreeMap<&str, Vec<Vec<[f64; 6]>>> = BTreeMap::new();
    for r in &recs {
        let at = r.started_at.duration_since(w.from).unwrap_or_default();
        let i = ((at.as_secs_f64() / width.as_secs_f64().max(1e-9)) as usize).min(buckets - 1);
        by.entry(r.location.as_str())
            .or_insert_with(|| vec![Vec::new(); buckets])[i]
            .push(phases_of(r));
    }
    let series: Vec<Value> = by
        .into_iter()
        .map(|(loc, slots)| {
            let points: Vec<Value> = slots
                .into_iter()
                .enumerate()
                .filter(|(_, runs)| !runs.is_empty())
                .map(|(i, runs)| {
                    let mut p = serde_json::Map::new();
                    p.insert("from".into(), json!(rfc3339(w.from + width * i as u32)));
                    p.insert("runs".into(), json!(runs.len()));
                    for (k, name) in PHASE_NAMES.iter().enumerate() {
                        let mut v: Vec<f64> = runs.iter().map(|r| r[k]).collect();
                        p.insert(format!("{name}_ms"), json!(percentile(&mut v, 0.5)));
                    }
                    Value::Object(p)
                })
                .collect();
            json!({"location": loc, "points": points})
        })
        .collect();
    Ok(json!({
        "journey": journey,
        "from": rfc3339(w.from),
        "to": rfc3339(w.to),
        "bucket_s": width.as_secs_f64(),
        "series": series,
    }))
}

fn summary(recs: &[RunRecord]) -> Value {
    let all: Vec<[f64; 6]> = recs.iter().map(phases_of).collect();
    let mut phases = serde_json::Map::new();
    for (k, name) in PHASE_NAMES.iter().enumerate() {
        let mut v: Vec<f64> = all.iter().map(|r| r[k]).collect();
        let median = percentile(&mut v, 0.5);
        let p95 = percentile(&mut v, 0.95);
        phases.insert((*name).into(), json!({"median_ms": median, "p95_ms": p95}));
    }
    json!({"runs": recs.len(), "phases": phases})
}

/// `/api/journeys/{name}/compare`: median and p95 of each phase in two
/// windows, and the change of the median in percent.
pub fn compare(
    store: &Store,
    journey: &str,
    before: Window,
    after: Window,
    location: Option<&str>,
) -> Result<Value, ApiError> {
    let a = summary(&records(store, journey, before, location)?);
    let b = summary(&records(store, journey, after, location)?);
    let mut change = serde_json::Map::new();
    for name in PHASE_NAMES {
        let m = |s: &Value| s["phases"][name]["median_ms"].as_f64();
        let pct = match (m(&a), m(&b)) {
            (Some(x), Some(y)) if x > 0.0 => json!((y - x) / x * 100.0),
            _ => Value::Null,
        };
        change.insert(name.into(), pct);
    }
    Ok(json!({
        "journey": journey,
        "location": location,
        "before": {"from": rfc3339(before.from), "to": rfc3339(before.to), "summary": a},
        "after": {"from": rfc3339(after.from), "to": rfc3339(after.to), "summary": b},
        "median_change_pct": change,
    }))
}

/// `/api/journeys/{name}/runs`: the newest deciding attempts.
pub fn runs(
    store: &Store,
    journey: &str,
    status: Option<Status>,
    location: Option<&str>,
    limit: usize,
) -> Result<Value, ApiError> {
    let entries = store.list(&Filter {
        journey: Some(journey.to_string()),
        status,
        final_only: true,
        limit: Some(limit.clamp(1, 5000)),
        ..Filter::default()
    })?;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| &e.record)
        .filter(|r| location.is_none_or(|l| r.location == l))
        .map(|r| {
            json!({
                "run_id": r.run_id,
                "attempt": r.attempt,
                "location": r.location,
                "started_at": rfc3339(r.started_at),
                "duration_ms": ms(r.duration),
                "status": r.status,
                "error": r.error.as_ref().map(|e| &e.message),
            })
        })
        .collect();
    Ok(json!({"journey": journey, "runs": rows}))
}

/// `/api/runs/{id}`: the record of a run's last (or given) attempt, whether
/// it was kept for a replay (and so has a HAR), and where its trace ids link.
pub fn run(
    store: &Store,
    run_id: &str,
    attempt: Option<u32>,
    trace_url: Option<&str>,
) -> Result<Value, ApiError> {
    let rec = store
        .get_attempt(run_id, attempt)?
        .ok_or_else(|| ApiError::NotFound(format!("no run '{run_id}' in the history")))?;
    let replayable = store.tape(run_id, Some(rec.attempt))?.is_some();
    Ok(json!({"record": rec, "replayable": replayable, "trace_url": trace_url}))
}

/// `/api/runs/{id}/har`: the HAR of a run kept whole (`keep_exchanges`).
pub fn har(store: &Store, run_id: &str, attempt: Option<u32>) -> Result<Value, ApiError> {
    let text = store.tape(run_id, attempt)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "run '{run_id}' was not kept whole (keep_exchanges on its journey keeps runs with their exchanges)"
        ))
    })?;
    let tape = waymark_engine::tape::Tape::from_json(&text)
        .map_err(|e| ApiError::NotFound(format!("run '{run_id}': its recording: {e}")))?;
    // Kept recordings are redacted already.
    Ok(waymark_engine::har::to_har(
        &tape.record,
        &tape.exchanges,
        &[] as &[String],
    ))
}

/// `/api/incidents`: every incident of the last 90 days (or of one
/// journey), as `history --stats` finds them, with acknowledgements.
pub fn incidents(store: &Store, now: SystemTime, journey: Option<&str>) -> Result<Value, ApiError> {
    let stats = store.stats(&Filter {
        journey: journey.map(str::to_string),
        since: now.checked_sub(DAY * DAYS as u32),
        ..Filter::default()
    })?;
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let rows: Vec<Value> = stats
        .iter()
        .map(|s| {
            json!({
                "journey": s.journey,
                "incidents": s.incidents,
                "mtta_s": mean(s.incidents.iter().filter_map(|i| i.time_to_acknowledge_s).collect()),
                "mttr_s": mean(s.incidents.iter().filter_map(|i| i.time_to_recovery_s).collect()),
            })
        })
        .collect();
    Ok(json!({"journeys": rows}))
}

/// `POST /api/incidents/{id}/ack` with `{"by": "…"}`: the first
/// acknowledgement of an incident stands.
pub fn acknowledge(
    store: &Store,
    id: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    struct Ack {
        by: String,
    }
    let ack: Ack = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"by\": \"who\"}} (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    let by = ack.by.trim();
    if by.is_empty() || by.len() > 200 {
        return Err(ApiError::BadRequest(
            "by: say who acknowledges, in at most 200 bytes".into(),
        ));
    }
    if !store.acknowledge(id, by, now)? {
        return Err(ApiError::NotFound(format!("no incident '{id}'")));
    }
    let journey = id.rsplit_once('@').map_or(id, |(j, _)| j);
    let stats = store.stats(&Filter {
        journey: Some(journey.to_string()),
        ..Filter::default()
    })?;
    let incident = stats
        .iter()
        .flat_map(|s| &s.incidents)
        .find(|i| i.id == id)
        .cloned();
    Ok(json!({"incident": incident}))
}
