//! Builds the script runtimes the engine carries: JavaScript
//! (`sdk/js/runtime`, with componentize-js, and sucrase beside it) and Python
//! (`sdk/python/runtime`, with componentize-py). The binary then runs `.js`,
//! `.ts` and `.py` journeys with no tool chain where it runs. Building them
//! needs Node.js after `npm ci --prefix sdk/js`, and Python after `pip
//! install ./sdk/python` (pinned versions); each result is kept in
//! `target/` by the hash of its inputs, so debug, release and clippy builds
//! share one.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// componentize-py through its module: pip may put its script off PATH.
const COMPONENTIZE_PY: &str = "import sys; from componentize_py import script; \
                               sys.argv[0] = 'componentize-py'; sys.exit(script())";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let wit = [root.join("wit/journey.wit"), root.join("wit/script.wit")];

    let js = root.join("sdk/js");
    let js_build = js.join("runtime/build.mjs");
    let lock = js.join("package-lock.json");
    let node = |what: &str, out: &Path| {
        if !js
            .join("node_modules/@bytecodealliance/componentize-js")
            .exists()
        {
            panic!(
                "the JavaScript runtime is built with Node.js from sdk/js's pinned packages: \
                 run `npm ci --prefix sdk/js` first"
            );
        }
        let mut cmd = Command::new("node");
        cmd.arg(&js_build).arg(what).arg(out);
        cmd
    };
    carry(
        &root,
        &out_dir,
        "js-runtime.wasm",
        &[
            js.join("runtime/runtime.js"),
            js_build.clone(),
            js.join("waymark.js"),
            lock.clone(),
        ],
        &wit,
        |out| node("runtime", out),
    );
    // sucrase, which the runtime evaluates when it first prepares a file.
    carry(
        &root,
        &out_dir,
        "js-preparer.js",
        &[js_build.clone(), lock.clone()],
        &[],
        |out| node("preparer", out),
    );

    let py = root.join("sdk/python");
    carry(
        &root,
        &out_dir,
        "py-runtime.wasm",
        &[
            py.join("runtime/waymark_runtime.py"),
            py.join("waymark.py"),
            py.join("pyproject.toml"),
        ],
        &wit,
        |out| {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", COMPONENTIZE_PY, "-d"])
                .arg(root.join("wit"))
                .args([
                    "-w",
                    "script-runtime",
                    "componentize",
                    "waymark_runtime",
                    "-p",
                ])
                .arg(py.join("runtime"))
                .arg("-p")
                .arg(&py)
                .arg("-o")
                .arg(out)
                .env("PYTHONDONTWRITEBYTECODE", "1");
            cmd
        },
    );
}

/// Build (or take from `target/`) the file `name` into `OUT_DIR/{name}`,
/// and its SHA-256 in hex into `{name}.sha256`: the engine keys its caches
/// by it, and hashing 12–20 MB at every start would cost about 10 ms each.
fn carry(
    root: &Path,
    out_dir: &Path,
    name: &str,
    inputs: &[PathBuf],
    wit: &[PathBuf],
    command: impl FnOnce(&Path) -> Command,
) {
    let out = out_dir.join(name);
    make(root, &out, name, inputs, wit, command);
    let bytes =
        std::fs::read(&out).unwrap_or_else(|e| panic!("cannot read {}: {e}", out.display()));
    let sha = out_dir.join(format!("{name}.sha256"));
    std::fs::write(&sha, hex(&Sha256::digest(&bytes)))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", sha.display()));
}

/// The file itself, at `out` (in OUT_DIR).
fn make(
    root: &Path,
    out: &Path,
    name: &str,
    inputs: &[PathBuf],
    wit: &[PathBuf],
    command: impl FnOnce(&Path) -> Command,
) {
    let mut h = Sha256::new();
    for p in inputs.iter().chain(wit) {
        println!("cargo:rerun-if-changed={}", p.display());
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        h.update(
            p.strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update(bytes);
    }
    let key = hex(&h.finalize()[..12]);
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "out"));
    let out_dir = out.parent().unwrap_or(out);
    // OUT_DIR is target/<profile>/build/<crate>/out: keep the component
    // beside the profiles, where every profile finds it.
    let shared = out_dir
        .ancestors()
        .nth(4)
        .filter(|t| t.join("CACHEDIR.TAG").exists())
        .map(|t| t.join("script-runtimes"));
    let kept = shared
        .as_ref()
        .map(|d| d.join(format!("{stem}-{key}.{ext}")));
    if let Some(kept) = &kept
        && kept.exists()
        && std::fs::copy(kept, out).is_ok()
    {
        return;
    }
    let mut cmd = command(out);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} to build the {name}: {e}"));
    assert!(
        output.status.success(),
        "building the {name} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if let (Some(dir), Some(kept)) = (shared, kept) {
        let _ = std::fs::create_dir_all(&dir);
        let tmp = dir.join(format!("{stem}-{key}.tmp{}", std::process::id()));
        if std::fs::copy(out, &tmp).is_ok() && std::fs::rename(&tmp, &kept).is_ok() {
            // Older builds are of inputs that are gone: 16–20 MB each.
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let ours = path
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{stem}-")));
                if ours && path != kept {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
