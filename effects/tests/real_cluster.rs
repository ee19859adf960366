//! Against a real cluster, only when one is configured: every object of an environment is
//! server-side applied, then the namespace is deleted. Without a cluster this test is reported
//! as ignored, never as passed; `.ci/run` runs it (`-- --ignored`) when `KUBECONFIG` is set:
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo test -p maestro-engine --test real_cluster -- --ignored
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use maestro_effects::kube::{FactKeys, KubeRunner, KubeSettings};
use maestro_handlers::execution::handler::render;
use maestro_handlers::execution::manifests::namespace_of;
use maestro_schemas::proto::execution::{EnvironmentSpec, ExecuteEphemeralTest, TestConfig};
use serde_json::{Value, json};

#[tokio::test]
#[ignore = "needs a real cluster: run with KUBECONFIG set and -- --ignored"]
async fn every_object_of_an_environment_is_accepted_by_a_real_api_server() {
    assert!(std::env::var_os("KUBECONFIG").is_some(), "KUBECONFIG must name the cluster to test against");
    let client = kube::Client::try_default().await.expect("a client for the KUBECONFIG cluster");
    let (facts, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let runtime = tokio::runtime::Handle::current();
    let runner = KubeRunner {
        client,
        identity: "maestro-engine/maestro-engine".into(),
        settings: KubeSettings::default(),
        keys: FactKeys::of(&maestro_schemas::StreamSet::default()),
        facts,
        runtime,
    };
    let id = format!("real-cluster-{}", std::process::id());
    let spec = EnvironmentSpec {
        app_image: "nginx:1.27-alpine".into(),
        app_port: 80,
        database_type: Some("postgresql".into()),
        redis_enabled: Some(true),
        ..Default::default()
    };
    let test = TestConfig { commands: vec!["true".into()], ..Default::default() };
    let request = ExecuteEphemeralTest { environment_spec: Some(spec), test_config: Some(test), ..Default::default() };
    let manifests: Vec<Value> =
        render(&request, &id, 0, 3_600_000).unwrap().iter().map(|m| serde_json::to_value(m).unwrap()).collect();
    let namespace = namespace_of(&id);
    runner.apply_objects(&namespace, &manifests).await.unwrap();
    runner.delete("k8s_delete/real", &json!({"execution_id": id, "namespace": namespace})).await;
    let fact = receiver.try_recv().expect("a cleaned fact");
    assert!(fact.fields.iter().any(|(k, v)| k == "status" && v == "cleaned"), "{fact:?}");
}
