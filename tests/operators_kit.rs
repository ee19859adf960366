//! The operators' kit: the Kubernetes manifests are valid Kubernetes 1.33 (kubernetes-validate
//! --strict), the ServiceMonitor has only fields of its CRD, the manifests agree with the engine's
//! settings, routes, Dockerfile and Kubernetes calls, the alerts pass `promtool check rules` and
//! their unit tests, and every metric the alerts and the dashboard name is one a running engine
//! exports on /metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::python::{kubernetes_validate, python_env};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML documents of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kubernetes_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// Every Kubernetes object file of the kit (not the kustomization, which is kustomize's).
fn object_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

/// The one object of `kind` in the kit.
fn object(kind: &str) -> Value {
    let found: Vec<Value> = object_files().iter().flat_map(|f| documents(f)).filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/kubernetes");
    found.into_iter().next().unwrap()
}

fn as_strs(value: &Value) -> Vec<&str> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

#[test]
fn every_manifest_is_valid_kubernetes_1_33() {
    let (crd, core): (Vec<PathBuf>, Vec<PathBuf>) =
        object_files().into_iter().partition(|f| documents(f).iter().all(|d| d["kind"] == "ServiceMonitor"));
    assert_eq!(crd, [kubernetes_dir().join("servicemonitor.yaml")], "only the ServiceMonitor is a custom resource");
    let objects: usize = core.iter().map(|f| documents(f).len()).sum();
    let kinds: BTreeSet<String> =
        core.iter().flat_map(|f| documents(f)).map(|d| d["kind"].as_str().unwrap().to_string()).collect();
    for kind in [
        "Namespace",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
    ] {
        assert!(kinds.contains(kind), "the kit has a {kind}: {kinds:?}");
    }
    let (ok, stdout, stderr) = kubernetes_validate(&core);
    assert!(ok, "kubernetes-validate failed:\n{stdout}\n{stderr}");
    let valid = stdout.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
    assert_eq!(valid, objects, "every object reported valid:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("WARN") && !stderr.contains("WARN"), "{stdout}\n{stderr}");

    // The check can fail: a field the schema does not know is refused under --strict.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("statefulset.yaml");
    let text = read(&kubernetes_dir().join("statefulset.yaml"));
    std::fs::write(&broken, text.replacen("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", 1)).unwrap();
    let (ok, stdout, stderr) = kubernetes_validate(&[broken]);
    assert!(!ok && stdout.contains("readOnlyRootFileSystem"), "an unknown field must fail:\n{stdout}\n{stderr}");
}

/// Validates `doc` against the JSON schema at `schema` with the tests' Python jsonschema (a
/// dependency of kubernetes-validate): the errors, one a line; empty when valid.
fn schema_errors(schema: &Path, doc: &Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1])); doc = json.load(open(sys.argv[2]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))\n\
        for e in errors: print('/'.join(map(str, e.absolute_path)) + ': ' + e.message)\n\
        sys.exit(1 if errors else 0)\n";
    let out = Command::new(python_env().bin("python")).args(["-c", script]).arg(schema).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.success(), text.trim().is_empty(), "{text}");
    text
}

/// kubernetes-validate has no schema for the Prometheus Operator's CRD: the ServiceMonitor is
/// checked against the CRD's documented fields (tests/fixtures/operators/servicemonitor.schema.json,
/// unknown fields refused) and against the Service it must find.
#[test]
fn the_service_monitor_has_only_its_crds_fields_and_finds_the_engines_service() {
    let schema = repo().join("tests/fixtures/operators/servicemonitor.schema.json");
    let monitor = object("ServiceMonitor");
    let errors = schema_errors(&schema, &monitor);
    assert!(errors.is_empty(), "servicemonitor.yaml:\n{errors}");
    let mut typo = monitor.clone();
    typo["spec"]["endpoints"][0]["scrape_timeout"] = "10s".into();
    assert!(schema_errors(&schema, &typo).contains("scrape_timeout"), "an unknown field must fail");
    let mut bad = monitor.clone();
    bad["spec"]["endpoints"][0]["interval"] = "30 seconds".into();
    assert!(schema_errors(&schema, &bad).contains("interval"), "a bad duration must fail");

    let service = object("Service");
    let labels = &service["metadata"]["labels"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the ServiceMonitor's selector matches the Service's label {key}");
    }
    let ports: Vec<&str> =
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert!(ports.contains(&endpoint["port"].as_str().unwrap()), "endpoint port {} in {ports:?}", endpoint["port"]);
        assert_eq!(endpoint["path"], "/metrics");
    }
    assert!(
        as_strs(&monitor["spec"]["namespaceSelector"]["matchNames"])
            .contains(&service["metadata"]["namespace"].as_str().unwrap())
    );
    // The job label the alerts select on.
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(labels[job_label], "maestro", "the job label is `maestro`, as the alerts expect");
    assert!(read(&repo().join("deploy/prometheus/alerts.yaml")).contains("job=\"maestro\""));
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true, "an engine that is not ready is still scraped");
}

