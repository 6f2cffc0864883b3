//! `deploy/`: the Kubernetes manifests and the container image definition.
//! No cluster or container engine runs here, so the manifests are checked as
//! far as this machine allows: every YAML document parses, the pieces that
//! must agree do (replicas and the shard count, ports and probes, selectors,
//! the Job's completions and the parts the merge reads), and every `waymark`
//! command line in them is run for real — with the pod's volumes laid out in a
//! temporary directory and its environment as Kubernetes would give it.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// One YAML document of `deploy/kubernetes/`.
struct Doc {
    file: String,
    v: Value,
}

fn deploy() -> PathBuf {
    support::root().join("deploy")
}

fn manifests() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let file = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for d in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}"));
            docs.push(Doc {
                file: file.clone(),
                v,
            });
        }
    }
    docs
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|d| text(&d.v["kind"]) == kind && text(&d.v["metadata"]["name"]) == name)
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
        .v
}

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| text(&d.v["kind"]) == kind)
        .map(|d| &d.v)
        .collect()
}

/// The one container of a workload's pod, which runs waymark.
fn container(workload: &Value) -> &Value {
    let cs = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(cs.len(), 1);
    &cs[0]
}

/// The container's environment as Kubernetes gives it to pod `index`: plain
/// values, the pod index label, secrets from the manifests' Secrets, and
/// an Indexed Job's completion index.
fn environment(docs: &[Doc], c: &Value, index: u32) -> Vec<(String, String)> {
    let mut env = vec![("JOB_COMPLETION_INDEX".to_string(), index.to_string())];
    for e in c["env"].as_sequence().into_iter().flatten() {
        let name = text(&e["name"]).to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            assert_eq!(
                path, "metadata.labels['apps.kubernetes.io/pod-index']",
                "{name}: the one field the pods read is their index"
            );
            index.to_string()
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping() {
            let secret = find(docs, "Secret", text(&r[&Value::from("name")]));
            let key = text(&r[&Value::from("key")]);
            text(&secret["stringData"][key]).to_string()
        } else {
            panic!("{name}: an env entry this test does not know");
        };
        env.push((name, value));
    }
    env
}

/// `$(NAME)` replaced from `env`, as the kubelet does in command and args.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(
        !out.contains("$("),
        "{arg}: a variable the pod does not have"
    );
    out
}

/// The pod's volumes laid out under `root`: each ConfigMap's keys as files,
/// the journeys' ConfigMap (made with `kubectl create configmap`, so not in
/// the manifests) with the example components, everything else empty.
/// Returns each mount path and where it is here.
fn lay_out(docs: &[Doc], workload: &Value, root: &Path) -> Vec<(String, PathBuf)> {
    let pod = &workload["spec"]["template"]["spec"];
    let mut mounts = Vec::new();
    for m in container(workload)["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
    {
        let name = text(&m["name"]);
        let path = text(&m["mountPath"]).to_string();
        let here = root.join(name);
        std::fs::create_dir_all(&here).expect("mkdir");
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| text(&v["name"]) == name);
        // Not among the pod's volumes: a volumeClaimTemplate's claim.
        if let Some(cm) = volume.and_then(|v| v["configMap"]["name"].as_str()) {
            if cm == "waymark-journeys" {
                for j in ["health", "api"] {
                    let wasm = support::build_guest(&format!("journey-{j}"), &[]);
                    std::fs::copy(wasm, here.join(format!("{j}.wasm"))).expect("copy");
                }
            } else {
                let map = find(docs, "ConfigMap", cm);
                for (k, v) in map["data"].as_mapping().expect("data") {
                    std::fs::write(here.join(text(k)), text(v)).expect("write");
                }
            }
        }
        mounts.push((path, here));
    }
    mounts
}

/// `arg` with a mount path in it pointing at where that volume is here.
fn local(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = arg.to_string();
    for (path, here) in mounts {
        out = out.replace(path.as_str(), &here.display().to_string());
    }
    out
}

