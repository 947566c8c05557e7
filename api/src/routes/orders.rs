//! `/api/v1/orders…`: the work orders, their lifecycle and history.
//!
//! Reading: every role. Lifecycle steps (`acknowledge`, `assign`, `start`, `complete`,
//! `cancel`): `dispatcher`. Manual orders: `dispatcher`, `planner`. `admin` may do all.
//!
//! Optimistic concurrency: `GET /api/v1/orders/{id}` answers an `ETag` (the order's
//! `version`, e.g. `"3"`); every lifecycle step must send it back as `If-Match`. A stale
//! one answers 412 with the current version, a missing one 428, so two dispatchers cannot
//! overwrite each other silently. An illegal step answers 409 with the current status and
//! the allowed next ones.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use fleetpulse_domain::dispatch::{CompletionOutcome, OrderAction, OrderEvent, TransitionError};
use fleetpulse_domain::order::SlaState;
use fleetpulse_domain::order::{
    Cause, Order, OrderIntent, OrderKind, OrderStatus, PartRef, Priority,
};
use fleetpulse_domain::store::{OrderQuery, Page};
use fleetpulse_domain::{ModelId, Serial, device::UnknownValue};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Caller, DISPATCHERS, ORDER_CREATORS, READERS};
use crate::error::ApiError;
use crate::extract::{self, Json as JsonBody, LIST_LIMIT, Path, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders", get(list).post(create))
        .route("/api/v1/orders/{id}", get(one))
        .route("/api/v1/orders/{id}/history", get(history))
        .route("/api/v1/orders/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/orders/{id}/assign", post(assign))
        .route("/api/v1/orders/{id}/start", post(start))
        .route("/api/v1/orders/{id}/complete", post(complete))
        .route("/api/v1/orders/{id}/cancel", post(cancel))
}

/// Query of `GET /api/v1/orders`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// One status (`open`, `acknowledged`, `assigned`, `in_progress`, `completed`,
    /// `cancelled`), or `active` for every order not completed or cancelled. Default: all.
    status: Option<String>,
    serial: Option<String>,
    /// e.g. `filter_depletion`, `critical_alarm:E101`.
    cause: Option<String>,
    /// `maintenance`, `repair` or `inspection`.
    kind: Option<String>,
    /// `P1` (most urgent) to `P4`.
    priority: Option<String>,
    /// Devices' region.
    region: Option<String>,
    /// Devices' model id, e.g. `OC-5A`.
    model: Option<String>,
    /// `breached`, `at_risk` or `on_track` (active orders against their SLA deadlines, now).
    sla: Option<String>,
    /// Evaluate `sla` at this time instead of now (RFC 3339), e.g. "what will have
    /// breached by tomorrow 08:00".
    sla_at: Option<String>,
    /// Only orders changed at or after this time (RFC 3339): poll with the newest
    /// `updated_at` you saw.
    updated_since: Option<String>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<String>,
}

/// What `status=` asks for.
enum StatusFilter {
    One(OrderStatus),
    Active,
}

fn parse_status(s: &str) -> Result<StatusFilter, String> {
    if s == "active" {
        return Ok(StatusFilter::Active);
    }
    s.parse::<OrderStatus>()
        .map(StatusFilter::One)
        .map_err(|e: UnknownValue| {
            format!(
                "status = {:?} is not one of {}, active",
                e.value,
                e.allowed.join(", ")
            )
        })
}

/// Lists orders in id order, keyset-paginated: `{"items": [...], "next": cursor|null}`.
/// Filters combine: `?status=active&serial=OC5-000123&cause=filter_depletion`.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(ListParams), responses((status = 200, description = "Orders in id order, keyset-paginated", body = Page<Order>)))]
async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Order>>, ApiError> {
    caller.require(READERS)?;
    let status = extract::optional("status", p.status.as_deref(), parse_status)?;
    let query = OrderQuery {
        active_only: matches!(status, Some(StatusFilter::Active)),
        status: match status {
            Some(StatusFilter::One(s)) => Some(s),
            _ => None,
        },
        serial: extract::optional("serial", p.serial.as_deref(), Serial::parse)?,
        cause: extract::optional("cause", p.cause.as_deref(), Cause::parse)?,
        kind: extract::one_of::<OrderKind>("kind", p.kind.as_deref())?,
        // `p1` is as clear as `P1`
        priority: extract::one_of::<Priority>(
            "priority",
            p.priority.map(|s| s.to_ascii_uppercase()).as_deref(),
        )?,
        after: extract::id_cursor(p.after.as_deref())?,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
        region: extract::optional("region", p.region.as_deref(), short_text)?,
        model: extract::optional("model", p.model.as_deref(), ModelId::parse)?.map(String::from),
        updated_since: extract::time("updated_since", p.updated_since.as_deref())?,
        sla: match extract::one_of::<SlaState>("sla", p.sla.as_deref())? {
            Some(s) => Some((
                s,
                extract::time("sla_at", p.sla_at.as_deref())?.unwrap_or_else(Utc::now),
            )),
            None if p.sla_at.is_some() => {
                return Err(ApiError::parameter("sla_at", "sla_at needs sla="));
            }
            None => None,
        },
    };
    Ok(Json(state.store.list_orders(query).await?))
}