/// The settings the engine reads: its settings' names and the binary's own variables.
fn known_variables() -> BTreeSet<String> {
    let Value::Object(settings) = serde_json::to_value(maestro_engine::config::EngineConfig::default()).unwrap() else {
        panic!("settings are an object")
    };
    let mut known: BTreeSet<String> = settings.keys().map(|k| format!("MAESTRO_{}", k.to_uppercase())).collect();
    known.extend(["MAESTRO_HTTP", "MAESTRO_LOG_FORMAT", "MAESTRO_CONFIG", "MAESTRO_ADMINS"].map(String::from));
    known
}

#[test]
fn the_statefulset_runs_the_engine_as_its_settings_routes_and_image_expect() {
    let set = object("StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).copied().unwrap_or_else(|| panic!("no {name}"));
    let known = known_variables();
    for e in &env {
        let name = e["name"].as_str().unwrap();
        if let Some(setting) = name.strip_prefix("MAESTRO_") {
            let top = setting.split("__").next().unwrap();
            assert!(known.contains(&format!("MAESTRO_{top}")), "{name} names no setting of the engine");
        }
    }
    // The Redis URL comes from the Secret, under the key the example Secret has.
    let secret_ref = &var("MAESTRO_REDIS_URL")["valueFrom"]["secretKeyRef"];
    let secret = object("Secret");
    assert_eq!(secret_ref["name"], secret["metadata"]["name"]);
    assert!(secret["stringData"][secret_ref["key"].as_str().unwrap()].is_string());
    assert!(var("MAESTRO_REDIS_URL").get("value").is_none(), "no URL in the StatefulSet itself");

    // The data dir is on the member's own volume.
    let data_dir = var("MAESTRO_DATA_DIR")["value"].as_str().unwrap();
    let claims = set["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "one volume per member");
    let claim = claims[0]["metadata"]["name"].as_str().unwrap();
    let mount =
        c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == claim).expect("the claim is mounted");
    assert!(Path::new(data_dir).starts_with(mount["mountPath"].as_str().unwrap()), "{data_dir} on the volume");

    // Probes on the engine's routes, on the port it serves.
    let addr: std::net::SocketAddr = var("MAESTRO_HTTP")["value"].as_str().unwrap().parse().unwrap();
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"], addr.port());
    let http = read(&repo().join("engine/src/http.rs"));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], port["name"]);
        assert!(http.contains(&format!(".route(\"{path}\"")), "the engine serves {path}");
    }

    // The binary takes the container's arguments: with a settings file that does not exist
    // added, they parse (a bad argument exits 2) and the start stops at the settings (exit 1).
    let args: Vec<&str> = as_strs(&c["args"]);
    assert_eq!(args.last(), Some(&"run"));
    let parsed = Command::new(env!("CARGO_BIN_EXE_maestro"))
        .args(&args)
        .args(["--config", "/nonexistent/maestro.toml"])
        .env_remove("MAESTRO_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&parsed.stderr);
    assert_eq!(parsed.status.code(), Some(1), "maestro {args:?}: {stderr}");
    assert!(stderr.contains("/nonexistent/maestro.toml does not exist"), "{stderr}");

    // Non-root, read-only root, as the image's user.
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(as_strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(uid > 0);
    assert_eq!(dockerfile_user(), uid, "the pod runs as the image's user");
    assert_eq!(pod["serviceAccountName"], object("ServiceAccount")["metadata"]["name"]);

    // SIGTERM finishes the batch in hand: the grace period outlasts the slowest batch the
    // latency histogram resolves (5 s) and a read's block time several times over.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let block_s = maestro_engine::config::EngineConfig::default().block_ms / 1000;
    assert!(grace >= 30 && grace > 5 * block_s.max(5), "terminationGracePeriodSeconds {grace}");

    // The governing Service and the disruption budget select these pods.
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    assert_eq!(set["spec"]["serviceName"], object("Service")["metadata"]["name"]);
    for selector in
        [&object("Service")["spec"]["selector"], &object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    {
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(&labels[key], value, "selector label {key}");
        }
    }
}

/// The `USER` of the Dockerfile's final stage, which must be numeric (Kubernetes checks
/// runAsNonRoot on the number).
fn dockerfile_user() -> u64 {
    let text = read(&repo().join("Dockerfile"));
    let user = text.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    user.split(':').next().unwrap().trim().parse().unwrap_or_else(|_| panic!("USER {user} is not numeric"))
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_the_release_binary_on_a_slim_base_as_non_root() {
    let text = read(&repo().join("Dockerfile"));
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    let builder = stages[0].strip_prefix("FROM rust:").expect("built with the Rust image");
    let version: Vec<u32> = builder.split('-').next().unwrap().split('.').map(|n| n.parse().unwrap()).collect();
    let manifest = read(&repo().join("Cargo.toml"));
    let msrv = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"');
    let msrv: Vec<u32> = msrv.split('.').map(|n| n.parse().unwrap()).collect();
    assert!(version >= msrv, "the build image's Rust {version:?} is at least the workspace's {msrv:?}");
    assert!(stages[1].contains("-slim"), "a slim runtime base: {}", stages[1]);
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("COPY --from=build /src/target/release/maestro /usr/local/bin/maestro"));
    assert!(dockerfile_user() > 0);
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/maestro\"]"));
    let ignored = read(&repo().join(".dockerignore"));
    assert!(ignored.lines().any(|l| l == "target"), "the build context leaves target/ out");
}

