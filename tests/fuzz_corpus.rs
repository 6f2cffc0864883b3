//! Replays the kept fuzzing corpus (`tests/fuzz/corpus/<target>/*`, seeds
//! and whatever `tests/fuzz/run.sh` found worth keeping) through the same
//! code the fuzz targets run, as an ordinary test: every input must come
//! back without a panic, and quickly.

#[path = "fuzz/targets.rs"]
mod targets;

use std::path::Path;
use std::time::{Duration, Instant};

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{target}: {} took {:?}",
            path.display(),
            t.elapsed()
        );
        n += 1;
    }
    assert!(n > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn config_corpus() {
    replay("config", targets::config);
}

#[test]
fn units_corpus() {
    replay("units", targets::units);
}

#[test]
fn allow_corpus() {
    replay("allow", targets::allow);
}

#[test]
fn exchange_corpus() {
    replay("exchange", targets::exchange);
}

#[test]
fn tape_corpus() {
    replay("tape", targets::tape);
}
