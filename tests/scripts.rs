//! Journeys run from their JavaScript, TypeScript or Python source, with no
//! build step: the runtimes the binary carries evaluate them. They record what the
//! built components record, errors point into the source (file, line,
//! column), imports stay inside the journey's directory, and the sandbox is
//! the compiled journeys' one.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use support::{opts, root, runtime, shape};
use waymark::demo::{DemoApi, JOURNEYS, PASSWORD};
use waymark_engine::LoadedJourney;
use waymark_record::{ErrorKind, HttpErrorKind, RunRecord, Status};

async fn run_demo(j: &LoadedJourney) -> RunRecord {
    let api = DemoApi::start().await.expect("demo api");
    let mut o = opts(&[api.authority()], None, &[]);
    (o.vars, o.secrets) = api.vars();
    runtime().run(j, &o).await
}

/// A journey directory of its own with `files` (path, text) in it.
fn journey_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

fn load(path: &Path) -> LoadedJourney {
    runtime()
        .load_file(path)
        .unwrap_or_else(|e| panic!("{} loads: {e}", path.display()))
}

fn load_error(path: &Path) -> String {
    match runtime().load_file(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// The api journey in TypeScript, its log-in in a helper module.
const API_TS: &str = r#"import { step, check, checkEq, http, vars } from 'waymark';
import { logIn } from './lib/auth';

interface Me {
  user: string;
  plan?: string;
}

export default function run(): void {
  const base: string = vars.require('base_url');
  const token = logIn(base, vars.getOr('user', 'qa'));
  step('profile', () => {
    const resp = http.get(`${base}/me`, { bearer: token });
    checkEq('status is 200', resp.status, 200);
    const me = resp.json() as Me;
    checkEq('user matches', me.user, vars.getOr('user', 'qa'));
    check('plan is set', Boolean(me.plan));
  });
  step('rejects a bad token', () => {
    checkEq('status is 401', http.get(`${base}/me`, { bearer: 'not-a-token' }).status, 401);
  });
}
"#;

const AUTH_TS: &str = r#"import { step, check, checkEq, http, vars } from 'waymark';

type Token = string;

export function logIn(base: string, user: string): Token {
  return step('log in', (): Token => {
    const password = vars.require('password');
    const resp = http.post(`${base}/login`, { json: { user, password } });
    checkEq('status is 200', resp.status, 200);
    const { token } = resp.json() as { token: Token };
    check('token is not empty', typeof token === 'string' && token.length > 0);
    return token;
  });
}
"#;

/// The api journey in Python, its log-in in a package without __init__.py.
const API_PY: &str = r#"import json

from waymark import check, check_eq, http, journey, step, variables
from lib.auth import log_in


@journey
def run():
    base = variables.require("base_url")
    token = log_in(base, variables.get("user", "qa"))
    with step("profile"):
        resp = http.get(f"{base}/me", bearer=token)
        check_eq("status is 200", resp.status, 200)
        me = json.loads(resp.text())
        check_eq("user matches", me["user"], variables.get("user", "qa"))
        check("plan is set", bool(me.get("plan")))
    with step("rejects a bad token"):
        check_eq("status is 401", http.get(f"{base}/me", bearer="not-a-token").status, 401)
"#;

const AUTH_PY: &str = r#"from waymark import check, check_eq, http, step, variables


def log_in(base, user):
    with step("log in"):
        password = variables.require("password")
        resp = http.post(f"{base}/login", json={"user": user, "password": password})
        check_eq("status is 200", resp.status, 200)
        token = resp.json().get("token")
        check("token is not empty", isinstance(token, str) and len(token) > 0)
        return token
"#;

#[tokio::test(flavor = "multi_thread")]
async fn sources_record_what_the_built_journeys_record() {
    let rust = JOURNEYS
        .iter()
        .find(|(n, _)| *n == "api")
        .map(|(_, w)| runtime().load("api", w).expect("loads"))
        .expect("api journey");
    let expected = run_demo(&rust).await;
    assert_eq!(expected.status, Status::Pass);

    let ts = journey_dir(&[("api.ts", API_TS), ("lib/auth.ts", AUTH_TS)]);
    let py = journey_dir(&[("api.py", API_PY), ("lib/auth.py", AUTH_PY)]);
    let sources = [
        root().join("journeys/js/api.js"),
        ts.path().join("api.ts"),
        root().join("journeys/python/api.py"),
        py.path().join("api.py"),
    ];
    for path in &sources {
        let j = load(path);
        assert_eq!(j.name, "api");
        let rec = run_demo(&j).await;
        assert_eq!(rec.status, Status::Pass, "{}: {rec:#?}", path.display());
        assert_eq!(shape(&rec), shape(&expected), "{}", path.display());
        let reused: Vec<bool> = rec.requests().map(|r| r.reused_connection).collect();
        assert_eq!(reused, vec![false, true, true], "{}", path.display());
        let json = serde_json::to_string(&rec).expect("json");
        assert!(
            !json.contains(PASSWORD),
            "{}: the secret leaked",
            path.display()
        );
    }

    // A changed helper is a changed journey.
    for (entry, helper, text) in [
        (&sources[1], ts.path().join("lib/auth.ts"), AUTH_TS),
        (&sources[3], py.path().join("lib/auth.py"), AUTH_PY),
    ] {
        let before = load(entry).sha256;
        std::fs::write(helper, text.replace("log in", "sign in")).expect("write");
        let after = load(entry);
        assert_ne!(before, after.sha256);
        let rec = run_demo(&after).await;
        assert_eq!(rec.steps[0].name, "sign in", "{}", entry.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_file_line_and_column_of_the_source() {
    let dir = journey_dir(&[
        ("bad.ts", "const a: number = 1;\nconst b = (;\n"),
        ("bad.js", "export const run = () => {};\nlet x = ;\n"),
        (
            "boom.ts",
            "import { step } from 'waymark';\n\ntype N = number;\nexport default function run(): void {\n  step('first', () => {\n    const x: N = 1;\n    throw new Error(`boom ${x}`);\n  });\n}\n",
        ),
        (
            "deep.ts",
            "import { fail } from './lib/fail';\nexport const run = () => fail(null);\n",
        ),
        (
            "lib/fail.ts",
            "export function fail(o: { x: number } | null): number {\n  return o!.x;\n}\n",
        ),
        ("noexport.js", "const run = () => {};\n"),
        ("bad.py", "def run(:\n    pass\n"),
        // Parsed well; only the compiler refuses it.
        ("misplaced.py", "def run():\n    pass\n\n\nreturn 1\n"),
        (
            "boom.py",
            "from waymark import step\n\n\ndef run():\n    with step(\"first\"):\n        x = {}\n        return x[\"missing\"]\n",
        ),
        (
            "deep.py",
            "from helpers.fail import fail\n\n\ndef run():\n    fail(None)\n",
        ),
        ("helpers/fail.py", "def fail(o):\n    return o.x\n"),
        ("norun.py", "x = 1\n"),
    ]);
    let p = |f: &str| dir.path().join(f);

    let e = load_error(&p("bad.ts"));
    assert!(e.contains("bad.ts:2:12: Unexpected token"), "{e}");
    let e = load_error(&p("bad.js"));
    assert!(e.contains("bad.js:2:9: Unexpected token"), "{e}");
    let e = load_error(&p("bad.py"));
    assert!(e.contains("bad.py:1:9: invalid syntax"), "{e}");
    let e = load_error(&p("misplaced.py"));
    assert!(
        e.contains("misplaced.py:5:1: 'return' outside function"),
        "{e}"
    );

    for (file, at) in [
        ("boom.ts", "boom.ts:7:11: boom 1"),
        ("deep.ts", "lib/fail.ts:2:3: TypeError"),
        ("noexport.js", "noexport.js exports no journey"),
        ("boom.py", "boom.py:7:16: KeyError: 'missing'"),
        ("deep.py", "helpers/fail.py:2:12: AttributeError"),
        ("norun.py", "norun.py defines no journey"),
    ] {
        let rec = runtime().run(&load(&p(file)), &opts(&[], None, &[])).await;
        assert_eq!(rec.status, Status::Fail, "{file}: {rec:#?}");
        let err = rec.error.as_ref().expect("error");
        assert_eq!(err.kind, ErrorKind::Journey, "{file}: {err:?}");
        assert!(err.message.contains(at), "{file}: {}", err.message);
    }

    // The command line says the same, at load time and at run time.
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("run")
        .arg(p("bad.ts"))
        .output()
        .expect("waymark runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.ts:2:12: Unexpected token"), "{stderr}");
}

/// One instance prepares the files of every journey a process loads (for
/// JavaScript, sucrase is evaluated once): a file that exhausts its memory
/// or its stack fails its own journey, and the next journey's files are
/// prepared as well as in a new instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_file_fails_its_own_journey_and_the_next_is_prepared() {
    let semicolons = ";".repeat((4 << 20) - 64);
    let nested = format!("x = {}{};\n", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let dir = journey_dir(&[
        (
            "ok.ts",
            "const n: number = 1;\nexport const run = (): number => n;\n",
        ),
        ("semicolons.js", &semicolons),
        ("nested.js", &nested),
        ("after.ts", API_TS),
        ("lib/auth.ts", AUTH_TS),
    ]);
    let p = |f: &str| dir.path().join(f);
    let cache = tempfile::tempdir().expect("temp dir");
    let rt = waymark_engine::Runtime::new(Some(cache.path().to_path_buf())).expect("runtime");
    rt.load_file(&p("ok.ts")).expect("ok.ts loads");
    for (file, why) in [
        ("semicolons.js", "semicolons.js: out of memory"),
        ("nested.js", "nested.js: too much recursion"),
    ] {
        match rt.load_file(&p(file)) {
            Ok(_) => panic!("{file} loaded"),
            Err(e) => assert!(e.to_string().contains(why), "{file}: {e}"),
        }
    }
    let after = rt.load_file(&p("after.ts")).expect("after.ts loads");
    let api = DemoApi::start().await.expect("demo api");
    let mut o = opts(&[api.authority()], None, &[]);
    (o.vars, o.secrets) = api.vars();
    let rec = rt.run(&after, &o).await;
    assert_eq!(rec.status, Status::Pass, "{rec:#?}");
    // Released, the next file to prepare starts a new instance.
    rt.release_preparers();
    std::fs::write(p("ok.ts"), "export const run = (): void => {};\n").expect("write");
    rt.load_file(&p("ok.ts")).expect("ok.ts loads again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journey_reads_nothing_outside_its_directory() {
    let outside = journey_dir(&[("secret.js", "export const s = 'outside';\n")]);
    let dir = journey_dir(&[
        (
            "up.js",
            "import { s } from '../secret.js';\nexport const run = () => s;\n",
        ),
        (
            "fs.js",
            "import { readFileSync } from 'fs';\nexport const run = () => readFileSync;\n",
        ),
        (
            "linked.js",
            "import { s } from './link.js';\nexport const run = () => s;\n",
        ),
        (
            "missing.ts",
            "import { h } from './lib/nothing';\nexport const run = () => h;\n",
        ),
        (
            "linked.py",
            "from evil import s\n\n\ndef run():\n    pass\n",
        ),
    ]);
    std::os::unix::fs::symlink(outside.path().join("secret.js"), dir.path().join("link.js"))
        .expect("symlink");
    std::fs::write(outside.path().join("evil.py"), "s = 1\n").expect("write");
    std::os::unix::fs::symlink(outside.path().join("evil.py"), dir.path().join("evil.py"))
        .expect("symlink");
    let p = |f: &str| dir.path().join(f);
    for (file, why) in [
        (
            "up.js",
            "'../secret.js': it is outside the journey's directory",
        ),
        ("fs.js", "'fs': only 'waymark'"),
        (
            "linked.js",
            "'./link.js': it leads outside the journey's directory",
        ),
        ("missing.ts", "'./lib/nothing': no such file"),
        (
            "linked.py",
            "'evil': it leads outside the journey's directory",
        ),
    ] {
        let e = load_error(&p(file));
        assert!(e.contains(why), "{file}: {e}");
        assert!(e.contains(&p(file).display().to_string()), "{file}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_holds_for_journeys_run_from_their_source() {
    let api = DemoApi::start().await.expect("demo api");
    // JavaScript: fetch() and the helper; Python: the helper.
    for (lang, requests) in [("js/policy.js", 2), ("python/policy.py", 1)] {
        let policy = load(&root().join("tests/guests").join(lang));
        let mut o = opts(&["example.com".into()], None, &[]);
        o.vars
            .insert("url".into(), format!("{}/health", api.base_url()));
        let rec = runtime().run(&policy, &o).await;
        assert_eq!(rec.status, Status::Fail, "{lang}: {rec:#?}");
        let reqs: Vec<_> = rec.requests().collect();
        assert_eq!(reqs.len(), requests, "{lang}: {rec:#?}");
        for req in reqs {
            let err = req.error.as_ref().expect("denied");
            assert_eq!(err.kind, HttpErrorKind::Denied, "{lang}: {err:?}");
        }
    }

    for lang in ["js/hostile.js", "python/hostile.py"] {
        let hostile = load(&root().join("tests/guests").join(lang));
        let mut o = opts(&[], None, &[("mode", "spin")]);
        o.timeout = std::time::Duration::from_secs(2);
        let rec = runtime().run(&hostile, &o).await;
        assert_eq!(rec.status, Status::Timeout, "{lang}: {rec:#?}");
        let rec = runtime()
            .run(&hostile, &opts(&[], None, &[("mode", "oom")]))
            .await;
        assert_eq!(rec.status, Status::Error, "{lang}: {rec:#?}");
        let err = rec.error.as_ref().expect("error");
        assert_eq!(err.kind, ErrorKind::Memory, "{lang}: {err:?}");
    }
}

/// `waymark load` of `journey`, one 30 s step without warm-up cut short
/// by `--iterations`, with `args`: what it printed, and its JSON result if
/// it wrote one.
fn load_json(journey: &Path, args: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("load.json");
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("load")
        .arg(journey)
        .args(["--step-duration", "30s", "--warmup", "0s", "--json"])
        .arg(&json)
        .args(args)
        .output()
        .expect("waymark load runs");
    let v = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    (out, v)
}

/// `waymark load` of `journey` (2 users, 40 iterations): passed runs and
/// failed checks.
fn load_counts(journey: &Path, extra: &[&str]) -> (u64, u64) {
    let args: Vec<&str> = ["--concurrency", "2", "--iterations", "40"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let (out, v) = load_json(journey, &args);
    let v = v.unwrap_or_else(|| panic!("no JSON result: {out:?}"));
    let s = &v["steps"][0];
    assert_eq!(s["iterations"].as_u64(), Some(40), "{out:?}");
    (
        s["passed"].as_u64().unwrap_or(0),
        s["errors"]["check"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_fresh_instance_evaluates_the_journey_each_run_and_a_kept_one_once() {
    let dir = journey_dir(&[
        (
            "counter.js",
            "import { check } from 'waymark';\nlet runs = 0;\nexport default function run() {\n  runs += 1;\n  check('first run of this evaluation', runs === 1);\n}\n",
        ),
        (
            "counter.py",
            "from waymark import check\n\nruns = 0\n\n\ndef run():\n    global runs\n    runs += 1\n    check(\"first run of this evaluation\", runs == 1)\n",
        ),
    ]);
    for file in ["counter.js", "counter.py"] {
        let journey = dir.path().join(file);
        assert_eq!(load_counts(&journey, &[]), (40, 0), "{file}: fresh");
        // Kept: each user's first run evaluates the modules; the others
        // call the journey again and see its state (on a busy machine one
        // user may take the whole budget before the other starts).
        let (passed, failed) = load_counts(&journey, &["--reuse-instance"]);
        assert_eq!(passed + failed, 40, "{file}");
        assert!((1..=2).contains(&passed), "{file}: passed {passed}");
    }
}

/// `waymark load` starts every fresh instance of a journey from its source
/// from one snapshot of its evaluated modules; what the snapshot holds must
/// not make every instance alike. Each iteration names its step after a
/// random draw, so the load's step names show whether the draws differ.
#[test]
fn each_fresh_instance_draws_its_own_random_numbers() {
    let dir = journey_dir(&[
        (
            "draw.js",
            "import { step } from 'waymark';\nconst atLoad = Math.random();\nexport default function run() {\n  step('draw ' + Math.floor(Math.random() * 1e9), () => atLoad);\n}\n",
        ),
        (
            "draw.py",
            "import random\n\nfrom waymark import step\n\nAT_LOAD = random.random()\n\n\ndef run():\n    with step(f\"draw {random.randrange(10**9)}\"):\n        pass\n",
        ),
    ]);
    for file in ["draw.js", "draw.py"] {
        let (run, v) = load_json(
            &dir.path().join(file),
            &["--concurrency", "1", "--iterations", "8"],
        );
        let v = v.unwrap_or_else(|| panic!("{file}: no JSON result: {run:?}"));
        let step = &v["steps"][0];
        assert_eq!(step["passed"].as_u64(), Some(8), "{file}: {run:?}");
        let names = step["journey_steps"]
            .as_object()
            .unwrap_or_else(|| panic!("{file}: no step names: {step}"));
        let counted: u64 = names.values().filter_map(|s| s["count"].as_u64()).sum();
        assert_eq!(counted, 8, "{file}: {names:?}");
        // Eight draws from a billion: equal ones mean one state for all.
        assert!(
            names.len() > 1,
            "{file}: every instance drew the same: {names:?}"
        );
    }
}

/// What the snapshot's evaluation raises stops `waymark load` before its
/// first step, placed in the source; a module that never ends is stopped
/// at the run's time limit.
#[test]
fn a_load_stops_on_what_evaluating_the_modules_raises() {
    let dir = journey_dir(&[
        (
            "throws.js",
            "import { step } from 'waymark';\n\nthrow new Error('no config');\nexport default function run() {\n  step('x', () => {});\n}\n",
        ),
        (
            "spins.js",
            "while (true) {}\nexport default function run() {}\n",
        ),
        (
            "raises.py",
            "from waymark import step\n\nraise KeyError(\"config\")\n\n\ndef run():\n    pass\n",
        ),
    ]);
    for (file, said) in [
        ("throws.js", "throws.js:3:7: no config"),
        ("spins.js", "took longer than its time limit (2s)"),
        ("raises.py", "raises.py:3"),
    ] {
        let (run, v) = load_json(
            &dir.path().join(file),
            &["--concurrency", "1", "--iterations", "4", "--timeout", "2s"],
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{file}: {run:?}");
        assert!(stderr.contains(said), "{file}: wanted {said:?} in {stderr}");
        assert!(v.is_none(), "{file}: a step ran");
    }
}
