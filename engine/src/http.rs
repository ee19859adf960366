//! `--http ADDR`: `/healthz` (the process answers), `/readyz` (Redis reachable, log open,
//! storage writable, caught up), `/status` (the counters as JSON) and `/metrics` (Prometheus).

use crate::error::{EngineError, Result};
use crate::status::Status;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Debug)]
struct Shared {
    status: Arc<Status>,
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
    match &shared.metrics {
        Some(handle) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()),
        None => {
            (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "metrics recorder not installed\n".into())
        }
    }
}

/// Binds `addr` and serves until `shutdown` fires. Returns the bound address (useful with port 0)
/// and the server task.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Status>,
    metrics_handle: Option<PrometheusHandle>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
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