fn short_text(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().count() > 100 {
        return Err("must be 1 to 100 characters".into());
    }
    Ok(s.to_owned())
}

fn order_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::parameter("id", format!("order id {raw:?} is not a whole number")))
}

/// The order as JSON with its version as `ETag`.
fn with_etag(status: StatusCode, order: &Order) -> Response {
    let mut response = (status, Json(order)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", order.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// One order with its SLA deadlines, evidence, parts, trigger count and lifecycle
/// fields; its `version` is the `ETag`. 404 if no order has this id.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", params(("id" = i64, Path, description = "id")), responses((status = 200, description = "The order; ETag = its version", body = Order)))]
async fn one(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    let id = order_id(&raw)?;
    let order = state
        .store
        .order(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("order {id} does not exist")))?;
    Ok(with_etag(StatusCode::OK, &order))
}

/// Every change of the order, oldest first: who, when, from which state to which, and
/// what it carried.
#[utoipa::path(get, path = "/api/v1/orders/{id}/history", tag = "orders", params(("id" = i64, Path, description = "id")), responses((status = 200, description = "Every change, oldest first", body = serde_json::Value)))]
async fn history(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(READERS)?;
    let id = order_id(&raw)?;
    if state.store.order(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("order {id} does not exist")));
    }
    let events: Vec<OrderEvent> = state.dispatch.order_history(id).await?;
    Ok(Json(json!({ "order_id": id, "events": events })))
}

/// The version a client names in `If-Match`: `"3"`, `W/"3"` or `3`.
fn if_match(headers: &HeaderMap) -> Result<u32, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::Refused {
            status: StatusCode::PRECONDITION_REQUIRED,
            code: "if_match_required",
            message: "send the order's ETag (its version) as If-Match, e.g. `If-Match: \"3\"`, \
                      so a change made meanwhile by someone else is not overwritten"
                .into(),
            details: None,
        });
    };
    raw.to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| {
            ApiError::parameter(
                "If-Match",
                "If-Match must be the order's ETag, e.g. \"3\"".to_owned(),
            )
        })
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        let message = e.to_string();
        match e {
            TransitionError::NotFound(_) => ApiError::NotFound(message),
            TransitionError::Illegal {
                id,
                current,
                wanted,
                allowed,
            } => ApiError::Refused {
                status: StatusCode::CONFLICT,
                code: "illegal_transition",
                message: format!(
                    "{message}; allowed next: {}",
                    if allowed.is_empty() {
                        "none (the order is closed)".to_owned()
                    } else {
                        allowed
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                details: Some(json!({
                    "order_id": id,
                    "status": current,
                    "requested": wanted,
                    "allowed_next": allowed,
                })),
            },
            TransitionError::VersionMismatch {
                id,
                expected,
                current,
            } => ApiError::Refused {
                status: StatusCode::PRECONDITION_FAILED,
                code: "version_mismatch",
                message: format!("{message}; GET it again and retry with If-Match: \"{current}\""),
                details: Some(json!({
                    "order_id": id,
                    "if_match": expected,
                    "current_version": current,
                })),
            },
            TransitionError::Invalid(msg) => ApiError::Unprocessable {
                code: "invalid_change",
                message: msg,
                details: None,
            },
            TransitionError::Store(s) => s.into(),
        }
    }
}

async fn apply(
    caller: Caller,
    state: AppState,
    raw_id: &str,
    headers: &HeaderMap,
    action: OrderAction,
) -> Result<Response, ApiError> {
    caller.require(DISPATCHERS)?;
    let id = order_id(raw_id)?;
    let version = if_match(headers)?;
    let order = state
        .dispatch
        .transition(id, version, action, caller.actor, Utc::now())
        .await?;
    state.streams.order_changed();
    Ok(with_etag(StatusCode::OK, &order))
}

/// `open → acknowledged`: the dispatch side has seen the order (meets the respond SLA).
#[utoipa::path(post, path = "/api/v1/orders/{id}/acknowledge", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\"")), responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
async fn acknowledge(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    apply(caller, state, &raw, &headers, OrderAction::Acknowledge).await
}

/// Body of `POST /api/v1/orders/{id}/assign`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// Engineer id in the field-service system (1 to 128 characters).
    engineer: String,
    /// When the engineer plans to be on site (RFC 3339).
    #[serde(default)]
    planned_visit_at: Option<DateTime<Utc>>,
}

/// `acknowledged → assigned`, or a re-assignment of an assigned order.
#[utoipa::path(post, path = "/api/v1/orders/{id}/assign", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\"")), request_body = AssignBody, responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
async fn assign(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AssignBody>,
) -> Result<Response, ApiError> {
    let action = OrderAction::Assign {
        engineer: body.engineer,
        planned_visit_at: body.planned_visit_at,
    };
    apply(caller, state, &raw, &headers, action).await
}

