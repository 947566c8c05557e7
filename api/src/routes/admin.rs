//! API tokens (`admin`) and the audit log (`quality`, `admin`). The audit log is
//! read-only here: no route changes or deletes an entry, and the store refuses to.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use fleetpulse_domain::dispatch::{ApiToken, AuditEntry, AuditQuery, Role};
use fleetpulse_domain::store::Page;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{ADMINS, AUDITORS, Caller, new_token};
use crate::error::ApiError;
use crate::extract::{self, Json as JsonBody, LIST_LIMIT, Path, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// Who or what uses it, e.g. `fsm-integration` (1 to 128 characters).
    #[schema(pattern = "\\S", max_length = 128)]
    name: String,
    /// `dispatcher`, `planner`, `quality`, `admin` or `device-admin`.
    role: Role,
}

/// Creates a token and answers 201 with its secret, shown this once (only the digest is
/// kept).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin", request_body = NewTokenBody, responses((status = 201, description = "201: the token, with its secret shown once", body = serde_json::Value)))]
async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(b): JsonBody<NewTokenBody>,
) -> Result<Response, ApiError> {
    caller.require(ADMINS)?;
    let (secret, digest) = new_token()?;
    let t = state
        .dispatch
        .create_api_token(&b.name, b.role, digest, caller.actor)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": t.id, "name": t.name, "role": t.role, "created_at": t.created_at,
            "token": secret,
        })),
    )
        .into_response())
}

/// Every token (never a secret), revoked ones included.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin", responses((status = 200, description = "Every token (never a secret)", body = Vec<ApiToken>)))]
async fn list_tokens(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<ApiToken>>, ApiError> {
    caller.require(ADMINS)?;
    Ok(Json(state.dispatch.list_api_tokens().await?))
}

/// Revokes a token: it stops working at once. Idempotent.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin", params(("id" = i64, Path, description = "id")), responses((status = 200, description = "The revoked token", body = ApiToken)))]
async fn revoke_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ApiToken>, ApiError> {
    caller.require(ADMINS)?;
    let id: i64 = raw.parse().map_err(|_| {
        ApiError::parameter("id", format!("token id {raw:?} is not a whole number"))
    })?;
    let token = state.dispatch.revoke_api_token(id, caller.actor).await?;
    // its open order streams end now, not at their next event
    state.streams.token_revoked();
    Ok(Json(token))
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// e.g. `order:17`, `device:OC5-1`, `token:3`.
    target: Option<String>,
    /// e.g. `token:3:alice`.
    actor: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// The audit log, oldest first, keyset-paginated.
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(AuditParams), responses((status = 200, description = "The audit log, oldest first", body = Page<AuditEntry>)))]
async fn audit(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<AuditParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    caller.require(AUDITORS)?;
    let query = AuditQuery {
        target: p.target,
        actor: p.actor,
        after: extract::id_cursor(p.after.as_deref())?,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
    };
    Ok(Json(state.dispatch.audit_log(query).await?))
}
