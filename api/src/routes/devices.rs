//! `/api/v1/devices…`: the registry, each device's state, readings, rollups and alarms.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Duration;
use fleetpulse_domain::catalog::is_catalog_id;
use fleetpulse_domain::store::{
    AlarmQuery, Device, DeviceDetail, DeviceQuery, DeviceSummary, NewDevice, Page, ReadingQuery,
    Rollup, StoreError, StoredReading,
};
use fleetpulse_domain::{AlarmCode, AlarmEpisode, LifecycleStatus, ModelId, Serial, Severity};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Caller, DEVICE_ADMINS, READERS};
use crate::error::ApiError;
use crate::extract::{self, Json as JsonBody, LIST_LIMIT, Path, Query, READING_LIMIT};
use fleetpulse_domain::dispatch::NewAudit;

/// The window `rollups` covers when the client names no `from`.
const DEFAULT_ROLLUP_WINDOW_HOURS: i64 = 24;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list).post(register))
        .route("/api/v1/devices/{serial}", get(detail))
        .route("/api/v1/devices/{serial}/readings", get(readings))
        .route("/api/v1/devices/{serial}/rollups", get(rollups))
        .route("/api/v1/devices/{serial}/alarms", get(alarms))
}

/// Query of `GET /api/v1/devices`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` cursor of the previous page (a serial: the list goes on after it).
    after: Option<String>,
    /// Lifecycle status.
    #[param(value_type = Option<LifecycleStatus>)]
    status: Option<String>,
    /// Model id, e.g. `OC-5A`.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    model: Option<String>,
    /// Region (1 to 100 characters), as registered.
    #[param(value_type = Option<String>, min_length = 1, max_length = 100)]
    region: Option<String>,
    /// Criticality.
    #[param(value_type = Option<fleetpulse_domain::Criticality>)]
    criticality: Option<String>,
}

/// Lists devices in serial order with their latest state, keyset-paginated:
/// `{"items": [...], "next": cursor|null}`; pass `next` back as `after`.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(ListParams), responses((status = 200, description = "Devices with latest state, keyset-paginated", body = Page<DeviceSummary>)))]
async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<DeviceSummary>>, ApiError> {
    caller.require(READERS)?;
    let query = DeviceQuery {
        after: p.after,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
        status: extract::one_of::<LifecycleStatus>("status", p.status.as_deref())?,
        model: extract::optional("model", p.model.as_deref(), ModelId::parse)?.map(String::from),
        region: extract::optional("region", p.region.as_deref(), |s: &str| {
            if s.is_empty() || s.chars().count() > 100 {
                Err("must be 1 to 100 characters".to_owned())
            } else {
                Ok(s.to_owned())
            }
        })?,
        criticality: extract::one_of::<fleetpulse_domain::Criticality>(
            "criticality",
            p.criticality.as_deref(),
        )?,
    };
    Ok(Json(state.store.list_devices(query).await?))
}

/// Registers a device (`NewDevice` as JSON; unknown fields are refused). Answers 201 with
/// the device and its `Location`, 409 if the serial is registered already, 422 if the
/// model is not in the catalog or the device is `at_customer` without an address. A
/// device that announced itself over telemetry
/// (`unassigned`) is completed by its registration.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = NewDevice, responses((status = 201, description = "201: registered; Location names it", body = Device), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 422, description = "unknown_model, or address_required (at_customer without an address)", body = crate::error::ErrorBody)))]
async fn register(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(new): JsonBody<NewDevice>,
) -> Result<Response, ApiError> {
    caller.require(DEVICE_ADMINS)?;
    let device = register_one(&state, new).await?;
    tracing::info!(serial = %device.serial, "device registered");
    state
        .dispatch
        .append_audit(NewAudit {
            actor: caller.actor,
            action: "device.register".into(),
            target: format!("device:{}", device.serial),
            before: None,
            after: serde_json::to_value(&device).ok(),
        })
        .await?;
    let location = format!("/api/v1/devices/{}", device.serial);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(device),
    )
        .into_response())
}