#[test]
fn rbac_grants_what_the_kubernetes_effect_runner_calls_and_no_more() {
    // (API group, resource, verbs): server-side apply is a PATCH that creates what is missing.
    let needed: BTreeSet<(String, String, String)> = [
        ("", "namespaces", &["create", "patch", "delete"][..]),
        ("", "resourcequotas", &["create", "patch"]),
        ("", "limitranges", &["create", "patch"]),
        ("", "services", &["create", "patch"]),
        ("apps", "deployments", &["create", "patch", "get"]),
        ("apps", "statefulsets", &["create", "patch", "get"]),
        ("batch", "jobs", &["create", "patch", "get"]),
        ("", "pods", &["list"]),
        ("", "pods/log", &["get"]),
    ]
    .iter()
    .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
    .collect();
    let role = object("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in as_strs(&rule["apiGroups"]) {
            for resource in as_strs(&rule["resources"]) {
                for verb in as_strs(&rule["verbs"]) {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    granted.insert((group.to_string(), resource.to_string(), verb.to_string()));
                }
            }
        }
    }
    assert_eq!(granted, needed, "the ClusterRole grants exactly what the runner calls");

    // What the runner applies, read from its source: a kind added there must be added here.
    let runner = read(&repo().join("effects/src/kube.rs"));
    let applied: BTreeSet<String> = runner
        .lines()
        .filter(|l| l.contains("=> self.apply_as::<"))
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next().map(str::to_lowercase))
        .collect();
    let by_kind: BTreeSet<String> = needed
        .iter()
        .filter(|(_, _, verb)| verb == "patch")
        .map(|(_, resource, _)| resource.trim_end_matches('s').to_string())
        .collect();
    assert_eq!(applied, by_kind, "kinds the runner applies vs kinds the role lets it apply");
    for call in ["api.delete(&namespace", "pods.list(", "pods.logs("] {
        assert!(runner.contains(call), "the runner still calls {call}");
    }

    let binding = object("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = object("ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], account["metadata"]["namespace"]);
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_example_secret() {
    let kustomization = &documents(&kubernetes_dir().join("kustomization.yaml"))[0];
    let listed: BTreeSet<&str> = as_strs(&kustomization["resources"]).into_iter().collect();
    let files: Vec<String> =
        object_files().iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let expected: BTreeSet<&str> = files.iter().map(String::as_str).filter(|f| !f.contains(".example.")).collect();
    assert_eq!(listed, expected);
}

