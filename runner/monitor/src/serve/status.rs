//! `/status`: every journey's counters, answered from a snapshot at most a
//! second old. The snapshot is built on a blocking thread, once however many
//! pollers ask, so polling costs the scheduler nothing but CPU it can share.
//! `?journey=`, `?status=`, `?running=`, `?offset=` and `?limit=` cut it down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::{JourneyStatus, Shared, status};
use waymark_record::Status;

/// How old a snapshot may be before the next request builds a new one (a
/// reload makes it stale at once).
const FRESH: Duration = Duration::from_secs(1);

pub(super) struct Snapshot {
    at: Instant,
    /// The journey list it was built from (a reload makes a new one).
    generation: u64,
    taken: SystemTime,
    location: String,
    shard: super::ShardView,
    in_flight: usize,
    journeys: Vec<JourneyStatus>,
    /// The answer to a request without a query, made once per snapshot: a
    /// poller in a tight loop then costs a copy, not a serialisation.
    whole: OnceLock<String>,
}

impl Snapshot {
    fn body(&self, q: &Query) -> String {
        let matching: Vec<&JourneyStatus> = self
            .journeys
            .iter()
            .filter(|j| q.journey.as_ref().is_none_or(|n| &j.name == n))
            .filter(|j| q.status.is_none_or(|s| j.last_status == s))
            .filter(|j| q.running.is_none_or(|r| j.running == r))
            .collect();
        let total = matching.len();
        let page: Vec<&JourneyStatus> = matching
            .into_iter()
            .skip(q.offset)
            .take(q.limit.unwrap_or(usize::MAX))
            .collect();
        let mut body = serde_json::json!({
            "location": self.location,
            "in_flight": self.in_flight,
            "as_of": humantime::format_rfc3339_millis(self.taken).to_string(),
            "total": total,
            "offset": q.offset,
            "journeys": page,
        });
        let shard = self.shard.shard;
        if shard.count > 1 {
            body["shard"] = serde_json::json!({
                "shard": shard.to_string(),
                "journeys_per_shard": self.shard.counts(self.taken),
            });
            if let Some(l) = &self.shard.leases {
                body["shard"]["leases"] =
                    leases(l, shard.count, self.taken, &self.shard.orphans(self.taken));
            }
            // Asked for a journey that another replica runs: say which.
            if let Some(name) = &q.journey
                && total == 0
                && let Some(owner) = self.shard.owner_at(name, self.taken)
            {
                body["elsewhere"] = serde_json::json!({
                    "journey": name,
                    "shard": owner.map(|o| format!("{o}/{}", shard.count)),
                });
            }
        }
        body.to_string()
    }
}

/// The replicas' leases as this one saw them at `at`.
fn leases(l: &super::Leases, count: u32, at: SystemTime, orphans: &[String]) -> serde_json::Value {
    let split = l.at(at);
    let standings = split.standings();
    let rows = l.rows();
    let replicas: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let row = rows
                .as_ref()
                .and_then(|(_, rs)| rs.iter().find(|r| r.shard == i));
            serde_json::json!({
                "shard": format!("{i}/{count}"),
                "standing": standings.and_then(|s| s.get(i as usize)),
                "instance": row.map(|r| r.instance.clone()),
                "last_beat": row
                    .filter(|r| r.seen > std::time::UNIX_EPOCH)
                    .map(|r| humantime::format_rfc3339_millis(r.seen).to_string()),
            })
        })
        .collect();
    // Thousands of names would drown the answer; the count is exact.
    const LISTED: usize = 100;
    serde_json::json!({
        "lease_ms": l.lease().as_millis() as u64,
        "read_at": rows.map(|(at, _)| humantime::format_rfc3339_millis(at).to_string()),
        "error": l.failing(),
        "replicas": replicas,
        "without_owner": orphans.len(),
        "journeys_without_owner": orphans.iter().take(LISTED).collect::<Vec<_>>(),
    })
}

