//! `/api/v1/orders…`: the work orders, their lifecycle and history.
//!
//! Reading: every role. Lifecycle steps (`acknowledge`, `assign`, `start`, `complete`,
//! `cancel`): `dispatcher`. Manual orders: `dispatcher`, `planner`. `admin` may do all.
//!
//! Optimistic concurrency: `GET /api/v1/orders/{id}` answers an `ETag` (the order's
//! `version`, e.g. `"3"`); every lifecycle step must send it back as `If-Match`, compared
//! strongly (RFC 9110 §13.1.1: a weak `W/"3"` never matches; `*` matches any version of
//! an order that exists). A stale one answers 412 with the current version, a missing
//! one 428, so two dispatchers cannot overwrite each other silently. An illegal step answers 409 with the current status and
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
    #[param(value_type = Option<String>, pattern = "^(open|acknowledged|assigned|in_progress|completed|cancelled|active)$")]
    status: Option<String>,
    /// Device serial.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    serial: Option<String>,
    /// e.g. `filter_depletion`, `critical_alarm:E101`.
    #[param(value_type = Option<String>, pattern = "^[a-z0-9_]+(:[A-Za-z0-9_.-]+)?$", max_length = 80)]
    cause: Option<String>,
    /// `maintenance`, `repair` or `inspection`.
    #[param(value_type = Option<OrderKind>)]
    kind: Option<String>,
    /// `P1` (most urgent) to `P4` (`p1` … `p4` too).
    #[param(value_type = Option<String>, pattern = "^[Pp][1-4]$")]
    priority: Option<String>,
    /// Devices' region (1 to 100 characters).
    #[param(value_type = Option<String>, min_length = 1, max_length = 100)]
    region: Option<String>,
    /// Devices' model id, e.g. `OC-5A`.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    model: Option<String>,
    /// `breached`, `at_risk` or `on_track` (active orders against their SLA deadlines, now).
    #[param(value_type = Option<SlaState>)]
    sla: Option<String>,
    /// With `sla`: evaluate it at this time instead of now (RFC 3339), e.g. "what will
    /// have breached by tomorrow 08:00".
    #[param(value_type = Option<String>, format = DateTime)]
    sla_at: Option<String>,
    /// Only orders changed at or after this time (RFC 3339): poll with the newest
    /// `updated_at` you saw.
    #[param(value_type = Option<String>, format = DateTime)]
    updated_since: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
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
                extract::time("sla_at", p.sla_at.as_deref())?.unwrap_or(state.clock.now()),
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

/// What an `If-Match` header asks for (RFC 9110 §13.1.1).
#[derive(Debug, PartialEq)]
enum IfMatch {
    /// `*`: any current version of an existing order.
    Any,
    /// The versions named by the strong entity tags of the list, e.g. `"3"` (`"3", "4"`
    /// names two). Weak tags (`W/"3"`) never match under the strong comparison
    /// `If-Match` uses, nor does an opaque tag that is not a version as the `ETag`
    /// writes it (`"03"`): both leave nothing here.
    Versions(Vec<u32>),
}

fn malformed_if_match() -> ApiError {
    ApiError::parameter(
        "If-Match",
        "If-Match must be the order's ETag, e.g. \"3\", a list of them, or *".to_owned(),
    )
}

/// Parses `If-Match`: `*`, or a comma-separated list of entity tags `"x"` / `W/"x"`.
fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
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
    let text = raw.to_str().map_err(|_| malformed_if_match())?.trim();
    if text == "*" {
        return Ok(IfMatch::Any);
    }
    let tags: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tags.is_empty() {
        return Err(malformed_if_match());
    }
    let mut versions = Vec::new();
    for tag in tags {
        let (weak, quoted) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let opaque = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .filter(|o| !o.contains('"'))
            .ok_or_else(malformed_if_match)?;
        // strong comparison: the very characters of the ETag, which writes the version
        // in decimal without leading zeros
        if let Some(v) = opaque
            .parse::<u32>()
            .ok()
            .filter(|v| v.to_string() == opaque)
            && !weak
        {
            versions.push(v);
        }
    }
    Ok(IfMatch::Versions(versions))
}

/// The version a step may apply to: the one `If-Match` names when the order has it (the
/// store checks again in the step's transaction), else 412 with the current version.
async fn matched_version(
    state: &AppState,
    id: i64,
    condition: IfMatch,
    sent: &str,
) -> Result<u32, ApiError> {
    if let IfMatch::Versions(v) = &condition
        && let [only] = v.as_slice()
    {
        return Ok(*only);
    }
    // RFC 9110 §13.2.1: a precondition is not evaluated when the answer without it would
    // not be a success, so a missing order is a 404 whatever If-Match says
    let order = state
        .store
        .order(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("order {id} does not exist")))?;
    match condition {
        IfMatch::Any => Ok(order.version),
        IfMatch::Versions(v) if v.contains(&order.version) => Ok(order.version),
        IfMatch::Versions(_) => Err(version_mismatch(
            format!(
                "order {id} is at version {current}; If-Match: {sent} does not match it (a weak \
                 W/ tag never does); GET it again and retry with If-Match: \"{current}\"",
                current = order.version
            ),
            id,
            sent,
            order.version,
        )),
    }
}

