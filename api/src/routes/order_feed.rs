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
//!
//! Streams wake on commits, not on timers: every stream awaits the one in-process notifier
//! ([`crate::StreamStop`]) that the committers of order events feed; a single shared look
//! at the store ([`crate::StreamStop::watch_store`]) covers writers in other processes.
//! A revoked token ends its streams: at once when revoked through this API (or within
//! that shared look's period when revoked by another process), and in any case before
//! its next event is sent. Each token may hold `http.max_streams_per_token` streams; one
//! more answers 429 `too_many_streams`, and a closed stream frees its place.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use fleetpulse_domain::dispatch::OrderEvent;
use fleetpulse_domain::store::Page;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, READERS};
use crate::error::ApiError;
use crate::extract::{self, LIST_LIMIT, Query};
use crate::{AppState, StreamSlot};

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
    revocations: tokio::sync::watch::Receiver<u64>,
    /// The caller's token digest, re-checked before every event and at every revocation
    /// (`None`: authentication is disabled).
    token: Option<[u8; 32]>,
    /// Set once the token was found revoked: the closing comment went out, end now.
    revoked: bool,
    /// The place under the token's cap, freed when the stream is dropped.
    _slot: StreamSlot,
}

impl Cursor {
    /// Whether the caller's token still works. A store that cannot tell ends the stream
    /// too: the client reconnects and is authenticated afresh.
    async fn token_live(&self) -> bool {
        let Some(digest) = self.token else {
            return true;
        };
        match self.state.dispatch.api_token_by_digest(digest).await {
            Ok(found) => found.is_some(),
            Err(err) => {
                tracing::warn!(error = %err, "order stream: checking the token failed; ending the stream");
                false
            }
        }
    }

    /// The closing comment of a stream whose token was revoked; the stream ends after it.
    fn end_revoked(mut self) -> Option<(Result<Event, Infallible>, Cursor)> {
        tracing::info!(
            after = self.after,
            "order stream: its token was revoked; ending it"
        );
        self.revoked = true;
        self.pending.clear();
        let last = Event::default().comment("the API token was revoked; the stream ends");
        Some((Ok(last), self))
    }
}

/// The next event to send, waiting for one if needed; `None` once the server stops or
/// after the token was revoked. An idle stream costs nothing: it waits on the notifiers,
/// never on a timer of its own.
async fn next_event(mut c: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    if c.revoked {
        return None;
    }
    loop {
        if let Some(e) = c.pending.front() {
            // nothing more for a revoked token, whoever revoked it (this API or another
            // process on the same store)
            if !c.token_live().await {
                return c.end_revoked();
            }
            let order_id = e.order_id;
            let order = match c.state.store.order(order_id).await {
                Ok(o) => o,
                Err(err) => {
                    tracing::warn!(error = %err, "order stream: reading the order failed");
                    None
                }
            };
            let e = c.pending.pop_front()?;
            c.after = e.id;
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
                _ = c.changes.changed() => {}
                _ = c.revocations.changed() => {
                    if !c.token_live().await {
                        return c.end_revoked();
                    }
                }
                () = c.state.streams.stopped() => return None,
            }
        }
    }
}

/// Server-Sent Events of order changes, resumable with `Last-Event-ID`.
#[utoipa::path(get, path = "/api/v1/orders/stream", tag = "orders", params(FeedParams, ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")), responses((status = 200, description = "Server-Sent Events of order changes", content_type = "text/event-stream", body = String), (status = 429, description = "The token holds `http.streams.max_per_token` streams already (`too_many_streams`)", body = crate::error::ErrorBody)))]
async fn stream(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<FeedParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if p.limit.is_some() {
        return Err(ApiError::parameter(
            "limit",
            "the stream has no pages; use /api/v1/orders/events to page",
        ));
    }
    open_stream(caller, state, &headers, p.after.as_deref()).await
}

/// The order stream of `caller` (readers only), starting after `Last-Event-ID`, else
/// `after`, else the newest event: the API's `/api/v1/orders/stream` and the dispatch
/// page's live queue (signed in by a page session) are this one stream.
pub async fn open_stream(
    caller: Caller,
    state: AppState,
    headers: &HeaderMap,
    after: Option<&str>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    caller.require(READERS)?;
    let slot = state
        .streams
        .open(caller.token.map(|(id, _)| id))
        .map_err(|e| ApiError::Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_streams",
            message: e.to_string(),
            details: Some(json!({ "open": e.open, "max_streams_per_token": e.cap })),
        })?;
    let after = start_after(&state, headers, after).await?;
    let cursor = Cursor {
        changes: state.streams.changes(),
        revocations: state.streams.revocations(),
        token: caller.token.map(|(_, digest)| digest),
        revoked: false,
        _slot: slot,
        state,
        after,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(cursor, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
