//! Failure risk per failure mode: a logistic regression (linfa) on generic features
//! ([`super::features`]), trained on the fleet's own history with a time-based split and
//! validated against two baselines and the current model.
//!
//! **Samples.** For every device of a catalog model that has the failure mode, and every
//! `sample_every_days`-th midnight of the data (after [`WARM_UP_DAYS`] of the device's
//! history): features at that instant; label = a confirmed (not retracted) failure of the
//! mode within `(as_of, as_of + horizon]`. The horizon is the catalog's
//! `warning_horizon_days` of the mode (its P-F interval; the longest if several models
//! give one), else `horizon_days`. A device with a confirmed failure of any mode in the
//! last [`DOWN_DAYS`] days whose part has not been replaced is skipped ([`is_down`]: it
//! is down, not at risk).
//!
//! **Split.** The sample instants span `[train_from, validate_to]`; the last
//! `validation_share` of that span is validation. Training samples whose horizon reaches
//! into the validation window are dropped (purged), so no training label is a validation
//! event.
//!
//! **Model.** Features standardised with the training mean and standard deviation
//! (missing = the mean, clipped to ±8 sd), L2-regularised logistic regression (linfa-logistic,
//! L-BFGS). The operating threshold is chosen on the training samples by replaying the
//! warnings the order policy would raise ([`super::metrics::warning_metrics`]: one open
//! warning per device, confirmed by a failure within the horizon or expired): the highest
//! recall of failures warned at least [`MIN_LEAD_DAYS`] ahead with warning precision
//! ≥ `target_precision` (else the best F1). The replay scores every device at every
//! `replay_every_days`-th midnight (1: as often as the worker forecasts it, give or take
//! its interval), not only at the training samples: a transient crossing the threshold
//! on a day between two samples is a false warning too. With `fleet_thresholds`,
//! [`train_modes`] then moves the deployed models' thresholds to a choice made for all
//! modes together (the target precision over all their warnings, the most failures
//! warned ahead: [`choose_fleet_thresholds`]). The baselines' thresholds are chosen per
//! mode, and the validation metrics carry the replayed warnings of each scorer.
//!
//! **Baselines**, fitted on the training window only and scored on the same validation
//! samples:
//! - `weibull_age`: a Weibull MLE ([`crate::weibull::fit`]) of the part's lifetimes
//!   (runtime hours between its replacements/failures; a part never replaced counts from
//!   the meter's 0) with suspensions (the current parts at the end of the training
//!   window); probability = conditional failure within the runtime hours the device's
//!   usage rate gives the horizon, at the part's current age.
//! - `alarm_count`: episodes of the model's warning alarms in the last 7 days (0, 1, 2,
//!   3+), probability = the training share of failures within the horizon per count. Not
//!   fitted when the mode's models have no warning alarms (it would be a constant).
//!
//! **Deployment.** Deployed when its validation PR-AUC beats both baselines and the
//! current model's on the same samples and its operating threshold raises at least one
//! warning on the validation replay; `decision` says which condition failed.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Timelike, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::prediction::{
    DeviceHistory, FeatureContribution, FieldOutcomes, ModelReport, PredictionData, TrainedModel,
    ValidationMetrics, WarningMetrics,
};
use fleetpulse_domain::{Severity, catalog::ModelSpec};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::depletion::RUNTIME_FIELD;
use super::features::{FEATURE_LAYOUT, FeatureSpec, renews};
use super::gbm::{self, Gbm, Loss};
use super::metrics::{
    ScoredSeries, choose_fleet_thresholds, choose_warning_threshold, curve_threshold,
    validation_metrics, warning_curve, warning_metrics,
};
use super::remaining::{LifeSample, SensorLife, fit_sensor_life, next_event, target_days};
use super::usage::UsageProfile;
use super::{Learner, PredictOptions};
use crate::weibull::{WeibullFit, fit};

/// Days of a device's history before its first sample (the features' baseline).
pub const WARM_UP_DAYS: i64 = 30;
/// A failed part not replaced for this long no longer marks the device as down.
pub const DOWN_DAYS: i64 = 30;
/// Standardised values are clipped to this many standard deviations.
const CLIP: f64 = 8.0;

/// The `weibull_age` baseline's fit and threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeibullBaseline {
    pub beta: f64,
    pub eta: f64,
    pub failures: usize,
    pub suspensions: usize,
    pub threshold: f64,
}

impl WeibullBaseline {
    /// The fit as a [`WeibullFit`] (its estimates; no likelihood or covariance kept).
    pub fn fit(&self) -> WeibullFit {
        WeibullFit {
            beta: self.beta,
            eta: self.eta,
            log_likelihood: 0.0,
            n_failures: self.failures,
            n_suspensions: self.suspensions,
            covariance: None,
            iterations: 0,
        }
    }
}

/// The `alarm_count` baseline's table and threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmBaseline {
    /// Warning codes counted.
    pub codes: Vec<String>,
    /// Training failure share per 7-day episode count 0, 1, 2, 3+.
    pub rates: [f64; 4],
    pub threshold: f64,
}

/// Everything needed to score with a trained model again: `TrainedModel::parameters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskParameters {
    pub spec: FeatureSpec,
    /// Catalog models the model scores.
    pub models: Vec<String>,
    pub horizon_days: f64,
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// Coefficients on the standardised features (log-odds of a failure).
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub threshold: f64,
    pub weibull: Option<WeibullBaseline>,
    pub alarm_count: AlarmBaseline,
    /// The scorer whose probability and threshold the fleet is scored with: the best on
    /// validation ([`choose_serving`]). Models trained before serving selection: `model`.
    #[serde(default)]
    pub serving: Scorer,
    /// The learned model's trees when its learner is `gradient_boosting` (on the raw
    /// features; `weights` are then zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trees: Option<Gbm>,
    /// Remaining life from the sensors ([`super::remaining`]), when enough samples had a
    /// known target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor_life: Option<SensorLife>,
}

/// Every scorer of a trained model, in the order [`RiskParameters::score_each`] answers.
pub const SCORERS: [Scorer; 3] = [Scorer::Model, Scorer::WeibullAge, Scorer::AlarmCount];

/// Which scorer of a trained model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scorer {
    #[default]
    Model,
    WeibullAge,
    AlarmCount,
}

