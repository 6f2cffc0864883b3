//! The history in PostgreSQL (Debian's, started by the test on a loopback
//! port): it reads the same as the SQLite one, TLS to it is verified, and a
//! fleet of runners writes to it through an outage without losing or
//! repeating a record.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::postgres::Pg;
use waymark_monitor::store::{Database, Entry, Filter, Postgres, Store, StoreError};
use waymark_record::{RunRecord, Status};

fn postgres(pg: &Pg) -> Database {
    Database::Postgres(Postgres {
        url: pg.url(),
        ca_file: None,
    })
}

/// Attempt `attempt` of run `n` of `journey` at `location`, `minutes` ago.
fn entry(journey: &str, location: &str, n: u32, attempt: u32, status: &str, minutes: u64) -> Entry {
    let at = SystemTime::now() - Duration::from_secs(minutes * 60);
    let record: RunRecord = serde_json::from_value(serde_json::json!({
        "journey": journey, "run_id": format!("{journey}-{location}-{n}"), "location": location,
        "attempt": attempt, "started_at": humantime::format_rfc3339_millis(at).to_string(),
        "duration_ms": 10.0 + f64::from(n % 7) * 3.5, "status": status,
        "error": if status == "pass" { serde_json::Value::Null } else {
            serde_json::json!({"kind": "check", "message": "status is 200: got 503"}) },
        "steps": [], "logs": []
    }))
    .expect("record");
    Entry {
        record,
        final_attempt: true,
        scheduled_at: Some(UNIX_EPOCH + Duration::from_millis(millis(at) as u64)),
        tape: None,
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Two journeys at two locations over two days: passes, failures that pass
/// on retry, an incident, runs in a maintenance window, kept recordings.
fn history() -> Vec<Entry> {
    let mut out = Vec::new();
    for (journey, location) in [
        ("swap", "sao-paulo"),
        ("swap", "frankfurt"),
        ("login", "frankfurt"),
    ] {
        for n in 0..60u32 {
            let minutes = u64::from(60 - n) * 45;
            let failing = journey == "swap" && location == "frankfurt" && (20..26).contains(&n);
            if n % 9 == 4 {
                // Failed, passed on the retry.
                let mut first = entry(journey, location, n, 1, "fail", minutes);
                first.final_attempt = false;
                out.push(first);
                out.push(entry(journey, location, n, 2, "pass", minutes));
            } else {
                let mut e = entry(
                    journey,
                    location,
                    n,
                    1,
                    if failing { "fail" } else { "pass" },
                    minutes,
                );
                if journey == "login" && n > 55 {
                    e.record.maintenance = Some("db upgrade".into());
                }
                if failing {
                    e.tape = Some(format!("{{\"tape\": {n}}}"));
                }
                out.push(e);
            }
        }
    }
    out
}

fn json(entries: &[Entry]) -> Vec<serde_json::Value> {
    entries
        .iter()
        .map(|e| {
            serde_json::json!({"record": e.record, "final": e.final_attempt,
                "scheduled": e.scheduled_at.map(millis)})
        })
        .collect()
}

#[test]
fn a_history_in_postgresql_reads_as_the_same_history_in_sqlite() {
    let pg = Pg::start(None);
    let dir = tempfile::tempdir().expect("tmp");
    let mut lite = Store::open(&dir.path().join("h.db")).expect("sqlite");
    let mut post = Store::connect(&postgres(&pg)).expect("postgres");
    let all = history();
    for store in [&mut lite, &mut post] {
        let (a, b) = all.split_at(all.len() / 2);
        store.insert(a).expect("insert");
        store.insert(b).expect("insert");
        // A spool delivering a batch again changes nothing.
        store.insert(b).expect("insert again");
    }
    assert_eq!(post.count().expect("count"), all.len() as u64);
    assert_eq!(lite.count().expect("count"), post.count().expect("count"));

    let filters = [
        Filter::default(),
        Filter {
            journey: Some("swap".into()),
            ..Filter::default()
        },
        Filter {
            status: Some(Status::Fail),
            final_only: true,
            ..Filter::default()
        },
        Filter {
            since: Some(SystemTime::now() - Duration::from_secs(6 * 3600)),
            limit: Some(7),
            ..Filter::default()
        },
        Filter {
            by_location: true,
            ..Filter::default()
        },
    ];
    for f in &filters {
        let (a, b) = (
            json(&lite.list(f).expect("list")),
            json(&post.list(f).expect("list")),
        );
        assert_eq!(a.len(), b.len(), "{f:?}");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("{f:?}: entry {i} differs:\n{}\n{}", a[i], b[i]);
        }
        assert_eq!(
            lite.stats(f).expect("stats"),
            post.stats(f).expect("stats"),
            "{f:?}"
        );
    }
    let by_location = post
        .stats(&Filter {
            by_location: true,
            ..Filter::default()
        })
        .expect("stats");
    let rows: Vec<(String, Option<String>, u64)> = by_location
        .iter()
        .map(|s| (s.journey.clone(), s.location.clone(), s.runs))
        .collect();
    assert_eq!(
        rows,
        [
            ("login".into(), Some("frankfurt".into()), 57),
            ("swap".into(), Some("frankfurt".into()), 60),
            ("swap".into(), Some("sao-paulo".into()), 60),
        ],
        "runs in a maintenance window are not in the figures"
    );
    let incident = by_location[1].incidents[0].id.clone();
    // 20 and 21 failed, 22 passed on its retry, 23 to 25 failed.
    assert_eq!(by_location[1].incidents.len(), 2);

    assert_eq!(
        lite.latest().expect("latest"),
        post.latest().expect("latest")
    );
    let since = SystemTime::now() - Duration::from_secs(48 * 3600);
    for (j, l) in [
        ("swap", "frankfurt"),
        ("login", "frankfurt"),
        ("swap", "nowhere"),
    ] {
        assert_eq!(
            lite.rows(j, l, since).expect("rows"),
            post.rows(j, l, since).expect("rows")
        );
        assert_eq!(
            lite.daily(j, l, 0).expect("daily"),
            post.daily(j, l, 0).expect("daily")
        );
    }
    for (run, attempt) in [
        ("swap-frankfurt-21", None),
        ("swap-frankfurt-21", Some(1)),
        ("swap-frankfurt-21", Some(2)),
        ("nothing", None),
    ] {
        assert_eq!(
            lite.tape(run, attempt).expect("tape"),
            post.tape(run, attempt).expect("tape")
        );
    }
    assert!(
        post.tape("swap-frankfurt-21", None)
            .expect("tape")
            .is_some()
    );
    for (run, attempt) in [
        ("swap-sao-paulo-4", None),
        ("swap-sao-paulo-4", Some(1)),
        ("nothing", Some(1)),
    ] {
        assert_eq!(
            lite.get_attempt(run, attempt)
                .expect("get")
                .map(|r| (r.status, r.attempt)),
            post.get_attempt(run, attempt)
                .expect("get")
                .map(|r| (r.status, r.attempt))
        );
    }
    let at = SystemTime::now();
    for store in [&lite, &post] {
        assert!(store.acknowledge(&incident, "ana", at).expect("ack"));
        assert!(
            store
                .acknowledge(&incident, "bo", at)
                .expect("the first one stands")
        );
        assert!(
            !store
                .acknowledge("swap@1", "ana", at)
                .expect("no such incident")
        );
    }
    assert_eq!(
        lite.stats(&filters[0]).expect("stats"),
        post.stats(&filters[0]).expect("stats")
    );
    let before = SystemTime::now() - Duration::from_secs(24 * 3600);
    assert_eq!(
        lite.prune(before).expect("prune"),
        post.prune(before).expect("prune")
    );
    assert_eq!(lite.count().expect("count"), post.count().expect("count"));
    assert_eq!(
        json(&lite.list(&filters[0]).expect("list")),
        json(&post.list(&filters[0]).expect("list"))
    );

    // The schema is refinery's migrations, applied once however often the
    // history is opened; a newer one than this build knows is refused.
    drop(post);
    let again = Store::connect(&postgres(&pg)).expect("again");
    drop(again);
    assert_eq!(
        pg.psql("SELECT string_agg(name, ',' ORDER BY version) FROM waymark_migrations"),
        "history,replicas"
    );
    pg.psql(
        "INSERT INTO waymark_migrations (version, name, applied_on, checksum)
         SELECT 99, 'future', applied_on, '0' FROM waymark_migrations WHERE version = 1",
    );
    assert!(matches!(
        Store::connect(&postgres(&pg)),
        Err(StoreError::Version { found: 99, .. })
    ));
}

#[test]
fn tls_to_postgresql_is_required_and_verified() {
    let ca = support::TestCa::new();
    let mut pg = Pg::start(Some(&ca));
    // TCP connections must use TLS.
    let hba = pg.data().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    let tls_only: String = text
        .lines()
        .map(|l| {
            if l.starts_with("host ") {
                l.replacen("host ", "hostssl ", 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&hba, tls_only).expect("write");
    pg.pause();
    pg.resume();

    let with = |query: &str, ca_file: Option<&Path>| {
        Database::Postgres(Postgres {
            url: format!("{}?{query}", pg.url()),
            ca_file: ca_file.map(Path::to_path_buf),
        })
    };
    let store = Store::connect(&with("sslmode=require", Some(&ca.ca_file)))
        .expect("TLS with the server's CA");
    assert_eq!(store.count().expect("count"), 0);
    let encrypted = pg.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
         WHERE ssl AND application_name = '' AND backend_type = 'client backend'",
    );
    assert!(encrypted.parse::<u32>().unwrap_or(0) >= 1, "{encrypted}");
    drop(store);

    let e = Store::connect(&with("sslmode=require", None))
        .err()
        .expect("a certificate no trusted CA signed is refused");
    assert!(e.to_string().contains("certificate"), "{e}");
    let e = Store::connect(&with("sslmode=disable", None))
        .err()
        .expect("the server wants TLS");
    assert!(e.to_string().contains("pg_hba.conf"), "{e}");
    assert!(!e.to_string().contains(support::postgres::PASSWORD), "{e}");
}

/// Every attempt the history in `pg` holds.
fn everything(pg: &Pg) -> Vec<Entry> {
    Store::connect(&postgres(pg))
        .expect("connect")
        .list(&Filter {
            limit: Some(1_000_000),
            ..Filter::default()
        })
        .expect("list")
}

/// `waymark serve -c config` with `env`.
fn serve(config: &Path, env: &[(&str, &str)], cache: &Path) -> support::ServeProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
    cmd.args(["serve", "--log-format", "json", "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .env("WAYMARK_CACHE_DIR", cache);
    support::ServeProcess::start(cmd)
}

#[test]
fn runners_in_two_locations_share_one_history_through_an_outage() {
    let mut pg = Pg::start(None);
    let dir = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("cache");
    let wasm = support::hostile_wasm().display().to_string();
    let url = pg
        .url()
        .replace(support::postgres::PASSWORD, "${env:PG_PASSWORD}");
    let mut src = format!(
        "[runner]\nlisten = \"127.0.0.1:0\"\nwatch = false\nlocation = \"${{env:LOC}}\"\n\
         spool_dir = \"spool-${{env:LOC}}\"\n\n[store]\nurl = \"{url}\"\n\n\
         [[sink]]\ntype = \"jsonl\"\npath = \"runs-${{env:LOC}}.jsonl\"\n\n[[sink]]\ntype = \"prometheus\"\n\n"
    );
    let journeys = ["home", "search", "checkout"];
    for j in journeys {
        src.push_str(&format!(
            "[[journey]]\nname = \"{j}\"\nwasm = \"{wasm}\"\nevery = \"200ms\"\nvars = {{ mode = \"noop\" }}\n\n"
        ));
    }
    let config = dir.path().join("waymark.toml");
    std::fs::write(&config, src).expect("write");
    let locations = ["sao-paulo", "frankfurt"];
    let runners: Vec<support::ServeProcess> = locations
        .iter()
        .map(|l| {
            serve(
                &config,
                &[("LOC", l), ("PG_PASSWORD", support::postgres::PASSWORD)],
                cache.path(),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    // The database goes away for 3 s, with runs going on.
    pg.pause();
    let down = SystemTime::now();
    std::thread::sleep(Duration::from_secs(3));
    let up = SystemTime::now();
    pg.resume();
    std::thread::sleep(Duration::from_secs(4));
    for r in &runners {
        let (_, metrics) = r.get("/metrics");
        let spooled = metrics
            .lines()
            .find(|l| l.starts_with("waymark_store_records_total{outcome=\"spooled\"}"))
            .unwrap_or_default();
        assert!(
            spooled
                .split_whitespace()
                .last()
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0)
                > 0.0,
            "records were spooled during the outage: {spooled:?}"
        );
    }
    // The web UI reads the shared history: every journey at both locations.
    let (code, page) = runners[0].get("/api/journeys");
    assert_eq!(code, 200, "{page}");
    for l in locations {
        assert!(
            page.contains(&format!("\"location\":\"{l}\"")),
            "{l}: {page}"
        );
    }
    for r in runners {
        assert!(r.stop().success());
    }

    let stored = everything(&pg);
    for l in locations {
        // What the runner itself recorded, from its JSON lines sink.
        let file =
            std::fs::read_to_string(dir.path().join(format!("runs-{l}.jsonl"))).expect("jsonl");
        let sent: BTreeSet<(String, u32)> = file
            .lines()
            .map(|line| {
                let r: RunRecord = serde_json::from_str(line).expect("record");
                (r.run_id, r.attempt)
            })
            .collect();
        let here: Vec<&Entry> = stored.iter().filter(|e| e.record.location == l).collect();
        let kept: BTreeSet<(String, u32)> = here
            .iter()
            .map(|e| (e.record.run_id.clone(), e.record.attempt))
            .collect();
        assert_eq!(kept.len(), here.len(), "{l}: an attempt stored twice");
        assert_eq!(
            kept, sent,
            "{l}: the history holds every run the runner made, no more"
        );
        let during = here
            .iter()
            .filter(|e| e.record.started_at > down && e.record.started_at < up)
            .count();
        assert!(during >= 20, "{l}: {during} runs during the outage");
        let mut ticks: BTreeMap<&str, Vec<SystemTime>> = BTreeMap::new();
        for e in &here {
            ticks
                .entry(e.record.journey.as_str())
                .or_default()
                .push(e.scheduled_at.expect("scheduled"));
        }
        assert_eq!(ticks.len(), journeys.len(), "{l}");
        for (j, t) in &mut ticks {
            let n = t.len();
            t.sort();
            t.dedup();
            assert_eq!(t.len(), n, "{l} {j}: a tick stored twice");
        }
    }

    // One table per journey and location, from either place.
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["history", "--stats", "--by", "location", "--db", &pg.url()])
        .output()
        .expect("history");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for j in journeys {
        for l in locations {
            assert!(
                table
                    .lines()
                    .any(|line| line.starts_with(j) && line.contains(l)),
                "{j} at {l}:\n{table}"
            );
        }
    }
}

/// The value of the first `/metrics` line that starts with `series`.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_killed_replicas_share_is_taken_over_within_its_lease_and_handed_back() {
    let pg = Pg::start(None);
    let dir = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("cache");
    let wasm = support::hostile_wasm().display().to_string();
    // Long enough that the time a replica is late (from three beats after
    // its last to the end of its lease, 1.2 s) is longer than `/status`'s
    // snapshots are kept (1 s), so a poller cannot miss it.
    let lease = Duration::from_secs(3);
    let mut src = format!(
        "[runner]\nlisten = \"127.0.0.1:0\"\nwatch = false\nshard = \"${{env:SHARD}}/3\"\n\
         lease = \"3s\"\nspool_dir = \"spool-${{env:SHARD}}\"\n\n[store]\nurl = \"{}\"\n\n",
        pg.url()
    );
    let names: Vec<String> = (0..12).map(|i| format!("journey-{i}")).collect();
    for n in &names {
        src.push_str(&format!(
            "[[journey]]\nname = \"{n}\"\nwasm = \"{wasm}\"\nevery = \"500ms\"\nvars = {{ mode = \"noop\" }}\n\n"
        ));
    }
    let config = dir.path().join("waymark.toml");
    std::fs::write(&config, src).expect("write");
    let start = |i: usize| serve(&config, &[("SHARD", &i.to_string())], cache.path());
    let share = |i: u32| -> Vec<&String> {
        names
            .iter()
            .filter(|n| waymark_load::Shard::owner(3, n) == i)
            .collect()
    };
    let theirs = share(2);
    assert!(!theirs.is_empty());
    // Sorted, as the names are compared with lists.
    let mut want: Vec<String> = theirs.iter().map(|n| n.to_string()).collect();
    want.sort();
    let mut replicas: Vec<support::ServeProcess> = (0..3).map(start).collect();
    // The last to start takes its share two beats (1.2 s) after it began.
    let settled = SystemTime::now() + Duration::from_millis(1500);
    std::thread::sleep(Duration::from_secs(3));
    let s: serde_json::Value =
        serde_json::from_str(&replicas[0].get("/status?limit=0").1).expect("json");
    let leases = &s["shard"]["leases"];
    assert_eq!(leases["lease_ms"], 3000, "{s}");
    for i in 0..3 {
        assert_eq!(leases["replicas"][i]["standing"], "live", "{s}");
    }
    assert_eq!(leases["without_owner"], 0, "{s}");

    // Replica 2 dies without a word.
    let mut dead = replicas.pop().expect("three");
    dead.child.kill().expect("kill");
    let killed = SystemTime::now();
    let _ = dead.child.wait();
    // Replica 0 sees it stop beating (its journeys then have no live owner),
    // then its lease run out.
    let (mut late, mut gone) = (None, None);
    let t = std::time::Instant::now();
    while gone.is_none() && t.elapsed() < Duration::from_secs(8) {
        let s: serde_json::Value =
            serde_json::from_str(&replicas[0].get("/status?limit=0").1).expect("json");
        let l = &s["shard"]["leases"];
        match l["replicas"][2]["standing"].as_str() {
            Some("late") if late.is_none() => {
                assert_eq!(l["without_owner"], theirs.len(), "{s}");
                let mut listed: Vec<String> =
                    serde_json::from_value(l["journeys_without_owner"].clone()).expect("names");
                listed.sort();
                assert_eq!(listed, want);
                let (_, metrics) = replicas[0].get("/metrics");
                late = Some((killed.elapsed().unwrap_or_default(), metrics));
            }
            Some("gone") => {
                assert_eq!(l["without_owner"], 0, "{s}");
                gone = Some(killed.elapsed().unwrap_or_default());
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (late_after, metrics) = late.expect("replica 2 was seen late before its lease ran out");
    assert_eq!(
        metric(&metrics, "waymark_journeys_without_owner"),
        Some(theirs.len() as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "waymark_shard_live{shard=\"2/3\"}"),
        Some(0.0)
    );
    let gone_after = gone.expect("replica 2's lease ran out");
    eprintln!("replica 2 late after {late_after:?}, gone after {gone_after:?}");
    // Asked about one of its journeys, a survivor names the survivor (once
    // its `/status` snapshot, at most a second old, is newer than the lease).
    std::thread::sleep(Duration::from_millis(1100));
    let s: serde_json::Value =
        serde_json::from_str(&replicas[0].get(&format!("/status?journey={}", theirs[0])).1)
            .expect("json");
    let now_owner = waymark_load::Shard::owner_among(3, theirs[0], |i| i != 2).expect("two");
    if now_owner == 0 {
        assert_eq!(s["total"], 1, "{s}");
    } else {
        assert_eq!(s["elsewhere"]["shard"], "1/3", "{s}");
    }
    std::thread::sleep(Duration::from_secs(1));

    // It comes back: the survivors hand its share back.
    replicas.push(start(2));
    let back = SystemTime::now();
    std::thread::sleep(Duration::from_secs(3));
    let s: serde_json::Value = serde_json::from_str(&replicas[2].get("/status").1).expect("json");
    let mut listed = journey_names(&s);
    listed.sort();
    assert_eq!(listed, want, "the returned replica runs its share again");
    let stopped = SystemTime::now();
    for r in replicas {
        assert!(r.stop().success());
    }

    let stored = everything(&pg);
    let mut ticks: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
    for e in &stored {
        ticks
            .entry(e.record.journey.clone())
            .or_default()
            .push(e.scheduled_at.expect("scheduled"));
    }
    assert_eq!(ticks.len(), names.len(), "every journey ran");
    let ms = |d: Duration| d.as_millis();
    let mut takeover = Duration::ZERO;
    for (j, t) in &mut ticks {
        t.sort();
        let n = t.len();
        t.dedup();
        assert_eq!(t.len(), n, "{j}: a tick ran twice (in two replicas)");
        // Gaps between consecutive runs: one tick (500 ms) wherever a live
        // replica owned the journey, the kill aside.
        for w in t.windows(2) {
            let gap = w[1].duration_since(w[0]).unwrap_or_default();
            let across_kill = w[0] <= killed && w[1] > killed;
            if across_kill && theirs.contains(&j) {
                let after = w[1].duration_since(killed).unwrap_or_default();
                takeover = takeover.max(after);
                assert!(
                    after <= lease + Duration::from_millis(900),
                    "{j}: first run {} ms after the kill; the lease is {} ms",
                    ms(after),
                    ms(lease)
                );
            } else if w[0] > settled
                && w[0]
                    < stopped
                        .checked_sub(Duration::from_secs(1))
                        .unwrap_or(stopped)
            {
                assert!(
                    gap <= Duration::from_millis(1000),
                    "{j}: {} ms without a run at {:?} (back at {:?})",
                    ms(gap),
                    w[0],
                    back
                );
            }
        }
        let after_kill = t.iter().filter(|x| **x > killed && **x < back).count();
        assert!(
            after_kill >= 3,
            "{j}: {after_kill} runs while replica 2 was down"
        );
    }
    eprintln!(
        "takeover: the dead replica's journeys ran again {} ms after the kill (lease {} ms)",
        ms(takeover),
        ms(lease)
    );
}

/// The journeys a `/status` answer lists.
fn journey_names(s: &serde_json::Value) -> Vec<String> {
    s["journeys"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_replica_whose_database_is_unreachable_at_start_runs_its_share_by_the_hash() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = tempfile::tempdir().expect("cache");
    let wasm = support::hostile_wasm().display().to_string();
    // Nothing listens there: every connection is refused at once.
    let port = support::free_port();
    let mut src = format!(
        "[runner]\nlisten = \"127.0.0.1:0\"\nwatch = false\nshard = \"0/2\"\nlease = \"2s\"\n\n\
         [store]\nurl = \"postgres://waymark@127.0.0.1:{port}/waymark?connect_timeout=2\"\n\n"
    );
    let names: Vec<String> = (0..8).map(|i| format!("journey-{i}")).collect();
    for n in &names {
        src.push_str(&format!(
            "[[journey]]\nname = \"{n}\"\nwasm = \"{wasm}\"\nevery = \"200ms\"\nvars = {{ mode = \"noop\" }}\n\n"
        ));
    }
    let config = dir.path().join("waymark.toml");
    std::fs::write(&config, src).expect("write");
    let t = std::time::Instant::now();
    let r = serve(&config, &[], cache.path());
    let started = t.elapsed();
    assert!(
        started < Duration::from_secs(10),
        "start held up {started:?} by the database"
    );
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = r.get("/healthz");
    assert_eq!(code, 200);
    let s: serde_json::Value = serde_json::from_str(&r.get("/status").1).expect("json");
    let leases = &s["shard"]["leases"];
    assert!(
        leases["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.1")),
        "the lease error says where: {s}"
    );
    assert_eq!(leases["replicas"][0]["standing"], serde_json::Value::Null);
    let mut ran = journey_names(&s);
    ran.sort();
    let mut mine: Vec<String> = names
        .iter()
        .filter(|n| waymark_load::Shard::owner(2, n) == 0)
        .cloned()
        .collect();
    mine.sort();
    assert_eq!(ran, mine, "its own share, by the hash alone");
    assert!(
        s["journeys"]
            .as_array()
            .is_some_and(|js| js.iter().all(|j| j["runs"].as_u64() > Some(2))),
        "{s}"
    );
    assert!(r.stop().success());
}
