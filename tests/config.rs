//! The config suite: every file under `tests/configs/good` is accepted, and
//! every file under `tests/configs/bad` is refused with exactly the problems
//! its `# expect: LINE:COL | KEY | MESSAGE` lines name, each at that place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use waymark_monitor::config::{Config, KeepExchanges, SinkKind};
use waymark_monitor::schedule::Schedule;
use waymark_monitor::sinks::jsonl::JsonlConfig;

fn dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/configs")
        .join(kind)
}

fn env(name: &str) -> Option<String> {
    (name == "WAYMARK_TEST_TOKEN").then(|| "tok-123".to_string())
}

fn files(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir(kind))
        .expect("config dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn good_files_are_accepted() {
    let good = files("good");
    assert!(good.len() >= 3);
    for path in good {
        let src = std::fs::read_to_string(&path).expect("read");
        if let Err(e) = Config::parse(&path, &src, &env) {
            panic!("{} was refused:\n{e}", path.display());
        }
    }
}

#[test]
fn full_file_values_and_defaults() {
    let path = dir("good").join("full.toml");
    let src = std::fs::read_to_string(&path).expect("read");
    let c = Config::parse(&path, &src, &env).expect("valid");
    assert_eq!(c.runner.location, "eu-west");
    assert_eq!(c.runner.max_concurrent_runs, 16);
    assert_eq!(c.runner.shutdown_grace, Duration::from_secs(10));
    assert!(!c.runner.watch);
    let swap = &c.journeys[0];
    // Inherited from [defaults]...
    assert_eq!(swap.timeout, Duration::from_secs(20));
    assert_eq!(swap.retries, 1);
    assert_eq!(swap.retry_delay, Duration::from_secs(2));
    assert_eq!(swap.memory_limit, 32 << 20);
    assert_eq!(
        swap.http.allow_hosts,
        vec!["api.example.com", "*.example.com:443"]
    );
    // ...maps merged key by key, the journey's value winning...
    assert_eq!(swap.vars["region"], "eu");
    assert_eq!(swap.vars["base_url"], "https://swap.example.com");
    assert_eq!(swap.secrets["token"], "tok-123");
    assert!(matches!(&swap.schedule, Schedule::Cron { expr, .. } if expr == "0 */1 * * * *"));
    assert!(swap.wasm.ends_with("journeys/swap_pairs.wasm"));
    assert!(swap.wasm.starts_with(dir("good")), "relative to the file");
    // ...and everything the journey sets itself overrides them.
    let login = &c.journeys[1];
    assert_eq!(login.schedule, Schedule::Every(Duration::from_secs(30)));
    assert_eq!(login.jitter, Duration::from_secs(5));
    assert_eq!(login.timeout, Duration::from_secs(5));
    assert_eq!(login.retries, 0);
    assert_eq!(login.memory_limit, 16 << 20);
    assert_eq!(login.keep_exchanges, KeepExchanges::OnFailure);
    assert_eq!(login.tags, vec!["web", "auth"]);
    let m = &c.maintenance[0];
    assert_eq!(m.name, "weekly database upgrade");
    assert!(m.covers("login", &login.tags) && !m.covers("swap-pairs", &swap.tags));
    // Sunday 2026-12-06 02:30 UTC is inside; 04:30 is not.
    let sunday = humantime::parse_rfc3339("2026-12-06T02:30:00Z").expect("time");
    assert!(m.open_at(sunday));
    assert!(!m.open_at(sunday + Duration::from_secs(2 * 3600)));
    assert_eq!(c.ui.title, "Example status");
    assert_eq!(
        c.ui.groups,
        vec![("Web".to_string(), vec!["login".to_string()])]
    );
    assert_eq!(c.ui.tags["auth"], vec!["login"]);
    assert_eq!(swap.keep_exchanges, KeepExchanges::Never);
    assert_eq!(login.http.allow_hosts, vec!["login.example.com"]);
    assert_eq!(login.http.max_requests, 20);
    assert_eq!(login.http.max_body, 1 << 20);
    assert_eq!(login.vars["region"], "eu");
    assert_eq!(c.sinks.len(), 2);
    assert!(
        matches!(&c.sinks[0].kind, SinkKind::Jsonl(JsonlConfig { path, max_size, keep })
            if path.ends_with("runs.jsonl") && *max_size == 0 && *keep == 5)
    );
    assert_eq!(c.sinks[0].name, "jsonl");
    assert_eq!(c.sinks[1].kind, SinkKind::Pretty);
    assert!(matches!(
        &c.store.database,
        Some(waymark_monitor::store::Database::Sqlite(p)) if p.ends_with("history/waymark.db")
    ));
    assert_eq!(c.store.retention, Duration::from_secs(7 * 86400));
}

