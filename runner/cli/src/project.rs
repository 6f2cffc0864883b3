//! Journey projects: `waymark new` writes one (Rust, JavaScript or Python),
//! and `waymark run DIR` builds one to its component before running it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The file a JavaScript or Python project builds to.
pub const OUTPUT: &str = "journey.wasm";

/// componentize-py's entry point, for when its script is not on PATH.
const COMPONENTIZE_PY: &str = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";

/// The languages `waymark new` writes a project for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the Waymark SDK (cargo, wasm32-wasip2).
    Rust,
    /// JavaScript, run from its source (a componentize-js build optional).
    Js,
    /// TypeScript, run from its source.
    Ts,
    /// Python, run from its source (a componentize-py build optional).
    Python,
}

/// Why a project could not be written or built.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The name is not usable as a package name.
    #[error(
        "'{0}' is not a journey name: use letters, digits, '-' and '_', starting with a letter"
    )]
    BadName(String),
    /// `waymark new` never writes over files.
    #[error("{0} already exists and is not empty")]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The directory has nothing Waymark knows how to build.
    #[error(
        "{0} is a directory without journey.ts, journey.js, app.py, Cargo.toml, package.json \
         or pyproject.toml: Waymark does not know how to build it (give the .wasm file or the \
         journey's source file instead)"
    )]
    Unknown(PathBuf),
    /// A file of the project says something unusable.
    #[error("{path}: {problem}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The build tool is not installed.
    #[error("cannot start {tool} to build {dir}: {source} ({hint})")]
    Tool {
        /// The command.
        tool: String,
        /// The project.
        dir: PathBuf,
        /// Why it did not start.
        source: std::io::Error,
        /// How to install it.
        hint: &'static str,
    },
    /// The build ran and failed; its own output said why.
    #[error("building {dir} failed: `{command}` exited with {status} (its output is above)")]
    Failed {
        /// The project.
        dir: PathBuf,
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The build succeeded but left no component where expected.
    #[error("building {dir} made no component: expected {expected}")]
    NoOutput {
        /// The project.
        dir: PathBuf,
        /// Where the component should be.
        expected: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProjectError + '_ {
    move |source| ProjectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const WIT: &str = include_str!("../../../wit/journey.wit");

/// Write a new journey project named `name` in `dir` (which must not exist
/// or be empty); returns the files written.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<Vec<PathBuf>, ProjectError> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ProjectError::BadName(name.to_string()));
    }
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(ProjectError::Exists(dir.to_path_buf()));
        }
    }
    let files: Vec<(&str, &str)> = match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            ("src/lib.rs", include_str!("../templates/rust/lib.rs")),
            ("README.md", include_str!("../templates/rust/README.md")),
            (
                "waymark-sdk/Cargo.toml",
                include_str!("../templates/rust/sdk-Cargo.toml"),
            ),
            (
                "waymark-sdk/src/lib.rs",
                include_str!("../../../sdk/src/lib.rs"),
            ),
            (".gitignore", "target/\n"),
        ],
        Lang::Js => vec![
            ("journey.js", include_str!("../templates/js/journey.js")),
            ("package.json", include_str!("../templates/js/package.json")),
            ("README.md", include_str!("../templates/js/README.md")),
            ("waymark.js", include_str!("../../../sdk/js/waymark.js")),
            ("waymark.d.ts", include_str!("../../../sdk/js/waymark.d.ts")),
            (
                "types/journey.d.ts",
                include_str!("../../../sdk/js/types/journey.d.ts"),
            ),
            (
                "types/interfaces/waymark-journey-http.d.ts",
                include_str!("../../../sdk/js/types/interfaces/waymark-journey-http.d.ts"),
            ),
            (
                "types/interfaces/waymark-journey-report.d.ts",
                include_str!("../../../sdk/js/types/interfaces/waymark-journey-report.d.ts"),
            ),
            (
                "types/interfaces/waymark-journey-vars.d.ts",
                include_str!("../../../sdk/js/types/interfaces/waymark-journey-vars.d.ts"),
            ),
            (".gitignore", "node_modules/\njourney.wasm\n"),
        ],
        Lang::Ts => vec![
            ("journey.ts", include_str!("../templates/ts/journey.ts")),
            ("README.md", include_str!("../templates/ts/README.md")),
        ],
        Lang::Python => vec![
            ("app.py", include_str!("../templates/python/app.py")),
            (
                "pyproject.toml",
                include_str!("../templates/python/pyproject.toml"),
            ),
            ("README.md", include_str!("../templates/python/README.md")),
            ("waymark.py", include_str!("../../../sdk/python/waymark.py")),
            (".gitignore", "__pycache__/\njourney.wasm\n"),
        ],
    };
    // A TypeScript project has no build, so it needs no world either.
    let wit = (lang != Lang::Ts).then_some(("wit/journey.wit", WIT));
    let mut written = Vec::new();
    for (rel, text) in files.into_iter().chain(wit) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text.replace("{{name}}", name)).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The component a journey argument names: a `.wasm` file as it is, or a
