//! The HTTP API of fleetpulse (axum): the dispatch side and dashboards read devices,
//! readings, rollups, alarm episodes, orders, dead letters and the catalog here, and
//! register devices.
//!
//! The API owns no state: every answer comes from the [`Store`] trait (so it works the
//! same over SQLite or PostgreSQL) and from the catalog loaded at start; ingest counters
//! come through the small [`IngestStatus`] trait, so this crate does not depend on the
//! ingest crate. Reads see what the store has committed, nothing more.
//!
//! Conventions every route keeps:
//! - Lists that can grow without bound are keyset-paginated:
//!   `{"items": [...], "next": cursor|null}`; pass `next` back as `after`. `limit`
//!   defaults to 100 and is at most 1000 (raw readings: 1000 and 10000); a full page
//!   always carries `next`.
//! - Times are RFC 3339 (`2026-01-31T08:00:00Z`); ranges are `[from, to)`.
//! - Parameters are parsed at the edge; an unknown parameter, a malformed value or a
//!   reversed range is a 400 that names the parameter, never a silently ignored filter.
//! - Every error is `{"code", "message", "details"}` with the matching status (see
//!   [`ApiError`]); a 5xx says only `"internal error"` and the detail goes to the log.
//! - Every route but `/health` and `/metrics` needs an API token ([`auth`]): 401 without
//!   a valid one, 403 when its role may not. Order changes carry `If-Match` (the order's
//!   version); each change is recorded in the order's history and the audit log in the
//!   store transaction that makes it ([`fleetpulse_domain::dispatch::Dispatch`]).
//! - Order changes reach the dispatch side by pull (`/api/v1/orders`, `/orders/events`),
//!   stream (SSE, `/orders/stream`) and push ([`push`]: signed webhooks from the outbox).
//! - Bodies are at most [`MAX_BODY_BYTES`]; HTTPS via rustls when configured ([`tls`]).
//! - Connections are bounded ([`server`]): header, body and idle timeouts, a connection
//!   cap that closes the longest idle connection to make room, a bounded graceful stop.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use fleetpulse_domain::dispatch::Dispatch;
use fleetpulse_domain::store::Store;
use fleetpulse_domain::{Catalog, Policy};

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod push;
pub mod routes;
pub mod server;
pub mod tls;

pub use auth::AuthMode;
pub use error::ApiError;
pub use server::{ServeLimits, serve_with};

/// Ingest counters for `/health` and `/metrics`, without a dependency on the ingest crate.
pub trait IngestStatus: Send + Sync + 'static {
    /// The counters as JSON (received, stored, dead-lettered, acked, connected, …).
    fn snapshot(&self) -> serde_json::Value;
    /// Appends the counters in the Prometheus text exposition format.
    fn write_prometheus(&self, out: &mut String);
    /// Why `/health` should say `degraded` about ingest, as sentences for the operator
    /// (ingest held, entries refused); none by default.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Largest request body accepted (bulk imports included); larger ones answer 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The catalog the service runs with (validated at start).
    pub catalog: Arc<Catalog>,
    pub ingest: Arc<dyn IngestStatus>,
    /// Order lifecycle, tokens and the audit log.
    pub dispatch: Arc<dyn Dispatch>,
    /// Priorities and SLA deadlines of manual orders.
    pub policy: Arc<Policy>,
    pub auth: AuthMode,
    /// Webhook subscriptions and their delivery log.
    pub webhooks: Arc<dyn fleetpulse_domain::webhook::Webhooks>,
    /// Reliability data (failures, exposure, repairs) and history import.
    pub reliability: Arc<dyn fleetpulse_domain::reliability::ReliabilitySource>,
    /// Predictions, trained models and the storm-control queue.
    pub predictions: Arc<dyn fleetpulse_domain::store::PredictionStore>,
    /// Runs the predictors on demand (`POST /api/v1/predictions/run`) and trains the
    /// models on demand (`POST /api/v1/models/train`).
    pub predictor: Arc<dyn PredictionRunner>,
    /// Ends long-lived answers (the order stream) when the server shuts down.
    pub streams: StreamStop,
    /// The process's clock (`/health` shows it): every "now" of a request (default
    /// period ends, `as_of` checks, SLA deadlines, lifecycle times) is read from it.
    pub clock: fleetpulse_domain::Clock,
}

