//! Predictions from the catalog: consumable depletion dates, runtime-hour service due
//! dates and failure risk per failure mode (issue 7), as the
//! [`Forecaster`](fleetpulse_domain::prediction::Forecaster) the analytics worker calls.
//!
//! - [`depletion`]: wear per runtime hour of each catalog consumable from the device's own
//!   readings (robust to resets and noise) × its usage rate ([`usage`]) → the date its
//!   field reaches `order_at_pct`, with an interval; the service due date from
//!   `service_interval_hours`.
//! - [`features`], [`risk`]: generic features from every numeric field, alarm code and
//!   part age; a logistic regression per failure mode (linfa), trained with a time split
//!   and deployed only when it beats the `weibull_age` and `alarm_count` baselines (and
//!   the current model) on validation; [`metrics`] defines PR-AUC, precision, recall,
//!   calibration and Brier.
//!
//! Everything is pure: no I/O, no clock (the data's `as_of` is "now"), and a forecast at
//! `as_of` reads nothing after it. Methods and definitions: `docs/predictions.md`.

pub mod backtest;
pub mod depletion;
pub mod features;
pub mod gbm;
pub mod metrics;
pub mod remaining;
pub mod risk;
pub mod usage;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::prediction::{
    DeviceHistory, Forecaster, Prediction, PredictionData, PredictionKind, TrainedModel,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use statrs::distribution::{ContinuousCDF, Normal};

pub use depletion::{Depletion, ServiceDue, forecast_depletion, forecast_service};
pub use risk::{RiskParameters, SCORERS, Scorer, failure_modes, train_mode, train_modes};
pub use usage::UsageProfile;

/// Version of the depletion forecasts.
pub const DEPLETION_VERSION: &str = "depletion-v1";
/// Version of the service forecasts.
pub const SERVICE_VERSION: &str = "service-v1";

const fn default_horizon_days() -> f64 {
    14.0
}
const fn default_sample_every_days() -> u32 {
    3
}
const fn default_replay_every_days() -> u32 {
    1
}
const fn default_validation_share() -> f64 {
    0.3
}
const fn default_target_precision() -> f64 {
    0.6
}
const fn default_fleet_thresholds() -> bool {
    true
}
const fn default_min_mode_precision() -> f64 {
    0.3
}
const fn default_interval_confidence() -> f64 {
    0.8
}
const fn default_l2_penalty() -> f64 {
    1.0
}
const fn default_max_iterations() -> u64 {
    200
}
const fn default_min_positives() -> usize {
    10
}
const fn default_top_features() -> usize {
    5
}

/// How the predictors forecast and train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictOptions {
    /// Failure-risk horizon: a failure within this many days after `as_of` is a positive.
    #[serde(default = "default_horizon_days")]
    pub horizon_days: f64,
    /// Days between two training samples of one device.
    #[serde(default = "default_sample_every_days")]
    pub sample_every_days: u32,
    /// Days between two instants of the warning replay that chooses the operating
    /// threshold (every device is scored at each).
    #[serde(default = "default_replay_every_days")]
    pub replay_every_days: u32,
    /// Share of the sampled time span held out (the latest part) for validation.
    #[serde(default = "default_validation_share")]
    pub validation_share: f64,
    /// Precision the operating thresholds aim at, on the warnings replayed over the
    /// training window: of all deployed modes' warnings together with `fleet_thresholds`,
    /// else of each mode's (the highest recall reaching it).
    #[serde(default = "default_target_precision")]
    pub target_precision: f64,
    /// Choose the deployed modes' thresholds together: the most failures warned ahead
    /// over the fleet at `target_precision` over all warnings, so a mode that wastes few
    /// visits per failure caught warns earlier than one that wastes many.
    #[serde(default = "default_fleet_thresholds")]
    pub fleet_thresholds: bool,
    /// With `fleet_thresholds`, the precision every mode keeps on its own.
    #[serde(default = "default_min_mode_precision")]
    pub min_mode_precision: f64,
    /// Coverage of the due-date intervals (two-sided, normal approximation).
    #[serde(default = "default_interval_confidence")]
    pub interval_confidence: f64,
    /// L2 penalty of the logistic regression.
    #[serde(default = "default_l2_penalty")]
    pub l2_penalty: f64,
    /// L-BFGS iterations of the logistic regression.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
    /// Failures a mode needs in the training window to be trained.
    #[serde(default = "default_min_positives")]
    pub min_positives: usize,
    /// Feature contributions reported per risk prediction.
    #[serde(default = "default_top_features")]
    pub top_features: usize,
    /// The failure-risk learner: `logistic_regression` (one weight per standardised
    /// feature) or `gradient_boosting` (trees: features that interact).
    #[serde(default)]
    pub learner: Learner,
    /// The trees of `gradient_boosting` (failure risk and sensor remaining life).
    #[serde(default)]
    pub gbm: gbm::GbmOptions,
    /// Remaining life from the sensors: days to failure are learned up to this many days
    /// (a part further from failure than this looks healthy, and its distance cannot be
    /// read from its sensors).
    #[serde(default = "default_remaining_life_cap_days")]
    pub remaining_life_cap_days: f64,
}

