//! History of any age: imports (`POST /api/v1/history/import/{kind}`, CSV with a header
//! row; roles quality and admin, device-admin for devices) and read-back per device
//! (`GET /api/v1/devices/{serial}/maintenance`, `…/meters`; imported alarm episodes in
//! `…/alarms`, routes/devices.rs). The columns of each kind:
//! docs/reliability-data.md, "History import".

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetpulse_domain::catalog::is_catalog_id;
use fleetpulse_domain::dispatch::NewAudit;
use fleetpulse_domain::history::{DeviceComponent, MaintenanceEntry, MeterQuery, MeterValue};
use fleetpulse_domain::reliability::{ImportKind, ImportReport};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Caller, DEVICE_ADMINS, READERS};
use crate::error::ApiError;
use crate::extract::{self, Path, Query, READING_LIMIT};
use crate::routes::reliability::IMPORTERS;

/// Largest history file one request takes (the CLI has no limit).
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/history/import/devices", post(import_devices))
        .route("/api/v1/history/import/failures", post(import_failures))
        .route(
            "/api/v1/history/import/maintenance",
            post(import_maintenance),
        )
        .route("/api/v1/history/import/meters", post(import_meters))
        .route("/api/v1/history/import/telemetry", post(import_telemetry))
        .route("/api/v1/history/import/alarms", post(import_alarms))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT_BYTES))
        .route("/api/v1/devices/{serial}/maintenance", get(maintenance))
        .route("/api/v1/devices/{serial}/components", get(components))
        .route("/api/v1/devices/{serial}/meters", get(meters))
}

/// Registers devices with their commissioning (columns `serial`, `model`, `status`,
/// `criticality`, `region`, `address`, `commissioned_at`, `runtime_hours_at_registration`,
/// `observed_from`; role device-admin). A serial registered with the same values is a
/// duplicate; with other values it is refused on its line (an import does not update).
#[utoipa::path(post, path = "/api/v1/history/import/devices", tag = "history",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_devices(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Devices,
        "history",
        MAX_IMPORT_BYTES,
    )
    .await
}

/// Loads past failures (columns `serial`, `at`, `runtime_hours`, `fault_code`,
/// `failure_mode`, `component`, `notes`), as `POST /api/v1/reliability/import/failures`.
#[utoipa::path(post, path = "/api/v1/history/import/failures", tag = "history",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_failures(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Failures,
        "history",
        MAX_IMPORT_BYTES,
    )
    .await
}

/// Loads past maintenance (columns `serial`, `at`, `kind`, `runtime_hours`, `component`,
/// `consumable`, `notes`; `kind` a maintenance kind of the catalog), as
/// `POST /api/v1/reliability/import/maintenance`.
#[utoipa::path(post, path = "/api/v1/history/import/maintenance", tag = "history",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_maintenance(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Maintenance,
        "history",
        MAX_IMPORT_BYTES,
    )
    .await
}

/// Loads meter history (columns `serial`, `at`, then one column per cumulative meter in
/// hours: `runtime_hours`, the contract's hour meters and the fields components age on).
/// Kept per reading and merged into the hourly rollups where the hour has no live data.
#[utoipa::path(post, path = "/api/v1/history/import/meters", tag = "history",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_meters(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Meters,
        "history",
        MAX_IMPORT_BYTES,
    )
    .await
}

/// Back-fills telemetry of registered devices, of any age (columns `serial`, `at`, then
/// one column per telemetry field). Checked as live readings are, but for their age;
/// written as hourly rollups. An hour holding live telemetry is refused on its lines; an
/// hour back-filled before with the same rows is a duplicate.
#[utoipa::path(post, path = "/api/v1/history/import/telemetry", tag = "history",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_telemetry(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Telemetry,
        "history",
        MAX_IMPORT_BYTES,
    )
    .await
}

/// Loads past alarm (error) events as ended alarm episodes (columns `serial`,
/// `started_at`, `ended_at`, `code`, `severity`, `runtime_hours`; an empty `ended_at` is
/// an instant event). Any code the live ingest takes; no failure event, order or rule
/// follows. An episode overlapping the device's open live episode of its code is refused
/// on its line; one overlapping an ended live episode is the same incident, not loaded.
/// Read back with `GET /api/v1/devices/{serial}/alarms` (`imported: true`).
#[utoipa::path(post, path = "/api/v1/history/import/alarms", tag = "history",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_alarms(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import_csv(
        caller,
        state,
        headers,
        body,
        ImportKind::Alarms,
        "history",
        MAX_IMPORT_BYTES,
    )
    .await
}

