//! Order changes as a feed: `GET /api/v1/orders/events` (pull, paged by event id) and
//! `GET /api/v1/orders/stream` (Server-Sent Events). Both follow the one `order_events`
//! sequence the store appends to in the transaction of every change, so the two never
//! disagree, and a client that remembers the last event id misses nothing.
//!
//! The stream sends each change as
//! `id: <event id>` / `event: order.<kind>` / `data: {"event": …, "order": …}` where
//! `order` is the order's state when the event is sent (its `version` tells whether it
//! moved on since). A client that reconnects with `Last-Event-ID` (browsers' EventSource
//! does this by itself) or `?after=` resumes right after that event; without either it
//! starts with the next change. Comments keep idle connections alive every 15 s.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use fleetpulse_domain::dispatch::OrderEvent;
use fleetpulse_domain::store::Page;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Caller, READERS};
use crate::error::ApiError;
use crate::extract::{self, LIST_LIMIT, Query};

/// How often an idle stream looks for new events. Changes made through this API and
/// orders raised by this process's ingest wake the streams at once; this poll bounds the
/// delay for changes another process made in the same store.
const POLL: Duration = Duration::from_millis(200);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders/events", get(events))
        .route("/api/v1/orders/stream", get(stream))
}

/// Query of the feed endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    /// Events after this event id (the `next` of the previous page, or the last `id` seen).
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100); `events` only.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Order events after `after`, oldest first: `{"items": [...], "next": id|null}`.
#[utoipa::path(get, path = "/api/v1/orders/events", tag = "orders", params(FeedParams), responses((status = 200, description = "Order events after `after`, oldest first", body = Page<OrderEvent>)))]
async fn events(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<FeedParams>,
) -> Result<Json<Page<OrderEvent>>, ApiError> {
    caller.require(READERS)?;
    let after = extract::id_cursor(p.after.as_deref())?.unwrap_or(0);
    let limit = extract::limit(p.limit.as_deref(), LIST_LIMIT)?;
    let items = state.dispatch.order_events_after(after, limit).await?;
    let next = (items.len() == limit)
        .then(|| items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next }))
}

/// Where the stream starts: `Last-Event-ID`, else `?after=`, else after the newest event.
async fn start_after(
    state: &AppState,
    headers: &HeaderMap,
    after: Option<&str>,
) -> Result<i64, ApiError> {
    if let Some(raw) = headers.get("last-event-id") {
        let text = raw.to_str().unwrap_or("");
        return text.trim().parse::<i64>().map_err(|_| {
            ApiError::parameter(
                "Last-Event-ID",
                format!("Last-Event-ID {text:?} is not an event id of this stream"),
            )
        });
    }
    match extract::id_cursor(after)? {
        Some(a) => Ok(a),
        None => Ok(state.dispatch.last_order_event_id().await?),
    }
}

struct Cursor {
    state: AppState,
    after: i64,
    pending: VecDeque<OrderEvent>,
    changes: tokio::sync::watch::Receiver<u64>,
}

/// The next event to send, waiting for one if needed; `None` once the server stops.
async fn next_event(mut c: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    loop {
        if let Some(e) = c.pending.pop_front() {
            c.after = e.id;
            let order = match c.state.store.order(e.order_id).await {
                Ok(o) => o,
                Err(err) => {
                    tracing::warn!(error = %err, "order stream: reading the order failed");
                    None
                }
            };
            let event = Event::default()
                .id(e.id.to_string())
                .event(format!("order.{}", e.kind))
                .json_data(json!({ "event": e, "order": order }))
                .unwrap_or_else(|_| Event::default().comment("unserialisable event"));
            return Some((Ok(event), c));
        }
        // seen before looking: a change made while we look wakes the wait below
        c.changes.borrow_and_update();
        match c.state.dispatch.order_events_after(c.after, 100).await {
            Ok(batch) if !batch.is_empty() => c.pending.extend(batch),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "order stream: reading events failed"),
        }
        if c.pending.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = c.changes.changed() => {}
                _ = c.state.streams.stopped() => return None,
            }
        }
    }
}

/// Server-Sent Events of order changes, resumable with `Last-Event-ID`.
#[utoipa::path(get, path = "/api/v1/orders/stream", tag = "orders", params(FeedParams, ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")), responses((status = 200, description = "Server-Sent Events of order changes", content_type = "text/event-stream", body = String)))]
async fn stream(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<FeedParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(READERS)?;
    if p.limit.is_some() {
        return Err(ApiError::parameter(
            "limit",
            "the stream has no pages; use /api/v1/orders/events to page",
        ));
    }
    let after = start_after(&state, &headers, p.after.as_deref()).await?;
    let cursor = Cursor {
        changes: state.streams.changes(),
        state,
        after,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(cursor, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
