//! Predictions, trained models and the storm-control queue.
//!
//! - `GET /api/v1/predictions?serial=&kind=&target=&after=&limit=`: the latest run's
//!   predictions, keyset-paginated by (serial, kind, target), each with the order it
//!   raised (or whose visit carries it as a task).
//! - `GET /api/v1/devices/{serial}/predictions`: one device's.
//! - `GET /api/v1/models`, `GET /api/v1/models/{version}`: trained failure-risk models
//!   with their validation, baselines and deployment decision.
//! - `GET /api/v1/orders/queue`: predicted orders held back by storm control, in release
//!   order.
//! - `POST /api/v1/predictions/run?as_of=`: run the predictors now (roles `planner`,
//!   `admin`); with `as_of` (RFC 3339, not in the future) on the data before it, and
//!   no order raised, updated or held and nothing stored (a forecast of the past).
//! - `POST /api/v1/models/train?as_of=`: train the failure-risk models now and answer
//!   their reports (roles `planner`, `admin`; a quality engineer reads them at
//!   `/models`); with `as_of`, on the data before it (stored with that as-of).
//!
//! Reading: every role.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use fleetpulse_domain::dispatch::Role;
use fleetpulse_domain::prediction::{ModelReport, PredictionKind};
use fleetpulse_domain::store::{HeldOrder, Page, PredictionQuery, RunReport, StoredPrediction};
use serde::Deserialize;

use crate::AppState;
use crate::auth::{Caller, READERS};
use crate::error::ApiError;
use crate::extract::{self, LIST_LIMIT, Path, Query};

/// Roles that may start a prediction run.
pub const PLANNERS: &[Role] = &[Role::Planner];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/predictions", get(list))
        .route("/api/v1/predictions/run", post(run))
        .route("/api/v1/devices/{serial}/predictions", get(of_device))
        .route("/api/v1/models", get(models))
        .route("/api/v1/models/train", post(train))
        .route("/api/v1/models/backtest", post(backtest))
        .route("/api/v1/models/{version}", get(model))
        .route("/api/v1/orders/queue", get(queue))
}

/// Query of `GET /api/v1/predictions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Device serial.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    serial: Option<String>,
    /// `consumable_depletion`, `service_interval`, `failure_risk` or `silent`.
    #[param(value_type = Option<PredictionKind>)]
    kind: Option<String>,
    /// Consumable id, `service`, failure mode or `connectivity` (1 to 80 characters).
    #[param(value_type = Option<String>, min_length = 1, max_length = 80)]
    target: Option<String>,
    /// The `next` cursor of the previous page (`serial|kind|target`).
    #[param(value_type = Option<String>, pattern = "^[^|]+[|][^|]+[|][\\s\\S]*$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Query of `GET /api/v1/devices/{serial}/predictions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// The `next` cursor of the previous page (`serial|kind|target`).
    #[param(value_type = Option<String>, pattern = "^[^|]+[|][^|]+[|][\\s\\S]*$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Query of `GET /api/v1/orders/queue`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueParams {
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Query of `POST /api/v1/predictions/run` and `POST /api/v1/models/train`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AsOfParams {
    /// Run as of this time (RFC 3339, not in the future; default: now): nothing at or
    /// after it is read (see docs/predictions.md, "As-of time").
    #[param(value_type = Option<String>, format = DateTime)]
    as_of: Option<String>,
}

/// Query of `POST /api/v1/models/backtest`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BacktestParams {
    /// Train as of this time (RFC 3339, required): nothing at or after it is read for
    /// training.
    #[param(value_type = String, format = DateTime)]
    train_until: Option<String>,
    /// Replay up to this time (RFC 3339, after `train_until`, not in the future;
    /// default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Hours between two replayed forecasts of a device (default 24; at most 20 000
    /// steps in the window).
    #[param(value_type = Option<f64>, minimum = 0.0167, maximum = 8784)]
    step_hours: Option<String>,
}