#[test]
fn defaults_when_unsaid() {
    let path = dir("good").join("minimal.toml");
    let src = std::fs::read_to_string(&path).expect("read");
    let c = Config::parse(&path, &src, &env).expect("valid");
    assert_eq!(c.runner.location, "local");
    assert_eq!(c.runner.max_concurrent_runs, 64);
    assert!(c.runner.watch);
    let j = &c.journeys[0];
    assert_eq!(j.timeout, Duration::from_secs(30));
    assert_eq!(j.memory_limit, 64 << 20);
    assert_eq!(j.retries, 0);
    assert!(j.http.allow_hosts.is_empty());
    assert_eq!(c.store.retention, Duration::from_secs(30 * 86400));

    let path = dir("good").join("defaults_schedule.toml");
    let src = std::fs::read_to_string(&path).expect("read");
    let c = Config::parse(&path, &src, &env).expect("valid");
    assert_eq!(
        c.journeys[0].schedule,
        Schedule::Every(Duration::from_secs(300))
    );
    assert!(matches!(&c.journeys[1].schedule, Schedule::Cron { .. }));
    assert_eq!(c.store.database, None);
    assert_eq!(c.runner.listen, None);
}

struct Expect {
    line: usize,
    column: usize,
    key: String,
    message: String,
}

fn expectations(src: &str) -> Vec<Expect> {
    src.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|e| {
            let parts: Vec<&str> = e.splitn(3, " | ").collect();
            assert_eq!(parts.len(), 3, "bad expect line: {e}");
            let (line, column) = parts[0].split_once(':').expect("LINE:COL");
            Expect {
                line: line.parse().expect("line"),
                column: column.parse().expect("column"),
                key: parts[1].to_string(),
                message: parts[2].to_string(),
            }
        })
        .collect()
}

#[test]
fn the_load_section_reads_the_ramp_and_gates() {
    let path = dir("good").join("load.toml");
    let src = std::fs::read_to_string(&path).expect("read");
    let c = Config::parse(&path, &src, &env).expect("valid");
    let l = c.load.expect("a [load] section");
    assert_eq!(l.journey, "checkout");
    assert!(l.concurrency.is_empty());
    assert_eq!(l.rate, vec![50.0, 100.0, 200.0]);
    assert_eq!(l.step_duration, Some(Duration::from_secs(60)));
    assert_eq!(l.warmup, Some(Duration::from_secs(10)));
    assert_eq!(l.max_vus, Some(500));
    assert_eq!(l.slo.len(), 4);
    assert_eq!(l.slo[1].to_string(), "p99(pay)<2s");
    assert_eq!(l.report, Some(dir("good").join("audit.html")));
    assert_eq!(l.repeat, Some(3));
    assert_eq!(l.prometheus.as_deref(), Some("http://127.0.0.1:9090"));
    assert_eq!(l.observe.len(), 1);
    assert_eq!(l.observe[0].name, "db_cpu");
    // Without a [load] section there is none.
    let path = dir("good").join("minimal.toml");
    let src = std::fs::read_to_string(&path).expect("read");
    assert!(
        Config::parse(&path, &src, &env)
            .expect("valid")
            .load
            .is_none()
    );
}

#[test]
fn bad_files_name_every_problem_where_it_is() {
    let bad = files("bad");
    assert!(bad.len() >= 12);
    for path in bad {
        let src = std::fs::read_to_string(&path).expect("read");
        let want = expectations(&src);
        assert!(!want.is_empty(), "{} has no # expect lines", path.display());
        let errors = match Config::parse(&path, &src, &env) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e,
        };
        let got: Vec<String> = errors.0.iter().map(|e| format!("{e}")).collect();
        assert_eq!(
            errors.0.len(),
            want.len(),
            "{}: wanted {} problems, got:\n{}",
            path.display(),
            want.len(),
            got.join("\n")
        );
        let lines: Vec<&str> = src.lines().collect();
        for (e, w) in errors.0.iter().zip(&want) {
            let shown = format!("{e}");
            assert_eq!(
                (e.place.line, e.place.column, e.key.as_str()),
                (w.line, w.column, w.key.as_str()),
                "{}: {shown}",
                path.display()
            );
            assert!(
                e.message.contains(&w.message),
                "{}: message {:?} lacks {:?}",
                path.display(),
                e.message,
                w.message
            );
            // The message starts with file:line:col and quotes the line with a caret under the spot.
            let head = format!("{}:{}:{}: {}", path.display(), w.line, w.column, w.key);
            assert!(shown.starts_with(&head), "{shown}");
            let quoted = format!("{} | {}", w.line, lines[w.line - 1]);
            assert!(shown.contains(&quoted), "{shown}");
            let caret_line = shown.lines().last().expect("caret line");
            let caret_col = caret_line.find('^').expect("caret");
            let text_col = shown
                .lines()
                .find(|l| l.starts_with(&format!("{} | ", w.line)))
                .map(|l| l.find(" | ").expect("bar") + 3)
                .expect("quoted line");
            assert_eq!(
                caret_col - (caret_line.find(" | ").expect("bar") + 3),
                w.column - 1,
                "{shown}"
            );
            let _ = text_col;
        }
    }
}
