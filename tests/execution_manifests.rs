//! The rendered Kubernetes manifests of each environment shape: pinned by snapshot files, and
//! every object validated against the Kubernetes 1.33 OpenAPI schemas by PyPI's
//! `kubernetes-validate --strict` (installed by the test harness into its Python environment). Names and label values stay valid
//! whatever the execution id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::python::kubernetes_validate;
use maestro::manifests_cli::to_yaml;
use maestro_handlers::execution::handler::commands_of;
use maestro_handlers::execution::manifests::{Manifest, Request, dns_label, label_value, namespace_of, render};
use maestro_schemas::proto::execution::{EnvironmentSpec, ExecuteEphemeralTest, TestConfig};
use std::path::PathBuf;

/// 2026-11-28T10:00:00Z and one hour later.
const ADMITTED: u64 = 1_795_860_000_000;
const EXPIRES: u64 = ADMITTED + 3_600_000;

fn spec(database: Option<&str>, redis: bool) -> EnvironmentSpec {
    EnvironmentSpec {
        app_image: "registry.example.com/shop/api:1.4.2".into(),
        app_port: 8080,
        database_type: database.map(str::to_string),
        redis_enabled: Some(redis),
        replicas: Some(2),
        resources_json: None,
        env_vars: [("LOG_LEVEL".to_string(), "debug".to_string()), ("FEATURE_X".into(), "on".into())].into(),
    }
}

fn commands(n: usize) -> TestConfig {
    let all = ["pytest -x tests/api", "pytest tests/integration -k orders", "npm run e2e -- --reporter dot"];
    TestConfig {
        commands: all[..n].iter().map(|c| c.to_string()).collect(),
        timeout_minutes: Some(20),
        ttl_minutes: Some(60),
    }
}

/// The commands of a request whose `test_config` has REST-style `test_suites` besides its own
/// `commands`, as the handler takes them.
fn suites() -> TestConfig {
    let suites = r#"[{"name":"api","type":"pytest","test_files":["tests/api"],"commands":["pytest tests/api"]},{"name":"e2e","type":"e2e","patterns":["*.spec.ts"],"setup_commands":["npm ci"],"commands":["npx playwright test","npm run e2e:report"]}]"#;
    let request = ExecuteEphemeralTest {
        test_config: Some(commands(1)),
        extra: [("test_config.test_suites".to_string(), suites.to_string())].into(),
        ..Default::default()
    };
    TestConfig { commands: commands_of(&request), ..commands(1) }
}

/// The environment shapes: app only, each database, Redis, everything with custom resources,
/// test suites; ids as the old service made them (8 hex) or as producers chose them.
fn shapes() -> Vec<(&'static str, String, EnvironmentSpec, TestConfig)> {
    let mut full = spec(Some("postgresql"), true);
    full.resources_json =
        Some(r#"{"requests":{"cpu":"200m","memory":"300Mi"},"limits":{"cpu":"1","memory":"1Gi"}}"#.into());
    full.replicas = Some(1);
    vec![
        ("app-only", "exec-app-only".into(), spec(None, false), commands(1)),
        ("postgresql", "exec-pg".into(), spec(Some("postgresql"), false), commands(2)),
        ("mysql", "exec-mysql".into(), spec(Some("mysql"), false), commands(1)),
        ("redis", "exec-redis".into(), spec(None, true), commands(1)),
        ("full", "Exec_Full:2026-11-28T10:00:00".into(), full, commands(3)),
        ("mongodb", "3f9a0c1e".into(), spec(Some("mongodb"), false), commands(1)),
        ("test-suites", "b7d41e09".into(), spec(None, false), suites()),
    ]
}

fn rendered(id: &str, spec: &EnvironmentSpec, test: &TestConfig) -> Vec<Manifest> {
    render(&Request { execution_id: id, spec, test, requested_ms: ADMITTED, expires_ms: EXPIRES }).unwrap()
}

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/manifests")
}

/// Each shape renders exactly its snapshot. `UPDATE_SNAPSHOTS=1` rewrites them (then review the
/// diff); a missing snapshot fails.
#[test]
fn each_environment_shape_renders_its_snapshot() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut differ = Vec::new();
    for (shape, id, spec, test) in shapes() {
        let yaml = to_yaml(&rendered(&id, &spec, &test)).unwrap();
        let path = snapshot_dir().join(format!("{shape}.yaml"));
        if update {
            std::fs::create_dir_all(snapshot_dir()).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let pinned = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SNAPSHOTS=1 to write it", path.display()));
        if pinned != yaml {
            differ.push(format!("{shape}: rendered\n{yaml}"));
        }
    }
    assert!(differ.is_empty(), "rendering changed (UPDATE_SNAPSHOTS=1 rewrites):\n{}", differ.join("\n"));
}

