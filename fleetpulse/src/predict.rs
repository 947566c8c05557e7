//! The analytics worker: runs the predictors over the store's prediction data on a
//! schedule (`analytics.predict_interval_s`) and on demand (`POST
//! /api/v1/predictions/run`), stores each run and raises its orders (due dates,
//! bundling, storm control: `fleetpulse_rules::predicted`); trains the failure-risk
//! models on its own schedule (`analytics.train_interval_s`) and on demand (`POST
//! /api/v1/models/train`), and stores them, deploying those whose report says so.
//!
//! Runs never overlap: a run asked for while one is going waits for it. The predictors
//! run on the blocking pool (they are CPU work over the whole fleet). In `serve`, every
//! run is a task of its own that its caller only waits for: a caller that leaves (an
//! HTTP client that hangs up, the schedule stopping) does not stop it, so a run
//! completes and is stored, or is cancelled at shutdown, with a log line either way.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleetpulse_domain::prediction::{
    Forecaster, ModelReport, Prediction, PredictionData, TrainedModel,
};
use fleetpulse_domain::store::{
    PredictionPlanner, PredictionRun, PredictionStore, RunReport, StoreError,
};
use fleetpulse_domain::{Catalog, Policy};
use fleetpulse_store::{SqliteStore, WAL_LIMIT_BYTES};
use tokio::task::JoinSet;
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

/// Shortest wall-clock spacing of scheduled prediction and training runs on a fast
/// simulated clock (`demo --speed`): a schedule counted in simulated time would otherwise
/// run them back to back (a run takes seconds of wall time) and starve ingest of the
/// machine's cores.
pub const MIN_PREDICT_SPACING: Duration = Duration::from_secs(15);
pub const MIN_TRAIN_SPACING: Duration = Duration::from_secs(300);

/// The wall-clock period of a schedule of `every` on `clock`: `every` itself on the wall
/// clock, `every / speed` on a simulated clock, but never shorter than `floor`.
pub fn schedule_period(
    clock: fleetpulse_domain::Clock,
    every: Duration,
    floor: Duration,
) -> Duration {
    if clock.is_simulated() {
        clock.wall_duration(every).max(floor)
    } else {
        every
    }
}

/// The worker. Cheap to clone: clones share one worker.
#[derive(Clone)]
pub struct AnalyticsWorker {
    inner: Arc<WorkerInner>,
}

struct WorkerInner {
    store: Arc<dyn PredictionStore>,
    forecaster: Arc<dyn Forecaster>,
    planner: Arc<dyn PredictionPlanner>,
    cfg: AnalyticsConfig,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// Woken when a run created or updated orders.
    streams: Option<fleetpulse_api::StreamStop>,
    /// Checkpointed after a run when its write-ahead log is over its limit (`serve`).
    wal: Option<Arc<SqliteStore>>,
    /// Runs spawned for callers that only wait for them, until shutdown.
    trainings: Runs,
    predictions: Runs,
    /// The catalog backtests train and replay with (`None`: this worker runs none).
    backtest_catalog: Option<Arc<fleetpulse_domain::catalog::Catalog>>,
    /// One backtest at a time: a second one is refused while it runs.
    backtests: tokio::sync::Semaphore,
    /// The process's clock: "now" of a run, and the schedules' pace.
    clock: fleetpulse_domain::Clock,
}

/// The spawned runs of one kind: finished ones are reaped at the next spawn; at
/// shutdown the set is closed and waited for.
#[derive(Default)]
struct Runs {
    set: std::sync::Mutex<Option<JoinSet<()>>>,
}

impl Runs {
    fn new() -> Self {
        Self {
            set: std::sync::Mutex::new(Some(JoinSet::new())),
        }
    }

