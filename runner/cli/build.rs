//! Builds the example journeys (`journeys/`) to Wasm components so that
//! `waymark demo` carries them inside the binary.

use std::path::PathBuf;
use std::process::Command;

const JOURNEYS: [(&str, &str); 3] = [
    ("journey-health", "HEALTH"),
    ("journey-api", "API"),
    ("journey-market", "MARKET"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .ancestors()
        .nth(2)
        .expect("runner/cli sits two levels into the workspace")
        .to_path_buf();
    for dir in ["journeys", "sdk/src", "sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // A target directory of its own: the outer build holds the lock on ours.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags and wrappers meant for the host build (clippy, coverage)
        // must not leak into the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET");
    for (package, _) in JOURNEYS {
        cmd.args(["-p", package]);
    }
    let status = cmd
        .status()
        .expect("cannot start cargo to build the example journeys");
    if !status.success() {
        panic!(
            "building the example journeys for wasm32-wasip2 failed; \
             is the target installed? (rustup target add wasm32-wasip2)"
        );
    }
    for (package, key) in JOURNEYS {
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        println!("cargo:rustc-env=WAYMARK_JOURNEY_{key}={}", file.display());
    }
}