const fn default_remaining_life_cap_days() -> f64 {
    125.0
}

/// The failure-risk learner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learner {
    /// Gradient-boosted trees ([`gbm`]).
    GradientBoosting,
    /// L2-regularised logistic regression (linfa-logistic): the default, favoured by the
    /// backtests of docs/benchmarks.md on FD001 and the untidy simulated fleet.
    #[default]
    LogisticRegression,
}

impl Learner {
    pub fn as_str(self) -> &'static str {
        match self {
            Learner::GradientBoosting => "gradient_boosting",
            Learner::LogisticRegression => "logistic_regression",
        }
    }
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            horizon_days: default_horizon_days(),
            sample_every_days: default_sample_every_days(),
            replay_every_days: default_replay_every_days(),
            validation_share: default_validation_share(),
            target_precision: default_target_precision(),
            fleet_thresholds: default_fleet_thresholds(),
            min_mode_precision: default_min_mode_precision(),
            interval_confidence: default_interval_confidence(),
            l2_penalty: default_l2_penalty(),
            max_iterations: default_max_iterations(),
            min_positives: default_min_positives(),
            top_features: default_top_features(),
            learner: Learner::default(),
            gbm: gbm::GbmOptions::default(),
            remaining_life_cap_days: default_remaining_life_cap_days(),
        }
    }
}

impl PredictOptions {
    /// Whether the options make sense; the message names the key (under `prefix`).
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("{prefix}.{key} {why}"));
        if !(self.horizon_days.is_finite() && self.horizon_days >= 1.0) {
            return bad("horizon_days", "must be at least 1");
        }
        if self.sample_every_days == 0 || self.replay_every_days == 0 {
            return bad(
                "sample_every_days and replay_every_days",
                "must be at least 1",
            );
        }
        if !(self.validation_share > 0.0 && self.validation_share < 1.0) {
            return bad("validation_share", "must be between 0 and 1");
        }
        if !(self.target_precision > 0.0 && self.target_precision <= 1.0) {
            return bad("target_precision", "must be above 0 and at most 1");
        }
        if !(self.min_mode_precision >= 0.0 && self.min_mode_precision <= 1.0) {
            return bad("min_mode_precision", "must be between 0 and 1");
        }
        if !(self.interval_confidence > 0.0 && self.interval_confidence < 1.0) {
            return bad("interval_confidence", "must be between 0 and 1");
        }
        if !(self.l2_penalty.is_finite() && self.l2_penalty >= 0.0) {
            return bad("l2_penalty", "must be 0 or more");
        }
        if self.max_iterations == 0 || self.min_positives == 0 {
            return bad("max_iterations and min_positives", "must be at least 1");
        }
        if !(self.remaining_life_cap_days.is_finite() && self.remaining_life_cap_days >= 1.0) {
            return bad("remaining_life_cap_days", "must be at least 1");
        }
        self.gbm.check(&format!("{prefix}.gbm"))?;
        Ok(())
    }

    /// The normal quantile of the due-date intervals.
    pub fn z(&self) -> f64 {
        let c = self.interval_confidence.clamp(0.01, 0.999);
        Normal::standard().inverse_cdf(0.5 + c / 2.0)
    }
}

/// The catalog-driven [`Forecaster`].
#[derive(Clone, Debug)]
pub struct CatalogForecaster {
    catalog: Arc<Catalog>,
    options: PredictOptions,
}

fn data_as_of(data: &PredictionData) -> DateTime<Utc> {
    data.as_of.unwrap_or_else(|| {
        data.devices
            .iter()
            .flat_map(|d| d.daily.values())
            .filter_map(|s| s.last().map(|x| x.day + Duration::days(1)))
            .max()
            .unwrap_or_default()
    })
}

impl CatalogForecaster {
    pub fn new(catalog: Arc<Catalog>, options: PredictOptions) -> Self {
        CatalogForecaster { catalog, options }
    }

    pub fn options(&self) -> &PredictOptions {
        &self.options
    }

