//! The analytics worker: runs the predictors over the store's prediction data on a
//! schedule (`analytics.predict_interval_s`) and on demand (`POST
//! /api/v1/predictions/run`), stores each run and raises its orders (due dates,
//! bundling, storm control: `fleetpulse_rules::predicted`); trains the failure-risk
//! models on its own schedule (`analytics.train_interval_s`) and stores them, deploying
//! those whose report says so.
//!
//! Runs never overlap: a run asked for while one is going waits for it. The predictors
//! run on the blocking pool (they are CPU work over the whole fleet).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fleetpulse_domain::prediction::{
    Forecaster, ModelReport, Prediction, PredictionData, TrainedModel,
};
use fleetpulse_domain::store::{
    PredictionPlanner, PredictionRun, PredictionStore, RunReport, StoreError,
};
use fleetpulse_domain::{Catalog, Policy};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::AnalyticsConfig;

/// Every predictor the worker runs, in one [`Forecaster`]: consumable depletion, service
/// due dates and failure risk (the analytics crate, from the catalog), and silent
/// devices (the rules crate, from the policy).
pub fn forecasters(
    catalog: &Arc<Catalog>,
    policy: &Arc<Policy>,
    options: &fleetpulse_analytics::predict::PredictOptions,
) -> Arc<dyn Forecaster> {
    Arc::new(Forecasters(vec![
        Arc::new(fleetpulse_analytics::predict::CatalogForecaster::new(
            catalog.clone(),
            options.clone(),
        )),
        Arc::new(fleetpulse_rules::silent::SilentDevices::new(policy.clone())),
    ]))
}

/// Several forecasters as one: their predictions together, their models together.
pub struct Forecasters(pub Vec<Arc<dyn Forecaster>>);

impl Forecaster for Forecasters {
    fn forecast(&self, data: &PredictionData, models: &[TrainedModel]) -> Vec<Prediction> {
        self.0
            .iter()
            .flat_map(|f| f.forecast(data, models))
            .collect()
    }

    fn train(&self, data: &PredictionData, current: &[TrainedModel]) -> Vec<TrainedModel> {
        self.0.iter().flat_map(|f| f.train(data, current)).collect()
    }
}

/// The worker. Cheap to share (`Arc`).
pub struct AnalyticsWorker {
    store: Arc<dyn PredictionStore>,
    forecaster: Arc<dyn Forecaster>,
    planner: Arc<dyn PredictionPlanner>,
    cfg: AnalyticsConfig,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// Woken when a run created or updated orders.
    streams: Option<fleetpulse_api::StreamStop>,
}

impl AnalyticsWorker {
    pub fn new(
        store: Arc<dyn PredictionStore>,
        forecaster: Arc<dyn Forecaster>,
        planner: Arc<dyn PredictionPlanner>,
        cfg: AnalyticsConfig,
    ) -> Self {
        Self {
            store,
            forecaster,
            planner,
            cfg,
            one_at_a_time: tokio::sync::Mutex::new(()),
            streams: None,
        }
    }

    /// Order streams to wake after a run that created or updated orders.
    pub fn with_stream_wake(mut self, streams: fleetpulse_api::StreamStop) -> Self {
        self.streams = Some(streams);
        self
    }

    /// One prediction run: data as of now, forecasts with the deployed models, the run
    /// stored and its orders raised (held ones released as the limits allow).
    pub async fn predict(&self, trigger: &str) -> Result<RunReport, StoreError> {
        let _one = self.one_at_a_time.lock().await;
        let started = std::time::Instant::now();
        let now = Utc::now();
        let data = self
            .store
            .prediction_data(now, self.cfg.history_days, self.cfg.recent_days)
            .await?;
        let read_ms = started.elapsed().as_millis();
        let models = self.store.deployed_models().await?;
        let devices = data.devices.len();
        let forecaster = self.forecaster.clone();
        let predictions = tokio::task::spawn_blocking(move || forecaster.forecast(&data, &models))
            .await
            .map_err(|e| StoreError::Internal(format!("forecast task failed: {e}")))?;
        let report = self
            .store
            .apply_predictions(
                PredictionRun {
                    as_of: now,
                    trigger: trigger.to_owned(),
                    devices,
                    predictions,
                },
                self.planner.clone(),
            )
            .await?;
        if !report.orders.is_empty()
            && let Some(streams) = &self.streams
        {
            streams.order_changed();
        }
        info!(
            trigger,
            devices,
            predictions = report.predictions,
            raised = report.raised,
            updated = report.updated,
            bundled = report.bundled,
            held = report.held,
            released = report.released,
            queued = report.queued,
            read_ms,
            total_ms = started.elapsed().as_millis(),
            "prediction run"
        );
        Ok(report)
    }

    /// One training run: models trained on the data, stored, deployed where their
    /// report says so. Returns the reports of the models stored.
    pub async fn train(&self) -> Result<Vec<ModelReport>, StoreError> {
        let _one = self.one_at_a_time.lock().await;
        let data = self
            .store
            .prediction_data(Utc::now(), self.cfg.history_days, self.cfg.recent_days)
            .await?;
        let current = self.store.deployed_models().await?;
        let forecaster = self.forecaster.clone();
        let trained = tokio::task::spawn_blocking(move || forecaster.train(&data, &current))
            .await
            .map_err(|e| StoreError::Internal(format!("training task failed: {e}")))?;
        let deployed: Vec<String> = trained
            .iter()
            .filter(|m| m.report.deployed)
            .map(|m| m.report.version.clone())
            .collect();
        let reports: Vec<ModelReport> = trained.iter().map(|m| m.report.clone()).collect();
        let stored = self.store.save_models(trained).await?;
        info!(stored, ?deployed, "training run");
        Ok(reports)
    }

    /// Both schedules until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let predict_every = Duration::from_secs(self.cfg.predict_interval_s.max(1));
        let train_every = Duration::from_secs(self.cfg.train_interval_s.max(1));
        let mut predict =
            tokio::time::interval_at(tokio::time::Instant::now() + predict_every, predict_every);
        let mut train =
            tokio::time::interval_at(tokio::time::Instant::now() + train_every, train_every);
        for t in [&mut predict, &mut train] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = predict.tick() => {
                    if let Err(e) = self.predict("schedule").await {
                        warn!(error = %e, "prediction run failed; the next one retries");
                    }
                }
                _ = train.tick() => {
                    if let Err(e) = self.train().await {
                        warn!(error = %e, "training run failed; the next one retries");
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl fleetpulse_api::PredictionRunner for AnalyticsWorker {
    async fn run_now(&self, trigger: &str) -> Result<RunReport, StoreError> {
        self.predict(trigger).await
    }

    async fn train_now(&self) -> Result<Vec<ModelReport>, StoreError> {
        self.train().await
    }
}