/// Runs the predictors now, as their schedule does: read the data, forecast, store the
/// run and raise its orders. Implemented by the binary's analytics worker.
#[async_trait::async_trait]
pub trait PredictionRunner: Send + Sync + 'static {
    /// `trigger` says who asked (`api`, `cli`, `schedule`); recorded with the run.
    /// `as_of` (not in the future; `None`: now): nothing at or after it is read, and a
    /// run as of a past time applies no order and is not stored (its report carries the
    /// predictions). An `as_of` in the future is `StoreError::Invalid`.
    async fn run_now(
        &self,
        trigger: &str,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<fleetpulse_domain::store::RunReport, fleetpulse_domain::store::StoreError>;

    /// Trains the failure-risk models now, as their schedule does (stored, deployed where
    /// they beat the baselines and the current model), and answers their reports. The
    /// run must not depend on this future: an HTTP client that hangs up drops it, and
    /// the run still completes and is stored (the binary's worker spawns it). With
    /// `as_of`, on the data before it, compared with the models deployed then; the models
    /// are stored with that as-of.
    async fn train_now(
        &self,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<fleetpulse_domain::prediction::ModelReport>, fleetpulse_domain::store::StoreError>;

    /// Backtests the failure-risk predictions (docs/predictions.md, "Backtests"): trains
    /// as of `train_until`, replays to `until` (`None`: now) every `step_hours`, and
    /// scores per failure mode next to the baselines. Read-only. A window that is not one
    /// (`train_until` not before `until`, `until` in the future, too many steps) is
    /// `StoreError::Invalid`; a backtest already running, `StoreError::Unavailable`.
    async fn backtest_now(
        &self,
        train_until: chrono::DateTime<chrono::Utc>,
        until: Option<chrono::DateTime<chrono::Utc>>,
        step_hours: f64,
    ) -> Result<
        fleetpulse_analytics::predict::backtest::BacktestReport,
        fleetpulse_domain::store::StoreError,
    > {
        let _ = (train_until, until, step_hours);
        Err(fleetpulse_domain::store::StoreError::Unavailable(
            "this server runs no backtests".into(),
        ))
    }
}

/// Default of [`StreamStop::with_limits`]'s cap: open order streams per API token.
pub const DEFAULT_STREAMS_PER_TOKEN: usize = 16;

/// What the order streams (Server-Sent Events) share: the stop of a graceful shutdown
/// (so it does not wait for clients that never hang up), the one notifier every idle
/// stream awaits (fed where order events are committed: this API, the pipeline's commits,
/// the prediction runs, and [`StreamStop::watch_store`] for other processes), the
/// revocation notifier, and the per-token cap. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamStop(Arc<Streams>);

#[derive(Debug)]
struct Streams {
    stop: tokio::sync::watch::Sender<bool>,
    changes: tokio::sync::watch::Sender<u64>,
    revocations: tokio::sync::watch::Sender<u64>,
    per_token: usize,
    /// Open streams per token id (`None`: authentication disabled).
    open: std::sync::Mutex<std::collections::HashMap<Option<i64>, usize>>,
}

impl Default for StreamStop {
    fn default() -> Self {
        Self::with_limits(DEFAULT_STREAMS_PER_TOKEN)
    }
}

/// The per-token cap is reached: the stream is refused (429).
#[derive(Debug, thiserror::Error)]
#[error(
    "this API token has {open} order streams open, the most allowed (http.streams.max_per_token = {cap}); close one first"
)]
pub struct StreamCapReached {
    pub open: usize,
    pub cap: usize,
}