    /// Depletion and service forecasts of one device at `as_of`.
    pub fn due_dates(&self, device: &DeviceHistory, as_of: DateTime<Utc>) -> Vec<Prediction> {
        let Some(model) = device.model.as_deref().and_then(|m| self.catalog.model(m)) else {
            return Vec::new();
        };
        let z = self.options.z();
        let usage = device
            .daily
            .get(depletion::RUNTIME_FIELD)
            .and_then(|m| UsageProfile::from_meter(m, as_of));
        let usage_json = usage.as_ref().map(|u| {
            json!({
                "runtime_hours_per_day": u.rate_per_day,
                "rate_se": u.rate_se,
                "daily_sd": u.daily_sd,
                "weekday_factors": u.weekday,
                "days": u.days,
            })
        });
        let mut out = Vec::new();
        for c in &model.consumables {
            let Some(d) = forecast_depletion(device, c, usage.as_ref(), as_of, z) else {
                continue;
            };
            out.push(due_prediction(
                device,
                PredictionKind::ConsumableDepletion,
                &c.id,
                as_of,
                d.dates,
                DEPLETION_VERSION,
                json!({
                    "field": c.field,
                    "order_at_pct": c.order_at_pct,
                    "level_now_pct": d.level_now,
                    "runtime_hours": d.runtime_now,
                    "wear_pct_per_runtime_hour": d.wear_per_hour,
                    "wear_se": d.wear_se,
                    "wear_source": d.source.as_str(),
                    "runtime_hours_left": d.hours_left,
                    "points": d.points,
                    "outliers_dropped": d.dropped,
                    "life_started_at": d.life_started_at,
                    "usage": usage_json,
                    "interval_confidence": self.options.interval_confidence,
                }),
            ));
        }
        if let Some(s) = forecast_service(
            device,
            model.service_interval_hours,
            usage.as_ref(),
            as_of,
            z,
        ) {
            out.push(due_prediction(
                device,
                PredictionKind::ServiceInterval,
                "service",
                as_of,
                s.dates,
                SERVICE_VERSION,
                json!({
                    "service_interval_hours": s.interval_hours,
                    "runtime_hours": s.runtime_now,
                    "due_at_runtime_hours": s.due_meter,
                    "basis": s.basis,
                    "last_service_at": s.last_service_at,
                    "runtime_hours_left": s.hours_left,
                    "usage": usage_json,
                    "interval_confidence": self.options.interval_confidence,
                }),
            ));
        }
        out
    }