/// `promtool`: from `PATH`, else from Debian's `prometheus` package, downloaded with
/// `apt-get download` and unpacked (not installed) under the target directory once, then
/// reused. Fails in one line, saying how to install it, when neither works.
fn promtool() -> PathBuf {
    if let Ok(out) = Command::new("promtool").arg("--version").output()
        && out.status.success()
    {
        return PathBuf::from("promtool");
    }
    let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools");
    let tool = tools.join("prometheus/usr/bin/promtool");
    std::fs::create_dir_all(&tools).unwrap();
    let lock = std::fs::File::create(tools.join("prometheus.lock")).unwrap();
    lock.lock().unwrap();
    if tool.exists() {
        return tool;
    }
    let how = "install it with `apt-get install -y prometheus` (Debian; it ships promtool) or put promtool on PATH";
    let download = tempfile::tempdir_in(&tools).unwrap();
    let got = Command::new("apt-get").args(["download", "prometheus"]).current_dir(download.path()).output();
    let deb = match got {
        Ok(out) if out.status.success() => std::fs::read_dir(download.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb")),
        Ok(out) => panic!(
            "promtool not found and `apt-get download prometheus` failed ({}): {how}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
        ),
        Err(e) => panic!("promtool not found and apt-get could not run ({e}): {how}"),
    };
    let deb = deb.unwrap_or_else(|| panic!("promtool not found and apt-get downloaded no .deb: {how}"));
    let unpacked = tools.join("prometheus.tmp");
    let _ = std::fs::remove_dir_all(&unpacked);
    let x = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).status();
    assert!(x.is_ok_and(|s| s.success()), "promtool not found and `dpkg-deb -x` of {} failed: {how}", deb.display());
    std::fs::rename(&unpacked, tools.join("prometheus")).unwrap();
    assert!(tool.exists(), "the prometheus package holds no usr/bin/promtool: {how}");
    tool
}

fn run_promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_alerts_pass_promtool_check_rules_and_their_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let rules: usize = documents(&dir.join("alerts.yaml"))[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum();
    let (ok, out) = run_promtool(&["check", "rules", "alerts.yaml"], &dir);
    assert!(ok && out.contains(&format!("SUCCESS: {rules} rules found")), "{out}");
    let (ok, out) = run_promtool(&["test", "rules", "alerts.test.yaml"], &dir);
    assert!(ok && out.contains("SUCCESS"), "{out}");

    // The check can fail: an expression that does not parse.
    let tmp = tempfile::tempdir().unwrap();
    let text =
        read(&dir.join("alerts.yaml")).replacen("expr: maestro_storage_ok == 0", "expr: maestro_storage_ok ==", 1);
    std::fs::write(tmp.path().join("alerts.yaml"), text).unwrap();
    let (ok, out) = run_promtool(&["check", "rules", "alerts.yaml"], tmp.path());
    assert!(!ok, "a broken expression must fail:\n{out}");
}

