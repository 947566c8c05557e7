//! `GET /api/v1/orders` and `GET /api/v1/orders/{id}`: the work orders raised for devices.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fleetpulse_domain::order::{Cause, Order, OrderKind, OrderStatus, Priority};
use fleetpulse_domain::store::{OrderQuery, Page};
use fleetpulse_domain::{Serial, device::UnknownValue};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{self, LIST_LIMIT, Path, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders", get(list))
        .route("/api/v1/orders/{id}", get(one))
}

/// Query of `GET /api/v1/orders`.
#[derive(Debug, Default, Deserialize)]
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
async fn list(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<Order>>, ApiError> {
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
    };
    Ok(Json(state.store.list_orders(query).await?))
}

/// One order with its SLA deadlines, evidence, parts and trigger count; 404 if no order
/// has this id.
async fn one(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let id: i64 = raw.parse().map_err(|_| {
        ApiError::parameter("id", format!("order id {raw:?} is not a whole number"))
    })?;
    state
        .store
        .order(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("order {id} does not exist")))
}