/// Parses `as_of`: an RFC 3339 time not after now.
fn as_of(raw: Option<&str>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let t = extract::time("as_of", raw)?;
    match t {
        Some(t) if t > now => Err(ApiError::parameter(
            "as_of",
            format!(
                "as_of = {} is in the future (now {}): give a time up to now, or leave it out for now",
                t.to_rfc3339(),
                now.to_rfc3339()
            ),
        )),
        t => Ok(t),
    }
}

fn cursor(raw: Option<&str>) -> Result<Option<(String, String, String)>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut parts = raw.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(k), Some(t)) if !s.is_empty() && !k.is_empty() => {
            Ok(Some((s.to_owned(), k.to_owned(), t.to_owned())))
        }
        _ => Err(ApiError::parameter(
            "after",
            "after must be the `next` cursor of a previous page (serial|kind|target)",
        )),
    }
}

fn target(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    extract::optional("target", raw, |t: &str| {
        if t.is_empty() || t.chars().count() > 80 {
            Err("target must be 1 to 80 characters")
        } else {
            Ok(t.to_owned())
        }
    })
}

/// The latest run's predictions, keyset-paginated by (serial, kind, target).
#[utoipa::path(get, path = "/api/v1/predictions", tag = "predictions", params(ListParams), responses((status = 200, description = "Predictions with their evidence and the order each raised", body = Page<StoredPrediction>)))]
async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<Page<StoredPrediction>>, ApiError> {
    caller.require(READERS)?;
    let query = PredictionQuery {
        due_before: None,
        min_probability: None,
        serial: extract::optional(
            "serial",
            p.serial.as_deref(),
            fleetpulse_domain::Serial::parse,
        )?,
        kind: extract::one_of::<PredictionKind>("kind", p.kind.as_deref())?,
        target: target(p.target.as_deref())?,
        after: cursor(p.after.as_deref())?,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
    };
    Ok(Json(state.predictions.predictions(query).await?))
}

/// One device's predictions (404 for an unknown serial).
#[utoipa::path(get, path = "/api/v1/devices/{serial}/predictions", tag = "predictions", params(("serial" = String, Path, description = "device serial", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), PageParams), responses((status = 200, description = "The device's predictions", body = Page<StoredPrediction>)))]
async fn of_device(
    caller: Caller,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(p): Query<PageParams>,
) -> Result<Json<Page<StoredPrediction>>, ApiError> {
    caller.require(READERS)?;
    let serial = extract::serial(&raw)?;
    let query = PredictionQuery {
        due_before: None,
        min_probability: None,
        serial: Some(serial.clone()),
        after: cursor(p.after.as_deref())?,
        limit: extract::limit(p.limit.as_deref(), LIST_LIMIT)?,
        ..Default::default()
    };
    let page = state.predictions.predictions(query).await?;
    if page.items.is_empty() && state.store.device(&serial).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "device {serial} is not registered"
        )));
    }
    Ok(Json(page))
}

