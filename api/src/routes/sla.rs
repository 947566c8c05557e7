//! `GET /api/v1/sla/attainment`: SLA attainment per priority and period (every role).
//! Breached and at-risk orders are listed by `GET /api/v1/orders?sla=breached|at_risk`;
//! each breach is also escalated once as an `order.sla_breached` event (stream, webhooks).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Duration;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Caller, READERS};
use crate::error::ApiError;
use crate::extract::{self, Query};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/sla/attainment", get(attainment))
}

/// Query of `GET /api/v1/sla/attainment`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttainmentParams {
    /// Orders created at or after this time (RFC 3339); default 30 days before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Orders created before this time (RFC 3339); default now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// For the orders created in `[from, to)`, per priority: respond, arrive (work started on
/// site) and complete deadlines met and missed, and the share met (`attainment_pct`,
/// `null` when none is decided yet). Deadlines not yet due count as neither.
#[utoipa::path(get, path = "/api/v1/sla/attainment", tag = "sla", params(AttainmentParams), responses((status = 200, description = "Attainment per priority", body = serde_json::Value)))]
async fn attainment(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<AttainmentParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(READERS)?;
    let now = state.clock.now();
    let to = extract::time("to", p.to.as_deref())?.unwrap_or(now);
    let from = extract::time("from", p.from.as_deref())?.unwrap_or(to - Duration::days(30));
    extract::ordered_range(Some(from), Some(to))?;
    Ok(Json(state.dispatch.sla_attainment(from, to, now).await?))
}