    /// Spawns `run`, or gives it back when the worker is shutting down.
    fn spawn<F>(&self, run: F) -> Result<(), F>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(mut guard) = self.set.lock() else {
            return Err(run);
        };
        let Some(set) = guard.as_mut() else {
            return Err(run);
        };
        while set.try_join_next().is_some() {}
        set.spawn(run);
        Ok(())
    }

    /// Closes the set (later runs are refused) and waits for the running ones until
    /// `deadline`; cancels those still running then. Returns how many were cancelled.
    async fn finish(&self, deadline: tokio::time::Instant) -> usize {
        let taken = self.set.lock().ok().and_then(|mut g| g.take());
        let Some(mut set) = taken else {
            return 0;
        };
        let all_done = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout_at(deadline, all_done).await.is_ok() {
            return 0;
        }
        let cancelled = set.len();
        set.abort_all();
        cancelled
    }
}

impl AnalyticsWorker {
    pub fn new(
        store: Arc<dyn PredictionStore>,
        forecaster: Arc<dyn Forecaster>,
        planner: Arc<dyn PredictionPlanner>,
        cfg: AnalyticsConfig,
    ) -> Self {
        Self {
            inner: Arc::new(WorkerInner {
                store,
                forecaster,
                planner,
                cfg,
                one_at_a_time: tokio::sync::Mutex::new(()),
                streams: None,
                wal: None,
                trainings: Runs::new(),
                predictions: Runs::new(),
                backtest_catalog: None,
                backtests: tokio::sync::Semaphore::new(1),
                clock: fleetpulse_domain::Clock::Wall,
            }),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut WorkerInner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => warn!("analytics worker configured after it was shared; ignored"),
        }
        self
    }

    /// Runs backtests (`POST /api/v1/models/backtest`) with `catalog`.
    pub fn with_backtests(self, catalog: Arc<fleetpulse_domain::catalog::Catalog>) -> Self {
        self.configure(|w| w.backtest_catalog = Some(catalog))
    }

    /// Runs on `clock` (the process's): "now" of every run, and the schedules, which
    /// count `analytics.*_interval_s` in its time (see [`schedule_period`]).
    pub fn with_clock(self, clock: fleetpulse_domain::Clock) -> Self {
        self.configure(|w| w.clock = clock)
    }

    /// Order streams to wake after a run that created or updated orders.
    pub fn with_stream_wake(self, streams: fleetpulse_api::StreamStop) -> Self {
        self.configure(|w| w.streams = Some(streams))
    }

    /// Checkpoints `store`'s write-ahead log after each run when it is over
    /// [`WAL_LIMIT_BYTES`] (a long-running process; the CLI closes the store instead).
    pub fn with_wal_checkpoint(self, store: Arc<SqliteStore>) -> Self {
        self.configure(|w| w.wal = Some(store))
    }