/// `assigned → in_progress`: the engineer is on site.
#[utoipa::path(post, path = "/api/v1/orders/{id}/start", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\"")), responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
async fn start(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    apply(caller, state, &raw, &headers, OrderAction::Start).await
}

/// `in_progress → completed` with the outcome: a confirmed failure creates a failure
/// event, replaced consumables reset their life baseline, `device_status` changes the
/// device's lifecycle status.
#[utoipa::path(post, path = "/api/v1/orders/{id}/complete", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\"")), request_body = CompletionOutcome, responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
async fn complete(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    JsonBody(outcome): JsonBody<CompletionOutcome>,
) -> Result<Response, ApiError> {
    apply(
        caller,
        state,
        &raw,
        &headers,
        OrderAction::Complete(outcome),
    )
    .await
}

/// Body of `POST /api/v1/orders/{id}/cancel`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why (1 to 4000 characters).
    reason: String,
}

/// Any active state `→ cancelled`, with the reason.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\"")), request_body = CancelBody, responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
async fn cancel(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CancelBody>,
) -> Result<Response, ApiError> {
    let action = OrderAction::Cancel {
        reason: body.reason,
    };
    apply(caller, state, &raw, &headers, action).await
}

/// Body of `POST /api/v1/orders`: a dispatcher's or planner's own order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderBody {
    serial: Serial,
    /// With the serial, the dedupe key: e.g. `customer_call`, `inspection:annual`.
    cause: Cause,
    kind: OrderKind,
    /// Default: the policy's `manual` priority (one step more urgent for
    /// life-supporting devices).
    #[serde(default)]
    priority: Option<Priority>,
    /// 1 to 200 characters.
    title: String,
    #[serde(default)]
    solution: Option<String>,
    #[serde(default)]
    skills: Vec<String>,
    #[serde(default)]
    parts: Vec<PartRef>,
    #[serde(default)]
    labour_minutes: Option<u32>,
    /// Free text kept as the order's evidence.
    #[serde(default)]
    notes: Option<String>,
}

fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(ApiError::Unprocessable {
            code: "invalid_field",
            message: format!("{field} must be 1 to {max} characters"),
            details: Some(json!({ "field": field })),
        });
    }
    Ok(())
}

fn validate_new_order(b: &NewOrderBody) -> Result<(), ApiError> {
    check_len("title", &b.title, 200)?;
    if let Some(s) = &b.solution {
        check_len("solution", s, 4000)?;
    }
    if let Some(n) = &b.notes {
        check_len("notes", n, 4000)?;
    }
    if b.skills.len() > 20 || b.parts.len() > 50 {
        return Err(ApiError::Unprocessable {
            code: "invalid_field",
            message: "at most 20 skills and 50 parts".into(),
            details: None,
        });
    }
    for s in &b.skills {
        check_len("skills[]", s, 64)?;
    }
    for p in &b.parts {
        check_len("parts[].number", &p.number, 128)?;
        check_len("parts[].name", &p.name, 200)?;
    }
    Ok(())
}

/// Creates an order by hand. The dedupe rule is the rules' own: while an order for the
/// same (serial, cause) is active, the request updates it (trigger count, evidence) and
/// answers 200 with it; otherwise 201 with the new order and its `Location`.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", request_body = NewOrderBody, responses((status = 201, description = "201: created; 200: the active order for the same (serial, cause), updated", body = Order), (status = 200, description = "the active order for the same (serial, cause), updated", body = Order)))]
async fn create(
    caller: Caller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewOrderBody>,
) -> Result<Response, ApiError> {
    caller.require(ORDER_CREATORS)?;
    validate_new_order(&body)?;
    let device =
        state
            .store
            .device(&body.serial)
            .await?
            .ok_or_else(|| ApiError::Unprocessable {
                code: "unknown_device",
                message: format!("device {} is not registered", body.serial),
                details: Some(json!({ "field": "serial" })),
            })?;
    let now = Utc::now();
    let priority = body.priority.unwrap_or_else(|| {
        state
            .policy
            .priority_for(state.policy.priority.manual, device.device.criticality)
    });
    let intent = OrderIntent {
        serial: body.serial,
        cause: body.cause,
        kind: body.kind,
        priority,
        title: body.title,
        solution: body.solution.unwrap_or_default(),
        skills: body.skills,
        parts: body.parts,
        labour_minutes: body.labour_minutes.unwrap_or(0),
        evidence: json!({ "manual": true, "by": caller.actor.0, "notes": body.notes }),
        triggered_at: now,
        sla: state.policy.sla_for(priority, now),
        // a person reporting (again) is a trigger episode of its own
        new_episode: true,
    };
    let (order, created) = state
        .dispatch
        .create_manual_order(intent, caller.actor)
        .await?;
    state.streams.order_changed();
    let mut response = with_etag(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &order,
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(response)
}