/// The CSV import behind `POST /api/v1/history/import/{kind}` and
/// `POST /api/v1/reliability/import/{kind}`: `area` names the audit action
/// (`{area}.import_{kind}`) and target, `max_bytes` the route's body limit.
pub(crate) async fn import_csv(
    caller: Caller,
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: ImportKind,
    area: &'static str,
    max_bytes: usize,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(if kind == ImportKind::Devices {
        DEVICE_ADMINS
    } else {
        IMPORTERS
    })?;
    let body = body.map_err(|r| ApiError::InvalidBody {
        status: r.status(),
        message: format!(
            "request body: {} (at most {max_bytes} bytes)",
            r.body_text()
        ),
    })?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("text/csv") {
        return Err(ApiError::InvalidBody {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "send the history as text/csv".into(),
        });
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| ApiError::InvalidBody {
        status: StatusCode::BAD_REQUEST,
        message: "the CSV is not UTF-8".into(),
    })?;
    let report = state.reliability.import_history(kind, text).await?;
    state
        .dispatch
        .append_audit(NewAudit {
            actor: caller.actor,
            action: format!("{area}.import_{}", kind.as_str()),
            target: area.into(),
            before: None,
            after: Some(json!({
                "rows": report.rows,
                "imported": report.imported,
                "duplicates": report.duplicates,
                "refused": report.errors.len(),
            })),
        })
        .await?;
    Ok(Json(report))
}

async fn ensure_registered(
    state: &AppState,
    serial: &fleetpulse_domain::Serial,
) -> Result<(), ApiError> {
    match state.store.device(serial).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!(
            "device {serial} is not registered"
        ))),
    }
}

/// The device's maintenance, oldest first: imported records (source `import`) and the
/// consumables replaced when its maintenance orders were completed (source `order`).
#[utoipa::path(get, path = "/api/v1/devices/{serial}/maintenance", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), responses((status = 200, description = "Maintenance records, oldest first", body = Vec<MaintenanceEntry>)))]
async fn maintenance(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<MaintenanceEntry>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    ensure_registered(&state, &serial).await?;
    Ok(Json(state.reliability.device_maintenance(&serial).await?))
}

/// Query of `GET /api/v1/devices/{serial}/components`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ComponentParams {
    /// The components as they were at this instant (RFC 3339, not in the future): nothing
    /// recorded at or after it is read. Default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    as_of: Option<String>,
}

/// The device's catalog components: for each, the part fitted now (when it was fitted
/// and its age on its axis: runtime hours, another meter or calendar hours) and its
/// lives since the device was observed (installation or renewal to failure, or a
/// suspension), the material of the Weibull fits per component.
#[utoipa::path(get, path = "/api/v1/devices/{serial}/components", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), ComponentParams), responses((status = 200, description = "Components in catalog order", body = Vec<DeviceComponent>)))]
async fn components(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<ComponentParams>,
) -> Result<Json<Vec<DeviceComponent>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    let as_of = extract::time("as_of", p.as_of.as_deref())?;
    if let Some(t) = as_of
        && t > state.clock.now()
    {
        return Err(ApiError::parameter(
            "as_of",
            format!("as_of ({}) is in the future", t.to_rfc3339()),
        ));
    }
    ensure_registered(&state, &serial).await?;
    Ok(Json(
        state.reliability.device_components(&serial, as_of).await?,
    ))
}

/// Query of `GET /api/v1/devices/{serial}/meters`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MeterParams {
    /// One meter field (`runtime_hours`, `blower_hours`, …); default every meter field
    /// of the device.
    #[param(value_type = Option<String>, pattern = "^[a-z][a-z0-9_]{0,63}$")]
    field: Option<String>,
    /// Inclusive start (RFC 3339); default: the beginning.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Exclusive end (RFC 3339); default: no end.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// At most this many values, oldest first, 1 to 10 000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// The device's meter values, oldest first: imported meter history (source `import`,
/// at the reading's time) and the last value of each hour of telemetry (source `live`,
/// or `backfill` for a telemetry import; at the start of the hour).
#[utoipa::path(get, path = "/api/v1/devices/{serial}/meters", tag = "devices", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), MeterParams), responses((status = 200, description = "Meter values, oldest first", body = Vec<MeterValue>)))]
async fn meters(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<MeterParams>,
) -> Result<Json<Vec<MeterValue>>, ApiError> {
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
    let to = extract::time("to", p.to.as_deref())?;
    extract::ordered_range(from, to)?;
    let limit = extract::limit(p.limit.as_deref(), READING_LIMIT)?;
    ensure_registered(&state, &serial).await?;
    let query = MeterQuery {
        field: p.field,
        from,
        to,
        limit,
    };
    Ok(Json(state.reliability.device_meters(&serial, query).await?))
}
