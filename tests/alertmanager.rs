//! The alertmanager sink against Debian's Alertmanager: a journey that fails
//! for a while raises an alert that Alertmanager's API lists as active, with
//! its labels and annotations, and that is resolved once the journey passes.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Kill, free_port};

/// GET over HTTP/1.0, so the body is not chunked.
fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

fn alerts(am: &str) -> Vec<serde_json::Value> {
    get(am, "/api/v2/alerts")
        .and_then(|b| serde_json::from_str::<Vec<serde_json::Value>>(&b).ok())
        .unwrap_or_default()
}

fn active_for<'a>(list: &'a [serde_json::Value], journey: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|a| {
        a["labels"]["journey"] == journey
            && a["status"]["state"] == "active"
            && a["endsAt"]
                .as_str()
                .and_then(|e| humantime::parse_rfc3339_weak(e).ok())
                .is_some_and(|e| e > std::time::SystemTime::now())
    })
}

#[test]
fn a_failing_journey_fires_in_alertmanager_and_resolves() {
    assert!(
        Command::new("prometheus-alertmanager")
            .arg("--version")
            .output()
            .is_ok(),
        "this test runs Debian's Alertmanager: apt-get install prometheus-alertmanager (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("am.yml"),
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
    )
    .expect("am.yml");
    let am_addr = format!("127.0.0.1:{}", free_port());
    let _am = Kill(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let t = Instant::now();
    while get(&am_addr, "/-/ready").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "alertmanager did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The first 12 requests fail (about 3.6 s of failing runs), then all pass.
    let server = support::CountingServer::start(12, Duration::ZERO);
    let wasm = support::hostile_wasm().display().to_string();
    let config = dir.path().join("waymark.toml");
    std::fs::write(
        &config,
        format!(
            "[runner]\nlocation = \"lab-3\"\nlisten = \"off\"\nwatch = false\n\n\
             [[journey]]\nname = \"flaky\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nallow_hosts = [\"127.0.0.1\"]\n\
             vars = {{ mode = \"fetch\", url = \"{}\" }}\n\n\
             [[journey]]\nname = \"steady\"\nwasm = \"{wasm}\"\nevery = \"300ms\"\nvars = {{ mode = \"noop\" }}\n\n\
             [[sink]]\ntype = \"alertmanager\"\nurl = \"http://{am_addr}\"\nresend_interval = \"1s\"\n\
             labels = {{ team = \"sre\" }}\nlink = \"http://waymark.test/status?journey={{journey}}\"\n",
            server.url()
        ),
    )
    .expect("config");
    let cache = tempfile::tempdir().expect("cache");
    let mut serve = Kill(
        Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["serve", "-c"])
            .arg(&config)
            .env("WAYMARK_CACHE_DIR", cache.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve"),
    );
    let stderr = serve.0.stderr.take().expect("stderr");
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});

    let t = Instant::now();
    let fired = loop {
        let list = alerts(&am_addr);
        if let Some(a) = active_for(&list, "flaky") {
            break a.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no active alert; got {list:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(fired["labels"]["alertname"], "WaymarkJourneyFailing");
    assert_eq!(fired["labels"]["location"], "lab-3");
    assert_eq!(fired["labels"]["team"], "sre");
    assert_eq!(fired["annotations"]["failing_check"], "status is 2xx");
    assert_eq!(
        fired["generatorURL"],
        "http://waymark.test/status?journey=flaky"
    );

    // Later failing runs update what the alert points at, not when it started.
    let first_run = fired["annotations"]["run_id"].clone();
    let t = Instant::now();
    loop {
        let list = alerts(&am_addr);
        if let Some(a) = active_for(&list, "flaky")
            && a["annotations"]["run_id"] != first_run
        {
            assert_eq!(a["startsAt"], fired["startsAt"], "{a}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the alert still names the first failing run: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Once the server answers 200, the journey passes and the alert resolves.
    let t = Instant::now();
    while active_for(&alerts(&am_addr), "flaky").is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the alert never resolved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.count() > 12, "the journey passed again");
    assert!(
        alerts(&am_addr)
            .iter()
            .all(|a| a["labels"]["journey"] != "steady"),
        "a passing journey raises nothing"
    );
}
