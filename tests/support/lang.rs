//! The JavaScript and Python journeys of the repository, built to
//! components with the tool chains `.ci/run` installs (componentize-js in
//! sdk/js/node_modules, componentize-py from PyPI). Built once per test
//! process into target/lang-journeys/, and again only when a source changed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn mtime(p: &Path) -> SystemTime {
    p.metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Build `src` (a .js or .py journey, relative to the workspace root) and
/// return its component.
pub fn build(src: &str) -> PathBuf {
    let root = crate::support::root();
    let src_path = root.join(src);
    let stem = src_path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("journey file name");
    let out_dir = root.join("target/lang-journeys");
    std::fs::create_dir_all(&out_dir).expect("target/lang-journeys");
    let kind = src_path
        .extension()
        .and_then(|e| e.to_str())
        .expect("extension");
    let out = out_dir.join(format!("{}.wasm", src.replace('/', "_")));
    let helper = match kind {
        "js" => root.join("sdk/js/waymark.js"),
        _ => root.join("sdk/python/waymark.py"),
    };
    let newest = [&src_path, &helper, &root.join("wit/journey.wit")]
        .into_iter()
        .map(|p| mtime(p))
        .max()
        .expect("sources");
    if out.is_file() && mtime(&out) >= newest {
        return out;
    }
    let status = match kind {
        "js" => {
            assert!(
                root.join("sdk/js/node_modules/@bytecodealliance/componentize-js")
                    .is_dir(),
                "componentize-js is not installed: run `npm ci --prefix sdk/js` (as .ci/run does)"
            );
            Command::new("node")
                .arg(root.join("sdk/js/build.mjs"))
                .arg(&src_path)
                .arg("-o")
                .arg(&out)
                .status()
                .expect("node runs (install Node.js)")
        }
        "py" => {
            let mut cmd = waymark::project::componentize_py(None);
            cmd.current_dir(&root)
                .args(["-d", "wit", "-w", "journey", "componentize", stem, "-p"])
                .arg(src_path.parent().expect("dir"))
                .arg("-p")
                .arg(root.join("sdk/python"))
                .arg("-o")
                .arg(&out)
                // The source tree stays free of __pycache__.
                .env("PYTHONDONTWRITEBYTECODE", "1");
            cmd.status().expect(
                "componentize-py runs (install it: `pip install ./sdk/python`, as .ci/run does)",
            )
        }
        other => panic!("no builder for .{other}"),
    };
    assert!(status.success(), "building {src} failed");
    out
}

/// Build several journeys at once (the builds are mostly single-threaded).
pub fn build_all(srcs: &[&str]) -> Vec<PathBuf> {
    std::thread::scope(|s| {
        let handles: Vec<_> = srcs.iter().map(|src| s.spawn(move || build(src))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("build thread"))
            .collect()
    })
}
