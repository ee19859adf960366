//! `--http ADDR`: `/healthz` (the process answers), `/readyz` (Redis reachable, log open,
//! storage writable, caught up), `/status` (the counters as JSON), `/metrics` (Prometheus) and
//! `/state/<projection>` (a projection's state at the engine's position, for the replay tools).

use crate::error::{EngineError, Result};
use crate::status::Health;
use crate::store::Store;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use maestro_schemas::record::hex;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Debug)]
struct Shared {
    status: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let snap = shared.status.snapshot();
    let code = if snap.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "ready": snap.ready, "redis_up": snap.redis_up, "log_open": snap.log_open,
        "storage_ok": snap.storage_ok, "caught_up": snap.caught_up,
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

async fn status_json(State(shared): State<Shared>) -> impl IntoResponse {
    let body = serde_json::to_string(&shared.status.snapshot()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    // The state flags as gauges, read at scrape time: during an outage or a disk-full the batch
    // loop that updates the counters is not running, and these must still say so.
    let snap = shared.status.snapshot();
    for (name, value) in [
        ("maestro_up", true),
        ("maestro_ready", snap.ready),
        ("maestro_redis_up", snap.redis_up),
        ("maestro_storage_ok", snap.storage_ok),
        ("maestro_log_open", snap.log_open),
    ] {
        metrics::gauge!(name).set(f64::from(u8::from(value)));
    }
    metrics::gauge!("maestro_head_seq").set(snap.head_seq as f64);
    if let Some(lease) = &snap.lease {
        metrics::gauge!("maestro_lease_held").set(f64::from(u8::from(lease.held)));
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        metrics::gauge!("maestro_lease_age_seconds")
            .set(now_ms.saturating_sub(u128::from(lease.since_ms)) as f64 / 1e3);
    }
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("maestro_resident_bytes").set(bytes as f64);
    }
    match &shared.metrics {
        Some(handle) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()),
        None => {
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "metrics recorder not installed\n".into())
        }
    }
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (Linux; None elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How often `/state` reads again when the engine committed while it read.
const STATE_READS: usize = 20;

/// A projection's stored state, read consistently while the engine writes: the scanned keys
/// must hash to the kept digest and the position must not move during the scan (a scan is not
/// isolated from a commit that lands in the middle of it). The answer carries
/// keys and values in hex: `maestro replay state` prints them as it prints its own.
async fn state(State(shared): State<Shared>, Path(projection): Path<String>) -> impl IntoResponse {
    let json = |code: StatusCode, body: serde_json::Value| {
        (code, [(header::CONTENT_TYPE, "application/json")], body.to_string())
    };
    let store = shared.status.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let Some((store, names)) = store else {
        return json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "the log is not open"}));
    };
    let Some(name) = names.iter().find(|n| **n == projection) else {
        let error = format!("no projection {projection:?}; the projections are: {}", names.join(", "));
        return json(StatusCode::NOT_FOUND, serde_json::json!({ "error": error }));
    };
    let read = tokio::task::spawn_blocking({
        let name = *name;
        move || read_consistent(&store, name)
    });
    match read.await {
        Ok(Ok(Some(body))) => json(StatusCode::OK, body),
        Ok(Ok(None)) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "the state kept changing while it was read; ask again"}),
        ),
        Ok(Err(error)) => json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": error.to_string() })),
        Err(error) => json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": error.to_string() })),
    }
}

fn read_consistent(store: &Store, name: &str) -> Result<Option<serde_json::Value>> {
    for _ in 0..STATE_READS {
        // Every commit that changes state moves positions: the same position after the scan
        // means none landed during it.
        let seq = store.position(name)?;
        if let Some(entries) = store.entries_if_kept(name)?
            && store.position(name)? == seq
        {
            let entries: Vec<[String; 2]> = entries.iter().map(|(k, v)| [hex(k), hex(v)]).collect();
            return Ok(Some(serde_json::json!({ "projection": name, "seq": seq, "entries": entries })));
        }
    }
    Ok(None)
}

/// Binds `addr` and serves until `shutdown` fires. Returns the bound address (useful with port 0)
/// and the server task.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Health>,
    metrics_handle: Option<PrometheusHandle>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .route("/state/{projection}", get(state))
        .with_state(Shared { status, metrics: metrics_handle });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(EngineError::Http)?;
    let bound = listener.local_addr().map_err(EngineError::Http)?;
    let task = tokio::spawn(async move {
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(%error, "http server failed");
        }
    });
    Ok((bound, task))
}
