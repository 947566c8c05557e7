//! `GET /api/v1/catalog/models`: the loaded model and alarm catalog, for dispatch UIs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::auth::{Caller, READERS};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/catalog/models", get(models))
}

/// Lists every model of the catalog the service runs with (as validated at start): kind,
/// default criticality, service interval, consumables and alarm codes with their severity,
/// solution text, labour, skill and parts. A JSON array ordered by model id; each model
/// has the keys of `catalog.toml` (`consumable`, `alarm`), so one reader serves both.
#[utoipa::path(get, path = "/api/v1/catalog/models", tag = "catalog", responses((status = 200, description = "The loaded catalog", body = Vec<serde_json::Value>)))]
async fn models(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let models: Vec<_> = state.catalog.models().collect();
    Ok(Json(models).into_response())
}