/// Names of the metrics a PromQL expression reads (or a Grafana `label_values(...)` query):
/// what is left once strings, label matchers, ranges, grouping lists, function names, keywords,
/// numbers and Grafana variables are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        Some(rest) => rest.rsplit_once(',').map_or(rest, |(metric, _)| metric),
        None => expr,
    };
    // Strings, matchers and ranges out.
    let mut plain = String::new();
    let mut closing = None;
    for c in expr.chars() {
        match (closing, c) {
            (None, '"') => closing = Some('"'),
            (None, '{') => closing = Some('}'),
            (None, '[') => closing = Some(']'),
            (Some(end), c) if c == end => {
                closing = None;
                plain.push(' ');
            }
            (Some(_), _) => {}
            (None, c) => plain.push(c),
        }
    }
    let keywords = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        // Aggregations, whose grouping may come before their parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
    ];
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let grouping = ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str());
            if grouping && next == Some(&'(') {
                skip_list = true;
            } else if !(word.starts_with('$') || keywords.contains(&word.as_str()) || next == Some(&'(')) {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_list {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_list = false;
        }
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

#[test]
fn the_metric_name_reader_finds_the_names_and_only_them() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (pod, le) (rate(x_bucket{a="b c", d=~"$pod"}[$__rate_interval]))) > 1e3"#
        ),
        ["x_bucket"]
    );
    assert_eq!(names("a > 1000 and deriv(b[15m]) > 0 or absent(up{job=\"m\"})"), ["a", "b", "up"]);
    assert_eq!(names("label_values(maestro_up{namespace=~\"$namespace\"}, pod)"), ["maestro_up"]);
    assert_eq!(names("sum without (stream) (c) / on (pod) group_left (x) d"), ["c", "d"]);
}

/// Every metric name the alerts and the dashboard read.
fn referenced_metrics() -> BTreeSet<String> {
    let mut exprs = Vec::new();
    for group in documents(&repo().join("deploy/prometheus/alerts.yaml"))[0]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    let dashboard: Value = serde_json::from_str(&read(&repo().join("deploy/grafana/maestro.json"))).unwrap();
    let mut panels = 0;
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique: {}", panel["id"]);
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{} fits the 24 columns",
            panel["title"]
        );
    }
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        panels += 1;
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has queries", panel["title"]);
        exprs.extend(targets.iter().map(|t| t["expr"].as_str().unwrap().to_string()));
    }
    assert!(panels >= 10, "the dashboard has its panels");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_string());
        }
    }
    exprs.iter().flat_map(|e| metric_names(e)).collect()
}

/// Metrics of other exporters the alerts use: Prometheus's own `up` and kube-state-metrics'.
const EXTERNAL: [&str; 2] = ["up", "kube_pod_container_status_waiting_reason"];

/// Series that exist only per (stream, reason) or per effect kind, so only once such an entry
/// or intent has been seen; a made-up label value to register them at zero would be a lie.
const AFTER_TRAFFIC: [&str; 3] = ["maestro_ignored_total", "maestro_dead_letters_total", "maestro_effects_waiting"];

/// Metric names with a sample in a /metrics answer.
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn wait_for_metrics(addr: &str, wanted: &BTreeSet<String>, engine: &EngineProc) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, metrics) = http_get(addr, "/metrics");
        let have = exported(&metrics);
        let missing: Vec<&String> = wanted.difference(&have).collect();
        if code == 200 && missing.is_empty() {
            return metrics;
        }
        assert!(Instant::now() < deadline, "not exported: {missing:?}\n{metrics}\nengine:\n{}", engine.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_name_is_exported_by_a_running_engine() {
    let referenced = referenced_metrics();
    for name in &referenced {
        assert!(name.starts_with("maestro_") || EXTERNAL.contains(&name.as_str()), "{name} is no metric of the engine");
    }
    let own: BTreeSet<String> = referenced.iter().filter(|n| n.starts_with("maestro_")).cloned().collect();
    assert!(own.len() >= 20, "{own:?}");

    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr();
    let env = [("MAESTRO_INFO_INTERVAL_MS", "200")];
    let mut engine = EngineProc::start_with(&server.url(), &dir, &env, &["--http", &addr]);
    engine.wait_connected();

    // Before any entry: all but the series that need one.
    let at_start: BTreeSet<String> = own.iter().filter(|n| !AFTER_TRAFFIC.contains(&n.as_str())).cloned().collect();
    wait_for_metrics(&addr, &at_start, &engine);
    assert_eq!(http_get(&addr, "/healthz").0, 200, "the liveness probe's route");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {}", http_get(&addr, "/readyz").1);
        std::thread::sleep(Duration::from_millis(100));
    }

    // The realistic mix has entries the handlers ignore and test environments whose apply waits
    // for a cluster; one poison entry is dead-lettered.
    let mut produced = produce(&mut conn, 400, 7, false);
    let id: String = redis::cmd("XADD")
        .arg("maestro:streams:templates:requests")
        .arg("*")
        .arg("data")
        .arg("{not json")
        .query(&mut conn)
        .unwrap();
    produced.push(("maestro:streams:templates:requests".into(), id));
    wait_drained(&mut conn, Duration::from_secs(120));
    let metrics = wait_for_metrics(&addr, &own, &engine);
    assert!(
        metrics.lines().any(|l| l.starts_with("maestro_dead_letters_total{") && l.contains("reason=\"")),
        "{metrics}"
    );
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
    assert_exactly_once(&produced, &export(&dir));
}