/// project directory built first, with the directory's name as the
/// journey's name.
pub fn component(path: &Path) -> Result<(PathBuf, Option<String>), ProjectError> {
    if !path.is_dir() {
        return Ok((path.to_path_buf(), None));
    }
    let wasm = match source_entry(path)? {
        Some(source) => source,
        None => build(path)?,
    };
    let name = std::fs::canonicalize(path)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    Ok((wasm, name))
}

/// The source file a JavaScript, TypeScript or Python project in `dir` runs
/// from (no build): `journey.ts`, `journey.js` or `journey.mjs`, or the
/// Python module of pyproject.toml (`app.py` by default). `None` for a Rust
/// project, which is built.
fn source_entry(dir: &Path) -> Result<Option<PathBuf>, ProjectError> {
    if dir.join("Cargo.toml").is_file() {
        return Ok(None);
    }
    for name in ["journey.ts", "journey.js", "journey.mjs"] {
        if dir.join(name).is_file() {
            return Ok(Some(dir.join(name)));
        }
    }
    if dir.join("pyproject.toml").is_file() || dir.join("app.py").is_file() {
        let module = dir.join(format!("{}.py", python_module(dir)?));
        if module.is_file() {
            return Ok(Some(module));
        }
    }
    Ok(None)
}

/// Build the project in `dir` (when its sources changed) and return its
/// component. The build tools' output goes to stderr, so that `--format
/// json` on stdout stays one record.
pub fn build(dir: &Path) -> Result<PathBuf, ProjectError> {
    if dir.join("Cargo.toml").is_file() {
        build_rust(dir)
    } else if dir.join("package.json").is_file() {
        build_js(dir)
    } else if dir.join("pyproject.toml").is_file() || dir.join("app.py").is_file() {
        build_python(dir)
    } else {
        Err(ProjectError::Unknown(dir.to_path_buf()))
    }
}

/// Run one build command in `dir`. Its stdout goes to our stderr unless
/// `capture` keeps it (cargo's JSON messages), in which case it is returned.
fn run(
    dir: &Path,
    mut cmd: Command,
    shown: &str,
    hint: &'static str,
    capture: bool,
) -> Result<Vec<u8>, ProjectError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    tracing::info!(dir = %dir.display(), command = shown, "building the journey");
    let stdout = if capture {
        Stdio::piped()
    } else {
        std::io::stderr().into()
    };
    let out = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| ProjectError::Tool {
            tool,
            dir: dir.to_path_buf(),
            source,
            hint,
        })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(ProjectError::Failed {
            dir: dir.to_path_buf(),
            command: shown.to_string(),
            status: out.status,
        })
    }
}

