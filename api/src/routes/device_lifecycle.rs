//! Device lifecycle: status changes (`device-admin`), the status history, confirmed
//! failures and the full history of a serial (every role may read).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetpulse_domain::dispatch::{FailureEvent, StatusChange};
use fleetpulse_domain::store::{AlarmQuery, Device, OrderQuery};
use fleetpulse_domain::{Criticality, LifecycleStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, DEVICE_ADMINS, READERS};
use crate::error::ApiError;
use crate::extract::{self, Json as JsonBody, Path};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices/{serial}/status", post(change_status))
        .route("/api/v1/devices/{serial}/failures", get(failures))
        .route("/api/v1/devices/{serial}/history", get(history))
}

/// Body of `POST /api/v1/devices/{serial}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    /// `in_stock`, `in_transit`, `at_customer`, `in_repair` or `retired`.
    status: LifecycleStatus,
    /// With `at_customer`: how much the patient depends on it.
    #[serde(default)]
    criticality: Option<Criticality>,
    /// 1 to 100 characters.
    #[serde(default)]
    #[schema(pattern = "\\S", max_length = 100)]
    region: Option<String>,
    /// With `at_customer`: where it is (1 to 500 characters).
    #[serde(default)]
    #[schema(pattern = "\\S", max_length = 500)]
    address: Option<String>,
    /// Why (1 to 4000 characters).
    #[serde(default)]
    #[schema(pattern = "\\S", max_length = 4000)]
    reason: Option<String>,
}

fn too_long(field: &'static str, v: &Option<String>, max: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.trim().is_empty() || s.chars().count() > max => Err(ApiError::Unprocessable {
            code: "invalid_field",
            message: format!("{field} must be 1 to {max} characters"),
            details: Some(json!({ "field": field })),
        }),
        _ => Ok(()),
    }
}

/// Changes a device's lifecycle status; `at_customer` needs an address (given here or
/// already known). Recorded in the status history and the audit log.
#[utoipa::path(post, path = "/api/v1/devices/{serial}/status", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), request_body = StatusBody, responses((status = 200, description = "The device after the change", body = Device), (status = 422, description = "address_required (at_customer and no address, given or known), or invalid_field", body = crate::error::ErrorBody)))]
async fn change_status(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    JsonBody(b): JsonBody<StatusBody>,
) -> Result<Json<Device>, ApiError> {
    caller.require(DEVICE_ADMINS)?;
    let serial = extract::serial(&raw)?;
    too_long("region", &b.region, 100)?;
    too_long("address", &b.address, 500)?;
    too_long("reason", &b.reason, 4000)?;
    let current = state
        .store
        .device(&serial)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {serial} is not registered")))?;
    super::devices::require_address(
        Some(b.status),
        b.address.as_deref().or(current.device.address.as_deref()),
    )?;
    let change = StatusChange {
        status: b.status,
        criticality: b.criticality,
        region: b.region,
        address: b.address,
        reason: b.reason,
    };
    Ok(Json(
        state
            .dispatch
            .change_device_status(&serial, change, caller.actor)
            .await?,
    ))
}

/// Failure events of the device, oldest first: confirmed by a repair order or imported,
/// and alarm-sourced ones not (yet) confirmed (`source` says which); retracted ones (no
/// fault found) are left out.
#[utoipa::path(get, path = "/api/v1/devices/{serial}/failures", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), responses((status = 200, description = "Failure events (source repair_order, import or alarm; retracted ones left out), oldest first", body = Vec<FailureEvent>)))]
async fn failures(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<FailureEvent>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    if state.store.device(&serial).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "device {serial} is not registered"
        )));
    }
    Ok(Json(state.dispatch.failure_events(&serial).await?))
}

/// Everything about one serial: registry data and latest state, status history,
/// alarm episodes (newest 1000), orders (first 1000) and confirmed failures.
#[utoipa::path(get, path = "/api/v1/devices/{serial}/history", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), responses((status = 200, description = "Everything about the serial", body = serde_json::Value)))]
async fn history(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    let detail = state
        .store
        .device(&serial)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {serial} is not registered")))?;
    let status_history = state.dispatch.device_status_history(&serial).await?;
    let alarms = state
        .store
        .alarm_episodes(AlarmQuery {
            serial: serial.clone(),
            active: None,
            severity: None,
            code: None,
            from: None,
            to: None,
            after: None,
            limit: 1000,
        })
        .await?
        .items;
    let orders = state
        .store
        .list_orders(OrderQuery {
            serial: Some(serial.clone()),
            limit: 1000,
            ..OrderQuery::default()
        })
        .await?;
    let failures = state.dispatch.failure_events(&serial).await?;
    Ok(Json(json!({
        "device": detail.device,
        "latest": detail.latest,
        "status_history": status_history,
        "alarms": alarms,
        "orders": orders.items,
        "failures": failures,
    })))
}