impl Scorer {
    pub fn as_str(self) -> &'static str {
        match self {
            Scorer::Model => "model",
            Scorer::WeibullAge => "weibull_age",
            Scorer::AlarmCount => "alarm_count",
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl RiskParameters {
    /// The parameters of a trained model; `None` when they are not this crate's or were
    /// trained on another feature layout ([`FEATURE_LAYOUT`]).
    pub fn from_trained(model: &TrainedModel) -> Option<Self> {
        serde_json::from_value::<Self>(model.parameters.clone())
            .ok()
            .filter(|p| p.spec.layout == FEATURE_LAYOUT)
    }

    fn standardise(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .zip(self.mean.iter().zip(&self.scale))
            .map(|(&v, (&m, &s))| {
                if v.is_finite() {
                    ((v - m) / s).clamp(-CLIP, CLIP)
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Probability and per-feature contributions (log-odds) from a raw feature vector.
    pub fn score_features(&self, x: &[f64]) -> (f64, Vec<f64>) {
        if let Some(trees) = &self.trees {
            return (trees.predict(x), trees.contributions(x));
        }
        let z = self.standardise(x);
        let contributions: Vec<f64> = z.iter().zip(&self.weights).map(|(a, b)| a * b).collect();
        let logit = self.intercept + contributions.iter().sum::<f64>();
        (sigmoid(logit), contributions)
    }

    /// Whether this model scores devices of `model`.
    pub fn covers(&self, model: Option<&str>) -> bool {
        model.is_some_and(|m| self.models.iter().any(|x| x == m))
    }

    /// Whether the model scores `device` at `as_of`: its catalog model, and not down.
    fn applies(&self, device: &DeviceHistory, as_of: DateTime<Utc>) -> bool {
        self.covers(device.model.as_deref()) && !is_down(device, as_of)
    }

    /// A scorer's probability for `device` at `as_of` and its threshold; `None` when it
    /// does not apply (other model, device down, baseline not fitted).
    pub fn score(
        &self,
        scorer: Scorer,
        device: &DeviceHistory,
        as_of: DateTime<Utc>,
    ) -> Option<(f64, f64)> {
        if !self.applies(device, as_of) {
            return None;
        }
        self.score_applicable(scorer, device, as_of)
    }

    /// Every scorer of [`SCORERS`], in that order, with one check that the model
    /// applies; `None` when it does not.
    pub fn score_each(
        &self,
        device: &DeviceHistory,
        as_of: DateTime<Utc>,
    ) -> Option<[Option<(f64, f64)>; 3]> {
        self.applies(device, as_of)
            .then(|| SCORERS.map(|s| self.score_applicable(s, device, as_of)))
    }

    fn score_applicable(
        &self,
        scorer: Scorer,
        device: &DeviceHistory,
        as_of: DateTime<Utc>,
    ) -> Option<(f64, f64)> {
        match scorer {
            Scorer::Model => {
                let x = self.spec.compute(device, as_of);
                Some((self.score_features(&x).0, self.threshold))
            }
            Scorer::WeibullAge => {
                let w = self.weibull.as_ref()?;
                let p = weibull_probability(w, device, &self.spec, as_of, self.horizon_days);
                Some((p, w.threshold))
            }
            Scorer::AlarmCount => {
                // without warning alarms to count the baseline is a constant: not fitted
                if self.alarm_count.codes.is_empty() {
                    return None;
                }
                let k = warning_count(device, &self.alarm_count.codes, as_of);
                Some((self.alarm_count.rates[k.min(3)], self.alarm_count.threshold))
            }
        }
    }

    /// The one input a baseline reads, as a feature whose contribution is the log-odds
    /// of the baseline's probability: the part's runtime hours since replacement
    /// (`weibull_age`), the warning episodes of the last 7 days (`alarm_count`).
    pub fn baseline_input(
        &self,
        scorer: Scorer,
        device: &DeviceHistory,
        as_of: DateTime<Utc>,
    ) -> Vec<FeatureContribution> {
        let Some((p, _)) = self.score(scorer, device, as_of) else {
            return Vec::new();
        };
        let (feature, value) = match scorer {
            Scorer::Model => return Vec::new(),
            Scorer::WeibullAge => (
                "part:runtime_since_replacement",
                self.spec.part_age(device, as_of).runtime_since,
            ),
            Scorer::AlarmCount => (
                "alarm:warnings:7d",
                warning_count(device, &self.alarm_count.codes, as_of) as f64,
            ),
        };
        let p = p.clamp(1e-12, 1.0 - 1e-12);
        vec![FeatureContribution {
            feature: feature.to_owned(),
            value,
            contribution: (p / (1.0 - p)).ln(),
        }]
    }

    /// The largest contributions (by magnitude), at most `n`.
    pub fn top_features(
        &self,
        x: &[f64],
        contributions: &[f64],
        n: usize,
    ) -> Vec<FeatureContribution> {
        let names = self.spec.names();
        let mut idx: Vec<usize> = (0..contributions.len()).collect();
        idx.sort_by(|&a, &b| contributions[b].abs().total_cmp(&contributions[a].abs()));
        idx.into_iter()
            .take(n)
            .map(|i| FeatureContribution {
                feature: names[i].clone(),
                value: if x[i].is_finite() { x[i] } else { self.mean[i] },
                contribution: contributions[i],
            })
            .collect()
    }
}

/// Whether the device is down for repair at `as_of`: a confirmed failure (of any mode)
/// within [`DOWN_DAYS`] before `as_of` whose part has not been replaced since. A device
/// already waiting for a repair visit is not at risk of another failure worth a warning:
/// the failure's own readings (a compressor's heat, a cooling fault's) would otherwise
/// raise warnings for the modes that share its fields.
pub fn is_down(device: &DeviceHistory, as_of: DateTime<Utc>) -> bool {
    device.failures.iter().any(|f| {
        !f.retracted
            && f.at < as_of
            && as_of - f.at < Duration::days(DOWN_DAYS)
            && f.failure_mode.as_deref().is_some_and(|part| {
                !device
                    .replacements
                    .iter()
                    .any(|r| r.part == part && r.at >= f.at && r.at < as_of)
            })
    })
}

/// Episodes of `codes` started in the 7 days before `as_of`.
pub fn warning_count(device: &DeviceHistory, codes: &[String], as_of: DateTime<Utc>) -> usize {
    let from = as_of - Duration::days(7);
    device
        .alarms
        .iter()
        .filter(|a| a.started_at >= from && a.started_at < as_of)
        .filter(|a| codes.contains(&a.code))
        .count()
}

fn horizon_hours(device: &DeviceHistory, as_of: DateTime<Utc>, horizon_days: f64) -> Option<f64> {
    let meter = device.daily.get(RUNTIME_FIELD)?;
    let u = UsageProfile::from_meter(meter, as_of)?;
    Some(u.rate_per_day * horizon_days)
}

fn weibull_probability(
    w: &WeibullBaseline,
    device: &DeviceHistory,
    spec: &FeatureSpec,
    as_of: DateTime<Utc>,
    horizon_days: f64,
) -> f64 {
    let age = spec.part_age(device, as_of).runtime_since;
    let Some(dt) = horizon_hours(device, as_of, horizon_days) else {
        return 0.0;
    };
    if !age.is_finite() {
        return 0.0;
    }
    w.fit().conditional_failure(age, dt)
}

/// The remaining life of a device's part, in runtime hours from now: the median and an
/// interval of the part's Weibull life (the `weibull_age` baseline's fit) given that it
/// has survived to its current age.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResidualLife {
    /// The part's age (runtime hours since its replacement, or since new).
    pub age_hours: f64,
    /// Median remaining runtime hours.
    pub median_hours: f64,
    /// Lower end of the interval.
    pub low_hours: f64,
    /// Upper end of the interval.
    pub high_hours: f64,
}

impl RiskParameters {
    /// The remaining life of `device`'s part of this mode at `as_of`, with a central
    /// interval of `confidence`; `None` without a Weibull baseline or a known part age.
    pub fn residual_life(
        &self,
        device: &DeviceHistory,
        as_of: DateTime<Utc>,
        confidence: f64,
    ) -> Option<ResidualLife> {
        let w = self.weibull.as_ref()?;
        let age = self.spec.part_age(device, as_of).runtime_since;
        let f = w.fit();
        let tail = (1.0 - confidence.clamp(0.01, 0.999)) / 2.0;
        Some(ResidualLife {
            age_hours: age,
            median_hours: f.residual_quantile(age, 0.5)?,
            low_hours: f.residual_quantile(age, tail)?,
            high_hours: f.residual_quantile(age, 1.0 - tail)?,
        })
    }
}

impl RiskParameters {
    /// The `weibull_age` median remaining life of `device`'s part at `as_of` in calendar
    /// days, at the device's usage rate; `None` without a fit, a part age or a rate.
    pub fn weibull_days(&self, device: &DeviceHistory, as_of: DateTime<Utc>) -> Option<f64> {
        let r = self.residual_life(device, as_of, 0.5)?;
        let u = UsageProfile::from_meter(device.daily.get(RUNTIME_FIELD)?, as_of)?;
        (u.rate_per_day > 0.0 && r.median_hours.is_finite())
            .then(|| r.median_hours / u.rate_per_day)
    }
}

/// Samples with a known remaining-life target before the validation window do not make a
/// model below this many (and as many validation samples).
const MIN_LIFE_SAMPLES: usize = 50;

/// Catalog models with `mode` as a failure mode of one of their components.
pub fn models_with_mode<'a>(catalog: &'a Catalog, mode: &str) -> Vec<&'a ModelSpec> {
    catalog
        .models()
        .filter(|m| catalog.failure_mode(m.id.as_str(), mode).is_some())
        .collect()
}

/// The catalog's warning horizon of `mode` (its P-F interval): the longest any model
/// gives that failure mode (on the mode or on its failure alarms); `None` when none sets one.
pub fn warning_horizon_days(catalog: &Catalog, mode: &str) -> Option<f64> {
    catalog
        .models()
        .filter_map(|m| catalog.failure_mode(m.id.as_str(), mode))
        .filter_map(|(_, f)| f.warning_horizon_days)
        .reduce(f64::max)
}

/// Every failure mode the catalog names, sorted.
pub fn failure_modes(catalog: &Catalog) -> Vec<String> {
    catalog
        .failure_modes()
        .into_iter()
        .map(String::from)
        .collect()
}

/// The feature spec of a mode on these data: every numeric field the devices of its
/// models report, and every alarm code of those models.
pub fn feature_spec(catalog: &Catalog, data: &PredictionData, mode: &str) -> FeatureSpec {
    let models = models_with_mode(catalog, mode);
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    let mut fields: Vec<String> = data
        .devices
        .iter()
        .filter(|d| d.model.as_deref().is_some_and(|m| ids.contains(&m)))
        .flat_map(|d| d.daily.keys().cloned())
        .collect();
    fields.sort();
    fields.dedup();
    let mut codes: Vec<String> = models
        .iter()
        .flat_map(|m| m.alarms.iter().map(|a| a.code.to_string()))
        .collect();
    codes.sort();
    codes.dedup();
    let components = models
        .iter()
        .filter_map(|m| {
            let (c, _) = catalog.failure_mode(m.id.as_str(), mode)?;
            Some((m.id.to_string(), c.id.to_string()))
        })
        .collect();
    let mut model_ids: Vec<String> = ids.iter().map(|m| m.to_string()).collect();
    model_ids.sort();
    FeatureSpec {
        mode: mode.to_owned(),
        fields,
        codes,
        components,
        // one model: its indicator would be constant
        models: if model_ids.len() > 1 {
            model_ids
        } else {
            Vec::new()
        },
        layout: FEATURE_LAYOUT,
    }
}

/// One training or validation sample.
#[derive(Clone, Debug)]
struct Sample {
    device: usize,
    as_of: DateTime<Utc>,
    label: bool,
    x: Vec<f64>,
    warnings: usize,
    /// The part's next failure (`true`) or renewal after `as_of` ([`next_event`]).
    next: Option<(DateTime<Utc>, bool)>,
}

/// The start of `t`'s UTC day.
pub(crate) fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(86_400) * 86_400;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

fn ceil_midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    let m = midnight(t);
    if m == t && t.num_seconds_from_midnight() == 0 {
        m
    } else {
        m + Duration::days(1)
    }
}

fn label(device: &DeviceHistory, mode: &str, as_of: DateTime<Utc>, horizon: Duration) -> bool {
    device.failures.iter().any(|f| {
        !f.retracted
            && f.failure_mode.as_deref() == Some(mode)
            && f.at > as_of
            && f.at <= as_of + horizon
    })
}

fn data_end(data: &PredictionData) -> Option<DateTime<Utc>> {
    data.as_of.or_else(|| {
        data.devices
            .iter()
            .filter_map(|d| {
                d.daily
                    .get(RUNTIME_FIELD)?
                    .last()
                    .map(|x| x.day + Duration::days(1))
            })
            .max()
    })
}

fn first_day(device: &DeviceHistory) -> Option<DateTime<Utc>> {
    device.daily.get(RUNTIME_FIELD)?.first().map(|d| d.day)
}

/// Maps `f` over `items` on the available cores, keeping the order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= 1 || items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                let f = &f;
                s.spawn(move || c.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a feature worker does not panic"))
            .collect()
    })
}

