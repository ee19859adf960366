//! A replay tool on a data dir that a running engine holds: the lock keeps the tool out, so a
//! question about the state at the engine's position goes to the engine's HTTP API instead
//! (`/state/<projection>`), whose address the engine writes into the data dir. Other questions
//! need the directory: the tool says so and how to proceed.

use anyhow::Context;
use maestro_engine::error::EngineError;
use maestro_replay::ReplayError;
use maestro_replay::state::{Snapshot, from_hex};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Whether `error` is the data dir's lock refusing the tool.
pub fn is_locked(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(cause.downcast_ref::<ReplayError>(), Some(ReplayError::Engine(EngineError::Locked(_))))
            || matches!(cause.downcast_ref::<EngineError>(), Some(EngineError::Locked(_)))
    })
}

/// Projection `projection`'s state at the running engine's position, from its HTTP API. The
/// error says how to proceed when the engine does not serve HTTP.
pub fn state(data_dir: &Path, projection: &str) -> anyhow::Result<(Snapshot, String)> {
    let file = data_dir.join(maestro_engine::runtime::HTTP_FILE);
    let addr = std::fs::read_to_string(&file)
        .map(|text| text.trim().to_string())
        .map_err(|_| {
            anyhow::anyhow!(
                "data dir {} is in use by a running engine without --http: stop it, point at a copy, or run the engine with --http so that it answers `replay state`",
                data_dir.display()
            )
        })?;
    let (code, body) = get(&addr, &format!("/state/{projection}"))
        .with_context(|| format!("asking the engine at {addr} (named by {})", file.display()))?;
    let answer: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("the engine at {addr} answered {code}: {body}"))?;
    if code != 200 {
        anyhow::bail!("the engine at {addr}: {}", answer["error"].as_str().unwrap_or(&body));
    }
    let entries = answer["entries"]
        .as_array()
        .context("no entries in the engine's answer")?
        .iter()
        .map(|pair| {
            let part = |i: usize| pair[i].as_str().and_then(from_hex).context("an entry that is not two hex strings");
            Ok((part(0)?, part(1)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seq = answer["seq"].as_u64().context("no seq in the engine's answer")?;
    Ok((Snapshot { projection: projection.to_string(), seq, entries }, addr))
}

/// One HTTP/1.0 GET on loopback: the status code and the body.
fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let socket: std::net::SocketAddr = addr.parse().with_context(|| format!("address {addr:?}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("a response without a header end")?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("a response without a status")?;
    Ok((code, body.to_string()))
}
