//! The scheduler, in process: journeys on short intervals against a loopback
//! server, checked by what the server saw, the service's counters and the
//! history store.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use support::CountingServer;
use waymark_monitor::clock::Clock;
use waymark_monitor::config::Config;
use waymark_monitor::serve::{JourneyStatus, Plan, Service, prepare};
use waymark_monitor::store::{Entry, Filter, Store};
use waymark_record::Status;

fn plan(dir: &Path, body: &str) -> Plan {
    let wasm = support::hostile_wasm().display().to_string();
    let src = format!(
        "[runner]\nlisten = \"off\"\nwatch = false\n\n[store]\npath = \"{}\"\n\n{}",
        dir.join("history.db").display(),
        body.replace("HOSTILE", &wasm)
    );
    let path = dir.join("waymark.toml");
    std::fs::write(&path, &src).expect("write config");
    let c = Config::parse(&path, &src, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    prepare(&support::shared_runtime(), c, None)
        .unwrap_or_else(|e| panic!("{}", waymark_monitor::config::ConfigErrors(e)))
}

fn history(dir: &Path) -> Vec<Entry> {
    let store = Store::open(&dir.join("history.db")).expect("open store");
    assert!(store.integrity_ok().expect("integrity check"));
    let mut v = store.list(&Filter::default()).expect("list");
    v.reverse();
    v
}

fn status_of(service: &Service, name: &str) -> JourneyStatus {
    find(service.status(), name)
}

fn find(status: Vec<JourneyStatus>, name: &str) -> JourneyStatus {
    status
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no journey {name}"))
}

fn started(e: &Entry) -> SystemTime {
    e.record.started_at
}

/// Waits (in real time, at most 10 s) until the journey's status meets `pred`.
async fn until(
    service: &Service,
    name: &str,
    pred: impl Fn(&JourneyStatus) -> bool,
) -> JourneyStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = status_of(service, name);
        if pred(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `p` with the scheduler on a manual clock (on a round second),
/// which the test then moves.
async fn start_on_manual_clock(p: Plan) -> (Service, Clock) {
    let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let service = Service::start_with(support::shared_runtime(), p, clock.clone())
        .await
        .expect("start");
    (service, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_schedule_and_every_run_is_stored() {
    let server = CountingServer::start(0, Duration::ZERO);
    let dir = tempfile::tempdir().expect("tmp");
    let p = plan(
        dir.path(),
        &format!(
            "[[journey]]\nname = \"ping\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\n\
             allow_hosts = [\"127.0.0.1\"]\nvars = {{ mode = \"fetch\", url = \"{}\" }}\n\n\
             [[sink]]\ntype = \"jsonl\"\npath = \"runs.jsonl\"\n",
            server.url()
        ),
    );
    let (service, clock) = start_on_manual_clock(p).await;
    assert_eq!(status_of(&service, "ping").due, 0);
    // Six steps of the interval: six ticks, each run to its end.
    for k in 1..=6 {
        clock.advance(Duration::from_millis(200));
        until(&service, "ping", |s| s.runs == k && !s.running).await;
    }
    let drained = service.shutdown(Duration::from_secs(5)).await;
    assert!(drained.abandoned.is_empty());
    let s = find(drained.status, "ping");
    assert_eq!(
        (s.due, s.runs, s.failures, s.skipped_overlap, s.missed_ticks),
        (6, 6, 0, 0, 0),
        "{s:?}"
    );
    let h = history(dir.path());
    assert_eq!(h.len(), 6, "every run is in the history");
    assert_eq!(server.count(), 6, "one request per run");
    for e in &h {
        assert_eq!(e.record.status, Status::Pass);
        assert!(e.final_attempt);
    }
    // The jsonl sink got the same records, one line each.
    let lines: Vec<waymark_record::RunRecord> =
        std::fs::read_to_string(dir.path().join("runs.jsonl"))
            .expect("jsonl file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a record per line"))
            .collect();
    assert_eq!(
        lines.iter().map(|r| &r.run_id).collect::<Vec<_>>(),
        h.iter().map(|e| &e.record.run_id).collect::<Vec<_>>()
    );
    // The ticks are 200 ms apart, and each within the step that made it due.
    let start = clock.now() - Duration::from_millis(1200);
    for (k, e) in h.iter().enumerate() {
        let due = e.scheduled_at.expect("scheduled_at");
        let after = due.duration_since(start).expect("after the start");
        assert!(
            after > Duration::from_millis(200 * k as u64)
                && after <= Duration::from_millis(200 * (k as u64 + 1)),
            "tick {k} at +{after:?}"
        );
    }
    for w in h.windows(2) {
        let gap = w[1]
            .scheduled_at
            .expect("due")
            .duration_since(w[0].scheduled_at.expect("due"));
        assert_eq!(gap.ok(), Some(Duration::from_millis(200)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_going_is_not_doubled() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = plan(
        dir.path(),
        "[[journey]]\nname = \"slow\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\n\
         vars = { mode = \"sleep\", ms = \"800\" }\n",
    );
    let (service, clock) = start_on_manual_clock(p).await;
    clock.advance(Duration::from_millis(200));
    until(&service, "slow", |s| s.running).await;
    // Four more ticks while the first run sleeps: each is skipped.
    for k in 1..=4 {
        clock.advance(Duration::from_millis(200));
        until(&service, "slow", |s| s.skipped_overlap == k).await;
    }
    let s = until(&service, "slow", |s| s.runs == 1 && !s.running).await;
    assert_eq!((s.due, s.skipped_overlap), (5, 4), "{s:?}");
    // The next tick after it ended runs again.
    clock.advance(Duration::from_millis(200));
    until(&service, "slow", |s| s.running).await;
    let s = find(
        service.shutdown(Duration::from_secs(5)).await.status,
        "slow",
    );
    assert_eq!(
        (s.due, s.runs, s.skipped_overlap, s.missed_ticks),
        (6, 2, 4, 0),
        "{s:?}"
    );
    let h = history(dir.path());
    assert_eq!(h.len(), 2);
    // Never two at once: each run ended before the next began.
    let end = started(&h[0]) + h[0].record.duration;
    assert!(end <= started(&h[1]), "runs overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_passed_while_paused_are_counted_not_replayed() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = plan(
        dir.path(),
        "[[journey]]\nname = \"p\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\n\
         vars = { mode = \"noop\" }\n",
    );
    let (service, clock) = start_on_manual_clock(p).await;
    // A second passes at once (the process was stopped, or the machine
    // slept): five ticks are due, one runs and four are missed.
    clock.advance(Duration::from_secs(1));
    let s = until(&service, "p", |s| s.runs == 1 && !s.running).await;
    assert_eq!((s.due, s.missed_ticks), (1, 4), "{s:?}");
    clock.advance(Duration::from_millis(200));
    let s = until(&service, "p", |s| s.runs == 2 && !s.running).await;
    assert_eq!((s.due, s.missed_ticks), (2, 4), "{s:?}");
    service.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_record_every_attempt() {
    // A flaky service: the first request fails, the retry passes.
    let server = CountingServer::start(1, Duration::ZERO);
    let dir = tempfile::tempdir().expect("tmp");
    let p = plan(
        dir.path(),
        &format!(
            "[defaults]\nretry_delay = \"50ms\"\nevery = \"1s\"\n\n\
             [[journey]]\nname = \"broken\"\nwasm = \"HOSTILE\"\nretries = 2\nvars = {{ mode = \"fail\" }}\n\n\
             [[journey]]\nname = \"flaky\"\nwasm = \"HOSTILE\"\nretries = 1\n\
             allow_hosts = [\"127.0.0.1\"]\nvars = {{ mode = \"fetch\", url = \"{}\" }}\n",
            server.url()
        ),
    );
    let service = Service::start(support::shared_runtime(), p)
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let status = service.shutdown(Duration::from_secs(5)).await.status;
    let broken = find(status.clone(), "broken");
    let flaky = find(status, "flaky");
    // Shutting down stops retrying: a run that shutdown caught between
    // its attempts ends there, so the last run may have fewer than 3.
    assert!(
        broken.runs >= 1
            && broken.attempts <= 3 * broken.runs
            && broken.attempts > 3 * (broken.runs - 1),
        "{broken:?}"
    );
    assert_eq!(broken.failures, broken.runs);
    assert!(flaky.runs >= 1, "{flaky:?}");
    assert_eq!(flaky.failures, 0, "the retry passed: {flaky:?}");
    assert_eq!(
        flaky.attempts,
        flaky.runs + 1,
        "one retry in all: {flaky:?}"
    );

    let mut runs: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in history(dir.path()) {
        runs.entry(e.record.run_id.clone()).or_default().push(e);
    }
    let mut cut_short = 0;
    for attempts in runs.values() {
        let journey = &attempts[0].record.journey;
        let tries: Vec<u32> = attempts.iter().map(|e| e.record.attempt).collect();
        let finals: Vec<bool> = attempts.iter().map(|e| e.final_attempt).collect();
        if journey == "broken" {
            let n = tries.len();
            assert!((1..=3).contains(&n), "{tries:?}");
            assert_eq!(tries, (1..=n as u32).collect::<Vec<_>>());
            let mut want = vec![false; n];
            want[n - 1] = true;
            assert_eq!(finals, want);
            assert!(attempts.iter().all(|e| e.record.status == Status::Fail));
            cut_short += usize::from(n < 3);
        }
    }
    assert!(cut_short <= 1, "only the run shutdown caught may be short");
    let flaky_runs: Vec<&Vec<Entry>> = runs
        .values()
        .filter(|a| a[0].record.journey == "flaky")
        .collect();
    let first = flaky_runs[0];
    assert_eq!(first.len(), 2, "the first flaky run took two attempts");
    assert_eq!(first[0].record.status, Status::Fail);
    assert_eq!(first[1].record.status, Status::Pass);
    assert!(first[1].final_attempt && !first[0].final_attempt);

    let store = Store::open(&dir.path().join("history.db")).expect("open");
    let stats = store.stats(&Filter::default()).expect("stats");
    let flaky_stats = stats
        .iter()
        .find(|s| s.journey == "flaky")
        .expect("flaky stats");
    assert_eq!(flaky_stats.availability, 1.0, "a pass on retry is a pass");
    let broken_stats = stats
        .iter()
        .find(|s| s.journey == "broken")
        .expect("broken stats");
    assert_eq!(broken_stats.availability, 0.0);
    assert_eq!(broken_stats.incidents.len(), 1);
    assert!(broken_stats.incidents[0].recovered_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_journeys_and_lets_runs_in_flight_finish() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = plan(
        dir.path(),
        "[[journey]]\nname = \"long\"\nwasm = \"HOSTILE\"\nevery = \"300ms\"\n\
         vars = { mode = \"sleep\", ms = \"900\" }\n\n\
         [[journey]]\nname = \"kept\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\nvars = { mode = \"noop\" }\n",
    );
    let service = Service::start(support::shared_runtime(), old)
        .await
        .expect("start");
    // Wait until `long` is mid-run.
    let t0 = std::time::Instant::now();
    while !status_of(&service, "long").running {
        assert!(t0.elapsed() < Duration::from_secs(3), "long never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kept_before = status_of(&service, "kept").runs;
    let new = plan(
        dir.path(),
        "[[journey]]\nname = \"kept\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\nvars = { mode = \"noop\" }\n\n\
         [[journey]]\nname = \"added\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\nvars = { mode = \"noop\" }\n",
    );
    let reloaded_at = SystemTime::now();
    service.reload(new).await;
    let names: Vec<String> = service.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["kept", "added"]);
    assert!(
        status_of(&service, "kept").runs >= kept_before,
        "counters survive a reload"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let drained = service.shutdown(Duration::from_secs(5)).await;
    assert!(drained.abandoned.is_empty());
    let h = history(dir.path());
    let long: Vec<&Entry> = h.iter().filter(|e| e.record.journey == "long").collect();
    assert!(!long.is_empty());
    let last_long = long.last().expect("a long run");
    let ended = started(last_long) + last_long.record.duration;
    assert!(
        ended > reloaded_at,
        "the run in flight at the reload finished after it"
    );
    assert_eq!(
        last_long.record.status,
        Status::Pass,
        "and was not cut short"
    );
    assert!(
        long.iter().all(|e| started(e) < reloaded_at),
        "no new long run after the reload"
    );
    let added = h.iter().filter(|e| e.record.journey == "added").count();
    assert!(added >= 4, "the added journey runs ({added})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_runs_in_flight_up_to_the_grace() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = plan(
        dir.path(),
        "[[journey]]\nname = \"s\"\nwasm = \"HOSTILE\"\nevery = \"100ms\"\n\
         vars = { mode = \"sleep\", ms = \"600\" }\n\n\
         [[journey]]\nname = \"endless\"\nwasm = \"HOSTILE\"\nevery = \"100ms\"\ntimeout = \"60s\"\n\
         vars = { mode = \"sleep\", ms = \"60000\" }\n",
    );
    let service = Service::start(support::shared_runtime(), p)
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(status_of(&service, "s").running);
    let t = std::time::Instant::now();
    let drained = service.shutdown(Duration::from_millis(1500)).await;
    let waited = t.elapsed();
    assert_eq!(drained.abandoned, vec!["endless".to_string()]);
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let h = history(dir.path());
    assert!(
        h.iter()
            .any(|e| e.record.journey == "s" && e.record.status == Status::Pass)
    );
    assert!(h.iter().all(|e| e.record.journey != "endless"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_moves_starts_off_the_grid() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = plan(
        dir.path(),
        "[[journey]]\nname = \"j\"\nwasm = \"HOSTILE\"\nevery = \"200ms\"\njitter = \"150ms\"\n\
         vars = { mode = \"noop\" }\n",
    );
    let service = Service::start(support::shared_runtime(), p)
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    service.shutdown(Duration::from_secs(5)).await;
    let h = history(dir.path());
    assert!(h.len() >= 5, "{} runs", h.len());
    let gaps: Vec<u128> = h
        .windows(2)
        .map(|w| {
            w[1].scheduled_at
                .expect("due")
                .duration_since(w[0].scheduled_at.expect("due"))
                .map_or(0, |d| d.as_millis())
        })
        .collect();
    // Jittered due times: gaps vary within 200 ± 150 ms, not all 200.
    assert!(gaps.iter().all(|g| (50..=350).contains(g)), "{gaps:?}");
    assert!(gaps.iter().any(|g| *g != 200), "{gaps:?}");
}