#[allow(clippy::too_many_arguments)]
fn build_samples(
    data: &PredictionData,
    spec: &FeatureSpec,
    model_ids: &[&str],
    warning_codes: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    horizon: Duration,
    options: &PredictOptions,
) -> Vec<Sample> {
    let step = Duration::days(options.sample_every_days.max(1) as i64);
    let devices: Vec<usize> = (0..data.devices.len())
        .filter(|&i| {
            data.devices[i]
                .model
                .as_deref()
                .is_some_and(|m| model_ids.contains(&m))
        })
        .collect();
    let per_device = par_map(&devices, |&i| {
        let d = &data.devices[i];
        let mut out = Vec::new();
        let Some(start) = first_day(d) else {
            return out;
        };
        let mut t = ceil_midnight(start + Duration::days(WARM_UP_DAYS)).max(from);
        // align every device on the same instants
        let offset = (t - from).num_days().rem_euclid(step.num_days());
        if offset != 0 {
            t += Duration::days(step.num_days() - offset);
        }
        while t <= to {
            if !is_down(d, t) {
                out.push(Sample {
                    device: i,
                    as_of: t,
                    label: label(d, &spec.mode, t, horizon),
                    x: spec.compute(d, t),
                    warnings: warning_count(d, warning_codes, t),
                    next: next_event(d, spec, t),
                });
            }
            t += step;
        }
        out
    });
    per_device.into_iter().flatten().collect()
}

