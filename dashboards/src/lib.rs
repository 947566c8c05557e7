//! The pages planners, quality engineers and dispatchers look at, served by the binary
//! beside the API: rendered on the server (maud, checked at compile time), charts drawn
//! as SVG in Rust ([`charts`]), every asset embedded (no CDN, no web fonts, no build
//! step), a little hand-written script only where a page changes live (the dispatch
//! queue follows the order stream; SLA countdowns tick).
//!
//! The pages read through the same traits as the API ([`fleetpulse_api::AppState`]: the
//! store, dispatch, reliability and prediction traits) and check roles with the API's
//! [`fleetpulse_api::auth::Caller`]; sessions are in [`session`]. Pages:
//!
//! | path | page |
//! |---|---|
//! | `/` | Fleet: devices by status, model, region and connection; alarms; orders; ingest |
//! | `/devices/{serial}` | Device: latest state, charts per field, history |
//! | `/planner` | Planner: work due, devices at risk, the storm-control queue, models |
//! | `/quality` | Quality: MTBF, Weibull plot, R(t), Pareto, trend, MTTR |
//! | `/dispatch`, `/dispatch/orders/{id}` | Dispatch: the queue, order detail, actions |
//! | `/operations` | Operations: dead letters, webhooks, ingest and sink figures |
//!
//! Every table sorts and filters by URL parameters ([`table`]), so a view can be linked,
//! and every table downloads as CSV (`?csv=<table id>`).

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use fleetpulse_api::AppState;

pub mod charts;
pub mod layout;
pub mod pages;
pub mod session;
pub mod table;

pub use session::SessionLimits;

/// How the pages are served.
#[derive(Clone, Copy, Debug, Default)]
pub struct UiOptions {
    /// The server speaks TLS: cookies are `Secure`.
    pub secure_cookies: bool,
    pub sessions: SessionLimits,
}

/// What every page handler shares: the API's state and the page sessions.
#[derive(Clone)]
pub struct UiState {
    pub app: AppState,
    pub sessions: Arc<session::Sessions>,
    pub options: UiOptions,
    /// Readings stored per second, sampled when the fleet page looks.
    pub readings_rate: Arc<pages::fleet::RateSampler>,
}

/// Every page, the sign-in and the embedded assets. Merge it into the API's router (it
/// has no fallback of its own; the API's answers unknown paths).
pub fn router(app: AppState, options: UiOptions) -> Router {
    // the first sample is the process's start: the fleet page's first look already has
    // a rate (since the start), later looks the last minute's
    let readings_rate = Arc::new(pages::fleet::RateSampler::default());
    let stored = app
        .ingest
        .snapshot()
        .get("readings_stored")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    readings_rate.sample(stored, std::time::Instant::now());
    let state = UiState {
        app,
        sessions: Arc::new(session::Sessions::new(options.sessions)),
        options,
        readings_rate,
    };
    Router::new()
        .route("/", get(pages::fleet::page))
        .route("/devices/{serial}", get(pages::device::page))
        .route("/planner", get(pages::planner::page))
        .route("/quality", get(pages::quality::page))
        .route("/dispatch", get(pages::dispatch::page))
        .route("/dispatch/stream", get(pages::dispatch::stream))
        .route("/dispatch/orders/{id}", get(pages::dispatch::order))
        .route("/dispatch/orders/{id}/{action}", post(pages::dispatch::act))
        .route("/operations", get(pages::operations::page))
        .route(
            "/sign-in",
            get(pages::sign_in::form).post(pages::sign_in::submit),
        )
        .route("/sign-out", post(pages::sign_in::sign_out))
        .route("/ui/app.css", get(layout::stylesheet))
        .route("/ui/app.js", get(layout::script))
        .route("/ui/icon.svg", get(layout::icon))
        .route("/favicon.ico", get(layout::icon))
        .with_state(state)
}
