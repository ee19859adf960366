//! `maestro deploy manifests --members N`: the StatefulSet, headless Service and
//! PodDisruptionBudget for N members, checked for what membership needs and validated against
//! the Kubernetes 1.33 schemas with kubernetes-validate (strict: unknown fields fail).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::maestro;
use common::python::kubernetes_validate;
use serde_json::Value;

fn objects(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n").skip(1).map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap()).collect()
}

#[test]
fn members_manifests_render_one_pod_per_member_and_validate() {
    let (code, stdout, stderr) = maestro(&["deploy", "manifests", "--members", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim_end(), maestro::deploy_cli::manifests(3).unwrap().trim_end());
    let objects = objects(&stdout);
    let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["StatefulSet", "Service", "PodDisruptionBudget"]);

    let set = &objects[0]["spec"];
    assert_eq!(set["replicas"], 3);
    assert_eq!(set["volumeClaimTemplates"][0]["metadata"]["name"], "data", "a volume per member");
    let container = &set["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[args.len() - 3..], ["run", "--member", "$(POD_INDEX)/3"]);
    let index = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "POD_INDEX").unwrap();
    assert_eq!(index["valueFrom"]["fieldRef"]["fieldPath"], "metadata.labels['apps.kubernetes.io/pod-index']");
    assert_eq!(objects[1]["spec"]["clusterIP"], "None", "headless");
    assert_eq!(set["serviceName"], objects[1]["metadata"]["name"]);
    assert_eq!(objects[2]["spec"]["maxUnavailable"], 1);
    assert_eq!(objects[2]["spec"]["selector"], set["selector"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("members.yaml");
    std::fs::write(&path, &stdout).unwrap();
    let (ok, out, err) = kubernetes_validate(std::slice::from_ref(&path));
    assert!(ok, "kubernetes-validate failed:\n{out}\n{err}");
    let valid = out.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
    assert_eq!(valid, 3, "every object reported valid:\n{out}\n{err}");

    let (code, _, stderr) = maestro(&["deploy", "manifests", "--members", "0"]);
    assert_eq!(code, Some(1), "{stderr}");
}
