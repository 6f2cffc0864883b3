//! Recording a run and replaying it (`run --record-exchanges`,
//! `keep_exchanges`, `waymark replay`) as a QA author does after a failure:
//! the real binary, a real loopback server whose answer changes, and a
//! journey built twice (with its bug, and fixed).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use waymark_record::{RunRecord, Status};

const TOKEN: &str = "T0ken-s3cret-4711";

/// The replay guest as it is (its check wants "EUR" where the service says
/// "eur") and fixed; built once per test binary.
fn guests() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        // The same target directory: the second build recompiles the guest
        // alone, so each is copied out before the next.
        let keep = |fixed: bool, name: &str| {
            let env: &[(&str, &str)] = if fixed {
                &[("WAYMARK_TEST_FIXED", "1")]
            } else {
                &[]
            };
            let built = support::build_guest("guest-replay", env);
            let out = built.with_file_name(name);
            std::fs::copy(&built, &out).expect("copy the guest");
            out
        };
        let buggy = keep(false, "replay-buggy.wasm");
        let fixed = keep(true, "replay-fixed.wasm");
        assert_ne!(
            std::fs::read(&buggy).expect("read"),
            std::fs::read(&fixed).expect("read"),
            "the fixed build differs"
        );
        (buggy, fixed)
    })
}

/// A quote service on loopback whose currency can be changed; it counts
/// the requests it answers and echoes the Authorization header back.
struct Quotes {
    port: u16,
    currency: Arc<Mutex<&'static str>>,
    served: Arc<AtomicUsize>,
}