/// What a request asked for.
#[derive(Debug, Default, PartialEq)]
struct Query {
    journey: Option<String>,
    status: Option<Option<Status>>,
    running: Option<bool>,
    offset: usize,
    limit: Option<usize>,
}

/// A query parameter that cannot be used, named in the 400 answer.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad query parameter '{name}': {why}")]
struct BadQuery {
    name: String,
    why: &'static str,
}

fn parse(query: &str) -> Result<Query, BadQuery> {
    let mut q = Query::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let bad = |why| BadQuery {
            name: k.to_string(),
            why,
        };
        match k.as_ref() {
            "journey" => q.journey = Some(v.into_owned()),
            "status" => {
                q.status = Some(match v.as_ref() {
                    "none" => None,
                    s => Some(
                        Status::ALL
                            .into_iter()
                            .find(|x| x.as_str() == s)
                            .ok_or_else(|| bad("pass, fail, error, timeout or none"))?,
                    ),
                })
            }
            "running" => {
                q.running = Some(v.parse().map_err(|_| bad("true or false"))?);
            }
            "offset" => q.offset = v.parse().map_err(|_| bad("a whole number"))?,
            "limit" => q.limit = Some(v.parse().map_err(|_| bad("a whole number"))?),
            _ => {
                return Err(bad("not one of journey, status, running, offset, limit"));
            }
        }
    }
    Ok(q)
}

/// The current snapshot, building a new one when it is older than [`FRESH`].
async fn snapshot(shared: &Arc<Shared>) -> Arc<Snapshot> {
    let mut cache = shared.status_cache.lock().await;
    let generation = shared.generation.load(Ordering::SeqCst);
    if let Some(s) = cache.as_ref()
        && s.at.elapsed() < FRESH
        && s.generation == generation
    {
        return s.clone();
    }
    let sh = shared.clone();
    let journeys = tokio::task::spawn_blocking(move || status(&sh))
        .await
        .unwrap_or_default();
    let s = Arc::new(Snapshot {
        at: Instant::now(),
        generation,
        taken: SystemTime::now(),
        location: shared
            .location
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default(),
        shard: shared.shard.lock().map(|s| s.clone()).unwrap_or_default(),
        in_flight: shared.telemetry.in_flight().load(Ordering::Relaxed),
        journeys,
        whole: OnceLock::new(),
    });
    *cache = Some(s.clone());
    s
}

/// The answer to `GET /status?QUERY`: status code and JSON body.
pub(super) async fn answer(shared: &Arc<Shared>, query: Option<&str>) -> (u16, String) {
    let q = match parse(query.unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return (400, format!("{e}\n")),
    };
    let snap = snapshot(shared).await;
    // Serialising 10,000 journeys is milliseconds of CPU: off the async workers.
    tokio::task::spawn_blocking(move || {
        if q == Query::default() {
            snap.whole.get_or_init(|| snap.body(&q)).clone()
        } else {
            snap.body(&q)
        }
    })
    .await
    .map_or_else(
        |_| (500, "could not build the status\n".into()),
        |b| (200, b),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_read_and_bad_ones_are_named() {
        assert_eq!(
            parse("journey=a%20b&status=fail&running=true&offset=10&limit=5"),
            Ok(Query {
                journey: Some("a b".into()),
                status: Some(Some(Status::Fail)),
                running: Some(true),
                offset: 10,
                limit: Some(5),
            })
        );
        assert_eq!(parse("status=none").map(|q| q.status), Ok(Some(None)));
        assert_eq!(
            parse("limit=-1").map_err(|e| e.to_string()),
            Err("bad query parameter 'limit': a whole number".into())
        );
        assert_eq!(
            parse("status=ok").map_err(|e| e.to_string()),
            Err("bad query parameter 'status': pass, fail, error, timeout or none".into())
        );
        assert!(parse("page=2").is_err());
    }
}