/// One open stream's place under its token's cap; dropping it (the stream ended or the
/// client went away) frees the place.
#[derive(Debug)]
pub struct StreamSlot {
    streams: StreamStop,
    token: Option<i64>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock_open();
        if let Some(n) = open.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

impl StreamStop {
    /// At most `per_token` streams open at once per API token.
    pub fn with_limits(per_token: usize) -> Self {
        Self(Arc::new(Streams {
            stop: tokio::sync::watch::channel(false).0,
            changes: tokio::sync::watch::channel(0).0,
            revocations: tokio::sync::watch::channel(0).0,
            per_token,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    fn lock_open(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Option<i64>, usize>> {
        // the map stays consistent even if a holder panicked: every change is one step
        self.0
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for a stream of `token`, or refuses when its cap is reached.
    pub fn open(&self, token: Option<i64>) -> Result<StreamSlot, StreamCapReached> {
        let mut open = self.lock_open();
        let n = open.entry(token).or_insert(0);
        if *n >= self.0.per_token {
            return Err(StreamCapReached {
                open: *n,
                cap: self.0.per_token,
            });
        }
        *n += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            token,
        })
    }

    /// Streams open now, all tokens together.
    pub fn open_streams(&self) -> usize {
        self.lock_open().values().sum()
    }

    /// An order changed (through this API, in a commit of this process's ingest, or in
    /// a prediction run): streams waiting for events look now.
    pub fn order_changed(&self) {
        self.0.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Order changes from now on: mark the receiver seen before looking for events,
    /// then `changed()` completes at the next [`StreamStop::order_changed`] even if it
    /// came while looking (no wake-up is lost).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes.subscribe()
    }

    /// A token was revoked: every stream checks its own token now.
    pub fn token_revoked(&self) {
        self.0.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Revocations from now on (as [`StreamStop::changes`]).
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.revocations.subscribe()
    }

    /// Ends every stream (they finish their current event first).
    pub fn stop(&self) {
        self.0.stop.send_replace(true);
    }

    /// Completes once [`StreamStop::stop`] was called.
    pub async fn stopped(&self) {
        let mut rx = self.0.stop.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// The safety net for writers this process does not see (another process on the same
    /// SQLite file or PostgreSQL database, e.g. `fleetpulse token revoke` or a second
    /// instance): while any stream is open, looks every `every` at the newest order event
    /// and the number of revoked tokens (two small queries, whatever the number of
    /// streams) and wakes the streams when either moved. Runs until [`StreamStop::stop`].
    pub async fn watch_store(&self, dispatch: Arc<dyn Dispatch>, every: std::time::Duration) {
        // a mark taken while nobody listens stays until someone does: a change in
        // between then wakes them once more than needed, never once less
        let mut seen = store_marks(dispatch.as_ref()).await.ok();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stopped() => return,
            }
            if self.0.changes.receiver_count() == 0 {
                continue;
            }
            let now = match store_marks(dispatch.as_ref()).await {
                Ok(now) => now,
                Err(err) => {
                    tracing::warn!(error = %err, "order streams: looking at the store failed");
                    continue;
                }
            };
            if let Some((event, revoked)) = seen {
                if now.0 != event {
                    self.order_changed();
                }
                if now.1 != revoked {
                    self.token_revoked();
                }
            }
            seen = Some(now);
        }
    }
}

/// The newest order event id and the number of revoked tokens.
async fn store_marks(
    dispatch: &dyn Dispatch,
) -> Result<(i64, usize), fleetpulse_domain::store::StoreError> {
    let event = dispatch.last_order_event_id().await?;
    let revoked = dispatch
        .list_api_tokens()
        .await?
        .iter()
        .filter(|t| t.revoked_at.is_some())
        .count();
    Ok((event, revoked))
}

/// Every route of the API, with JSON answers for unknown routes (404) and methods (405).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::metrics::router())
        .merge(routes::devices::router())
        .merge(routes::orders::router())
        .merge(routes::order_feed::router())
        .merge(routes::dead_letters::router())
        .merge(routes::catalog::router())
        .merge(routes::device_lifecycle::router())
        .merge(routes::admin::router())
        .merge(routes::webhooks::router())
        .merge(routes::sla::router())
        .merge(routes::device_import::router())
        .merge(routes::reliability::router())
        .merge(routes::predictions::router())
        .merge(routes::history::router())
        .merge(openapi::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves `router` on `listener` with the default [`ServeLimits`] until `shutdown`
/// completes, then lets requests in flight finish (within the grace period) before
/// returning. See [`server`] for the limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve_with(listener, router, ServeLimits::default(), None, shutdown).await
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_token_and_a_dropped_slot_frees_its_place() {
        let streams = StreamStop::with_limits(2);
        let a1 = streams.open(Some(1)).expect("first");
        let _a2 = streams.open(Some(1)).expect("second");
        let refused = streams.open(Some(1)).expect_err("third is refused");
        assert_eq!((refused.open, refused.cap), (2, 2));
        assert!(refused.to_string().contains("http.streams.max_per_token"));
        // another token has its own allowance
        let _b = streams.open(Some(2)).expect("other token");
        assert_eq!(streams.open_streams(), 3);
        drop(a1);
        assert_eq!(streams.open_streams(), 2);
        let _a3 = streams
            .open(Some(1))
            .expect("a closed stream freed its place");
    }

    #[tokio::test]
    async fn a_revocation_and_an_order_change_wake_waiting_streams() {
        let streams = StreamStop::default();
        let mut changes = streams.changes();
        let mut revocations = streams.revocations();
        changes.borrow_and_update();
        revocations.borrow_and_update();
        streams.order_changed();
        streams.token_revoked();
        let wait = std::time::Duration::from_secs(1);
        assert!(tokio::time::timeout(wait, changes.changed()).await.is_ok());
        assert!(
            tokio::time::timeout(wait, revocations.changed())
                .await
                .is_ok()
        );
    }
}
