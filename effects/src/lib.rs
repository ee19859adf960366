//! The effect runners of the Maestro domains. Handlers return intents; the engine queues them
//! and runs them through whatever runners its caller gives it (`maestro_engine::effects`). These
//! are the runners the binary gives it: the template history into a bare git repository
//! ([`git`]), test environments into a Kubernetes cluster when one is configured ([`kube`]), and
//! file reads for heal requests that name a test file ([`files`]).

pub mod domains;
pub mod files;
pub mod git;
pub mod kube;

use maestro_engine::effects::{EffectRunner, RunnerContext, RunnerFactory};
use maestro_schemas::StreamSet;
use std::sync::Arc;

/// The template history repository, inside the data dir.
pub const HISTORY_DIR: &str = "history.git";

/// The runners of one engine session: git history, file reads, and the Kubernetes runner (or,
/// without a cluster, the runner that answers what can be answered without one). `identity` is
/// the `runner` field of the Kubernetes facts.
pub fn runners(streams: &StreamSet, identity: String) -> RunnerFactory {
    let keys = kube::FactKeys::of(streams);
    Arc::new(move |context: RunnerContext| {
        let (keys, identity) = (keys.clone(), identity.clone());
        Box::pin(async move {
            let history = context.data_dir.join(HISTORY_DIR);
            let git = git::GitHistory::open(&history)
                .map_err(|e| format!("history repository {}: {e}", history.display()))?;
            let reader = files::FileReader { facts: context.facts.clone() };
            let mut runners: Vec<Box<dyn EffectRunner>> = vec![Box::new(git), Box::new(reader)];
            let facts = context.facts;
            match kube_runner(facts.clone(), identity.clone(), keys.clone()).await {
                Some(kube) => runners.push(Box::new(kube)),
                None => runners.push(Box::new(kube::NoCluster { identity, keys, facts })),
            }
            Ok(runners)
        })
    })
}

/// The Kubernetes effect runner when a cluster is configured (`KUBECONFIG` or in-cluster);
/// without one, says so: test environments are planned and recorded but stay in
/// `provisioning`.
async fn kube_runner(
    facts: tokio::sync::mpsc::UnboundedSender<maestro_engine::effects::Fact>,
    identity: String,
    keys: kube::FactKeys,
) -> Option<kube::KubeRunner> {
    let kubeconfig = std::env::var_os("KUBECONFIG").is_some();
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if !kubeconfig && !in_cluster {
        tracing::warn!(
            "no Kubernetes cluster configured (KUBECONFIG unset, not in a cluster): test environments stay in \
             provisioning, their k8s_apply intents wait and run when the engine starts with a cluster; cleanup \
             and log requests are answered saying so; `maestro manifests EXECUTION_ID --data-dir DIR` prints \
             their manifests for kubectl"
        );
        return None;
    }
    match ::kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("kubernetes cluster configured: the effect runner applies test environments");
            let settings = kube::KubeSettings::default();
            Some(kube::KubeRunner {
                client,
                identity,
                settings,
                keys,
                facts,
                runtime: tokio::runtime::Handle::current(),
            })
        }
        Err(error) => {
            tracing::error!(%error, "a Kubernetes cluster is configured but no client could be built; environments stay in provisioning");
            None
        }
    }
}