    /// One prediction run, in the caller's task: data as of now, forecasts with the
    /// deployed models, the run stored and its orders raised (held ones released as the
    /// limits allow). With `as_of` (not in the future): data as of then, forecasts with
    /// the models that scored the fleet then ([`PredictionStore::models_as_of`]), and
    /// nothing stored or applied: a forecast of the past is not a work order (the report
    /// carries the predictions and says so).
    pub async fn predict(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<RunReport, StoreError> {
        self.inner.predict(trigger, as_of).await
    }

    /// One training run, in the caller's task: models trained on the data as of now (or
    /// `as_of`, not in the future, compared with the models deployed then), stored with
    /// that as-of, deployed where their report says so (see
    /// [`PredictionStore::save_models`]). Returns the reports of the models stored.
    pub async fn train(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<ModelReport>, StoreError> {
        self.inner.train(trigger, as_of).await
    }

    /// A prediction run in a task of its own; the caller only waits for it.
    pub async fn spawn_predict(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<RunReport, StoreError> {
        let inner = self.inner.clone();
        let who = trigger.to_owned();
        let run = async move { inner.predict(&who, as_of).await };
        spawned(&self.inner.predictions, "prediction", trigger, run, |r| {
            r.predictions
        })
        .await
    }

    /// A training run in a task of its own; the caller only waits for it. A caller
    /// that leaves does not stop it: the models are stored, and the run logs that its
    /// caller left.
    pub async fn spawn_train(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<ModelReport>, StoreError> {
        let inner = self.inner.clone();
        let who = trigger.to_owned();
        let run = async move { inner.train(&who, as_of).await };
        spawned(&self.inner.trainings, "training", trigger, run, Vec::len).await
    }

    /// Both schedules until `stop`. Each run is spawned: stopping the schedule leaves a
    /// run going to [`Self::finish`].
    pub async fn run(self, stop: CancellationToken) {
        let clock = self.inner.clock;
        let predict_every = schedule_period(
            clock,
            Duration::from_secs(self.inner.cfg.predict_interval_s.max(1)),
            MIN_PREDICT_SPACING,
        );
        let train_every = schedule_period(
            clock,
            Duration::from_secs(self.inner.cfg.train_interval_s.max(1)),
            MIN_TRAIN_SPACING,
        );
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
                    if let Err(e) = self.spawn_predict("schedule", None).await {
                        warn!(error = %e, "prediction run failed; the next one retries");
                    }
                }
                _ = train.tick() => {
                    if let Err(e) = self.spawn_train("schedule", None).await {
                        warn!(error = %e, "training run failed; the next one retries");
                    }
                }
            }
        }
    }

    /// Shutdown: no new run starts; running ones get until `within` to finish (and be
    /// stored), then are cancelled with a warning. Returns what was cancelled.
    pub async fn finish(&self, within: Duration) -> Cancelled {
        let deadline = tokio::time::Instant::now() + within;
        let (trainings, predictions) = tokio::join!(
            self.inner.trainings.finish(deadline),
            self.inner.predictions.finish(deadline)
        );
        if trainings > 0 {
            warn!(
                runs = trainings,
                waited_s = within.as_secs(),
                "training run cancelled by shutdown"
            );
        }
        if predictions > 0 {
            warn!(
                runs = predictions,
                waited_s = within.as_secs(),
                "prediction run cancelled by shutdown"
            );
        }
        Cancelled {
            trainings,
            predictions,
        }
    }
}

/// Runs cancelled by [`AnalyticsWorker::finish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cancelled {
    pub trainings: usize,
    pub predictions: usize,
}

/// Runs `run` as a task of `runs` and waits for its result. When the waiting caller is
/// gone by the time the run ends, the task logs how it ended (`stored`: predictions or
/// models stored).
async fn spawned<T, F>(
    runs: &Runs,
    kind: &'static str,
    trigger: &str,
    run: F,
    stored: fn(&T) -> usize,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let trigger_owned = trigger.to_owned();
    let task = async move {
        let result = run.await;
        let summary = match &result {
            Ok(t) => Ok(stored(t)),
            Err(e) => Err(e.to_string()),
        };
        if tx.send(result).is_err() {
            match summary {
                Ok(stored) => info!(
                    trigger = trigger_owned.as_str(),
                    stored, "{kind} run finished after its caller left"
                ),
                Err(error) => warn!(
                    trigger = trigger_owned.as_str(),
                    %error,
                    "{kind} run failed after its caller left"
                ),
            }
        }
    };
    if runs.spawn(task).is_err() {
        return Err(StoreError::Unavailable(format!(
            "shutting down: no new {kind} run starts"
        )));
    }
    rx.await.map_err(|_| {
        StoreError::Internal(format!("the {kind} run ended without a result (cancelled)"))
    })?
}

/// What [`resolve_as_of`] says of a run's as-of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AsOf {
    /// No as-of asked for: the data as of now, the run stored and applied.
    Now(DateTime<Utc>),
    /// An as-of before now (a back-test): nothing at or after it is read, and a
    /// prediction run applies nothing.
    Past(DateTime<Utc>),
}

impl AsOf {
    fn time(self) -> DateTime<Utc> {
        match self {
            AsOf::Now(t) | AsOf::Past(t) => t,
        }
    }
}