/// Mean and standard deviation per column over finite values (sd 1 when constant).
fn scaling(rows: &[&Sample], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; n];
    let mut scale = vec![1.0; n];
    for j in 0..n {
        let vals: Vec<f64> = rows
            .iter()
            .map(|s| s.x[j])
            .filter(|v| v.is_finite())
            .collect();
        if vals.is_empty() {
            continue;
        }
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64;
        mean[j] = m;
        scale[j] = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
    }
    (mean, scale)
}

/// Lifetimes and suspensions of the part of `mode` up to `to`, from the meter readings at
/// replacements and failures.
fn weibull_sample(
    data: &PredictionData,
    model_ids: &[&str],
    spec: &FeatureSpec,
    to: DateTime<Utc>,
) -> (Vec<f64>, Vec<f64>) {
    let mode = spec.mode.as_str();
    let (mut failures, mut suspensions) = (Vec::new(), Vec::new());
    for d in &data.devices {
        if !d.model.as_deref().is_some_and(|m| model_ids.contains(&m)) {
            continue;
        }
        let mut events: Vec<(DateTime<Utc>, Option<f64>, bool)> = d
            .failures
            .iter()
            .filter(|f| !f.retracted && f.failure_mode.as_deref() == Some(mode) && f.at < to)
            .map(|f| (f.at, f.runtime_hours, true))
            .chain(
                d.replacements
                    .iter()
                    .filter(|r| renews(r, mode, spec.component_of(d)) && r.at < to)
                    .map(|r| (r.at, r.runtime_hours, false)),
            )
            .collect();
        events.sort_by_key(|e| e.0);
        let mut reset = 0.0;
        for (_, rt, is_failure) in events {
            let Some(rt) = rt else { continue };
            if is_failure {
                if rt - reset > 0.0 {
                    failures.push(rt - reset);
                }
                reset = rt; // repaired by replacing the part
            } else {
                reset = rt;
            }
        }
        if let Some(now) = super::depletion::runtime_now(d, to)
            && now - reset > 0.0
        {
            suspensions.push(now - reset);
        }
    }
    (failures, suspensions)
}

/// The completion outcomes of the mode's risk orders in `data`, per model version.
pub fn field_outcomes(data: &PredictionData, mode: &str) -> Vec<FieldOutcomes> {
    let cause = fleetpulse_domain::Cause::failure_risk(mode).to_string();
    let mut by_version: BTreeMap<String, FieldOutcomes> = BTreeMap::new();
    for o in data
        .devices
        .iter()
        .flat_map(|d| d.outcomes.iter())
        .filter(|o| o.cause == cause)
    {
        let version = o.model_version.clone().unwrap_or_else(|| "unknown".into());
        let f = by_version
            .entry(version.clone())
            .or_insert_with(|| FieldOutcomes {
                model_version: version,
                ..FieldOutcomes::default()
            });
        f.orders += 1;
        match o.failure_confirmed {
            Some(true) => f.confirmed += 1,
            Some(false) => f.no_fault_found += 1,
            None => f.open += 1,
        }
    }
    let mut v: Vec<FieldOutcomes> = by_version.into_values().collect();
    for f in &mut v {
        let closed = f.confirmed + f.no_fault_found;
        f.precision = (closed > 0).then(|| f.confirmed as f64 / closed as f64);
    }
    v
}

/// The lead a warning needs to count towards recall.
pub const MIN_LEAD_DAYS: i64 = 3;

/// Every scorer's probability at every `step`-th midnight of `[from, to]` for each device
/// of the mode's models (instants where the device is down are skipped): one series per
/// device and scorer, with the device's failures of the mode from the first instant to
/// one step after the last. Scores are computed as they come and only they are kept.
pub(crate) fn replay(
    params: &RiskParameters,
    data: &PredictionData,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
) -> BTreeMap<Scorer, Vec<ScoredSeries>> {
    replay_devices(params, data, from, to, step, |_| true)
}

