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

/// `ok`, or `degraded` with the reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// The `/health` answer: the same shape whether healthy or degraded.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// Why the status is `degraded` (empty when `ok`): the store does not answer, ingest
    /// is held (journal appends or store commits fail and are retried), or the store
    /// refused journal entries (dead-lettered as `store_rejected`).
    pub reasons: Vec<String>,
    /// Store counts, or `{"error": "unavailable" | "failure" | "timeout"}`.
    #[schema(value_type = Object)]
    pub store: serde_json::Value,
    /// Ingest counters (`docs/operations.md`).
    #[schema(value_type = Object)]
    pub ingest: serde_json::Value,
    /// The clock the process runs on: `wall` (serve) or `simulated` (demo), its current
    /// time and its speed (simulated seconds per wall second).
    pub clock: ClockBody,
}

/// The process's clock, as `/health` shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClockBody {
    /// `wall` or `simulated`.
    pub kind: &'static str,
    pub now: chrono::DateTime<chrono::Utc>,
    /// Simulated seconds per wall second (1 on the wall clock).
    pub speed: f64,
}

/// Reports the store's counts and the ingest counters: `"status": "ok"` while all is
/// well, `"degraded"` with the reasons otherwise. 503 while the store does not answer
/// (reads fail too); 200 otherwise, also while ingest is held (journal appends or store
/// commits fail and are retried) or after the store refused entries (dead-lettered, the
/// rest stored), since the API still serves.
#[utoipa::path(get, path = "/health", tag = "ops", responses(
    (status = 200, description = "ok, or degraded by ingest (held, or entries refused and dead-lettered): the reasons say which", body = Health),
    (status = 503, description = "degraded: the store does not answer", body = Health)
), security(()))]
async fn health(State(state): State<AppState>) -> Response {
    let ingest = state.ingest.snapshot();
    let mut reasons = Vec::new();
    let mut unavailable = false;
    let stats = tokio::time::timeout(STORE_TIMEOUT, state.store.stats()).await;
    let store = match stats {
        Ok(Ok(stats)) => serde_json::to_value(stats).unwrap_or_default(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "health check: the store did not answer");
            let kind = store_error_kind(&error);
            unavailable = true;
            reasons.push(format!("the store does not answer ({kind})"));
            json!({ "error": kind })
        }
        Err(_) => {
            tracing::warn!(
                timeout_s = STORE_TIMEOUT.as_secs(),
                "health check: the store timed out"
            );
            unavailable = true;
            reasons.push(format!(
                "the store did not answer within {} s",
                STORE_TIMEOUT.as_secs()
            ));
            json!({ "error": "timeout" })
        }
    };
    reasons.extend(state.ingest.problems());
    let status = if reasons.is_empty() {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    let code = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = Health {
        status,
        reasons,
        store,
        ingest,
        clock: {
            let c = state.clock.status();
            ClockBody {
                kind: c.kind,
                now: c.now,
                speed: c.speed,
            }
        },
    };
    (code, Json(body)).into_response()
}

/// A short, stable word for the failure; the detail is in the log.
fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unavailable(_) => "unavailable",
        _ => "failure",
    }
}
