//! `GET /health`: whether the store answers, with its counts and the ingest counters.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetpulse_domain::store::StoreError;
use serde_json::json;

use crate::AppState;

/// How long the store may take to report its counts before the service reads as degraded:
/// a hung store must turn the health check red, not hang it.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// Reports `{"status": "ok", "store": {counts}, "ingest": {counters}}` (200) while the
/// store answers, and the same shape with `"status": "degraded"` and
/// `"store": {"error": "..."}` (503) when it does not.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, description = "Status, store counts, ingest counters (503 when degraded, same shape)", body = serde_json::Value)), security(()))]
async fn health(State(state): State<AppState>) -> Response {
    let ingest = state.ingest.snapshot();
    let stats = tokio::time::timeout(STORE_TIMEOUT, state.store.stats()).await;
    match stats {
        Ok(Ok(stats)) => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "store": stats, "ingest": ingest })),
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health check: the store did not answer");
            degraded(store_error_kind(&error), ingest)
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = STORE_TIMEOUT.as_secs(),
                "health check: the store timed out"
            );
            degraded("timeout", ingest)
        }
    }
}

fn degraded(error: &str, ingest: serde_json::Value) -> Response {
    let body = json!({ "status": "degraded", "store": { "error": error }, "ingest": ingest });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// A short, stable word for the failure; the detail is in the log.
fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        _ => "failure",
    }
}
