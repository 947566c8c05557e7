//! Predictions: what the analytics worker reads about each device, and what it forecasts.
//!
//! Input ([`PredictionData`]): per device, daily summaries of every numeric telemetry
//! field (folded from the hourly rollups), the recent hourly values of every field (for
//! consumable and meter slopes), alarm episodes, failure events (labels), part and
//! consumable replacements, connectivity, and the outcomes of earlier prediction orders
//! (feedback). Plain rows, no I/O: `fleetpulse-store` produces it from the database, the
//! prediction benchmark produces it from the simulator, `fleetpulse-analytics` forecasts
//! from it. No telemetry field name is special here: which fields matter comes from the
//! catalog (consumable fields, `runtime_hours`) or is learned (failure risk).
//!
//! Output: [`Prediction`] rows (one per device and target), turned into orders by the
//! order raiser (due date, lead time, bundling, storm control), and a [`ModelReport`] per
//! trained failure-risk model.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::device::string_enum;
use crate::device::{ConnectionState, Criticality, LifecycleStatus};
use crate::serial::Serial;

/// One day (UTC) of one numeric field, folded from the hourly rollups.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldDay {
    /// Start of the UTC day.
    pub day: DateTime<Utc>,
    /// Readings that reported the field that day.
    pub count: u32,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Value of the reading with the highest `seq` that day.
    pub last: f64,
}

/// The last value of one field in one hour (the hourly rollup's `last`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HourPoint {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    pub last: f64,
}

/// An alarm episode of the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmSpan {
    pub code: String,
    pub started_at: DateTime<Utc>,
    /// `None` while active.
    pub ended_at: Option<DateTime<Utc>>,
    pub runtime_hours_at_start: Option<f64>,
}

/// A failure event of the device: the label of the failure-risk models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureLabel {
    pub at: DateTime<Utc>,
    pub runtime_hours: Option<f64>,
    /// Catalog failure mode (`compressor`, `sieve_bed`, …) when known.
    pub failure_mode: Option<String>,
    pub code: Option<String>,
    /// `repair_order`, `import` or `alarm` (see `reliability::FailureSource`).
    pub source: String,
    /// Closed as no fault found: kept for the record, not a failure.
    pub retracted: bool,
}

/// A part or consumable replaced on the device (completion outcome, import, or the repair
/// of a failure): the part's age starts again from here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replacement {
    /// A catalog consumable id (`filter`), failure mode (`compressor`) or component id
    /// (a maintenance record that renews a component), or `service` for a preventive
    /// service.
    pub part: String,
    pub at: DateTime<Utc>,
    pub runtime_hours: Option<f64>,
    /// The catalog component renewed (a consumable is a component of the same id; the
    /// repair of a failure renews the component of its mode): every failure mode of the
    /// component starts again. `None`: no component known (a service, an old record).
    #[serde(default)]
    pub component: Option<String>,
}

/// How the device's connection last ended.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Disconnect {
    pub at: DateTime<Utc>,
    /// `true`: the device said goodbye (status `offline` it published itself, or an MQTT
    /// DISCONNECT); `false`: the connection was lost (last will, keepalive timeout).
    pub graceful: bool,
}

/// The outcome of an order a prediction raised: the feedback for the next training run
/// and for the reported metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictionOutcome {
    pub order_id: i64,
    /// The order cause (`failure_risk:compressor`, `filter_depletion`, …).
    pub cause: String,
    pub raised_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The completion said the failure was confirmed (`Some(false)`: no fault found).
    pub failure_confirmed: Option<bool>,
    pub fault_code: Option<String>,
    /// Model version in the order's evidence.
    pub model_version: Option<String>,
}

