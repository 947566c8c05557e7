//! `POST /api/v1/devices/import` (`device-admin`): register many serials at once, from
//! CSV (`Content-Type: text/csv`, a header row naming the columns `serial`, `model` and
//! optionally `status`, `criticality`, `region`, `address`, `commissioned_at`,
//! `runtime_hours_at_registration`, `observed_from`; RFC 4180 quoting) or JSON
//! (an array of the bodies `POST /api/v1/devices` takes). Each good row is registered;
//! each bad one is reported with its row number and reason, never silently dropped.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use axum::{Json, Router};
use fleetpulse_domain::csv::split_line;
use fleetpulse_domain::dispatch::NewAudit;
use fleetpulse_domain::store::NewDevice;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, DEVICE_ADMINS};
use crate::error::ApiError;
use crate::routes::devices::register_one;

/// Most rows one import takes.
pub const MAX_ROWS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/devices/import", post(import))
}

/// One import row: its row number and the device as JSON, or why it cannot be read.
type Row = (usize, Result<Value, String>);

/// CSV rows as JSON objects (empty cells are left out), with their line numbers.
fn csv_rows(text: &str) -> Result<Vec<Row>, ApiError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| ApiError::Unprocessable {
        code: "empty_import",
        message: "the CSV has no header row".into(),
        details: None,
    })?;
    let names: Vec<String> = split_line(header.trim_start_matches('\u{feff}'))
        .map_err(|e| ApiError::Unprocessable {
            code: "invalid_csv",
            message: format!("header: {e}"),
            details: None,
        })?
        .into_iter()
        .map(|n| n.trim().to_owned())
        .collect();
    const KNOWN: [&str; 9] = [
        "serial",
        "model",
        "status",
        "criticality",
        "region",
        "address",
        "commissioned_at",
        "runtime_hours_at_registration",
        "observed_from",
    ];
    if let Some(bad) = names.iter().find(|n| !KNOWN.contains(&n.as_str())) {
        return Err(ApiError::Unprocessable {
            code: "invalid_csv",
            message: format!("unknown column {bad:?}; columns are {}", KNOWN.join(", ")),
            details: Some(json!({ "column": bad })),
        });
    }
    Ok(lines
        .map(|(i, line)| {
            let row = split_line(line).and_then(|cells| {
                if cells.len() != names.len() {
                    return Err(format!(
                        "{} cells, the header has {}",
                        cells.len(),
                        names.len()
                    ));
                }
                let obj: serde_json::Map<String, Value> = names
                    .iter()
                    .zip(cells)
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(k, v)| (k.clone(), cell(k, v.trim())))
                    .collect();
                Ok(Value::Object(obj))
            });
            (i + 1, row)
        })
        .collect())
}

/// A CSV cell as JSON: the meter at registration as a number when it is one (else the
/// text, which the body's type then refuses, naming it).
fn cell(column: &str, v: &str) -> Value {
    match (column, v.parse::<f64>()) {
        ("runtime_hours_at_registration", Ok(n)) if n.is_finite() => Value::from(n),
        _ => Value::String(v.to_owned()),
    }
}

/// A row that `POST /api/v1/devices` would have refused, with that answer's status, code,
/// message and details.
fn row_error(row: usize, serial: &fleetpulse_domain::Serial, e: ApiError) -> Value {
    json!({
        "row": row,
        "serial": serial,
        "status": e.status().as_u16(),
        "code": e.code(),
        "message": e.to_string(),
        "details": e.details(),
    })
}

/// Registers every good row; answers 200 with `{"registered": n, "failed": n, "errors": [...]}`.
#[utoipa::path(post, path = "/api/v1/devices/import", tag = "devices", request_body(description = "CSV, or a JSON array of the bodies POST /api/v1/devices takes; each row is checked on its own and a bad one is reported in `errors`", content((String = "text/csv"), (Vec<serde_json::Value> = "application/json"))), responses((status = 200, description = "Registered and failed rows", body = serde_json::Value)))]
async fn import(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(DEVICE_ADMINS)?;
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
    let rows: Vec<Row> = if ctype.starts_with("text/csv") {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::InvalidBody {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: "the CSV is not UTF-8".into(),
        })?;
        csv_rows(text)?
    } else if ctype.starts_with("application/json") {
        let items: Vec<Value> =
            serde_json::from_slice(&body).map_err(|e| ApiError::InvalidBody {
                status: axum::http::StatusCode::BAD_REQUEST,
                message: format!("request body: expected a JSON array of devices: {e}"),
            })?;
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, Ok(v)))
            .collect()
    } else {
        return Err(ApiError::InvalidBody {
            status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "send text/csv or application/json".into(),
        });
    };
    if rows.len() > MAX_ROWS {
        return Err(ApiError::InvalidBody {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("{} rows; at most {MAX_ROWS} per import", rows.len()),
        });
    }
    let (mut registered, mut errors) = (Vec::new(), Vec::new());
    for (row, parsed) in rows {
        let result =
            parsed.and_then(|v| serde_json::from_value::<NewDevice>(v).map_err(|e| e.to_string()));
        let device = match result {
            Ok(d) => d,
            Err(e) => {
                errors.push(json!({ "row": row, "status": 422, "code": "invalid_body", "message": e, "details": null }));
                continue;
            }
        };
        let serial = device.serial.clone();
        match register_one(&state, device).await {
            Ok(d) => registered.push(d.serial.to_string()),
            // the row fails as `POST /api/v1/devices` would have refused it
            Err(e) if e.status().is_client_error() => errors.push(row_error(row, &serial, e)),
            Err(e) => return Err(e),
        }
    }
    state
        .dispatch
        .append_audit(NewAudit {
            actor: caller.actor,
            action: "device.import".into(),
            target: "devices".into(),
            before: None,
            after: Some(json!({ "registered": registered, "failed": errors.len() })),
        })
        .await?;
    Ok(Json(json!({
        "registered": registered.len(),
        "failed": errors.len(),
        "serials": registered,
        "errors": errors,
    })))
}