/// 412: `If-Match` (as sent) does not match the order's current version.
fn version_mismatch(message: String, id: i64, sent: &str, current: u32) -> ApiError {
    ApiError::Refused {
        status: StatusCode::PRECONDITION_FAILED,
        code: "version_mismatch",
        message,
        details: Some(json!({
            "order_id": id,
            "if_match": sent,
            "current_version": current,
        })),
    }
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
            } => version_mismatch(
                format!("{message}; GET it again and retry with If-Match: \"{current}\""),
                id,
                &format!("\"{expected}\""),
                current,
            ),
            TransitionError::Invalid(msg) => ApiError::Unprocessable {
                code: "invalid_change",
                message: msg,
                details: None,
            },
            TransitionError::AddressRequired { .. } => super::devices::address_required(),
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
    let condition = if_match(headers)?;
    let sent = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    let version = matched_version(&state, id, condition, sent).await?;
    let order = state
        .dispatch
        .transition(id, version, action, caller.actor, state.clock.now())
        .await?;
    state.streams.order_changed();
    Ok(with_etag(StatusCode::OK, &order))
}

/// `open → acknowledged`: the dispatch side has seen the order (meets the respond SLA).
#[utoipa::path(post, path = "/api/v1/orders/{id}/acknowledge", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\" (strong comparison; a list or * also)", pattern = "^([*]|(W/)?\"[!#-+.-~-]*\"( *, *(W/)?\"[!#-+.-~-]*\")*)$")), responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
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
#[utoipa::path(post, path = "/api/v1/orders/{id}/assign", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\" (strong comparison; a list or * also)", pattern = "^([*]|(W/)?\"[!#-+.-~-]*\"( *, *(W/)?\"[!#-+.-~-]*\")*)$")), request_body = AssignBody, responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
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
#[utoipa::path(post, path = "/api/v1/orders/{id}/start", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\" (strong comparison; a list or * also)", pattern = "^([*]|(W/)?\"[!#-+.-~-]*\"( *, *(W/)?\"[!#-+.-~-]*\")*)$")), responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
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
/// device's lifecycle status (`at_customer` only for a device with an address: 422
/// `address_required` as on every route that can put a device there).
#[utoipa::path(post, path = "/api/v1/orders/{id}/complete", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\" (strong comparison; a list or * also)", pattern = "^([*]|(W/)?\"[!#-+.-~-]*\"( *, *(W/)?\"[!#-+.-~-]*\")*)$")), request_body = CompletionOutcome, responses((status = 200, description = "The order after the step", body = Order), (status = 422, description = "invalid_change (the outcome breaks a limit or names a consumable the model does not have), or address_required (device_status at_customer for a device without an address; set it with POST /api/v1/devices/{serial}/status first)", body = crate::error::ErrorBody), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
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
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders", params(("id" = i64, Path, description = "id"), ("If-Match" = String, Header, description = "the order's ETag, e.g. \"3\" (strong comparison; a list or * also)", pattern = "^([*]|(W/)?\"[!#-+.-~-]*\"( *, *(W/)?\"[!#-+.-~-]*\")*)$")), request_body = CancelBody, responses((status = 200, description = "The order after the step", body = Order), (status = 409, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 412, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody), (status = 428, description = "see docs/dispatch-api.md", body = crate::error::ErrorBody)))]
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
    #[schema(pattern = "\\S", max_length = 200)]
    title: String,
    /// 1 to 4000 characters.
    #[serde(default)]
    #[schema(pattern = "\\S", max_length = 4000)]
    solution: Option<String>,
    #[serde(default)]
    skills: Vec<String>,
    #[serde(default)]
    parts: Vec<PartRef>,
    #[serde(default)]
    labour_minutes: Option<u32>,
    /// Free text kept as the order's evidence (1 to 4000 characters).
    #[serde(default)]
    #[schema(pattern = "\\S", max_length = 4000)]
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
    let now = state.clock.now();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Result<IfMatch, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_MATCH,
            HeaderValue::from_str(value).expect("header"),
        );
        if_match(&headers)
    }

    #[test]
    fn if_match_keeps_only_strong_tags_that_are_versions() {
        assert_eq!(parsed("\"3\"").ok(), Some(IfMatch::Versions(vec![3])));
        assert_eq!(parsed("*").ok(), Some(IfMatch::Any));
        assert_eq!(
            parsed("W/\"3\", \"4\" ,\"5\"").ok(),
            Some(IfMatch::Versions(vec![4, 5]))
        );
        // weak, or not the ETag's very characters: nothing can match
        for never in ["W/\"3\"", "\"03\"", "\"+3\"", "\"abc\""] {
            assert_eq!(
                parsed(never).ok(),
                Some(IfMatch::Versions(vec![])),
                "{never}"
            );
        }
        for malformed in ["3", "\"3", "W/3", "", " , "] {
            let e = parsed(malformed).expect_err(malformed);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{malformed:?}");
        }
        assert_eq!(
            if_match(&HeaderMap::new()).expect_err("missing").status(),
            StatusCode::PRECONDITION_REQUIRED
        );
    }
}