/// Everything the predictors know about one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceHistory {
    pub serial: Serial,
    pub model: Option<String>,
    pub kind: Option<String>,
    pub region: Option<String>,
    pub status: LifecycleStatus,
    pub criticality: Criticality,
    pub registered_at: DateTime<Utc>,
    /// When the device entered service, where known (imported history): its age counts
    /// from here, else from `registered_at`.
    #[serde(default)]
    pub commissioned_at: Option<DateTime<Utc>>,
    pub connection: ConnectionState,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub last_disconnect: Option<Disconnect>,
    /// Daily summaries per field, each series ascending by day.
    pub daily: BTreeMap<String, Vec<FieldDay>>,
    /// Hourly last values per field over the recent window, ascending.
    pub recent_hourly: BTreeMap<String, Vec<HourPoint>>,
    /// Alarm episodes, ascending by start.
    pub alarms: Vec<AlarmSpan>,
    pub failures: Vec<FailureLabel>,
    pub replacements: Vec<Replacement>,
    pub outcomes: Vec<PredictionOutcome>,
}

impl DeviceHistory {
    /// When the device's life started: its commissioning where known, else its
    /// registration. Back-filled history starts before the registration, never before
    /// this.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.commissioned_at.unwrap_or(self.registered_at)
    }
}

/// What one prediction run reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionData {
    /// The run's "now": nothing after it is in the data.
    pub as_of: Option<DateTime<Utc>>,
    /// Days of daily history included (from `as_of` back).
    pub history_days: u32,
    /// Days of hourly points included.
    pub recent_days: u32,
    pub devices: Vec<DeviceHistory>,
}

string_enum!(
    /// What a prediction forecasts.
    PredictionKind {
        /// A consumable reaches its order level (`target` = consumable id).
        ConsumableDepletion => "consumable_depletion",
        /// Runtime hours reach the model's service interval (`target` = `service`).
        ServiceInterval => "service_interval",
        /// A failure mode fails within the horizon (`target` = failure mode).
        FailureRisk => "failure_risk",
        /// The device went silent at a customer (`target` = `connectivity`).
        Silent => "silent",
    }
);

/// One feature's part in a failure-risk score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureContribution {
    pub feature: String,
    pub value: f64,
    /// Contribution to the score (for logistic regression: coefficient × standardised
    /// value, in log-odds).
    pub contribution: f64,
}

/// A forecast for one device and target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    pub serial: Serial,
    pub kind: PredictionKind,
    /// Consumable id, `service`, failure mode or `connectivity`.
    pub target: String,
    /// The data's `as_of`.
    pub as_of: DateTime<Utc>,
    /// Predicted date (depletion, service due, silent since); `None` for a risk score.
    pub due_at: Option<DateTime<Utc>>,
    /// Uncertainty interval of `due_at` (e.g. 80 %).
    pub due_low: Option<DateTime<Utc>>,
    pub due_high: Option<DateTime<Utc>>,
    /// Probability of the event within `horizon_days` (failure risk).
    pub probability: Option<f64>,
    pub horizon_days: Option<f64>,
    /// The operating threshold the model was deployed with: an order is called for when
    /// `probability >= threshold`.
    pub threshold: Option<f64>,
    /// `depletion-v1`, `service-v1`, `risk-compressor-20261201T000000Z`, …
    pub model_version: String,
    pub top_features: Vec<FeatureContribution>,
    /// Values, alarms and thresholds behind the forecast.
    pub evidence: serde_json::Value,
}

/// One bin of a calibration table: predicted against observed frequency.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CalibrationBin {
    pub predicted_low: f64,
    pub predicted_high: f64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
    pub count: u64,
}

/// Validation metrics of a scorer (a model or a baseline) on held-out time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationMetrics {
    /// Area under the precision-recall curve.
    pub pr_auc: f64,
    pub threshold: f64,
    /// Share of the samples at or above the threshold that failed; `None` when no
    /// sample reached it (no call, so no precision: not 0).
    pub precision: Option<f64>,
    pub recall: f64,
    pub positives: u64,
    pub negatives: u64,
    pub calibration: Vec<CalibrationBin>,
    /// Brier score (mean squared error of the probabilities).
    pub brier: Option<f64>,
    /// The same scorer as the order policy uses it: warnings replayed over the held-out
    /// time, one open warning per device at a time (absent in reports from before).
    #[serde(default)]
    pub warnings: Option<WarningMetrics>,
}