/// Every trained model's report, newest first.
#[utoipa::path(get, path = "/api/v1/models", tag = "predictions", responses((status = 200, description = "Model reports: validation metrics, baselines, deployment decision", body = Vec<ModelReport>)))]
async fn models(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<ModelReport>>, ApiError> {
    caller.require(READERS)?;
    Ok(Json(state.predictions.model_reports().await?))
}

/// One model's report.
#[utoipa::path(get, path = "/api/v1/models/{version}", tag = "predictions", params(("version" = String, Path, description = "model version")), responses((status = 200, description = "The model's report incl. baselines and the deployment decision", body = ModelReport)))]
async fn model(
    caller: Caller,
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<ModelReport>, ApiError> {
    caller.require(READERS)?;
    state
        .predictions
        .model(&version)
        .await?
        .map(|m| Json(m.report))
        .ok_or_else(|| ApiError::NotFound(format!("model {version:?} does not exist")))
}

/// Predicted orders held by storm control, in release order (most urgent first, then
/// in arrival order), paginated by queue position.
#[utoipa::path(get, path = "/api/v1/orders/queue", tag = "orders", params(QueueParams), responses((status = 200, description = "Held orders in release order", body = Page<HeldOrder>)))]
async fn queue(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<QueueParams>,
) -> Result<Json<Page<HeldOrder>>, ApiError> {
    caller.require(READERS)?;
    let after = extract::id_cursor(p.after.as_deref())?;
    let limit = extract::limit(p.limit.as_deref(), LIST_LIMIT)?;
    Ok(Json(state.predictions.held_orders(after, limit).await?))
}

/// Trains the failure-risk models now (as the schedule does): each is stored, and
/// deployed only where its report says it beat both baselines and the current model.
/// The run does not depend on the request: a client that leaves before the answer does
/// not stop it (its models are stored, and the log says its caller left). With `as_of`,
/// the models learn from the data before it, are compared with the models deployed then,
/// and are stored with that as-of (`as_of` in their reports); one does not displace a
/// deployed model trained as of a later time.
#[utoipa::path(post, path = "/api/v1/models/train", tag = "predictions", params(AsOfParams), responses((status = 200, description = "The reports of the models this run trained: validation, baselines, replayed warnings, deployment decision, as-of", body = Vec<ModelReport>), (status = 400, description = "as_of is not an RFC 3339 time, or is in the future")))]
async fn train(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<AsOfParams>,
) -> Result<Json<Vec<ModelReport>>, ApiError> {
    caller.require(PLANNERS)?;
    let as_of = as_of(p.as_of.as_deref(), state.clock.now())?;
    Ok(Json(state.predictor.train_now(as_of).await?))
}

/// Backtests the failure-risk predictions (docs/predictions.md, "Backtests"): trains
/// every failure mode as of `train_until`, replays the forecasts over `(train_until,
/// until]` every `step_hours` as the order policy raises warnings, and answers, per mode
/// and scorer (the one the worker would have served, the learned model, the baselines),
/// the warnings, precision, recall at any lead, ≥ 1 day and ≥ 3 days ahead and the median
/// lead. Reads the store only: no model, run or order is stored. One backtest at a time.
#[utoipa::path(post, path = "/api/v1/models/backtest", tag = "predictions", params(BacktestParams), responses((status = 200, description = "The backtest: per failure mode and scorer, and all modes together", body = fleetpulse_analytics::predict::backtest::BacktestReport), (status = 400, description = "a parameter is missing or not a time or number"), (status = 422, description = "not a window: train_until not before until, until in the future, or too many steps"), (status = 503, description = "a backtest is already running")))]
async fn backtest(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<BacktestParams>,
) -> Result<Json<fleetpulse_analytics::predict::backtest::BacktestReport>, ApiError> {
    caller.require(PLANNERS)?;
    let train_until = extract::time("train_until", p.train_until.as_deref())?
        .ok_or_else(|| ApiError::parameter("train_until", "train_until is required (RFC 3339)"))?;
    let until = extract::time("until", p.until.as_deref())?;
    let step_hours = match p.step_hours.as_deref() {
        None => 24.0,
        Some(raw) => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|h| h.is_finite())
            .ok_or_else(|| {
                ApiError::parameter(
                    "step_hours",
                    format!("step_hours = {raw:?} is not a number"),
                )
            })?,
    };
    Ok(Json(
        state
            .predictor
            .backtest_now(train_until, until, step_hours)
            .await?,
    ))
}

/// Runs the predictors now (as the schedule does) and answers what the run did. With
/// `as_of` in the past, on the data before it with the models deployed then: no order is
/// raised, updated, held or released and the run is not stored; the answer has
/// `orders_applied: false`, the predictions in `forecasts` and `note`.
#[utoipa::path(post, path = "/api/v1/predictions/run", tag = "predictions", params(AsOfParams), responses((status = 200, description = "What the run did: predictions, orders raised, updated, bundled, held, released (or, as of a past time, the forecasts and that no order was applied)", body = RunReport), (status = 400, description = "as_of is not an RFC 3339 time, or is in the future")))]
async fn run(
    caller: Caller,
    State(state): State<AppState>,
    Query(p): Query<AsOfParams>,
) -> Result<Json<RunReport>, ApiError> {
    caller.require(PLANNERS)?;
    let as_of = as_of(p.as_of.as_deref(), state.clock.now())?;
    let report = state.predictor.run_now("api", as_of).await?;
    if !report.orders.is_empty() {
        state.streams.order_changed();
    }
    Ok(Json(report))
}
