//! `waymark run` as a user runs it: the real binary, real files, exit codes.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{ScriptedServer, hostile_wasm};
use waymark_record::{RunRecord, Status};

fn waymark(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(args)
        .env("WAYMARK_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .output()
        .expect("waymark runs")
}

fn record(out: &Output) -> RunRecord {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn guest() -> String {
    hostile_wasm().display().to_string()
}

// Two workers: the test blocks one waiting for the binary; the server needs the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_the_record_and_exits_by_status() {
    let cache = tempfile::tempdir().expect("dir");
    let server = ScriptedServer::ok(None).await;
    let url = format!("{}/ok", server.url(false));
    let g = guest();
    let ok = waymark(
        cache.path(),
        &[
            "run",
            &g,
            "--var",
            "mode=fetch",
            "--var",
            &format!("url={url}"),
            "--allow-host",
            &server.authority(),
            "--format",
            "json",
            "--name",
            "probe",
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let rec = record(&ok);
    assert_eq!((rec.journey.as_str(), rec.status), ("probe", Status::Pass));
    assert_eq!(rec.requests().count(), 1);
    // The record's documented shape (README, *The result record*): these keys, no others.
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("json");
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "attempt",
            "duration_ms",
            "error",
            "journey",
            "location",
            "logs",
            "run_id",
            "started_at",
            "status",
            "steps"
        ]
    );
    let t = &v["steps"][0]["requests"][0]["timings_ms"];
    for phase in waymark_record::PHASE_NAMES {
        assert!(t[phase].is_number(), "{phase} in {t}");
    }

    let fail = waymark(
        cache.path(),
        &["run", &g, "--var", "mode=fail", "--format", "json"],
    );
    assert_eq!(fail.status.code(), Some(1), "{fail:?}");
    assert_eq!(record(&fail).status, Status::Fail);

    let trap = waymark(
        cache.path(),
        &["run", &g, "--var", "mode=panic", "--format", "json"],
    );
    assert_eq!(trap.status.code(), Some(2), "{trap:?}");
    assert_eq!(record(&trap).status, Status::Error);

    let spin = waymark(
        cache.path(),
        &["run", &g, "--var", "mode=spin", "--timeout", "200ms"],
    );
    assert_eq!(spin.status.code(), Some(2), "{spin:?}");
    let text = String::from_utf8_lossy(&spin.stdout);
    assert!(text.contains("TIMEOUT"), "{text}");
    assert!(text.contains("wall-clock timeout of 200ms"), "{text}");
}

#[test]
fn pretty_output_is_a_waterfall() {
    let cache = tempfile::tempdir().expect("dir");
    let out = waymark(cache.path(), &["run", &guest(), "--var", "mode=fail"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✗ FAIL  guest_hostile"), "{text}");
    assert!(text.contains("▸ checks"), "{text}");
    assert!(text.contains("✓ this passes"), "{text}");
    assert!(text.contains("✗ this fails"), "{text}");
}

#[test]
fn secrets_come_from_the_command_line_or_the_environment() {
    let cache = tempfile::tempdir().expect("dir");
    let g = guest();
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args([
            "run",
            &g,
            "--var",
            "mode=secret",
            "--secret",
            "token",
            "--format",
            "json",
        ])
        .env("WAYMARK_CACHE_DIR", cache.path())
        .env("token", "from-env-s3cret")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("from-env-s3cret"), "{stdout}");
    assert!(stdout.contains("failed with ***"), "{stdout}");

    let missing = waymark(
        cache.path(),
        &["run", &g, "--secret", "WAYMARK_TEST_UNSET_VAR"],
    );
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("environment variable WAYMARK_TEST_UNSET_VAR is not set"),
        "{err}"
    );
}

#[test]
fn bad_input_is_a_clear_error_with_exit_2() {
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"hello").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["run".into(), "/nonexistent/j.wasm".into()],
            "cannot read journey /nonexistent/j.wasm",
        ),
        (
            vec!["serve".into(), "-c".into(), "/nonexistent/w.toml".into()],
            "cannot read config /nonexistent/w.toml: No such file",
        ),
        (
            vec!["check".into(), "-c".into(), "/nonexistent/w.toml".into()],
            "cannot read config /nonexistent/w.toml: No such file",
        ),
        (
            vec![
                "history".into(),
                "--since".into(),
                "lately".into(),
                "--db".into(),
                junk.display().to_string(),
            ],
            "--since 'lately'",
        ),
        (
            vec!["run".into(), junk.display().to_string()],
            "journey 'junk' is not a valid Wasm component",
        ),
        (
            vec![
                "run".into(),
                guest(),
                "--allow-host".into(),
                "ex*ample.com".into(),
            ],
            "invalid allow-host pattern 'ex*ample.com'",
        ),
        (
            vec!["run".into(), guest(), "--timeout".into(), "soon".into()],
            "'soon' is not a duration",
        ),
        (
            vec![
                "run".into(),
                guest(),
                "--ca-file".into(),
                "/nonexistent/ca.pem".into(),
            ],
            "CA file /nonexistent/ca.pem",
        ),
        (
            vec!["run".into(), guest(), "--var".into(), "novalue".into()],
            "--var 'novalue': expected NAME=VALUE",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = waymark(cache.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // Each cause is said once, not again by the error chain.
        let first = err.lines().next().unwrap_or("");
        for part in first.split(": ") {
            if part.len() > 12 {
                assert_eq!(
                    first.matches(part).count(),
                    1,
                    "repeated {part:?} in {first}"
                );
            }
        }
    }
    // The compile cache's size, from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["run", &guest()])
        .env("WAYMARK_CACHE_DIR", cache.path())
        .env("WAYMARK_CACHE_SIZE", "lots")
        .output()
        .expect("waymark runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("WAYMARK_CACHE_SIZE: 'lots' is not a size like 64MiB"),
        "{err}"
    );
}

