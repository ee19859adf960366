//! `maestro manifests EXECUTION_ID --data-dir DIR`: every object of an execution's environment,
//! rendered again from the request in the log, as one multi-document YAML for
//! `kubectl apply -f -` (what the effect runner would apply, for a cluster the engine has no
//! access to).

use maestro_handlers::execution::handler::{NAME, render};
use maestro_handlers::execution::manifests::Manifest;
use maestro_handlers::execution::model::{Environment, env_key, request_key};
use maestro_schemas::proto::execution::ExecuteEphemeralTest;
use prost::Message;
use std::path::Path;

/// The manifests as multi-document YAML.
pub fn to_yaml(manifests: &[Manifest]) -> anyhow::Result<String> {
    let mut out = String::new();
    for manifest in manifests {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(manifest)?);
    }
    Ok(out)
}

/// The rendered manifests of one execution in a data dir, as the engine rendered them: same
/// request, same admission and expiry times.
pub fn manifests_of(data_dir: &Path, execution_id: &str) -> anyhow::Result<Vec<Manifest>> {
    let (_dir, log) = maestro_replay::open_log(data_dir)?;
    let store = log.store()?;
    let get = |key: Vec<u8>| store.value(NAME, &key);
    let env: Environment = match get(env_key(execution_id))? {
        Some(bytes) => serde_json::from_slice(&bytes)?,
        None => anyhow::bail!("no execution {execution_id} in {}", data_dir.display()),
    };
    let request = get(request_key(execution_id))?.ok_or_else(|| {
        anyhow::anyhow!("execution {execution_id} was refused: {}", env.reason.clone().unwrap_or_default())
    })?;
    let request = ExecuteEphemeralTest::decode(request.as_slice())?;
    let admitted = env.admitted_ms.unwrap_or(env.requested_ms);
    let expires = env.expires_ms.unwrap_or(admitted + env.ttl_ms);
    render(&request, execution_id, admitted, expires).map_err(anyhow::Error::msg)
}

/// `maestro manifests`.
pub fn print(data_dir: &Path, execution_id: &str) -> anyhow::Result<()> {
    let yaml = to_yaml(&manifests_of(data_dir, execution_id)?)?;
    crate::replay_cli::emit(yaml.trim_end())
}
