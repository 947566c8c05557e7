//! `GET /api/v1/catalog/models`: the loaded model and alarm catalog, for dispatch UIs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/catalog/models", get(models))
}

/// Lists every model of the catalog the service runs with (as validated at start): kind,
/// default criticality, service interval, consumables and alarm codes with their severity,
/// solution text, labour, skill and parts. A JSON array ordered by model id; each model
/// has the keys of `catalog.toml` (`consumable`, `alarm`), so one reader serves both.
async fn models(State(state): State<AppState>) -> Response {
    let models: Vec<_> = state.catalog.models().collect();
    Json(models).into_response()
}