impl Quotes {
    fn start(currency: &'static str) -> Quotes {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cur = Arc::new(Mutex::new(currency));
        let served = Arc::new(AtomicUsize::new(0));
        let (c, n) = (cur.clone(), served.clone());
        support::answer_each_request(listener, move |head| {
            n.fetch_add(1, Ordering::SeqCst);
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("authorization: "))
                .unwrap_or("")
                .to_string();
            let currency = *c.lock().unwrap_or_else(|p| p.into_inner());
            let body = format!(r#"{{"price":10,"currency":"{currency}","auth":"{auth}"}}"#);
            Some(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-echo: {auth}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        });
        Quotes {
            port,
            currency: cur,
            served,
        }
    }

    fn set(&self, currency: &'static str) {
        *self.currency.lock().unwrap_or_else(|p| p.into_inner()) = currency;
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn waymark(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(args)
        .env("WAYMARK_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .env("token", TOKEN)
        .output()
        .expect("waymark runs")
}

fn live(cache: &Path, q: &Quotes, wasm: &Path, extra: &[&str]) -> Output {
    let base = format!("base_url={}", q.base_url());
    let allow = format!("127.0.0.1:{}", q.port);
    let mut args = vec![
        "run",
        wasm.to_str().expect("utf-8 path"),
        "--var",
        &base,
        "--secret",
        "token",
        "--allow-host",
        &allow,
    ];
    args.extend_from_slice(extra);
    waymark(cache, &args)
}

fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn check<'a>(rec: &'a RunRecord, name: &str) -> &'a waymark_record::CheckRecord {
    rec.steps
        .iter()
        .flat_map(|s| &s.checks)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check '{name}' in {rec:?}"))
}

fn replayed(out: &serde_json::Value) -> RunRecord {
    serde_json::from_value(out["record"].clone()).expect("the replay's record")
}

#[test]
fn a_failed_run_replays_to_the_same_failure_until_the_journey_is_fixed() {
    let (buggy, fixed) = guests();
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let tape = dir.path().join("failed.json");
    let tape_arg = tape.to_str().expect("utf-8");
    let q = Quotes::start("eur");

    let failed = live(
        cache.path(),
        &q,
        buggy,
        &["--record-exchanges", tape_arg, "--format", "json"],
    );
    assert_eq!(failed.status.code(), Some(1), "the bug fails the run");
    let recorded: RunRecord = serde_json::from_value(json(&failed)).expect("record");
    assert!(!check(&recorded, "currency is EUR").passed);

    // No recorded file holds the secret, in any form the server echoed.
    let text = std::fs::read_to_string(&tape).expect("the recording");
    assert!(text.contains("Bearer ***"), "{text}");
    for form in [
        TOKEN.to_string(),
        TOKEN.to_lowercase(),
        base64::engine::general_purpose::STANDARD.encode(TOKEN),
    ] {
        assert!(!text.contains(&form), "the recording holds {form}");
    }

    // The service changes: a live rerun passes...
    q.set("EUR");
    let rerun = live(cache.path(), &q, buggy, &[]);
    assert_eq!(rerun.status.code(), Some(0), "a live rerun passes");

    // ...but the replay of the failed run fails at the same check, and
    // never touches the network.
    let before = q.served.load(Ordering::SeqCst);
    let again = waymark(cache.path(), &["replay", tape_arg, "--format", "json"]);
    assert_eq!(again.status.code(), Some(1));
    let out = json(&again);
    let rec = replayed(&out);
    assert!(!check(&rec, "currency is EUR").passed);
    assert_eq!(out["difference"], serde_json::Value::Null, "{out}");
    assert_eq!(out["divergence"], serde_json::Value::Null, "{out}");
    assert_eq!(out["component_changed"], false);
    assert_eq!(out["recorded"]["run_id"], recorded.run_id.as_str());
    // The recorded phase timings are the replay's.
    let (a, b) = (
        recorded.requests().next().expect("a request"),
        rec.requests().next().expect("a request"),
    );
    assert_eq!(a.timings, b.timings);
    assert_eq!(a.status, Some(200));

    // The fixed journey passes against the same responses; what changed is
    // named.
    let fixed_out = waymark(
        cache.path(),
        &[
            "replay",
            tape_arg,
            "--journey",
            fixed.to_str().expect("utf-8"),
            "--format",
            "json",
        ],
    );
    assert_eq!(fixed_out.status.code(), Some(0));
    let out = json(&fixed_out);
    assert_eq!(out["component_changed"], true);
    assert!(check(&replayed(&out), "currency is EUR").passed);
    let diff = out["difference"].as_str().expect("a difference");
    assert!(
        diff.contains("currency is EUR") && diff.contains("failed when recorded"),
        "{diff}"
    );
    assert_eq!(
        q.served.load(Ordering::SeqCst),
        before,
        "replays sent nothing"
    );

    // A replay without the secret is refused, naming it.
    let no_secret = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["replay", tape_arg])
        .env("WAYMARK_CACHE_DIR", cache.path())
        .env_remove("token")
        .output()
        .expect("waymark runs");
    assert_eq!(no_secret.status.code(), Some(2));
    let err = String::from_utf8_lossy(&no_secret.stderr);
    assert!(err.contains("token") && err.contains("--secret"), "{err}");
}

#[test]
fn the_replay_sees_the_recorded_clock_and_random_numbers() {
    let (buggy, _) = guests();
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let q = Quotes::start("EUR");
    let line = |rec: &RunRecord| {
        rec.logs
            .iter()
            .find(|l| l.message.starts_with("nonce "))
            .map(|l| l.message.clone())
            .expect("the journey logs its nonce and clock")
    };
    let mut lines = Vec::new();
    for i in 0..2 {
        let tape = dir.path().join(format!("{i}.json"));
        let out = live(
            cache.path(),
            &q,
            buggy,
            &[
                "--record-exchanges",
                tape.to_str().expect("utf-8"),
                "--format",
                "json",
            ],
        );
        let rec: RunRecord = serde_json::from_value(json(&out)).expect("record");
        lines.push((tape, line(&rec)));
    }
    // Live runs see fresh numbers, so seeing the same ones is the replay's doing.
    assert_ne!(lines[0].1, lines[1].1);
    std::thread::sleep(Duration::from_millis(5));
    for (tape, recorded) in &lines {
        let out = json(&waymark(
            cache.path(),
            &["replay", tape.to_str().expect("utf-8"), "--format", "json"],
        ));
        assert_eq!(&line(&replayed(&out)), recorded);
        // The URL carries both numbers: it matched the recorded one.
        assert_eq!(out["divergence"], serde_json::Value::Null, "{out}");
        assert_eq!(replayed(&out).status, Status::Pass);
    }
}

#[test]
fn a_journey_that_changes_its_requests_is_told_where_it_diverged() {
    let (buggy, _) = guests();
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let tape = dir.path().join("run.json");
    let tape_arg = tape.to_str().expect("utf-8");
    let q = Quotes::start("EUR");
    let out = live(cache.path(), &q, buggy, &["--record-exchanges", tape_arg]);
    assert_eq!(out.status.code(), Some(0));

    let out = waymark(
        cache.path(),
        &[
            "replay",
            tape_arg,
            "--var",
            "path=/v2/quote",
            "--format",
            "json",
        ],
    );
    let v = json(&out);
    let d = &v["divergence"];
    assert_eq!(d["request"], 1, "{v}");
    assert!(
        d["recorded"]
            .as_str()
            .is_some_and(|r| r.contains("/quote?")),
        "{v}"
    );
    assert!(
        d["replayed"]
            .as_str()
            .is_some_and(|r| r.contains("/v2/quote?")),
        "{v}"
    );
    assert!(
        v["difference"]
            .as_str()
            .is_some_and(|d| d.contains("request 1")),
        "{v}"
    );

    // The same in words, both requests side by side.
    let text = waymark(
        cache.path(),
        &["replay", tape_arg, "--var", "path=/v2/quote"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("the replay diverged at its request 1"),
        "{text}"
    );
    assert!(text.contains("recorded: GET http://127.0.0.1"), "{text}");
    assert!(text.contains("replayed: GET http://127.0.0.1"), "{text}");
}

#[test]
fn run_v_shows_the_exchange_like_curl_v_with_secrets_redacted() {
    let (buggy, _) = guests();
    let cache = tempfile::tempdir().expect("dir");
    let q = Quotes::start("eur");
    let out = live(cache.path(), &q, buggy, &["-v"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "> GET /quote?nonce=",
        "> authorization: Bearer ***",
        "< HTTP/1.1 200 OK",
        "< x-echo: Bearer ***",
        "<   \"price\": 10,",
        "<   \"currency\": \"eur\",",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains(TOKEN), "{text}");
}

#[test]
fn serve_keeps_failed_runs_for_replay_by_run_id() {
    let (buggy, _) = guests();
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let q = Quotes::start("eur");
    let db = dir.path().join("history.db");
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[runner]
listen = "127.0.0.1:0"

[[journey]]
name = "quote"
wasm = "{}"
every = "1s"
keep_exchanges = "on-failure"
allow_hosts = ["127.0.0.1:{}"]
vars = {{ base_url = "{}" }}
secrets = {{ token = "{TOKEN}" }}

[store]
path = "{}"
"#,
            buggy.display(),
            q.port,
            q.base_url(),
            db.display()
        ),
    )
    .expect("config");
    let serve = support::Kill(
        Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["serve", "-c", config.to_str().expect("utf-8")])
            .env("WAYMARK_CACHE_DIR", cache.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let runs = |status: Status| -> Vec<String> {
        let Ok(store) = waymark_monitor::store::Store::open(&db) else {
            return Vec::new();
        };
        store
            .list(&waymark_monitor::store::Filter {
                status: Some(status),
                ..Default::default()
            })
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.record.run_id)
            .collect()
    };
    let wait = |status: Status| -> String {
        let t = Instant::now();
        loop {
            if let Some(id) = runs(status).into_iter().next() {
                return id;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no {status:?} run stored"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let failed = wait(Status::Fail);
    q.set("EUR");
    let passed = wait(Status::Pass);
    drop(serve);

    let db_arg = db.to_str().expect("utf-8");
    let out = waymark(
        cache.path(),
        &["replay", &failed, "--db", db_arg, "--format", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["recorded"]["run_id"], failed.as_str());
    assert_eq!(v["difference"], serde_json::Value::Null, "{v}");
    assert!(!check(&replayed(&v), "currency is EUR").passed);

    // on-failure: a passing run keeps no recording.
    let out = waymark(cache.path(), &["replay", &passed, "--db", db_arg]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no recorded exchanges"), "{err}");
}

#[test]
fn watch_runs_again_after_each_save() {
    let (buggy, fixed) = guests();
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let wasm = dir.path().join("quote.wasm");
    std::fs::copy(buggy, &wasm).expect("copy");
    let tape = cache.path().join("run.json");
    let q = Quotes::start("eur");
    let out = live(
        cache.path(),
        &q,
        &wasm,
        &["--record-exchanges", tape.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(1));

    let mut child = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["run", wasm.to_str().expect("utf-8"), "--watch"])
        .arg(dir.path())
        .args([
            "--replay",
            tape.to_str().expect("utf-8"),
            "--format",
            "json",
        ])
        .env("WAYMARK_CACHE_DIR", cache.path())
        .env("token", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let _kill = support::Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with('{') && tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a run within a minute");
        serde_json::from_str(&line).expect("json")
    };
    let first = next();
    assert_eq!(replayed(&first).status, Status::Fail);
    assert_eq!(first["component_changed"], false);

    // Saving the fixed journey runs it again, against the same recording.
    std::thread::sleep(Duration::from_millis(50));
    let tmp = dir.path().join(".quote.wasm.tmp");
    std::fs::copy(fixed, &tmp).expect("copy");
    std::fs::rename(&tmp, &wasm).expect("save");
    let second = next();
    assert_eq!(replayed(&second).status, Status::Pass, "{second}");
    assert_eq!(second["component_changed"], true);
}