/// [`replay`] of the devices whose index in `data` passes `keep`.
fn replay_devices(
    params: &RiskParameters,
    data: &PredictionData,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<Scorer, Vec<ScoredSeries>> {
    let devices: Vec<usize> = (0..data.devices.len())
        .filter(|&i| keep(i) && params.covers(data.devices[i].model.as_deref()))
        .collect();
    let per_device = par_map(&devices, |&i| {
        let d = &data.devices[i];
        let mut series: Vec<ScoredSeries> = SCORERS.map(|_| ScoredSeries::default()).into();
        let Some(start) = first_day(d) else {
            return series;
        };
        let mut t = ceil_midnight(start + Duration::days(WARM_UP_DAYS)).max(from);
        while t <= to {
            for (k, score) in params.score_each(d, t).into_iter().flatten().enumerate() {
                if let Some((p, _)) = score {
                    series[k].times.push(t);
                    series[k].scores.push(p);
                }
            }
            t += step;
        }
        for s in &mut series {
            if let (Some(&first), Some(&last)) = (s.times.first(), s.times.last()) {
                s.failures = d
                    .failures
                    .iter()
                    .filter(|f| {
                        !f.retracted && f.failure_mode.as_deref() == Some(params.spec.mode.as_str())
                    })
                    .map(|f| f.at)
                    .filter(|&at| at > first && at <= last + step)
                    .collect();
                s.failures.sort();
            }
        }
        series
    });
    let mut out: BTreeMap<Scorer, Vec<ScoredSeries>> = BTreeMap::new();
    for series in per_device {
        for (k, s) in series.into_iter().enumerate() {
            if !s.times.is_empty() {
                out.entry(SCORERS[k]).or_default().push(s);
            }
        }
    }
    out
}

fn empty_metrics() -> ValidationMetrics {
    validation_metrics(&[], &[], 1.0, true)
}

/// Trains, validates and decides on one failure mode, its operating threshold chosen on
/// its own (`target_precision` for this mode's warnings). A mode the data cannot train
/// (no device of its models, too short a history, too few failures) answers an
/// undeployed report whose `decision` says why.
pub fn train_mode(
    catalog: &Catalog,
    data: &PredictionData,
    mode: &str,
    options: &PredictOptions,
    current: Option<&TrainedModel>,
) -> TrainedModel {
    fit_mode(catalog, data, mode, options, current).model
}

/// Trains every failure mode of the catalog (`current`: the deployed models so far): one
/// model per mode, those not trained with the reason in their report's `decision`.
/// With `fleet_thresholds`, the deployed models' operating thresholds are then chosen
/// together ([`choose_fleet_thresholds`]): the most failures warned ahead over all modes
/// with the precision of all their warnings, replayed over the training window, at least
/// `target_precision`, and each mode's at least `min_mode_precision` there and on the
/// validation window's replay. A deployed model none of whose thresholds keeps
/// `min_mode_precision` is taken out (not deployed, with the reason).
pub fn train_modes(
    catalog: &Catalog,
    data: &PredictionData,
    options: &PredictOptions,
    current: &[TrainedModel],
) -> Vec<TrainedModel> {
    let mut fits: Vec<ModeFit> = failure_modes(catalog)
        .iter()
        .map(|mode| {
            let cur = current
                .iter()
                .filter(|m| m.report.deployed && m.report.failure_mode == *mode)
                .max_by_key(|m| m.report.trained_at);
            fit_mode(catalog, data, mode, options, cur)
        })
        .collect();
    if options.fleet_thresholds {
        let joint: Vec<usize> = (0..fits.len())
            .filter(|&i| fits[i].model_serves() && !fits[i].curve.is_empty())
            .collect();
        let curves: Vec<&[(f64, WarningMetrics)]> =
            joint.iter().map(|&i| fits[i].curve.as_slice()).collect();
        let held_out: Vec<Vec<WarningMetrics>> = joint
            .iter()
            .map(|&i| {
                let f = &fits[i];
                let lead = Duration::days(MIN_LEAD_DAYS);
                (f.curve.iter())
                    .map(|(t, _)| warning_metrics(&f.valid_replay, *t, f.horizon, lead))
                    .collect()
            })
            .collect();
        let held_out: Vec<&[WarningMetrics]> = held_out.iter().map(Vec::as_slice).collect();
        let chosen = choose_fleet_thresholds(
            &curves,
            &held_out,
            options.target_precision,
            options.min_mode_precision,
        );
        // `None`: the modes cannot reach the target together, each keeps its own choice
        let modes = joint.len();
        for (&i, k) in joint.iter().zip(chosen.into_iter().flatten()) {
            let f = &mut fits[i];
            let Some(k) = k else {
                f.withdraw(options.min_mode_precision);
                continue;
            };
            let (t, m) = f.curve[k].clone();
            let why = format!(
                "; operating threshold {t:.4} chosen with the other deployed modes ({modes} in all) for the most failures warned ahead at a precision of at least {} over all their warnings replayed on the training window, each mode at least {} there and on validation (this mode on training: {} warnings, precision {}, recall {:.3}; its own target would have given {:.4})",
                options.target_precision,
                options.min_mode_precision,
                m.warnings,
                m.precision
                    .map_or_else(|| "—".to_owned(), |p| format!("{p:.3}")),
                m.recall,
                f.own_threshold
            );
            f.set_threshold(t, &why, options.min_mode_precision);
        }
    }
    fits.into_iter().map(|f| f.model).collect()
}

/// One failure mode trained, its operating threshold still open to a fleet-wide choice.
struct ModeFit {
    model: TrainedModel,
    /// `None` when no model was trained.
    params: Option<RiskParameters>,
    /// The model's warnings replayed over the training window at candidate thresholds.
    curve: Vec<(f64, WarningMetrics)>,
    /// The threshold the mode's own `target_precision` gave.
    own_threshold: f64,
    valid_scores: Vec<f64>,
    valid_labels: Vec<bool>,
    /// The model's series replayed over the validation window.
    valid_replay: Vec<ScoredSeries>,
    horizon: Duration,
    /// Why the learned model cannot serve (empty: it may).
    model_reasons: Vec<String>,
    /// Why this training replaces nothing (the current model is better).
    blocked: Option<String>,
    /// The validation PR-AUCs and sample counts, appended to the decision.
    summary: String,
    /// The fleet-wide threshold choice, appended to the decision.
    fleet_note: String,
}

impl ModeFit {
    fn untrained(model: TrainedModel) -> Self {
        ModeFit {
            model,
            params: None,
            curve: Vec::new(),
            own_threshold: f64::NAN,
            valid_scores: Vec::new(),
            valid_labels: Vec::new(),
            valid_replay: Vec::new(),
            horizon: Duration::zero(),
            model_reasons: Vec::new(),
            blocked: None,
            summary: String::new(),
            fleet_note: String::new(),
        }
    }

    /// Whether the learned model serves the mode.
    fn model_serves(&self) -> bool {
        self.params
            .as_ref()
            .is_some_and(|p| p.serving == Scorer::Model)
            && self.model.report.deployed
    }

    /// Chooses the serving scorer ([`choose_serving`]) and writes the decision.
    fn decide(&mut self, min_precision: f64) {
        let Some(params) = &mut self.params else {
            return;
        };
        let r = &mut self.model.report;
        let model_w = r.metrics.warnings.as_ref();
        let mut candidates = vec![(
            Scorer::Model,
            self.model_reasons.is_empty().then_some(model_w).flatten(),
        )];
        let mut words = vec![if self.model_reasons.is_empty() {
            format!("model: {}", warned_in_words(model_w))
        } else {
            format!(
                "model: cannot serve, {} ({})",
                self.model_reasons.join("; "),
                warned_in_words(model_w)
            )
        }];
        for s in [Scorer::WeibullAge, Scorer::AlarmCount] {
            let w = r
                .baselines
                .get(s.as_str())
                .and_then(|m| m.warnings.as_ref());
            candidates.push((s, w));
            words.push(match (r.baselines.get(s.as_str()), s) {
                (Some(_), _) => format!("{}: {}", s.as_str(), warned_in_words(w)),
                (None, Scorer::AlarmCount) => {
                    "alarm_count: not fitted (the mode's models have no warning alarms to count)"
                        .to_owned()
                }
                (None, _) => format!(
                    "{}: not fitted (fewer than 2 lifetimes in the training window)",
                    s.as_str()
                ),
            });
        }
        let chosen = choose_serving(&candidates, min_precision);
        let price = min_precision.clamp(0.0, 0.99) / (1.0 - min_precision.clamp(0.0, 0.99));
        let criterion = format!(
            "the most net failures warned at least {MIN_LEAD_DAYS} days ahead on the validation replay (failures warned ahead minus {price:.3} per expired warning, the price at which the precision floor {min_precision} breaks even), among the scorers with a warning precision of at least {min_precision} there"
        );
        let (deployed, head) = match (&self.blocked, chosen) {
            (Some(why), _) => (false, format!("not deployed: {why}")),
            (None, Some(s)) => (
                true,
                format!("deployed, serving {}: {criterion}", s.as_str()),
            ),
            (None, None) => (
                false,
                format!(
                    "not deployed: no scorer warns a failure at least {MIN_LEAD_DAYS} days ahead with a warning precision of at least {min_precision} on the validation replay, so the mode stays silent"
                ),
            ),
        };
        params.serving = chosen.unwrap_or_default();
        r.deployed = deployed;
        r.serving = deployed.then(|| params.serving.as_str().to_owned());
        r.decision = format!(
            "{head}. Validation warnings: {}{}{}",
            words.join("; "),
            self.summary,
            self.fleet_note
        );
        self.model.parameters = parameters_json(params);
    }

    /// Takes the learned model out of serving: none of its thresholds keeps
    /// `min_mode_precision` on the training and the validation replay, so its orders would
    /// mostly be wasted visits; a baseline may serve instead.
    fn withdraw(&mut self, min_mode_precision: f64) {
        let best = self
            .curve
            .iter()
            .filter(|(_, m)| m.warned_ahead > 0)
            .filter_map(|(_, m)| m.precision)
            .fold(0.0, f64::max);
        self.model_reasons.push(format!(
            "no operating threshold keeps a warning precision of at least {min_mode_precision} on both the training and the validation replay (best on training with a failure warned ahead: {best:.3})"
        ));
        self.decide(min_mode_precision);
    }

    /// Moves the model's operating threshold: its parameters and validation metrics
    /// follow, `why` is appended to the decision.
    fn set_threshold(&mut self, threshold: f64, why: &str, min_precision: f64) {
        let Some(p) = &mut self.params else { return };
        p.threshold = threshold;
        self.model.report.metrics = held_out_metrics(
            &self.valid_scores,
            &self.valid_labels,
            &self.valid_replay,
            threshold,
            self.horizon,
        );
        self.fleet_note = why.to_owned();
        self.decide(min_precision);
    }
}

/// A scorer's validation metrics at `threshold`: per sample, and its warnings replayed
/// over the validation window (`replay`).
fn held_out_metrics(
    scores: &[f64],
    labels: &[bool],
    replay: &[ScoredSeries],
    threshold: f64,
    horizon: Duration,
) -> ValidationMetrics {
    let mut m = validation_metrics(scores, labels, threshold, true);
    m.warnings = Some(warning_metrics(
        replay,
        threshold,
        horizon,
        Duration::days(MIN_LEAD_DAYS),
    ));
    m
}

fn parameters_json(params: &RiskParameters) -> serde_json::Value {
    serde_json::to_value(params)
        .expect("risk parameters are numbers and strings: they always serialize")
}

/// Gradient-boosted trees (logistic loss) on the samples' raw features and labels.
fn fit_trees(samples: &[&Sample], options: &PredictOptions) -> Result<Gbm, String> {
    let rows: Vec<&[f64]> = samples.iter().map(|s| s.x.as_slice()).collect();
    let y: Vec<f64> = samples
        .iter()
        .map(|s| f64::from(u8::from(s.label)))
        .collect();
    gbm::fit(&rows, &y, Loss::Logistic, &options.gbm)
}

/// The logistic regression's weights and intercept on the standardised training matrix,
/// as log-odds of a failure.
fn fit_logistic(
    x_train: &Array2<f64>,
    train: &[&Sample],
    options: &PredictOptions,
) -> Result<(Vec<f64>, f64), String> {
    let y_train: Array1<bool> = train.iter().map(|s| s.label).collect();
    let fitted = LogisticRegression::default()
        .alpha(options.l2_penalty)
        .max_iterations(options.max_iterations)
        .fit(&Dataset::new(x_train.clone(), y_train))
        .map_err(|e| e.to_string())?;
    // linfa's probabilities are those of its "positive" class: make ours P(failure)
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok((
        fitted.params().iter().map(|w| sign * w).collect(),
        sign * fitted.intercept(),
    ))
}

/// Confirmed (not retracted) failures of `mode` in the data, up to its as-of.
fn failures_of(data: &PredictionData, mode: &str) -> usize {
    data.devices
        .iter()
        .flat_map(|d| &d.failures)
        .filter(|f| !f.retracted && f.failure_mode.as_deref() == Some(mode))
        .filter(|f| data.as_of.is_none_or(|t| f.at < t))
        .count()
}

/// The report of a mode whose data give no training window at all (`why`), so that
/// every mode of the catalog answers: not deployed, every window bound at `end`.
fn too_little_data(
    mode: &str,
    options: &PredictOptions,
    horizon_days: f64,
    data: &PredictionData,
    end: DateTime<Utc>,
    why: String,
) -> ModeFit {
    let failures = failures_of(data, mode);
    ModeFit::untrained(TrainedModel {
        report: ModelReport {
            version: format!("risk-{mode}-{}", end.format("%Y%m%dT%H%M%SZ")),
            failure_mode: mode.to_owned(),
            algorithm: options.learner.as_str().to_owned(),
            trained_at: end,
            as_of: data.as_of,
            horizon_days,
            train_from: end,
            train_to: end,
            validate_from: end,
            validate_to: end,
            features: Vec::new(),
            metrics: empty_metrics(),
            baselines: BTreeMap::new(),
            deployed: false,
            serving: None,
            decision: format!(
                "not trained: {why}; {failures} failure{} of this mode in the data, at least {} needed in the training window",
                if failures == 1 { "" } else { "s" },
                options.min_positives
            ),
            field: field_outcomes(data, mode),
        },
        parameters: serde_json::Value::Null,
    })
}

fn fit_mode(
    catalog: &Catalog,
    data: &PredictionData,
    mode: &str,
    options: &PredictOptions,
    current: Option<&TrainedModel>,
) -> ModeFit {
    let models = models_with_mode(catalog, mode);
    let model_ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    let horizon_days = warning_horizon_days(catalog, mode).unwrap_or(options.horizon_days);
    let Some(end) = data_end(data) else {
        return too_little_data(
            mode,
            options,
            horizon_days,
            data,
            DateTime::UNIX_EPOCH,
            "the data have no as-of time and no device's daily runtime".to_owned(),
        );
    };
    let Some(start) = data
        .devices
        .iter()
        .filter(|d| d.model.as_deref().is_some_and(|m| model_ids.contains(&m)))
        .filter_map(first_day)
        .min()
    else {
        return too_little_data(
            mode,
            options,
            horizon_days,
            data,
            end,
            format!(
                "no device of {} has daily runtime history in the data",
                if model_ids.is_empty() {
                    "any catalog model".to_owned()
                } else {
                    model_ids.join(", ")
                }
            ),
        );
    };
    let spec = feature_spec(catalog, data, mode);
    let names = spec.names();
    let mut warning_codes: Vec<String> = models
        .iter()
        .flat_map(|m| m.alarms.iter())
        .filter(|a| !a.counts_as_failure && a.severity == Severity::Warning)
        .map(|a| a.code.to_string())
        .collect();
    warning_codes.sort();
    warning_codes.dedup();

    let horizon = Duration::seconds((horizon_days * 86_400.0) as i64);
    let first = ceil_midnight(start + Duration::days(WARM_UP_DAYS));
    let last = end - horizon;
    if last <= first {
        let days = |d: Duration| d.num_seconds() as f64 / 86_400.0;
        return too_little_data(
            mode,
            options,
            horizon_days,
            data,
            end,
            format!(
                "{:.1} days of history (from {} to {}), more than {:.1} needed ({WARM_UP_DAYS} days of warm-up before the first sample, then its {horizon_days}-day horizon)",
                days(end - start),
                start.format("%Y-%m-%d"),
                end.format("%Y-%m-%d %H:%M"),
                days(first - start + horizon),
            ),
        );
    }
    let samples = build_samples(
        data,
        &spec,
        &model_ids,
        &warning_codes,
        first,
        last,
        horizon,
        options,
    );
    let span = last - first;
    let validate_from = midnight(
        first
            + Duration::seconds(
                ((1.0 - options.validation_share) * span.num_seconds() as f64) as i64,
            ),
    );
    let train: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.as_of + horizon <= validate_from)
        .collect();
    let valid: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.as_of >= validate_from)
        .collect();
    let train_pos = train.iter().filter(|s| s.label).count();
    let valid_pos = valid.iter().filter(|s| s.label).count();
    let version = format!("risk-{mode}-{}", end.format("%Y%m%dT%H%M%SZ"));
    let report =
        |metrics, baselines, deployed, decision: String, threshold_info: &str| ModelReport {
            version: version.clone(),
            failure_mode: mode.to_owned(),
            algorithm: options.learner.as_str().to_owned(),
            trained_at: end,
            as_of: data.as_of,
            horizon_days,
            train_from: first,
            train_to: validate_from,
            validate_from,
            validate_to: last,
            features: names.clone(),
            metrics,
            baselines,
            deployed,
            serving: None,
            decision: format!("{decision}{threshold_info}"),
            field: field_outcomes(data, mode),
        };
    if train_pos < options.min_positives || valid_pos == 0 || train.len() == train_pos {
        return ModeFit::untrained(TrainedModel {
            report: report(
                empty_metrics(),
                BTreeMap::new(),
                false,
                format!(
                    "not trained: {train_pos} failures in the training window (at least {} needed) and {valid_pos} in validation (at least 1)",
                    options.min_positives
                ),
                "",
            ),
            parameters: serde_json::Value::Null,
        });
    }

    // the model
    let (mean, scale) = scaling(&train, names.len());
    let mut params = RiskParameters {
        spec: spec.clone(),
        models: model_ids.iter().map(|s| s.to_string()).collect(),
        horizon_days,
        mean,
        scale,
        weights: vec![0.0; names.len()],
        intercept: 0.0,
        threshold: 0.5,
        weibull: None,
        alarm_count: AlarmBaseline {
            codes: warning_codes.clone(),
            rates: [0.0; 4],
            threshold: 1.0,
        },
        serving: Scorer::Model,
        trees: None,
        sensor_life: None,
    };
    let matrix = |rows: &[&Sample]| {
        let mut m = Array2::<f64>::zeros((rows.len(), names.len()));
        for (i, s) in rows.iter().enumerate() {
            for (j, v) in params.standardise(&s.x).into_iter().enumerate() {
                m[[i, j]] = v;
            }
        }
        m
    };
    let fitted = match options.learner {
        Learner::LogisticRegression => {
            fit_logistic(&matrix(&train), &train, options).map(|(weights, intercept)| {
                params.weights = weights;
                params.intercept = intercept;
            })
        }
        Learner::GradientBoosting => fit_trees(&train, options).map(|g| params.trees = Some(g)),
    };
    if let Err(e) = fitted {
        return ModeFit::untrained(TrainedModel {
            report: report(
                empty_metrics(),
                BTreeMap::new(),
                false,
                format!("not trained: {} failed: {e}", options.learner.as_str()),
                "",
            ),
            parameters: serde_json::Value::Null,
        });
    }
    let valid_labels: Vec<bool> = valid.iter().map(|s| s.label).collect();

    // baselines, fitted on the training window only
    let (wf, ws) = weibull_sample(data, &model_ids, &spec, validate_from);
    if let Ok(w) = fit(&wf, &ws) {
        params.weibull = Some(WeibullBaseline {
            beta: w.beta,
            eta: w.eta,
            failures: w.n_failures,
            suspensions: w.n_suspensions,
            threshold: 1.0,
        });
    }
    let mut counts = [(0u64, 0u64); 4];
    for s in &train {
        let c = &mut counts[s.warnings.min(3)];
        c.0 += u64::from(s.label);
        c.1 += 1;
    }
    let overall = train_pos as f64 / train.len() as f64;
    for (k, (pos, n)) in counts.iter().enumerate() {
        // a count never seen in training gets the overall rate
        params.alarm_count.rates[k] = if *n > 0 {
            *pos as f64 / *n as f64
        } else {
            overall
        };
    }

    // remaining life from the sensors, validated against the Weibull median
    let cap = options.remaining_life_cap_days;
    fn life_samples<'a>(
        rows: &[&'a Sample],
        known_until: DateTime<Utc>,
        cap: f64,
        params: &RiskParameters,
        data: &PredictionData,
    ) -> Vec<LifeSample<'a>> {
        rows.iter()
            .filter_map(|s| {
                Some(LifeSample {
                    x: &s.x,
                    days: target_days(s.as_of, s.next, known_until, cap)?,
                    weibull_days: params.weibull_days(&data.devices[s.device], s.as_of),
                })
            })
            .collect()
    }
    let life_train: Vec<&Sample> = samples.iter().filter(|s| s.as_of < validate_from).collect();
    let life = fit_sensor_life(
        &life_samples(&life_train, validate_from, cap, &params, data),
        &life_samples(&valid, end, cap, &params, data),
        cap,
        options.interval_confidence,
        &options.gbm,
        MIN_LIFE_SAMPLES,
    );
    params.sensor_life = life.ok().flatten();

    // thresholds from the warnings each scorer would have raised in the training window,
    // replayed at every `replay_every_days`-th midnight; the same replay over validation
    let step = Duration::days(options.replay_every_days.max(1) as i64);
    let lead = Duration::days(MIN_LEAD_DAYS);
    let train_replay = replay(&params, data, first, validate_from - horizon, step);
    let valid_replay = replay(&params, data, validate_from, last, step);
    let threshold = |scorer: Scorer, fallback: f64| {
        train_replay
            .get(&scorer)
            .and_then(|s| choose_warning_threshold(s, options.target_precision, horizon, lead))
            .unwrap_or(fallback)
    };
    // trees fit their training samples closely, so their scores there are no guide to a
    // threshold: theirs is chosen on out-of-fold scores over the training window, each
    // half of the devices replayed with trees fitted on the other half's samples
    let held_out_curve = params.trees.as_ref().and_then(|_| {
        let mut series: Vec<ScoredSeries> = Vec::new();
        for fold in 0..2 {
            let other: Vec<&Sample> = train
                .iter()
                .copied()
                .filter(|s| s.device % 2 != fold)
                .collect();
            let mut half = params.clone();
            half.trees = Some(fit_trees(&other, options).ok()?);
            let mut r = replay_devices(&half, data, first, validate_from - horizon, step, |i| {
                i % 2 == fold
            });
            series.extend(r.remove(&Scorer::Model).unwrap_or_default());
        }
        let curve = warning_curve(&series, horizon, lead);
        (!curve.is_empty()).then_some(curve)
    });
    let threshold_note = match (&params.trees, held_out_curve.is_some()) {
        (Some(_), true) => {
            ". The trees' operating threshold was chosen on out-of-fold scores: each half of the devices replayed over the training window with trees fitted on the other half"
        }
        (Some(_), false) => {
            ". The trees' operating threshold was chosen on their own training window (the out-of-fold replay found no failure)"
        }
        (None, _) => "",
    };
    let curve = held_out_curve.unwrap_or_else(|| {
        train_replay
            .get(&Scorer::Model)
            .map(|s| warning_curve(s, horizon, lead))
            .unwrap_or_default()
    });
    params.threshold = curve_threshold(&curve, options.target_precision).unwrap_or(0.5);
    if let Some(wb) = &mut params.weibull {
        wb.threshold = threshold(Scorer::WeibullAge, 1.0);
    }
    params.alarm_count.threshold = threshold(Scorer::AlarmCount, 1.0);
    let scored = |scorer: Scorer, scores: &[f64], threshold: f64| {
        let replay = valid_replay.get(&scorer).map_or(&[][..], |s| s.as_slice());
        held_out_metrics(scores, &valid_labels, replay, threshold, horizon)
    };
    let valid_scores: Vec<f64> = valid
        .iter()
        .map(|s| params.score_features(&s.x).0)
        .collect();
    let metrics = scored(Scorer::Model, &valid_scores, params.threshold);
    let mut baselines = BTreeMap::new();
    if let Some(wb) = &params.weibull {
        let va: Vec<f64> = valid
            .iter()
            .map(|s| weibull_probability(wb, &data.devices[s.device], &spec, s.as_of, horizon_days))
            .collect();
        baselines.insert(
            Scorer::WeibullAge.as_str().to_owned(),
            scored(Scorer::WeibullAge, &va, wb.threshold),
        );
    }
    if !params.alarm_count.codes.is_empty() {
        let va: Vec<f64> = valid
            .iter()
            .map(|s| params.alarm_count.rates[s.warnings.min(3)])
            .collect();
        baselines.insert(
            Scorer::AlarmCount.as_str().to_owned(),
            scored(Scorer::AlarmCount, &va, params.alarm_count.threshold),
        );
    }

    // the decision: whether the learned model may serve, then the best scorer
    let mut model_reasons = Vec::new();
    // a model that raises no warning where it is judged would serve nothing: silent
    if metrics.warnings.as_ref().is_none_or(|w| w.warnings == 0) {
        model_reasons.push(format!(
            "its operating threshold {:.4} raised no warning on the validation replay",
            params.threshold
        ));
    }
    let current_params = current
        .filter(|c| c.report.failure_mode == mode)
        .and_then(RiskParameters::from_trained);
    let mut blocked = None;
    let mut compared_current = String::new();
    if let Some(cur) = &current_params {
        let cur_scores: Vec<f64> = valid
            .iter()
            .map(|s| {
                if cur.spec == params.spec {
                    cur.score_features(&s.x).0
                } else {
                    cur.score_features(&cur.spec.compute(&data.devices[s.device], s.as_of))
                        .0
                }
            })
            .collect();
        let cur_metrics = validation_metrics(&cur_scores, &valid_labels, cur.threshold, true);
        let cur_version = current.map_or("", |c| c.report.version.as_str());
        if metrics.pr_auc <= cur_metrics.pr_auc {
            blocked = Some(format!(
                "PR-AUC {:.3} does not beat the current model {cur_version}'s {:.3} on the same validation samples: the current model stays",
                metrics.pr_auc, cur_metrics.pr_auc
            ));
        } else {
            compared_current = format!(
                ", the current model {cur_version}'s {:.3}",
                cur_metrics.pr_auc
            );
        }
    }
    let vs: Vec<String> = baselines
        .iter()
        .map(|(n, b)| format!("{n} {:.3}", b.pr_auc))
        .collect();
    let life_note = match &params.sensor_life {
        Some(l) => format!(
            ". Remaining life: the sensors' estimate (trees, capped at {} days) has a validation RMSE of {:.2} days on {} samples, the weibull_age median {}: dates from the {}",
            l.cap_days,
            l.rmse_days,
            l.samples,
            l.weibull_rmse_days
                .map_or_else(|| "none".to_owned(), |w| format!("{w:.2} days")),
            if l.preferred {
                "sensors"
            } else {
                "weibull_age median"
            }
        ),
        None => format!(
            ". Remaining life: dates from the weibull_age median (fewer than {MIN_LIFE_SAMPLES} samples with a known remaining life for the sensors' estimate)"
        ),
    };
    let summary = format!(
        ". Validation PR-AUC: model {:.3}, {}{compared_current} ({} training samples with {train_pos} positives, {} validation samples with {valid_pos}){life_note}",
        metrics.pr_auc,
        vs.join(", "),
        train.len(),
        valid.len()
    ) + threshold_note;
    let mut fit = ModeFit {
        model: TrainedModel {
            report: report(metrics, baselines, false, String::new(), ""),
            parameters: parameters_json(&params),
        },
        own_threshold: params.threshold,
        params: Some(params),
        curve,
        valid_scores,
        valid_labels,
        valid_replay: valid_replay
            .get(&Scorer::Model)
            .cloned()
            .unwrap_or_default(),
        horizon,
        model_reasons,
        blocked,
        summary,
        fleet_note: String::new(),
    };
    fit.decide(options.min_mode_precision);
    fit
}