/// One device: registry data, latest state, open alarm episodes and active orders.
#[utoipa::path(get, path = "/api/v1/devices/{serial}", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), responses((status = 200, description = "Latest state, open alarms, active orders", body = DeviceDetail)))]
async fn detail(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    state
        .store
        .device(&serial)
        .await?
        .map(Json)
        .ok_or_else(|| not_registered(&serial))
}

/// Query of `GET /api/v1/devices/{serial}/readings`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadingParams {
    /// Inclusive start (device time, RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Exclusive end (device time, RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^-?[0-9]{1,18}_[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// Raw readings of one device in device-time order (then seq), keyset-paginated:
/// `{"items": [...], "next": cursor|null}`; pass `next` back as `after`. `from`
/// inclusive, `to` exclusive.
#[utoipa::path(get, path = "/api/v1/devices/{serial}/readings", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), ReadingParams), responses((status = 200, description = "Raw readings in device-time order, keyset-paginated", body = Page<StoredReading>)))]
async fn readings(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<ReadingParams>,
) -> Result<Json<Page<StoredReading>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    let from = extract::time("from", p.from.as_deref())?;
    let to = extract::time("to", p.to.as_deref())?;
    extract::ordered_range(from, to)?;
    let page = state
        .store
        .readings(ReadingQuery {
            serial: serial.clone(),
            from,
            to,
            after: extract::reading_cursor(p.after.as_deref())?,
            limit: extract::limit(p.limit.as_deref(), READING_LIMIT)?,
        })
        .await?;
    if page.items.is_empty() {
        ensure_registered(&state, &serial).await?;
    }
    Ok(Json(page))
}

/// Query of `GET /api/v1/devices/{serial}/rollups`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RollupParams {
    /// Only this field (`flow_lpm`, `runtime_hours`, …); default every field.
    #[param(value_type = Option<String>, pattern = "^[a-z][a-z0-9_]{0,63}$")]
    field: Option<String>,
    /// Inclusive start hour (RFC 3339); default 24 h before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Exclusive end (RFC 3339); default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// Hourly rollups (count, sum, min, max, last per field) of one device in `[from, to)`,
/// as a JSON array; the last 24 hours by default; with `field`, of that field only.
#[utoipa::path(get, path = "/api/v1/devices/{serial}/rollups", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), RollupParams), responses((status = 200, description = "Hourly rollups", body = Vec<Rollup>)))]
async fn rollups(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<RollupParams>,
) -> Result<Json<Vec<Rollup>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    if let Some(f) = p.field.as_deref()
        && !is_catalog_id(f)
    {
        return Err(ApiError::parameter(
            "field",
            format!("{f:?} is not a field name ([a-z][a-z0-9_]{{0,63}})"),
        ));
    }
    let from = extract::time("from", p.from.as_deref())?;
    let to = extract::time("to", p.to.as_deref())?.unwrap_or(state.clock.now());
    let from = from.unwrap_or(to - Duration::hours(DEFAULT_ROLLUP_WINDOW_HOURS));
    extract::ordered_range(Some(from), Some(to))?;
    let rows = match p.field.as_deref() {
        Some(field) => state.store.field_rollups(&serial, field, from, to).await?,
        None => state.store.rollups(&serial, from, to).await?,
    };
    if rows.is_empty() {
        ensure_registered(&state, &serial).await?;
    }
    Ok(Json(rows))
}

/// Query of `GET /api/v1/devices/{serial}/alarms`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlarmParams {
    /// `true`: only episodes still open; `false`: only ended ones; absent: both.
    #[param(value_type = Option<bool>)]
    active: Option<String>,
    /// Only this severity (from the catalog when the episode opened).
    #[param(value_type = Option<Severity>)]
    severity: Option<String>,
    /// Only this alarm code, e.g. `E101`.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9._-]{1,32}$")]
    code: Option<String>,
    /// Episodes that started at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Episodes that started before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^-?[0-9]{1,18}_[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Alarm episodes of one device, newest first (by start, then id), keyset-paginated:
