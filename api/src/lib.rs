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
}

/// Runs the predictors now, as their schedule does: read the data, forecast, store the
/// run and raise its orders. Implemented by the binary's analytics worker.
#[async_trait::async_trait]
pub trait PredictionRunner: Send + Sync + 'static {
    /// `trigger` says who asked (`api`, `cli`, `schedule`); recorded with the run.
    async fn run_now(
        &self,
        trigger: &str,
    ) -> Result<fleetpulse_domain::store::RunReport, fleetpulse_domain::store::StoreError>;

    /// Trains the failure-risk models now, as their schedule does (stored, deployed where
    /// they beat the baselines and the current model), and answers their reports.
    async fn train_now(
        &self,
    ) -> Result<Vec<fleetpulse_domain::prediction::ModelReport>, fleetpulse_domain::store::StoreError>;
}

/// Tells long-lived answers (Server-Sent Events) to end, so a graceful shutdown does not
/// wait for clients that never hang up; and wakes them when this process changed an
/// order, so they need not wait for their next poll. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamStop(
    Arc<tokio::sync::watch::Sender<bool>>,
    Arc<tokio::sync::watch::Sender<u64>>,
);

impl Default for StreamStop {
    fn default() -> Self {
        Self(
            Arc::new(tokio::sync::watch::channel(false).0),
            Arc::new(tokio::sync::watch::channel(0).0),
        )
    }
}

impl StreamStop {
    /// An order changed (through this API, in a commit of this process's ingest, or in
    /// a prediction run): streams waiting for events look now.
    pub fn order_changed(&self) {
        self.1.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Order changes from now on: mark the receiver seen before looking for events,
    /// then `changed()` completes at the next [`StreamStop::order_changed`] even if it
    /// came while looking (no wake-up is lost).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// Ends every stream (they finish their current event first).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Completes once [`StreamStop::stop`] was called.
    pub async fn stopped(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
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