fn build_rust(dir: &Path) -> Result<PathBuf, ProjectError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format",
        "json-render-diagnostics",
    ]);
    // The artifacts' paths come from cargo's own messages, wherever its
    // target directory is.
    let stdout = run(
        dir,
        cmd,
        "cargo build --release --target wasm32-wasip2",
        "install Rust with rustup, then `rustup target add wasm32-wasip2`",
        true,
    )?;
    let mut wasm = None;
    for line in stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let Some(files) = msg["filenames"].as_array()
        {
            for f in files.iter().filter_map(|f| f.as_str()) {
                if f.ends_with(".wasm") {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
    }
    wasm.ok_or_else(|| ProjectError::NoOutput {
        dir: dir.to_path_buf(),
        expected: "a cdylib crate (crate-type = [\"cdylib\"]) that builds a .wasm".into(),
    })
}

fn build_js(dir: &Path) -> Result<PathBuf, ProjectError> {
    let out = dir.join(OUTPUT);
    if is_fresh(dir, &out)? {
        return Ok(out);
    }
    let npm_hint = "install Node.js and npm";
    if !dir.join("node_modules").is_dir() {
        let mut install = Command::new("npm");
        install.args(["install", "--no-audit", "--no-fund"]);
        run(dir, install, "npm install", npm_hint, false)?;
    }
    let mut cmd = Command::new("npm");
    cmd.args(["run", "build"]);
    run(dir, cmd, "npm run build", npm_hint, false)?;
    expect_output(dir, &out)
}

fn build_python(dir: &Path) -> Result<PathBuf, ProjectError> {
    let out = dir.join(OUTPUT);
    if is_fresh(dir, &out)? {
        return Ok(out);
    }
    let module = python_module(dir)?;
    let args = [
        "-d",
        "wit",
        "-w",
        "journey",
        "componentize",
        &module,
        "-o",
        OUTPUT,
    ];
    let shown = format!("componentize-py {}", args.join(" "));
    let hint = "install it with `pip install componentize-py==0.25.1`";
    let mut cmd = componentize_py(Some(dir));
    cmd.args(args);
    run(dir, cmd, &shown, hint, false)?;
    expect_output(dir, &out)
}

/// componentize-py: its script on PATH (or in the project's `.venv`), else
/// its module through `python3` (pip puts scripts where PATH may not look).
pub fn componentize_py(project: Option<&Path>) -> Command {
    let local = project
        .map(|d| d.join(".venv/bin/componentize-py"))
        .filter(|p| p.is_file());
    match on_path("componentize-py").or(local) {
        Some(exe) => Command::new(exe),
        None => {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", COMPONENTIZE_PY]);
            cmd
        }
    }
}

/// `[tool.waymark] module` of pyproject.toml, else `app`.
fn python_module(dir: &Path) -> Result<String, ProjectError> {
    let path = dir.join("pyproject.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok("app".into());
    };
    let doc: toml::Table = toml::from_str(&text).map_err(|e| ProjectError::Bad {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    match doc
        .get("tool")
        .and_then(|t| t.get("waymark"))
        .and_then(|w| w.get("module"))
    {
        None => Ok("app".into()),
        Some(toml::Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(_) => Err(ProjectError::Bad {
            path,
            problem: "[tool.waymark] module: expected a module name (a string)".into(),
        }),
    }
}

fn on_path(exe: &str) -> Option<PathBuf> {
    let path: OsString = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

fn expect_output(dir: &Path, out: &Path) -> Result<PathBuf, ProjectError> {
    if out.is_file() {
        Ok(out.to_path_buf())
    } else {
        Err(ProjectError::NoOutput {
            dir: dir.to_path_buf(),
            expected: out.display().to_string(),
        })
    }
}

/// The component exists and no source file is newer: JavaScript and
/// Python builds take seconds, so an unchanged journey is not rebuilt.
fn is_fresh(dir: &Path, out: &Path) -> Result<bool, ProjectError> {
    let Ok(built) = out.metadata().and_then(|m| m.modified()) else {
        return Ok(false);
    };
    Ok(newest_source(dir)? <= built)
}

pub(crate) fn newest_source(dir: &Path) -> Result<SystemTime, ProjectError> {
    // Hidden entries (.git, .venv, editors' files) are not sources.
    const SKIP: [&str; 4] = ["node_modules", "target", "__pycache__", OUTPUT];
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let meta = entry.metadata().map_err(io(&entry.path()))?;
        let t = if meta.is_dir() {
            newest_source(&entry.path())?
        } else {
            meta.modified().map_err(io(&entry.path()))?
        };
        newest = newest.max(t);
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_package_names() {
        let dir = std::env::temp_dir().join("waymark-never-written");
        for bad in ["", "1abc", "a b", "../x", "ü"] {
            assert!(matches!(
                create(&dir, bad, Lang::Js),
                Err(ProjectError::BadName(_))
            ));
        }
        assert!(!dir.exists());
    }

    #[test]
    fn a_directory_it_cannot_build_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = build(dir.path()).expect_err("nothing to build");
        assert!(
            err.to_string().contains("does not know how to build"),
            "{err}"
        );
    }

    #[test]
    fn new_never_writes_over_files_and_python_module_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keep.txt"), "mine").expect("write");
        assert!(matches!(
            create(dir.path(), "j", Lang::Python),
            Err(ProjectError::Exists(_))
        ));
        let fresh = dir.path().join("j");
        let files = create(&fresh, "j", Lang::Python).expect("created");
        assert!(files.iter().any(|f| f.ends_with("wit/journey.wit")));
        assert_eq!(python_module(&fresh).expect("module"), "app");
        std::fs::write(fresh.join("pyproject.toml"), "[tool.waymark]\nmodule = 3\n")
            .expect("write");
        let err = python_module(&fresh).expect_err("bad module");
        assert!(
            err.to_string()
                .contains("pyproject.toml: [tool.waymark] module"),
            "{err}"
        );
    }
}