#[test]
fn each_shape_has_the_objects_of_the_spec() {
    let kinds = |m: &[Manifest]| m.iter().map(|m| format!("{}/{}", m.kind(), m.name())).collect::<Vec<_>>();
    let shapes = shapes();
    let app_only = kinds(&rendered(&shapes[0].1, &shapes[0].2, &shapes[0].3));
    assert_eq!(
        app_only,
        [
            "Namespace/quality-fabric-exec-app-only",
            "ResourceQuota/maestro-quota",
            "LimitRange/maestro-limits",
            "Deployment/app",
            "Service/app-service",
            "Job/test-job-1"
        ]
    );
    let full = kinds(&rendered(&shapes[4].1, &shapes[4].2, &shapes[4].3));
    for object in ["StatefulSet/postgres", "Service/postgres", "Deployment/redis", "Service/redis", "Job/test-job-3"] {
        assert!(full.contains(&object.to_string()), "{object} missing from {full:?}");
    }
    let mysql = kinds(&rendered(&shapes[2].1, &shapes[2].2, &shapes[2].3));
    assert!(mysql.contains(&"StatefulSet/mysql".to_string()) && mysql.contains(&"Service/mysql".to_string()));
    let mongodb = kinds(&rendered(&shapes[5].1, &shapes[5].2, &shapes[5].3));
    assert_eq!(mongodb[0], "Namespace/quality-fabric-3f9a0c1e", "an 8-hex id names its namespace as it is");
    assert!(mongodb.contains(&"StatefulSet/mongodb".to_string()) && mongodb.contains(&"Service/mongodb".to_string()));
    let suites = kinds(&rendered(&shapes[6].1, &shapes[6].2, &shapes[6].3));
    let jobs: Vec<&String> = suites.iter().filter(|k| k.starts_with("Job/")).collect();
    assert_eq!(jobs, ["Job/test-job-1", "Job/test-job-2", "Job/test-job-3", "Job/test-job-4"]);
    // An unknown database type (any case) deploys none; a known one in capitals is deployed.
    for (database, statefulset) in
        [("oracle", None), ("MySQL", Some("StatefulSet/mysql")), ("MONGODB", Some("StatefulSet/mongodb"))]
    {
        let objects = kinds(&rendered("e", &spec(Some(database), false), &commands(1)));
        let found: Vec<&String> = objects.iter().filter(|k| k.starts_with("StatefulSet/")).collect();
        assert_eq!(found.first().map(|s| s.as_str()), statefulset, "{database}: {objects:?}");
    }
}

/// `kubernetes-validate -k 1.33.0 --strict` on every rendered object of every shape: 0 failures.
#[test]
fn every_rendered_manifest_is_valid_kubernetes_1_33() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut objects = 0;
    for (shape, id, spec, test) in shapes() {
        let manifests = rendered(&id, &spec, &test);
        objects += manifests.len();
        let path = dir.path().join(format!("{shape}.yaml"));
        std::fs::write(&path, to_yaml(&manifests).unwrap()).unwrap();
        files.push(path);
    }
    let (ok, stdout, stderr) = kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate failed:\n{stdout}\n{stderr}");
    let valid = stdout.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
    assert_eq!(valid, objects, "every object reported valid:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("ERROR") && !stderr.contains("ERROR"), "{stdout}\n{stderr}");

    // The check can fail: a field the schema does not know is refused under --strict.
    let yaml = std::fs::read_to_string(&files[0]).unwrap().replacen("replicas: 2", "replicaz: 2", 1);
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, yaml).unwrap();
    let (ok, stdout, stderr) = kubernetes_validate(&[broken]);
    assert!(!ok && stdout.contains("replicaz"), "an unknown field must fail:\n{stdout}\n{stderr}");
}

fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

#[test]
fn names_and_label_values_are_valid_for_any_execution_id() {
    let long = "x".repeat(300);
    let ids = ["exec-1", "Exec_1", "2026-11-28T10:00:00", "---", "", "ümlaut/ids", long.as_str(), "a.b_c-D"];
    let mut namespaces = std::collections::BTreeSet::new();
    for id in ids {
        let namespace = namespace_of(id);
        assert!(is_dns_label(&namespace), "{id:?} -> {namespace:?}");
        namespaces.insert(namespace);
        let label = label_value(id);
        assert!(label.len() <= 63 && !label.contains(':'), "{id:?} -> {label:?}");
        for manifest in rendered(id, &spec(Some("mongodb"), true), &commands(1)) {
            let json = serde_json::to_value(&manifest).unwrap();
            for (key, value) in json["metadata"]["labels"].as_object().unwrap() {
                let value = value.as_str().unwrap();
                assert!(value.len() <= 63 && !value.contains(':') && !value.starts_with('-'), "{key}={value:?}");
            }
        }
        assert!(dns_label(id, 20).len() <= 20);
    }
    assert_eq!(namespaces.len(), ids.len(), "distinct ids give distinct namespaces");
    assert_eq!(label_value("a.b_c-D"), "a.b_c-D", "valid label values are kept as they are");
    assert_eq!(namespace_of("0a1b2c3d"), "quality-fabric-0a1b2c3d", "the old service's form");
}

#[test]
fn bad_specs_are_refused_with_their_reason() {
    let test = commands(1);
    type Breaks = Box<dyn Fn(&mut EnvironmentSpec)>;
    let cases: [(&str, Breaks); 5] = [
        ("app_image", Box::new(|s| s.app_image = "has space".into())),
        ("app_image", Box::new(|s| s.app_image = String::new())),
        ("app_port", Box::new(|s| s.app_port = 70_000)),
        ("env_vars", Box::new(|s| s.env_vars = [("1BAD".to_string(), "x".to_string())].into())),
        ("resources", Box::new(|s| s.resources_json = Some(r#"{"requests":{"gpu":"1"}}"#.into()))),
    ];
    for (field, break_it) in cases {
        let mut spec = spec(None, false);
        break_it(&mut spec);
        let error = render(&Request { execution_id: "e", spec: &spec, test: &test, requested_ms: 0, expires_ms: 0 })
            .unwrap_err();
        assert!(error.contains(field), "{field}: {error}");
    }
}