/// The scorer that serves a failure mode, from each candidate's warnings replayed over
/// the validation window at its operating threshold (`None`: the candidate cannot serve).
///
/// **Criterion.** The net failures warned ahead: failures warned at least
/// [`MIN_LEAD_DAYS`] ahead minus the wasted visits (expired warnings) at the price
/// `min_precision / (1 − min_precision)` of a caught failure each, so that a scorer whose
/// warnings are confirmed exactly at the floor breaks even and one warning everybody pays
/// for it. A candidate qualifies when it warned a failure ahead and its warning precision
/// is at least `min_precision` (so a mode is not silent when one works); the largest net
/// serves, ties going to the higher precision, then to the earlier in [`SCORERS`] (the
/// learned model first).
/// `None` when no candidate qualifies: the mode is then silent.
pub fn choose_serving(
    candidates: &[(Scorer, Option<&WarningMetrics>)],
    min_precision: f64,
) -> Option<Scorer> {
    let mut best: Option<(Scorer, f64, f64)> = None;
    for (scorer, w) in candidates {
        let Some(w) = w else { continue };
        let precision = w.precision.unwrap_or(0.0);
        let net = net_warned(w, min_precision);
        if w.warned_ahead == 0 || precision < min_precision {
            continue;
        }
        let better = best.is_none_or(|(b, n, p)| {
            (net, precision, std::cmp::Reverse(*scorer)) > (n, p, std::cmp::Reverse(b))
        });
        if better {
            best = Some((*scorer, net, precision));
        }
    }
    best.map(|(s, _, _)| s)
}

/// [`choose_serving`]'s net failures warned ahead.
fn net_warned(w: &WarningMetrics, min_precision: f64) -> f64 {
    let price = min_precision.clamp(0.0, 0.99) / (1.0 - min_precision.clamp(0.0, 0.99));
    w.warned_ahead as f64 - price * w.expired as f64
}

/// One scorer's validation warnings in words.
fn warned_in_words(w: Option<&WarningMetrics>) -> String {
    match w {
        None => "no replay".to_owned(),
        Some(w) => format!(
            "{} of {} failures warned at least {MIN_LEAD_DAYS} days ahead, {} warnings ({} expired), precision {}",
            w.warned_ahead,
            w.failures,
            w.warnings,
            w.expired,
            w.precision
                .map_or_else(|| "—".to_owned(), |p| format!("{p:.3}"))
        ),
    }
}