/// Every setting as `(dotted name, default as docs/operations.md writes it)`.
fn settings_with_defaults() -> Vec<(String, String)> {
    fn shown(value: &Value) -> String {
        match value {
            Value::Null => "none".into(),
            Value::Array(items) if items.is_empty() => "none".into(),
            Value::String(text) => format!("`{text}`"),
            other => other.to_string(),
        }
    }
    let object = |value: Value| match value {
        Value::Object(settings) => settings,
        _ => panic!("settings are an object"),
    };
    let mut settings = object(serde_json::to_value(maestro_engine::config::EngineConfig::default()).unwrap());
    settings.extend(object(serde_json::to_value(maestro::domains::DomainSettings::default()).unwrap()));
    let mut out = Vec::new();
    for (name, value) in settings {
        match value {
            Value::Object(inner) => out.extend(inner.iter().map(|(key, v)| (format!("{name}.{key}"), shown(v)))),
            other => out.push((name, shown(&other))),
        }
    }
    out
}

#[test]
fn the_operations_guide_lists_every_setting_with_its_default() {
    let guide = read(&repo().join("docs/operations.md"));
    let settings = settings_with_defaults();
    assert!(settings.len() >= 35, "{settings:?}");
    for (name, default) in &settings {
        let row = guide
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for the setting `{name}` (default {default})"));
        let cell = row.split('|').nth(2).unwrap().trim();
        assert_eq!(cell, default, "the default of `{name}` in docs/operations.md");
    }
    for link in ["README.md", "ARCHITECTURE.md"] {
        assert!(read(&repo().join(link)).contains("docs/operations.md"), "{link} links the operations guide");
    }
}

/// The value of an unlabelled gauge in a /metrics answer.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What `MaestroAnchorDisagreementAccepted` watches: 0 on a log that agrees with its anchors,
/// 1 once an operator made the engine go on from one that does not (here: `HEAD` removed).
#[test]
fn an_accepted_anchor_disagreement_shows_on_metrics() {
    let server = redis(false);
    let mut conn = connect(&server);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("engine");
    let addr = free_http_addr;
    let first = addr();
    let mut engine = EngineProc::start_with(&server.url(), &dir, &[], &["--http", &first]);
    engine.wait_connected();
    produce(&mut conn, 50, 3, true);
    wait_drained(&mut conn, Duration::from_secs(60));
    let metrics = wait_for_metrics(&first, &["maestro_anchor_accepted".to_string()].into(), &engine);
    assert_eq!(gauge(&metrics, "maestro_anchor_accepted"), Some(0.0), "{metrics}");
    assert!(engine.terminate().success(), "{}", engine.stderr());

    std::fs::remove_file(dir.join("HEAD")).unwrap();
    let second = addr();
    let mut engine = EngineProc::start_with(&server.url(), &dir, &[], &["--http", &second, "--accept-truncated-log"]);
    engine.wait_connected();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(&second, "/metrics").1;
        if gauge(&metrics, "maestro_anchor_accepted") == Some(1.0) {
            assert_eq!(gauge(&metrics, "maestro_catch_up_remaining"), Some(0.0), "caught up: {metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "not shown:\n{metrics}\n{}", engine.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(engine.terminate().success(), "{}", engine.stderr());
    engine.assert_no_panic();
}
