//! `/api/v1/webhooks…` (`admin`): register receivers of order events, see their delivery
//! log, disable them. See [`crate::push`] for delivery, retries and the signature.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetpulse_domain::store::Page;
use fleetpulse_domain::webhook::{Delivery, DeliveryState, Webhook};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{ADMINS, Caller, new_token};
use crate::error::ApiError;
use crate::extract::{self, Json as JsonBody, LIST_LIMIT, Path, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/webhooks", get(list).post(create))
        .route("/api/v1/webhooks/{id}/disable", post(disable))
        .route("/api/v1/webhooks/{id}/deliveries", get(deliveries))
}

/// Body of `POST /api/v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookBody {
    /// 1 to 128 characters.
    name: String,
    /// `https://…` (or `http://…`), at most 2000 characters.
    url: String,
    /// The HMAC key (16 to 256 characters); generated and shown once when absent.
    #[serde(default)]
    secret: Option<String>,
}

fn parse_url(raw: &str) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::Unprocessable {
        code: "invalid_field",
        message: format!("url {raw:?} {m}"),
        details: Some(json!({ "field": "url" })),
    };
    if raw.len() > 2000 {
        return Err(bad("is longer than 2000 characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL with a host"));
    }
    Ok(())
}

/// Registers a receiver; it gets every order event committed from now on. Answers 201
/// with the signing secret, shown this once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewWebhookBody, responses((status = 201, description = "201: the webhook, with its secret shown once", body = serde_json::Value)))]
async fn create(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(b): JsonBody<NewWebhookBody>,
) -> Result<Response, ApiError> {
    caller.require(ADMINS)?;
    if b.name.trim().is_empty() || b.name.chars().count() > 128 {
        return Err(ApiError::Unprocessable {
            code: "invalid_field",
            message: "name must be 1 to 128 characters".into(),
            details: Some(json!({ "field": "name" })),
        });
    }
    parse_url(&b.url)?;
    let secret = match b.secret {
        Some(s) if (16..=256).contains(&s.chars().count()) => s,
        Some(_) => {
            return Err(ApiError::Unprocessable {
                code: "invalid_field",
                message: "secret must be 16 to 256 characters".into(),
                details: Some(json!({ "field": "secret" })),
            });
        }
        None => new_token()?.0.replacen("fpt_", "whsec_", 1),
    };
    let w = state
        .webhooks
        .create_webhook(&b.name, &b.url, &secret, caller.actor)
        .await?;
    let mut body = serde_json::to_value(&w).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = body.as_object_mut() {
        o.insert("secret".into(), json!(secret));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Every webhook with its pending and dead delivery counts (never a secret).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", responses((status = 200, description = "Every webhook with pending and dead counts", body = Vec<Webhook>)))]
async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<Webhook>>, ApiError> {
    caller.require(ADMINS)?;
    Ok(Json(state.webhooks.list_webhooks().await?))
}

fn webhook_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::parameter("id", format!("webhook id {raw:?} is not a whole number")))
}

/// Stops deliveries to the receiver; its log stays.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/disable", tag = "webhooks", params(("id" = i64, Path, description = "id")), responses((status = 200, description = "The disabled webhook", body = Webhook)))]
async fn disable(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    caller.require(ADMINS)?;
    let id = webhook_id(&raw)?;
    Ok(Json(
        state.webhooks.disable_webhook(id, caller.actor).await?,
    ))
}

/// Query of the delivery log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryState>)]
    state: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// The delivery log, newest first (attempts, last status or error, next attempt),
/// keyset-paginated: `{"items": [...], "next": cursor|null}`; pass `next` back as `after`.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = i64, Path, description = "id"), DeliveryParams), responses((status = 200, description = "The delivery log, newest first, keyset-paginated", body = Page<Delivery>)))]
async fn deliveries(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<DeliveryParams>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    caller.require(ADMINS)?;
    let id = webhook_id(&raw)?;
    let filter = match p.state.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("dead") => Some(DeliveryState::Dead),
        Some(other) => {
            return Err(ApiError::parameter(
                "state",
                format!("state = {other:?} is not one of pending, delivered, dead"),
            ));
        }
    };
    let after = extract::id_cursor(p.after.as_deref())?;
    let limit = extract::limit(p.limit.as_deref(), LIST_LIMIT)?;
    Ok(Json(
        state.webhooks.deliveries(id, filter, after, limit).await?,
    ))
}
