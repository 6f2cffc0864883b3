//! Does `waymark load` know when it measured itself? A generator held to
//! one core (taskset) against a fast loopback server is marked saturated and
//! left out of the fit; the same generator against a slow server is not.
//! A binary of its own, and the two cases one after the other, so that no
//! other test's processes compete for the cores while they measure.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{CountingServer, hostile_wasm};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("json")
}

fn steps(v: &Value) -> &Vec<Value> {
    v["steps"].as_array().expect("steps")
}

#[test]
fn the_audit_tells_a_saturated_generator_from_a_slow_server() {
    a_generator_held_to_one_core_marks_its_steps_and_leaves_them_out_of_the_fit();
    a_slow_server_is_not_mistaken_for_a_busy_generator();
}

/// `waymark load` of the fetch guest against `server` at `users` (3 s
/// steps), pinned to CPU 0 when `pin`: its JSON report and its stdout.
fn audit(server: &CountingServer, pin: bool, users: &str) -> (Value, String) {
    let cache = tempfile::tempdir().expect("temp");
    let json = cache.path().join("out.json");
    let url_var = format!("url={}", server.url());
    let authority = server.addr.to_string();
    let wasm = hostile_wasm().to_str().expect("utf-8 path").to_string();
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", env!("CARGO_BIN_EXE_waymark")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_waymark"))
    };
    let out: Output = cmd
        .args(["load", &wasm, "--name", "fetch", "--var", "mode=fetch"])
        .args(["--var", &url_var, "--allow-host", &authority])
        .args([
            "--concurrency",
            users,
            "--step-duration",
            "3s",
            "--warmup",
            "1s",
        ])
        .arg("--json")
        .arg(&json)
        .env("WAYMARK_CACHE_DIR", cache.path())
        .output()
        .expect("waymark (under taskset) runs; taskset is util-linux's");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    (read_json(&json), stdout)
}

fn a_generator_held_to_one_core_marks_its_steps_and_leaves_them_out_of_the_fit() {
    // No delay: at 16 users and more the server answers far faster than
    // one core can start Wasm instances, so waymark is the bottleneck.
    let server = CountingServer::start(0, Duration::ZERO);
    let (v, stdout) = audit(&server, true, "16,32");
    for s in steps(&v) {
        let g = &s["generator"];
        assert_eq!(g["cores"], 1, "taskset leaves one core: {g}");
        assert!(
            !g["saturated"].as_array().expect("saturated").is_empty(),
            "a step of a generator on one core is not marked: {g}\n{stdout}"
        );
    }
    assert!(
        stdout.contains("waymark itself was saturated") && stdout.contains("--shard"),
        "{stdout}"
    );
    assert!(
        v["usl"].is_null(),
        "a fit through waymark's own limit: {}",
        v["usl"]
    );
    assert!(
        v["usl_refused"]
            .as_str()
            .is_some_and(|w| w.contains("waymark itself was saturated")),
        "{}",
        v["usl_refused"]
    );
}

fn a_slow_server_is_not_mistaken_for_a_busy_generator() {
    let server = CountingServer::start(0, Duration::from_millis(20));
    let (v, stdout) = audit(&server, false, "4,16");
    for s in steps(&v) {
        let g = &s["generator"];
        assert!(
            g["saturated"].as_array().expect("saturated").is_empty(),
            "a generator waiting on a 20 ms server is marked: {g}\n{stdout}"
        );
        assert!(g["cpu"].as_f64().expect("cpu") < 0.85, "{g}");
    }
    assert!(!stdout.contains("waymark itself was saturated"), "{stdout}");
}