    /// Failure-risk predictions of one device at `as_of` with the deployed models.
    pub fn risks(
        &self,
        device: &DeviceHistory,
        as_of: DateTime<Utc>,
        models: &[(&TrainedModel, RiskParameters)],
    ) -> Vec<Prediction> {
        let mut out = Vec::new();
        for (trained, p) in models {
            if !p.covers(device.model.as_deref()) || risk::is_down(device, as_of) {
                continue;
            }
            // the serving scorer's probability and threshold; the learned model explains
            // itself by its features, a baseline by the one input it reads
            let (prob, threshold, top) = match p.serving {
                Scorer::Model => {
                    let x = p.spec.compute(device, as_of);
                    let (prob, contributions) = p.score_features(&x);
                    let top = p.top_features(&x, &contributions, self.options.top_features);
                    (prob, p.threshold, top)
                }
                baseline => {
                    let Some((prob, threshold)) = p.score(baseline, device, as_of) else {
                        continue;
                    };
                    (prob, threshold, p.baseline_input(baseline, device, as_of))
                }
            };
            let since = as_of - Duration::days(7);
            let alarms: Vec<_> = device
                .alarms
                .iter()
                .filter(|a| a.started_at >= since && a.started_at < as_of)
                .map(|a| json!({"code": a.code, "started_at": a.started_at}))
                .collect();
            // the latest daily values of the fields behind the top features
            let mut values = serde_json::Map::new();
            for f in &top {
                if let Some((field, _)) = f.feature.split_once(':')
                    && let Some(day) = device
                        .daily
                        .get(field)
                        .and_then(|d| usage::known_days(d, as_of).last())
                {
                    values.insert(
                        field.to_owned(),
                        json!({"day": day.day, "mean": day.mean, "min": day.min, "max": day.max, "last": day.last}),
                    );
                }
            }
            let part = p.spec.part_age(device, as_of);
            let weibull = p.score(Scorer::WeibullAge, device, as_of).map(|x| x.0);
            // the expected failure date: the part's remaining Weibull life at its age,
            // in runtime hours, run at the device's own usage rate
            let residual = p.residual_life(device, as_of, self.options.interval_confidence);
            let usage = device
                .daily
                .get(depletion::RUNTIME_FIELD)
                .and_then(|m| UsageProfile::from_meter(m, as_of));
            // the sensors' estimate where it beat the Weibull one on validation
            let sensor = p
                .sensor_life
                .as_ref()
                .filter(|l| l.preferred)
                .map(|l| l.estimate(&p.spec.compute(device, as_of)));
            let days = |d: f64| as_of + Duration::seconds((d * 86_400.0).round() as i64);
            let sensor_dates = sensor.map(|e| usage::DueDates {
                due: days(e.median),
                low: days(e.low),
                high: e.high.map(days),
            });
            let weibull_dates = residual.and_then(|r| {
                usage.as_ref()?.when_run(
                    as_of,
                    r.median_hours,
                    r.low_hours,
                    r.high_hours,
                    self.options.z(),
                )
            });
            let dates = sensor_dates.or(weibull_dates);
            let rate = usage.as_ref().map(|u| u.rate_per_day);
            let remaining = match (sensor, &p.sensor_life) {
                (Some(e), Some(l)) => Some(json!({
                    "method": "sensor: gradient-boosted trees from the mode's features to the days until failure (capped), interval from the validation residuals",
                    "median_days": e.median,
                    "low_days": e.low,
                    "high_days": e.high,
                    "cap_days": l.cap_days,
                    "median_runtime_hours": rate.map(|r| r * e.median),
                    "validation_rmse_days": finite(l.rmse_days),
                    "weibull_validation_rmse_days": l.weibull_rmse_days,
                    "confidence": self.options.interval_confidence,
                })),
                _ => residual.map(|r| json!({
                    "method": "weibull_age: quantiles of the part's Weibull life given its age, run at the device's usage rate",
                    "part_age_hours": finite(r.age_hours),
                    "median_runtime_hours": finite(r.median_hours),
                    "low_runtime_hours": finite(r.low_hours),
                    "high_runtime_hours": finite(r.high_hours),
                    "confidence": self.options.interval_confidence,
                })),
            };
            out.push(Prediction {
                serial: device.serial.clone(),
                kind: PredictionKind::FailureRisk,
                target: p.spec.mode.clone(),
                as_of,
                due_at: dates.as_ref().map(|d| d.due),
                due_low: dates.as_ref().map(|d| d.low),
                due_high: dates.as_ref().and_then(|d| d.high),
                probability: Some(prob),
                horizon_days: Some(p.horizon_days),
                threshold: Some(threshold),
                model_version: trained.report.version.clone(),
                top_features: top,
                evidence: json!({
                    "scorer": p.serving.as_str(),
                    "telemetry": values,
                    "alarms_7d": alarms,
                    "part_runtime_hours_since_replacement": finite(part.runtime_since),
                    "part_replacement_known": part.known,
                    "weibull_age_probability": weibull,
                    "remaining_life": remaining,
                }),
            });
        }
        out
    }

    /// The deployed model of each failure mode among `models` (the latest trained).
    pub fn deployed(models: &[TrainedModel]) -> Vec<(&TrainedModel, RiskParameters)> {
        let mut best: std::collections::BTreeMap<&str, &TrainedModel> = Default::default();
        for m in models.iter().filter(|m| m.report.deployed) {
            let e = best.entry(m.report.failure_mode.as_str()).or_insert(m);
            if m.report.trained_at > e.report.trained_at {
                *e = m;
            }
        }
        best.into_values()
            .filter_map(|m| RiskParameters::from_trained(m).map(|p| (m, p)))
            .collect()
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A dated forecast (depletion, service) of `device`: due date and interval from `dates`
/// (`None` while the usage rate is unknown), no probability.
fn due_prediction(
    device: &DeviceHistory,
    kind: PredictionKind,
    target: &str,
    as_of: DateTime<Utc>,
    dates: Option<usage::DueDates>,
    model_version: &str,
    evidence: serde_json::Value,
) -> Prediction {
    Prediction {
        serial: device.serial.clone(),
        kind,
        target: target.to_owned(),
        as_of,
        due_at: dates.map(|x| x.due),
        due_low: dates.map(|x| x.low),
        due_high: dates.and_then(|x| x.high),
        probability: None,
        horizon_days: None,
        threshold: None,
        model_version: model_version.to_owned(),
        top_features: Vec::new(),
        evidence,
    }
}

impl Forecaster for CatalogForecaster {
    fn forecast(&self, data: &PredictionData, models: &[TrainedModel]) -> Vec<Prediction> {
        let as_of = data_as_of(data);
        let deployed = Self::deployed(models);
        let mut out = Vec::new();
        for d in &data.devices {
            out.extend(self.due_dates(d, as_of));
            out.extend(self.risks(d, as_of, &deployed));
        }
        out
    }

    fn train(&self, data: &PredictionData, current: &[TrainedModel]) -> Vec<TrainedModel> {
        train_modes(&self.catalog, data, &self.options, current)
    }
}
