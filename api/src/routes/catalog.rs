//! `GET /api/v1/catalog/models`: the loaded model and alarm catalog, for dispatch UIs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetpulse_domain::catalog::{Component, ModelSpec};
use serde::Serialize;

use crate::AppState;
use crate::auth::{Caller, READERS};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/catalog/models", get(models))
}

/// One model of the catalog: the keys of `catalog.toml` and its resolved components.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogModel<'a> {
    /// The model as in `catalog.toml` (`consumable` also lists every component with a
    /// `life_field`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    model: &'a ModelSpec,
    /// Its components: `[[model.component]]` entries, consumables and the implicit
    /// components of its failure alarms, with their failure modes and codes.
    components: &'a [Component],
}

/// Lists every model of the catalog the service runs with (as validated at start): kind,
/// default criticality, service interval, consumables and alarm codes with their severity,
/// solution text, labour, skill and parts. A JSON array ordered by model id; each model
/// has the keys of `catalog.toml` (`consumable`, `alarm`), so one reader serves both, plus
/// `components`: the resolved components with their failure modes (see
/// docs/reliability-data.md, "Catalog: components, failure modes, maintenance kinds").
#[utoipa::path(get, path = "/api/v1/catalog/models", tag = "catalog", responses((status = 200, description = "The loaded catalog", body = Vec<CatalogModel>)))]
async fn models(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let models: Vec<CatalogModel<'_>> = state
        .catalog
        .models()
        .map(|model| CatalogModel {
            model,
            components: state.catalog.components(model.id.as_str()),
        })
        .collect();
    Ok(Json(models).into_response())
}
