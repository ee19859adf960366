//! `maestro deploy manifests --members N`: the StatefulSet, its headless Service and the
//! PodDisruptionBudget of `deploy/kubernetes/` for N members, as one multi-document YAML.
//!
//! Each pod is one member with its own volume (the StatefulSet's volume claim per pod) and runs
//! `run --member <ordinal>/N`: the ordinal comes from the `apps.kubernetes.io/pod-index` label
//! (Kubernetes 1.28 and later) through the downward API, and `$(POD_INDEX)` in the arguments is
//! expanded by the kubelet. A pod duplicated by a partitioned node, or started again before the
//! old one is known dead, waits on its member's lease (`lease.rs`) instead of writing.

use anyhow::Context;
use serde_json::{Value, json};

const STATEFULSET: &str = include_str!("../deploy/kubernetes/statefulset.yaml");
const SERVICE: &str = include_str!("../deploy/kubernetes/service.yaml");
const PDB: &str = include_str!("../deploy/kubernetes/pdb.yaml");

fn parse(yaml: &str, name: &str) -> anyhow::Result<Value> {
    serde_saphyr::from_str(yaml).with_context(|| format!("deploy/kubernetes/{name}"))
}

/// The StatefulSet of `deploy/kubernetes/` made into `members` members.
fn statefulset(members: u32) -> anyhow::Result<Value> {
    let mut set = parse(STATEFULSET, "statefulset.yaml")?;
    set["spec"]["replicas"] = json!(members);
    // Members are independent: one waiting on its lease (not ready) must not hold back the rest.
    set["spec"]["podManagementPolicy"] = json!("Parallel");
    let container = set["spec"]["template"]["spec"]["containers"]
        .get_mut(0)
        .context("deploy/kubernetes/statefulset.yaml has no container")?;
    let args = container["args"].as_array_mut().context("the container has no args")?;
    args.extend([json!("--member"), json!(format!("$(POD_INDEX)/{members}"))]);
    let env = container["env"].as_array_mut().context("the container has no env")?;
    env.insert(
        0,
        json!({
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
        }),
    );
    Ok(set)
}

/// The manifests for `members` members, as multi-document YAML.
pub fn manifests(members: u32) -> anyhow::Result<String> {
    anyhow::ensure!(members >= 1, "--members must be at least 1");
    let objects = [statefulset(members)?, parse(SERVICE, "service.yaml")?, parse(PDB, "pdb.yaml")?];
    let mut out = format!(
        "# maestro deploy manifests --members {members}: {members} engine(s), each `run --member <ordinal>/{members}`\n\
         # on its own volume, holding its member's lease in Redis while it writes. Until streams are\n\
         # partitioned, members share one consumer group: each holds only its share of the entries\n\
         # and projections (docs/limits.md).\n"
    );
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

/// `maestro deploy manifests`.
pub fn print(members: u32) -> anyhow::Result<()> {
    crate::replay_cli::emit(manifests(members)?.trim_end())
}