/// `{"items": [...], "next": cursor|null}`; pass `next` back as `after`. Filters
/// combine: `?active=true&severity=critical`. An episode still active has
/// `ended_at: null`; one loaded by `POST /api/v1/history/import/alarms` has
/// `imported: true`.
#[utoipa::path(get, path = "/api/v1/devices/{serial}/alarms", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), AlarmParams), responses((status = 200, description = "Alarm episodes, newest first, keyset-paginated", body = Page<AlarmEpisode>)))]
async fn alarms(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<AlarmParams>,
) -> Result<Json<Page<AlarmEpisode>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    let from = extract::time("from", p.from.as_deref())?;
    let to = extract::time("to", p.to.as_deref())?;
    extract::ordered_range(from, to)?;
    let query = AlarmQuery {
        serial: serial.clone(),
        active: extract::optional("active", p.active.as_deref(), |s| match s {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("active = {other:?} is not one of true, false")),
        })?,
        severity: extract::one_of::<Severity>("severity", p.severity.as_deref())?,
        code: extract::optional("code", p.code.as_deref(), AlarmCode::parse)?,
        from,
        to,
        after: extract::reading_cursor(p.after.as_deref())?,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
    };
    let page = state.store.alarm_episodes(query).await?;
    if page.items.is_empty() {
        ensure_registered(&state, &serial).await?;
    }
    Ok(Json(page))
}

/// Registers one device as `POST /api/v1/devices` and each row of an import do, with
/// the same checks and the same errors: 422 `unknown_model`, 422 `address_required`,
/// 409 when the serial is registered already.
pub(crate) async fn register_one(state: &AppState, new: NewDevice) -> Result<Device, ApiError> {
    if state.catalog.model(new.model.as_str()).is_none() {
        let known: Vec<&str> = state.catalog.models().map(|m| m.id.as_str()).collect();
        return Err(ApiError::Unprocessable {
            code: "unknown_model",
            message: format!(
                "model {} is not in the catalog; known models: {}",
                new.model,
                known.join(", ")
            ),
            details: Some(json!({ "field": "model", "known_models": known })),
        });
    }
    // registering completes an `unassigned` device and replaces its address: only the
    // address given here counts
    require_address(new.status, new.address.as_deref())?;
    new.check_history(state.clock.now())
        .map_err(|message| ApiError::Unprocessable {
            code: "invalid_body",
            message,
            details: None,
        })?;
    let serial = new.serial.clone();
    state.store.register_device(new).await.map_err(|e| match e {
        StoreError::Conflict(_) => {
            ApiError::Conflict(format!("device {serial} is already registered"))
        }
        other => other.into(),
    })
}

/// A device at a customer needs an address (where the engineer goes): every route that
/// can put a device there (register, import, status change, with `address` the one it
/// will have; an order's completion, see [`address_required`]) refuses it the same way,
/// 422 `address_required`.
pub(crate) fn require_address(
    status: Option<LifecycleStatus>,
    address: Option<&str>,
) -> Result<(), ApiError> {
    match status {
        Some(status) if !status.allows_address(address) => Err(address_required()),
        _ => Ok(()),
    }
}

/// The one answer to a device put at a customer without an address (the order
/// completion route gives it too, for `device_status: at_customer`).
pub(crate) fn address_required() -> ApiError {
    ApiError::Unprocessable {
        code: "address_required",
        message: "a device at a customer needs an address".into(),
        details: Some(json!({ "field": "address" })),
    }
}

fn not_registered(serial: &Serial) -> ApiError {
    ApiError::NotFound(format!("device {serial} is not registered"))
}

/// An empty list for an unknown serial would hide a typo: answer 404 instead. Only asked
/// when the list is empty, so a busy device costs no extra query.
async fn ensure_registered(state: &AppState, serial: &Serial) -> Result<(), ApiError> {
    match state.store.device(serial).await? {
        Some(_) => Ok(()),
        None => Err(not_registered(serial)),
    }
}
