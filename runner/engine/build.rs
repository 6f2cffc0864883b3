//! Builds the JavaScript runtime component the engine carries
//! (`sdk/js/runtime`): the binary then runs `.js` and `.ts` journeys with no
//! Node.js where it runs. Building it needs Node.js and `npm ci --prefix
//! sdk/js` (pinned versions); the result is kept in `target/` by the hash of
//! its inputs, so debug, release and clippy builds share one.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    let js = root.join("sdk/js");
    let inputs = [
        js.join("runtime/runtime.js"),
        js.join("runtime/build.mjs"),
        js.join("waymark.js"),
        js.join("package-lock.json"),
        root.join("wit/journey.wit"),
        root.join("wit/script.wit"),
    ];
    let mut h = Sha256::new();
    for p in &inputs {
        println!("cargo:rerun-if-changed={}", p.display());
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        h.update(
            p.strip_prefix(&root)
                .unwrap_or(p)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(bytes);
    }
    let key = hex(&h.finalize()[..12]);

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let out = out_dir.join("js-runtime.wasm");
    // OUT_DIR is target/<profile>/build/<crate>/out: keep the component two
    // levels above the profiles, where every profile finds it.
    let shared = out_dir
        .ancestors()
        .nth(4)
        .filter(|t| t.join("CACHEDIR.TAG").exists())
        .map(|t| t.join("js-runtime"));
    if let Some(dir) = &shared {
        let kept = dir.join(format!("{key}.wasm"));
        if kept.exists() && std::fs::copy(&kept, &out).is_ok() {
            return;
        }
    }
    build(&js, &out);
    if let Some(dir) = shared {
        let _ = std::fs::create_dir_all(&dir);
        let tmp = dir.join(format!("{key}.tmp{}", std::process::id()));
        if std::fs::copy(&out, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(format!("{key}.wasm")));
        }
    }
}

fn build(js: &Path, out: &Path) {
    if !js
        .join("node_modules/@bytecodealliance/componentize-js")
        .exists()
    {
        panic!(
            "the JavaScript runtime is built with Node.js from sdk/js's pinned packages: \
             run `npm ci --prefix sdk/js` first"
        );
    }
    let status = Command::new("node")
        .arg(js.join("runtime/build.mjs"))
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js is needed to build waymark): {e}"));
    assert!(
        status.success(),
        "building the JavaScript runtime failed ({status})"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