/// The as-of of a run asked for at `now`: an as-of in the future is refused (its data
/// would be "now" read as if it were later: nothing honest to forecast or learn from).
fn resolve_as_of(as_of: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<AsOf, StoreError> {
    match as_of {
        None => Ok(AsOf::Now(now)),
        Some(t) if t > now => Err(StoreError::Invalid(format!(
            "as_of {} is in the future (now {}): give a time up to now, or none for now",
            t.to_rfc3339(),
            now.to_rfc3339()
        ))),
        Some(t) => Ok(AsOf::Past(t)),
    }
}

/// The note of a prediction run whose orders were not applied.
pub const NOT_APPLIED: &str = "orders: not applied (as_of before now)";

impl WorkerInner {
    async fn predict(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<RunReport, StoreError> {
        let as_of = resolve_as_of(as_of, self.clock.now())?;
        let _one = self.one_at_a_time.lock().await;
        // "now" is when the run gets its turn
        let as_of = match as_of {
            AsOf::Now(_) => AsOf::Now(self.clock.now()),
            past => past,
        };
        let started = std::time::Instant::now();
        let now = as_of.time();
        let data = self
            .store
            .prediction_data(now, self.cfg.history_days, self.cfg.recent_days)
            .await?;
        let read_ms = started.elapsed().as_millis();
        let models = match as_of {
            AsOf::Now(_) => self.store.deployed_models().await?,
            AsOf::Past(t) => self.store.models_as_of(t).await?,
        };
        let devices = data.devices.len();
        let forecaster = self.forecaster.clone();
        let predictions = tokio::task::spawn_blocking(move || forecaster.forecast(&data, &models))
            .await
            .map_err(|e| StoreError::Internal(format!("forecast task failed: {e}")))?;
        if let AsOf::Past(t) = as_of {
            // a forecast of the past is not a work order: nothing is stored or applied
            info!(
                trigger,
                as_of = %t.to_rfc3339(),
                devices,
                predictions = predictions.len(),
                read_ms,
                total_ms = started.elapsed().as_millis(),
                "prediction run as of a past time: orders not applied, run not stored"
            );
            return Ok(RunReport {
                as_of: Some(t),
                devices,
                predictions: predictions.len(),
                orders_applied: false,
                forecasts: predictions,
                note: Some(NOT_APPLIED.to_owned()),
                ..RunReport::default()
            });
        }
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
        self.checkpoint_if_large("prediction run").await;
        Ok(report)
    }

    async fn train(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<ModelReport>, StoreError> {
        let as_of = resolve_as_of(as_of, self.clock.now())?;
        let _one = self.one_at_a_time.lock().await;
        // "now" is when the run gets its turn
        let as_of = match as_of {
            AsOf::Now(_) => AsOf::Now(self.clock.now()),
            past => past,
        };
        let data = self
            .store
            .prediction_data(as_of.time(), self.cfg.history_days, self.cfg.recent_days)
            .await?;
        // what the new models are compared with: the models deployed then (none trained
        // on data from after the as-of)
        let current = match as_of {
            AsOf::Now(_) => self.store.deployed_models().await?,
            AsOf::Past(t) => self.store.models_as_of(t).await?,
        };
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
        info!(trigger, as_of = %as_of.time().to_rfc3339(), stored, ?deployed, "training run");
        self.checkpoint_if_large("training run").await;
        Ok(reports)
    }

    /// A run writes much at once: when the WAL is over its limit after it, copy it into
    /// the database and truncate it (readers can keep SQLite's own checkpoints from
    /// finishing, and the file then stays at its largest size).
    async fn checkpoint_if_large(&self, after: &str) {
        let Some(store) = &self.wal else {
            return;
        };
        checkpoint_if_large(store, after).await;
    }
}

/// [`SqliteStore::checkpoint_if_over`] at [`WAL_LIMIT_BYTES`], logged: debug when done,
/// a warning when readers kept it from finishing.
pub async fn checkpoint_if_large(store: &SqliteStore, after: &str) {
    match store.checkpoint_if_over(WAL_LIMIT_BYTES).await {
        Ok(Some(cp)) if cp.busy => warn!(
            after,
            wal_bytes = cp.wal_bytes,
            log_frames = cp.log_frames,
            checkpointed_frames = cp.checkpointed_frames,
            "WAL checkpoint could not finish: readers still use it; retried after the next run"
        ),
        Ok(Some(cp)) => tracing::debug!(after, wal_bytes = cp.wal_bytes, "WAL checkpointed"),
        Ok(None) => {}
        Err(error) => warn!(after, %error, "WAL checkpoint failed"),
    }
}

#[async_trait::async_trait]
impl fleetpulse_api::PredictionRunner for AnalyticsWorker {
    async fn run_now(
        &self,
        trigger: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<RunReport, StoreError> {
        self.spawn_predict(trigger, as_of).await
    }

    async fn train_now(
        &self,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<ModelReport>, StoreError> {
        self.spawn_train("api", as_of).await
    }

    async fn backtest_now(
        &self,
        train_until: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        step_hours: f64,
    ) -> Result<fleetpulse_analytics::predict::backtest::BacktestReport, StoreError> {
        let inner = &self.inner;
        let Some(catalog) = inner.backtest_catalog.clone() else {
            return Err(StoreError::Unavailable(
                "this process runs no backtests".into(),
            ));
        };
        let window = crate::backtest::Window::check(
            train_until,
            until,
            step_hours,
            inner.clock.now(),
            ["train_until", "until", "step_hours"],
        )
        .map_err(StoreError::Invalid)?;
        let Ok(_one) = inner.backtests.try_acquire() else {
            return Err(StoreError::Unavailable(
                "a backtest is running; ask again when it has finished".into(),
            ));
        };
        let started = std::time::Instant::now();
        let report = crate::backtest::run(
            inner.store.as_ref(),
            catalog,
            &inner.cfg,
            &window,
            Arc::new(move |what: &str| {
                info!(
                    elapsed_s = started.elapsed().as_secs_f64(),
                    "backtest: {what}"
                );
            }),
        )
        .await?;
        info!(
            train_until = %window.train_until,
            until = %window.until,
            modes = report.modes.len(),
            elapsed_s = started.elapsed().as_secs_f64(),
            "backtest finished"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Barrier, Mutex};

    use fleetpulse_api::PredictionRunner;
    use fleetpulse_domain::prediction::ValidationMetrics;
    use fleetpulse_domain::store::UnknownDevicePolicy;
    use fleetpulse_rules::CatalogRules;
    use fleetpulse_store::{Durability, StoreOptions};

    use super::*;

    /// A forecaster whose training waits at a barrier until the test lets it go.
    struct HeldTraining {
        gate: Arc<Barrier>,
    }

    impl Forecaster for HeldTraining {
        fn forecast(&self, _: &PredictionData, _: &[TrainedModel]) -> Vec<Prediction> {
            Vec::new()
        }

        fn train(&self, _: &PredictionData, _: &[TrainedModel]) -> Vec<TrainedModel> {
            self.gate.wait();
            vec![model("risk-compressor-held")]
        }
    }

    fn model(version: &str) -> TrainedModel {
        let metrics = ValidationMetrics {
            pr_auc: 0.5,
            threshold: 0.4,
            precision: Some(0.5),
            recall: 0.5,
            positives: 3,
            negatives: 30,
            calibration: Vec::new(),
            brier: None,
            warnings: None,
        };
        TrainedModel {
            report: ModelReport {
                version: version.into(),
                failure_mode: "compressor".into(),
                algorithm: "logistic_regression".into(),
                trained_at: Utc::now(),
                as_of: None,
                horizon_days: 30.0,
                train_from: Utc::now(),
                train_to: Utc::now(),
                validate_from: Utc::now(),
                validate_to: Utc::now(),
                features: vec!["age".into()],
                metrics,
                baselines: Default::default(),
                deployed: false,
                serving: None,
                decision: "test".into(),
                field: Vec::new(),
            },
            parameters: serde_json::json!({}),
        }
    }

    struct Fixture {
        worker: AnalyticsWorker,
        store: Arc<SqliteStore>,
        gate: Arc<Barrier>,
        log: Arc<Mutex<Vec<u8>>>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog =
            Arc::new(Catalog::from_toml_str(crate::config::EMBEDDED_CATALOG).expect("catalog"));
        let policy = Arc::new(
            Policy::from_toml_str(include_str!("../../config/policy.toml")).expect("policy"),
        );
        let store = Arc::new(
            SqliteStore::open(
                &dir.path().join("fleetpulse.db"),
                StoreOptions {
                    clock: Default::default(),
                    catalog: catalog.clone(),
                    rules: Arc::new(CatalogRules::new(policy.clone())),
                    unknown_device: UnknownDevicePolicy::AutoRegister,
                    durability: Durability::Normal,
                    sink_spool: false,
                    cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
                },
            )
            .await
            .expect("open"),
        );
        let gate = Arc::new(Barrier::new(2));
        let worker = AnalyticsWorker::new(
            store.clone(),
            Arc::new(HeldTraining { gate: gate.clone() }),
            Arc::new(fleetpulse_rules::predicted::PredictionOrders::new(
                catalog, policy,
            )),
            AnalyticsConfig::default(),
        );
        Fixture {
            worker,
            store,
            gate,
            log: Arc::new(Mutex::new(Vec::new())),
            _dir: dir,
        }
    }

    /// What the worker logs while the guard lives (the tests run on a current-thread
    /// runtime, so every task logs on this thread).
    fn capture(log: &Arc<Mutex<Vec<u8>>>) -> tracing::subscriber::DefaultGuard {
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut log) = self.0.lock() {
                    log.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(log.clone()))
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn logged(log: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8_lossy(&log.lock().expect("log")).into_owned()
    }

    async fn release(gate: &Arc<Barrier>) {
        let gate = gate.clone();
        tokio::task::spawn_blocking(move || {
            gate.wait();
        })
        .await
        .expect("release");
    }

    /// Issue 21: an HTTP client that gave up on `POST /api/v1/models/train` dropped the
    /// handler's future, and the training it was awaiting with it: the models were
    /// trained, never stored, and nothing was logged. On the old code (`train_now` ran
    /// the training in the caller's future) no model is ever stored here.
    #[tokio::test]
    async fn a_training_run_whose_caller_left_is_stored_and_logged() {
        let f = fixture().await;
        let _log = capture(&f.log);
        let waited =
            tokio::time::timeout(Duration::from_millis(50), f.worker.train_now(None)).await;
        assert!(waited.is_err(), "the training waits at the gate");
        release(&f.gate).await;
        let stored = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let reports = f.store.model_reports().await.expect("reports");
                if !reports.is_empty() {
                    return reports;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the model is stored within 10 s");
        assert_eq!(stored[0].version, "risk-compressor-held");
        // the run's own task logs once the result found no one waiting
        tokio::time::timeout(Duration::from_secs(10), async {
            while !logged(&f.log).contains("training run finished after its caller left") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line in the log: {}", logged(&f.log)));
        let log = logged(&f.log);
        assert!(log.contains("trigger=\"api\""), "{log}");
        assert!(log.contains("stored=1"), "{log}");
    }

    #[tokio::test]
    async fn a_caller_that_waits_gets_the_reports() {
        let f = fixture().await;
        let waiting = f.worker.clone();
        let call = tokio::spawn(async move { waiting.train_now(None).await });
        release(&f.gate).await;
        let reports = call.await.expect("task").expect("trained");
        assert_eq!(reports.len(), 1);
        assert_eq!(f.store.model_reports().await.expect("reports").len(), 1);
    }

    #[tokio::test]
    async fn shutdown_cancels_a_training_run_that_outlasts_the_drain_bound_and_says_so() {
        let f = fixture().await;
        let _log = capture(&f.log);
        let waiting = f.worker.clone();
        let call = tokio::spawn(async move { waiting.train_now(None).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cancelled = f.worker.finish(Duration::from_millis(100)).await;
        assert_eq!(
            cancelled,
            Cancelled {
                trainings: 1,
                predictions: 0
            }
        );
        assert!(
            logged(&f.log).contains("training run cancelled by shutdown"),
            "{}",
            logged(&f.log)
        );
        // the caller hears of it instead of waiting for ever, and no run starts any more
        assert!(call.await.expect("task").is_err());
        assert!(matches!(
            f.worker.train_now(None).await,
            Err(StoreError::Unavailable(_))
        ));
        release(&f.gate).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(f.store.model_reports().await.expect("reports").is_empty());
    }
}
