//! `GET /api/v1/dead-letters`: messages that were refused, with the reason.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use fleetpulse_domain::RejectReason;
use fleetpulse_domain::store::{DeadLetter, DeadLetterQuery, Page};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Caller, READERS};
use crate::error::ApiError;
use crate::extract::{self, LIST_LIMIT, Query};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/dead-letters", get(list))
}

/// Query of `GET /api/v1/dead-letters`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only this reason (`malformed_json`, `out_of_range`, …).
    #[param(value_type = Option<RejectReason>)]
    reason: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Lists dead letters in the order they were stored, keyset-paginated: `{"items": [...], "next": cursor|null}`.
/// One row per refused message: the same message received again within 24 h of its
/// first receipt (a resend after a lost acknowledgement, a broker's redelivery) counts on
/// its row (`repeats`, `last_seen_at`).
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "ingest", params(ListParams), responses((status = 200, description = "Rejected messages with their reason; repeats counts how often the same message (sender, topic, reason, payload bytes) was received within 24 h of received_at, last_seen_at the last time", body = Page<DeadLetter>)))]
async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<DeadLetter>>, ApiError> {
    caller.require(READERS)?;
    let query = DeadLetterQuery {
        reason: extract::one_of::<RejectReason>("reason", p.reason.as_deref())?,
        after: extract::id_cursor(p.after.as_deref())?,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
    };
    Ok(Json(state.store.dead_letters(query).await?))
}