/// The container's command line for pod `index`, as run here.
fn command_line(
    docs: &[Doc],
    workload: &Value,
    index: u32,
    mounts: &[(String, PathBuf)],
) -> (Vec<String>, Vec<(String, String)>) {
    let c = container(workload);
    let env = environment(docs, c, index);
    let mut argv: Vec<String> = c["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .chain(c["args"].as_sequence().expect("args"))
        .map(|a| expand(text(a), &env))
        .collect();
    assert_eq!(argv[0], "/usr/local/bin/waymark", "the image's binary");
    waymark::cli::parse_args(&argv).unwrap_or_else(|e| panic!("{argv:?} is refused:\n{e}"));
    argv.remove(0);
    (argv.iter().map(|a| local(a, mounts)).collect(), env)
}

fn waymark(args: &[String], env: &[(String, String)], cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WAYMARK_CACHE_DIR", cache);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("waymark runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The config file a command line names (`-c FILE`).
fn config_arg(argv: &[String]) -> String {
    argv.iter()
        .position(|a| a == "-c")
        .and_then(|i| argv.get(i + 1))
        .expect("a -c config")
        .clone()
}

/// In `file`, `from` (which must be there) replaced by `to`.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read");
    assert!(text.contains(from), "{}: no {from:?}", file.display());
    std::fs::write(file, text.replace(from, to)).expect("write");
}

#[test]
fn the_manifests_parse_and_their_parts_agree() {
    let docs = manifests();
    for d in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(d.v[key].is_string(), "{}: no {key}", d.file);
        }
        if text(&d.v["kind"]) != "Kustomization" {
            assert!(d.v["metadata"]["name"].is_string(), "{}: no name", d.file);
        }
    }
    let kustomization = find_kustomization(&docs);
    for r in kustomization["resources"].as_sequence().expect("resources") {
        assert!(
            deploy().join("kubernetes").join(text(r)).is_file(),
            "kustomization lists {r:?}"
        );
    }

    let sts = of_kind(&docs, "StatefulSet");
    assert!(!sts.is_empty());
    for s in sts {
        let c = container(s);
        let env = environment(&docs, c, 0);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let replicas = s["spec"]["replicas"].as_u64().expect("replicas");
        assert_eq!(
            get("WAYMARK_REPLICAS"),
            Some(replicas.to_string().as_str()),
            "the shard count is the replica count"
        );
        // The Service that governs it selects its pods and scrapes their port.
        let service = find(&docs, "Service", text(&s["spec"]["serviceName"]));
        let labels = s["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .expect("labels");
        for (k, v) in service["spec"]["selector"].as_mapping().expect("selector") {
            assert_eq!(labels.get(k), Some(v), "the Service selects the pods");
        }
        let port = c["ports"][0]["containerPort"].as_u64().expect("port");
        assert_eq!(c["ports"][0]["name"], "metrics");
        assert_eq!(
            text(&service["metadata"]["annotations"]["prometheus.io/port"]),
            port.to_string()
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(c[probe]["httpGet"]["path"], "/healthz");
            assert_eq!(c[probe]["httpGet"]["port"], "metrics");
        }
        let config = find(&docs, "ConfigMap", "waymark-config");
        assert!(
            text(&config["data"]["waymark.toml"]).contains(&format!("listen = \":{port}\"")),
            "the runner listens on the container's port"
        );
        assert_eq!(
            s["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }

    // The audit: N shards, and the merge reads the N parts they write.
    let audit = find(&docs, "Job", "waymark-audit");
    assert_eq!(audit["spec"]["completionMode"], "Indexed");
    let n = audit["spec"]["completions"].as_u64().expect("completions");
    let args: Vec<&str> = container(audit)["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(text)
        .collect();
    assert!(args.contains(&format!("$(JOB_COMPLETION_INDEX)/{n}").as_str()));
    let part = args
        .iter()
        .position(|a| *a == "--json")
        .map(|i| args[i + 1])
        .expect("--json");
    let merge = find(&docs, "Job", "waymark-audit-merge");
    let merged: Vec<&str> = container(merge)["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(text)
        .filter(|a| a.starts_with("/results/part-"))
        .collect();
    let written: Vec<String> = (0..n)
        .map(|i| part.replace("$(JOB_COMPLETION_INDEX)", &i.to_string()))
        .collect();
    assert_eq!(merged, written, "the merge reads every part, once");

    // The image: the binary the manifests run, as the user they run as.
    let containerfile = std::fs::read_to_string(deploy().join("Containerfile")).expect("read");
    assert!(containerfile.contains("ENTRYPOINT [\"/usr/local/bin/waymark\"]"));
    assert!(containerfile.contains("USER 65532:65532"));
    let cmd = containerfile
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("CMD");
    for workload in of_kind(&docs, "StatefulSet") {
        let args = serde_json::to_string(&container(workload)["args"]).expect("json");
        assert_eq!(
            cmd.trim_start_matches("CMD ").replace(", ", ","),
            args,
            "the image's default command is the StatefulSet's"
        );
    }
}

fn find_kustomization(docs: &[Doc]) -> &Value {
    &docs
        .iter()
        .find(|d| text(&d.v["kind"]) == "Kustomization")
        .expect("a kustomization.yaml")
        .v
}

fn text_json(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn every_statefulset_pod_checks_and_serves_its_share() {
    let docs = manifests();
    let cache = tempfile::tempdir().expect("cache");
    for sts in of_kind(&docs, "StatefulSet") {
        let replicas =
            u32::try_from(sts["spec"]["replicas"].as_u64().expect("replicas")).expect("replicas");
        let config = find(&docs, "ConfigMap", "waymark-config");
        let journeys: BTreeSet<String> = text(&config["data"]["waymark.toml"])
            .lines()
            .filter_map(|l| l.trim().strip_prefix("name = \""))
            .map(|n| n.trim_end_matches('"').to_string())
            .collect();
        let mut pods = Vec::new();
        // Each pod has its own volumes (its own claim from the template).
        let dirs: Vec<tempfile::TempDir> = (0..replicas)
            .map(|_| tempfile::tempdir().expect("pod dir"))
            .collect();
        for (i, dir) in (0..replicas).zip(&dirs) {
            let mounts = lay_out(&docs, sts, dir.path());
            let (argv, env) = command_line(&docs, sts, i, &mounts);
            let file = config_arg(&argv);
            // The config as the pod reads it, journeys compiled and
            // instantiated: `waymark check`.
            run(waymark(
                &["check".into(), "-c".into(), file.clone()],
                &env,
                cache.path(),
            )
            .stdout(Stdio::null()));
            // Then the pod's own command, listening on loopback only here.
            edit(
                Path::new(&file),
                "listen = \":9464\"",
                "listen = \"127.0.0.1:0\"",
            );
            pods.push(support::ServeProcess::start(waymark(
                &argv,
                &env,
                cache.path(),
            )));
        }
        let mut ran: Vec<String> = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            assert_eq!(pod.get("/healthz").0, 200);
            let (code, body) = pod.get("/status");
            assert_eq!(code, 200);
            let s: serde_json::Value = serde_json::from_str(&body).expect("json");
            assert_eq!(s["location"], "eu-west");
            assert_eq!(s["shard"]["shard"], format!("{i}/{replicas}"), "{s}");
            ran.extend(
                s["journeys"]
                    .as_array()
                    .expect("journeys")
                    .iter()
                    .map(|j| text_json(&j["name"]).to_string()),
            );
        }
        let n = ran.len();
        let ran: BTreeSet<String> = ran.into_iter().collect();
        assert_eq!(n, ran.len(), "a journey scheduled by two pods");
        assert_eq!(ran, journeys, "every journey scheduled by one pod");
    }
}

#[test]
fn the_audit_job_runs_sharded_and_its_merge_gates() {
    let docs = manifests();
    let cache = tempfile::tempdir().expect("cache");
    // The staging API the audit names, here a loopback server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    support::answer_each_request(listener, |_| {
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())
    });
    let audit = find(&docs, "Job", "waymark-audit");
    let n = u32::try_from(audit["spec"]["completions"].as_u64().expect("completions"))
        .expect("completions");
    let dir = tempfile::tempdir().expect("dir");
    let mounts = lay_out(&docs, audit, dir.path());
    // The shards run at once (parallelism = completions), each with the
    // config as mounted; `check` first, on the file as written.
    let mut shards = Vec::new();
    for i in 0..n {
        let (argv, env) = command_line(&docs, audit, i, &mounts);
        let file = config_arg(&argv);
        if i == 0 {
            run(waymark(
                &["check".into(), "-c".into(), file.clone()],
                &env,
                cache.path(),
            )
            .stdout(Stdio::null()));
            // Test-sized: the loopback server instead of staging, and a
            // short ramp (the real one is minutes long).
            let f = Path::new(&file);
            let target = format!("127.0.0.1:{port}");
            edit(
                f,
                "https://api.staging.example.com",
                &format!("http://{target}"),
            );
            edit(
                f,
                "allow_hosts = [\"api.staging.example.com\"]",
                &format!("allow_hosts = [\"{target}\"]"),
            );
            edit(f, "step_duration = \"60s\"", "step_duration = \"400ms\"");
            edit(
                f,
                "concurrency = [4, 16, 32, 64, 128]",
                "concurrency = [4, 8]",
            );
        }
        shards.push(
            waymark(&argv, &env, cache.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn"),
        );
    }
    for s in shards {
        let out = s.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let merge = find(&docs, "Job", "waymark-audit-merge");
    let mounts: Vec<(String, PathBuf)> = mounts
        .into_iter()
        .filter(|(p, _)| p == "/results")
        .collect();
    let (argv, env) = command_line(&docs, merge, 0, &mounts);
    run(waymark(&argv, &env, cache.path()).stdout(Stdio::null()));
    let results = &mounts[0].1;
    let merged: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("audit.json")).expect("audit.json"),
    )
    .expect("json");
    assert_eq!(merged["shards_merged"], n);
    assert!(results.join("audit.html").is_file());
}