#[test]
fn demo_runs_every_example_journey_and_passes() {
    let cache = tempfile::tempdir().expect("dir");
    let out = waymark(cache.path(), &["demo", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<RunRecord> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one record per line"))
        .collect();
    let names: Vec<&str> = lines.iter().map(|r| r.journey.as_str()).collect();
    assert_eq!(names, ["health", "api", "market"]);
    assert!(lines.iter().all(|r| r.status == Status::Pass));
}

/// Check one value against the HAR 1.2 structure (required fields and types).
fn check_har(har: &serde_json::Value) {
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert!(log["creator"]["name"].is_string() && log["creator"]["version"].is_string());
    let entries = log["entries"].as_array().expect("entries");
    for e in entries {
        let started = e["startedDateTime"].as_str().expect("startedDateTime");
        assert!(
            humantime::parse_rfc3339(started).is_ok(),
            "ISO 8601: {started}"
        );
        assert!(e["time"].as_f64().expect("time") >= 0.0);
        let req = &e["request"];
        for k in ["method", "url", "httpVersion"] {
            assert!(req[k].is_string(), "request.{k} in {e}");
        }
        for k in ["cookies", "headers", "queryString"] {
            assert!(req[k].is_array(), "request.{k}");
        }
        for k in ["headersSize", "bodySize"] {
            assert!(req[k].is_i64(), "request.{k}");
        }
        for h in req["headers"].as_array().expect("headers") {
            assert!(h["name"].is_string() && h["value"].is_string(), "{h}");
        }
        let resp = &e["response"];
        assert!(resp["status"].is_u64());
        for k in ["statusText", "httpVersion", "redirectURL"] {
            assert!(resp[k].is_string(), "response.{k}");
        }
        for k in ["cookies", "headers"] {
            assert!(resp[k].is_array(), "response.{k}");
        }
        assert!(resp["content"]["size"].is_i64() || resp["content"]["size"].is_u64());
        assert!(resp["content"]["mimeType"].is_string());
        assert!(e["cache"].is_object());
        let t = &e["timings"];
        for k in ["send", "wait", "receive"] {
            assert!(t[k].as_f64().expect(k) >= 0.0, "timings.{k}");
        }
        for k in ["blocked", "dns", "connect", "ssl"] {
            assert!(t[k].as_f64().expect(k) >= -1.0, "timings.{k}");
        }
        let sum: f64 = ["blocked", "dns", "connect", "send", "wait", "receive"]
            .iter()
            .map(|k| t[k].as_f64().unwrap_or(0.0).max(0.0))
            .sum();
        let time = e["time"].as_f64().unwrap_or(0.0);
        assert!(
            (sum - time).abs() < 0.01,
            "time is the sum of the phases: {sum} vs {time}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn har_export_opens_as_har_1_2_with_secrets_redacted() {
    let api = waymark::demo::DemoApi::start().await.expect("demo api");
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let wasm = dir.path().join("api.wasm");
    let bytes = waymark::demo::JOURNEYS
        .iter()
        .find(|(n, _)| *n == "api")
        .map(|(_, b)| *b)
        .expect("api journey");
    std::fs::write(&wasm, bytes).expect("write");
    let har_path = dir.path().join("run.har");
    let out = waymark(
        cache.path(),
        &[
            "run",
            &wasm.display().to_string(),
            "--var",
            &format!("base_url={}", api.base_url()),
            "--secret",
            &format!("password={}", waymark::demo::PASSWORD),
            "--allow-host",
            &api.authority(),
            "--har",
            &har_path.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = std::fs::read_to_string(&har_path).expect("HAR written");
    assert!(
        !text.contains(waymark::demo::PASSWORD),
        "the secret is redacted"
    );
    let har: serde_json::Value = serde_json::from_str(&text).expect("HAR is JSON");
    check_har(&har);
    let entries = har["log"]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    let login = &entries[0];
    assert_eq!(login["request"]["method"], "POST");
    let posted = login["request"]["postData"]["text"]
        .as_str()
        .expect("post body");
    assert!(posted.contains(r#""password":"***""#), "{posted}");
    assert!(
        login["response"]["content"]["text"]
            .as_str()
            .expect("body")
            .contains("token")
    );
    assert!(login["timings"]["connect"].as_f64().expect("connect") > 0.0);
    assert_eq!(
        entries[1]["timings"]["connect"], -1.0,
        "a reused connection has no connect"
    );
    assert_eq!(entries[2]["response"]["status"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_trust_store_is_trusted() {
    // rustls-native-certs reads SSL_CERT_FILE as the system store, as
    // OpenSSL does: a CA installed there is trusted without --ca-file.
    let ca = support::TestCa::new();
    let server = ScriptedServer::ok(Some(ca.server.clone())).await;
    let cache = tempfile::tempdir().expect("dir");
    let port = server.addr.port();
    let url = format!("url=https://localhost:{port}/");
    let g = guest();
    let args = [
        "run",
        &g,
        "--var",
        "mode=fetch",
        "--var",
        &url,
        "--allow-host",
        &format!("localhost:{port}"),
        "--format",
        "json",
    ];
    let run = |with_store: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
        cmd.args(args).env("WAYMARK_CACHE_DIR", cache.path());
        if with_store {
            cmd.env("SSL_CERT_FILE", &ca.ca_file);
        } else {
            cmd.env("SSL_CERT_FILE", "/nonexistent/ca.pem");
        }
        cmd.output().expect("runs")
    };
    let trusted = tokio::task::block_in_place(|| run(true));
    assert_eq!(trusted.status.code(), Some(0), "{trusted:?}");
    let untrusted = tokio::task::block_in_place(|| run(false));
    assert_ne!(untrusted.status.code(), Some(0), "{untrusted:?}");
}

/// `xmllint --schema` on `file`: the report must be one the CI tools read
/// (xmllint is Debian's libxml2-utils, which `.ci/run` installs).
fn valid_junit(file: &Path) -> String {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/junit/junit.xsd");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(file)
        .output()
        .expect("xmllint runs (apt-get install libxml2-utils)");
    assert!(
        out.status.success(),
        "{} does not validate: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(file).expect("report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junit_reports_validate_and_name_what_failed() {
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let server = ScriptedServer::ok(None).await;
    let url = format!("{}/ok", server.url(false));
    let g = guest();
    let file = |name: &str| dir.path().join(name).display().to_string();

    let pass = file("pass.xml");
    let out = waymark(
        cache.path(),
        &[
            "run",
            &g,
            "--var",
            "mode=fetch",
            "--var",
            &format!("url={url}"),
            "--allow-host",
            &server.authority(),
            "--junit",
            &pass,
            "--name",
            "probe",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let xml = valid_junit(Path::new(&pass));
    assert!(xml.contains(r#"failures="0" errors="0""#), "{xml}");
    assert!(xml.contains(r#"name="status is 2xx""#), "{xml}");

    // A failed check is a failure in its step's suite, with the others passed.
    let fail = file("fail.xml");
    let out = waymark(
        cache.path(),
        &["run", &g, "--var", "mode=fail", "--junit", &fail],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let xml = valid_junit(Path::new(&fail));
    assert!(xml.contains("› checks"), "{xml}");
    assert!(
        xml.contains(
            r#"<testcase classname="guest_hostile.checks" name="this passes" time="0.000"/>"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"name="this fails""#)
            && xml.contains("<failure message=\"check &apos;this fails&apos; failed\""),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testsuites name="waymark run" tests="3" failures="2" errors="0""#),
        "{xml}"
    );

    // A journey that stopped is an error, its message the record's.
    let panic = file("panic.xml");
    let out = waymark(
        cache.path(),
        &[
            "run",
            &g,
            "--var",
            "mode=panic",
            "--var",
            "why=the <login> page & co",
            "--junit",
            &panic,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let xml = valid_junit(Path::new(&panic));
    assert!(xml.contains("<error message=\"trap:"), "{xml}");
    assert!(xml.contains("the &lt;login&gt; page &amp; co"), "{xml}");

    // The audit: one case per gate, a gate not met is a failure naming the figure.
    let load = file("load.xml");
    let out = waymark(
        cache.path(),
        &[
            "load",
            &g,
            "--var",
            "mode=noop",
            "--concurrency",
            "1",
            "--step-duration",
            "1s",
            "--warmup",
            "0s",
            "--iterations",
            "200",
            "--quiet",
            "--slo",
            "errors<1%",
            "--slo",
            "throughput>=900000/s",
            "--junit",
            &load,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let xml = valid_junit(Path::new(&load));
    assert!(
        xml.contains(
            r#"<testcase classname="guest_hostile.load" name="errors&lt;1%" time="0.000"/>"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"throughput&gt;=900000/s: measured "),
        "{xml}"
    );
    assert!(
        xml.contains(r#"tests="2" failures="1" errors="0""#),
        "{xml}"
    );
}

#[test]
fn gates_relative_to_a_baseline_round() {
    let cache = tempfile::tempdir().expect("dir");
    let dir = tempfile::tempdir().expect("dir");
    let g = guest();
    let base = dir.path().join("round1.json").display().to_string();
    let junit = dir.path().join("round2.xml").display().to_string();
    let round = |extra: &[&str]| {
        let mut args = vec![
            "load",
            &g,
            "--var",
            "mode=noop",
            "--concurrency",
            "1",
            "--step-duration",
            "1s",
            "--warmup",
            "0s",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        waymark(cache.path(), &args)
    };
    let out = round(&["--json", &base]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = round(&[
        "--baseline",
        &base,
        "--slo",
        "throughput>=0.01*baseline",
        "--slo",
        "throughput>=100*baseline",
        "--slo",
        "errors<=baseline+1%",
        "--junit",
        &junit,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |gate: &str| {
        text.lines()
            .find(|l| l.contains(gate))
            .unwrap_or_else(|| panic!("no line for {gate}: {text}"))
            .to_string()
    };
    // Measured, baseline and limit, each in the metric's unit.
    let low = line("throughput>=0.01*baseline");
    assert!(
        low.contains("PASS") && low.contains("/s, baseline ") && low.contains("/s, limit "),
        "{low}"
    );
    let high = line("throughput>=100*baseline");
    assert!(high.starts_with("  FAIL"), "{high}");
    // 100 × the baseline's figure, as printed.
    let figure = |after: &str| -> f64 {
        let rest = &high[high.find(after).expect(after) + after.len()..];
        rest.split("/s")
            .next()
            .and_then(|v| v.trim().parse().ok())
            .expect("a rate")
    };
    let (b, l) = (figure(", baseline "), figure(", limit "));
    assert!((l - 100.0 * b).abs() <= 0.05 * l, "{high}");
    let errors = line("errors<=baseline+1%");
    assert!(
        errors.contains("PASS")
            && errors.contains("baseline 0.00 %")
            && errors.contains("limit 1.00 %"),
        "{errors}"
    );
    let xml = valid_junit(Path::new(&junit));
    assert!(xml.contains("tests=\"3\" failures=\"1\""), "{xml}");

    // A relative gate without a baseline is refused before anything runs.
    let out = round(&["--slo", "p95<=1.1*baseline"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --baseline FILE"), "{err}");
}