/// A scorer's warnings replayed in time order per device: a warning is raised when the
/// score reaches the threshold and no warning is open on that device; it is confirmed by
/// a failure of the mode within the horizon, or expires there (no fault found). Warnings
/// still open at the end of the period are neither.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WarningMetrics {
    pub warnings: u64,
    /// Warnings followed by a failure of the mode within the horizon.
    pub confirmed: u64,
    /// Warnings that expired at the horizon without a failure (no fault found).
    pub expired: u64,
    /// Failures of the mode in the period.
    pub failures: u64,
    /// Failures warned at least `min_lead_days` ahead.
    pub warned_ahead: u64,
    pub min_lead_days: f64,
    /// `confirmed / (confirmed + expired)`; `None` when no warning closed (no warning,
    /// no precision: not 0).
    pub precision: Option<f64>,
    /// `warned_ahead / failures` (0 without failures).
    pub recall: f64,
    /// Median days from a confirmed warning to its failure.
    pub median_lead_days: Option<f64>,
}

/// A trained failure-risk model, as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelReport {
    pub version: String,
    /// Failure mode the model scores.
    pub failure_mode: String,
    /// `logistic_regression`, `random_forest`, …
    pub algorithm: String,
    /// The `as_of` of the data it was trained on (the version's time stamp).
    pub trained_at: DateTime<Utc>,
    /// The training run's as-of time: nothing at or after it was read. `None` in reports
    /// from before as-of training (their `trained_at` is it).
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    pub horizon_days: f64,
    pub train_from: DateTime<Utc>,
    pub train_to: DateTime<Utc>,
    pub validate_from: DateTime<Utc>,
    pub validate_to: DateTime<Utc>,
    pub features: Vec<String>,
    pub metrics: ValidationMetrics,
    /// The same validation for the baselines (`weibull_age`, `alarm_count`).
    pub baselines: BTreeMap<String, ValidationMetrics>,
    /// Whether this model now scores the fleet.
    pub deployed: bool,
    /// The scorer that serves the failure mode: `model` (the learned model),
    /// `weibull_age` or `alarm_count`, the best on validation by the criterion the
    /// `decision` states; `None` when nothing serves (and in reports from before serving
    /// selection, where a deployed model served itself).
    #[serde(default)]
    pub serving: Option<String>,
    /// Why (not) deployed, in words.
    pub decision: String,
    /// What dispatch said of the orders earlier versions of this mode's model raised (their
    /// completion outcomes, per model version), as of training: a no-fault-found closure
    /// is a false positive here. Empty in reports from before.
    #[serde(default)]
    pub field: Vec<FieldOutcomes>,
}

/// The completion outcomes of the `failure_risk:<mode>` orders one model version raised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldOutcomes {
    /// The version in the orders' evidence (`unknown` where it is missing).
    pub model_version: String,
    pub orders: u64,
    /// Completed with the failure confirmed.
    pub confirmed: u64,
    /// Completed as no fault found.
    pub no_fault_found: u64,
    /// Not completed (open, or closed without an outcome).
    pub open: u64,
    /// `confirmed / (confirmed + no_fault_found)`; `None` before any completion.
    pub precision: Option<f64>,
}

/// A trained failure-risk model: its report and its parameters (what the implementation
/// needs to score with it again, e.g. coefficients and feature scaling), as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub report: ModelReport,
    pub parameters: serde_json::Value,
}

/// The predictors, as the analytics worker calls them. Pure: no I/O, no clock (the data's
/// `as_of` is "now"); `fleetpulse-analytics` implements it from the catalog.
pub trait Forecaster: Send + Sync + 'static {
    /// Every forecast the data calls for: consumable depletion and service due dates for
    /// each device with a meter, and a failure-risk score per failure mode for which a
    /// deployed model is among `models`.
    fn forecast(&self, data: &PredictionData, models: &[TrainedModel]) -> Vec<Prediction>;

    /// Trains one model per failure mode on `data` with a time-based split (training
    /// window, then validation window, both inside the data), validates it against the
    /// baselines and against the `current` model of the same mode, and returns each with
    /// its report; `report.deployed` says whether it should replace the current one.
    fn train(&self, data: &PredictionData, current: &[TrainedModel]) -> Vec<TrainedModel>;
}
