//! Reliability: history import (`POST /api/v1/reliability/import/{failures,maintenance}`,
//! roles quality and admin). Columns and rules: docs/reliability-data.md.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use fleetpulse_domain::dispatch::{NewAudit, Role};
use fleetpulse_domain::reliability::{ImportKind, ImportReport};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Who may import history (admin may do everything).
pub const IMPORTERS: &[Role] = &[Role::Quality];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reliability/import/failures", post(import_failures))
        .route(
            "/api/v1/reliability/import/maintenance",
            post(import_maintenance),
        )
}

/// Loads past failures from CSV (`Content-Type: text/csv`; header row with the columns
/// `serial`, `at` (RFC 3339), and optionally `runtime_hours`, `fault_code`,
/// `failure_mode`, `notes`). Bad rows are reported with their line number (the header is
/// line 1) and do not stop the good ones; rows imported before count as duplicates.
/// A header with an unknown or missing column refuses the file (422).
#[utoipa::path(post, path = "/api/v1/reliability/import/failures", tag = "reliability",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_failures(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import(caller, state, headers, body, ImportKind::Failures).await
}

/// Loads past services and consumable replacements from CSV (`Content-Type: text/csv`;
/// columns `serial`, `at` (RFC 3339), `kind` (`service` or `consumable`), and optionally
/// `runtime_hours`, `consumable` (required with kind consumable), `notes`). Same row
/// rules as the failure import.
#[utoipa::path(post, path = "/api/v1/reliability/import/maintenance", tag = "reliability",
    request_body(content = String, content_type = "text/csv", description = "CSV with a header row"),
    responses((status = 200, description = "What was loaded, and every refused row with its line and reason", body = ImportReport)))]
async fn import_maintenance(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ImportReport>, ApiError> {
    import(caller, state, headers, body, ImportKind::Maintenance).await
}

async fn import(
    caller: Caller,
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: ImportKind,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(IMPORTERS)?;
    let body = body.map_err(|r| ApiError::InvalidBody {
        status: r.status(),
        message: format!(
            "request body: {} (at most {} bytes)",
            r.body_text(),
            crate::MAX_BODY_BYTES
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
            action: match kind {
                ImportKind::Failures => "reliability.import_failures".into(),
                ImportKind::Maintenance => "reliability.import_maintenance".into(),
            },
            target: "reliability".into(),
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
