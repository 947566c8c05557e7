//! Backtests: train with what was known at `T1`, replay the forecasts over `(T1, T2]` at a
//! chosen step, and score the warnings per failure mode and overall, next to the
//! baselines in the same run.
//!
//! **Training.** [`train_modes`] on the data as of `T1` (the store reads nothing at or
//! after it), with no deployed model to beat: the backtest judges the models a training
//! at `T1` would have produced, nothing trained later.
//!
//! **Replay.** The data as of `T2`; each device of a mode's models is scored at every
//! `step` from the first midnight after `T1` to `T2` by every scorer of the mode's model
//! (the learned model and the `weibull_age` and `alarm_count` baselines, each at the
//! threshold its training chose). Features at an instant read nothing after it, so the
//! `T2` data gives the scores the live worker would have computed then. The warnings are
//! those the order policy raises ([`warning_metrics`]): one open warning per device and
//! mode, confirmed by a failure of the mode within the horizon, else expired at it.
//!
//! **Scores.** Per scorer: warnings, confirmed, expired, precision (confirmed over
//! confirmed + expired; empty when none closed), the failures of the mode in the window
//! and the share warned at any lead, at least one day and at least three days ahead, and
//! the median lead of the confirmed warnings. `serving` is what the live worker would have
//! used: the scorer the training chose to serve the mode ([`super::risk::choose_serving`]:
//! the learned model or a baseline, the best on its validation window), else nothing (no
//! warnings). The `overall` rows add the modes up.

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::prediction::{PredictionData, WarningMetrics};
use serde::Serialize;

use super::PredictOptions;
use super::metrics::{ScoredSeries, warning_curve, warning_metrics};
use super::remaining::{days, rmse};
use super::risk::{MIN_LEAD_DAYS, RiskParameters, SCORERS, Scorer, midnight, replay, train_modes};

/// The scorer the live worker would have served with.
pub const SERVING: &str = "serving";

/// The warnings of one scorer in the replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScorerResult {
    /// `serving`, `model`, `weibull_age`, `alarm_count`.
    pub scorer: String,
    /// Its operating threshold (from training); `None` for a scorer with none.
    pub threshold: Option<f64>,
    pub warnings: u64,
    pub confirmed: u64,
    pub expired: u64,
    /// Failures of the mode in the window, on the devices scored.
    pub failures: u64,
    /// Failures with a confirmed warning before them (any lead).
    pub warned_any: u64,
    /// … at least one day before.
    pub warned_1d: u64,
    /// … at least three days before.
    pub warned_3d: u64,
    /// `confirmed / (confirmed + expired)`; `None` when no warning closed.
    pub precision: Option<f64>,
    /// Share of the failures with a confirmed warning before them (any lead).
    pub recall_any: Option<f64>,
    /// … warned at least one day ahead.
    pub recall_1d: Option<f64>,
    /// … warned at least three days ahead.
    pub recall_3d: Option<f64>,
    /// Median days from a confirmed warning to its failure.
    pub median_lead_days: Option<f64>,
}

impl ScorerResult {
    fn from_replay(
        scorer: &str,
        threshold: Option<f64>,
        series: &[ScoredSeries],
        horizon: Duration,
    ) -> Self {
        let Some(t) = threshold else {
            // no scorer: no warnings, every failure missed
            let mut r = ScorerResult {
                scorer: scorer.to_owned(),
                failures: series.iter().map(|s| s.failures.len() as u64).sum(),
                ..ScorerResult::default()
            };
            r.rates();
            return r;
        };
        let at = |days: i64| warning_metrics(series, t, horizon, Duration::days(days));
        let (any, one, three) = (at(0), at(1), at(3));
        Self::from_metrics(scorer, Some(t), &any, one.warned_ahead, three.warned_ahead)
    }

    fn from_metrics(
        scorer: &str,
        threshold: Option<f64>,
        any: &WarningMetrics,
        ahead_1d: u64,
        ahead_3d: u64,
    ) -> Self {
        let mut r = ScorerResult {
            scorer: scorer.to_owned(),
            threshold,
            warnings: any.warnings,
            confirmed: any.confirmed,
            expired: any.expired,
            failures: any.failures,
            warned_any: any.warned_ahead,
            warned_1d: ahead_1d,
            warned_3d: ahead_3d,
            median_lead_days: any.median_lead_days,
            ..ScorerResult::default()
        };
        r.rates();
        r
    }

    /// Precision and recalls from the counts.
    fn rates(&mut self) {
        let closed = self.confirmed + self.expired;
        self.precision = (closed > 0).then(|| self.confirmed as f64 / closed as f64);
        let failures = self.failures;
        let share = |n: u64| (failures > 0).then(|| n as f64 / failures as f64);
        self.recall_any = share(self.warned_any);
        self.recall_1d = share(self.warned_1d);
        self.recall_3d = share(self.warned_3d);
    }

    /// Both added up (the median lead is not additive: left out, as is the threshold).
    fn add(&mut self, other: &ScorerResult) {
        self.warnings += other.warnings;
        self.confirmed += other.confirmed;
        self.expired += other.expired;
        self.failures += other.failures;
        self.warned_any += other.warned_any;
        self.warned_1d += other.warned_1d;
        self.warned_3d += other.warned_3d;
        self.rates();
        self.threshold = None;
        self.median_lead_days = None;
    }
}

/// One failure mode of the backtest.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModeResult {
    pub failure_mode: String,
    /// Warning horizon of the mode (days).
    pub horizon_days: f64,
    /// Whether the training at `T1` deployed a scorer for the mode.
    pub deployed: bool,
    /// The scorer the training chose to serve (`model`, `weibull_age`, `alarm_count`);
    /// `None` when the mode stays silent.
    pub served_by: Option<String>,
    /// The training's decision, or why there is no model.
    pub decision: String,
    /// End of the training's validation window (at most the training as-of time).
    pub validated_until: DateTime<Utc>,
    /// Devices scored in the replay.
    pub devices: u64,
    /// `serving`, then the learned model and each baseline.
    pub scorers: Vec<ScorerResult>,
    /// The remaining-life estimates at the failures of the replay.
    pub remaining_life: Vec<LifeScore>,
    /// The learned model at each baseline's precision.
    pub equal_precision: Vec<EqualPrecision>,
}

/// The learned model at a baseline's precision: of the thresholds at which its replayed
/// warnings are at least as precise as the baseline's, the one warning the most failures
/// at least 3 days ahead.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EqualPrecision {
    pub baseline: String,
    /// The baseline's warning precision at its own threshold.
    pub precision: f64,
    /// The baseline's recall at ≥ 3 days there.
    pub baseline_recall_3d: Option<f64>,
    /// The model's threshold, precision and recall at ≥ 3 days (`None`: no threshold
    /// of the model reaches the baseline's precision with a failure warned ahead).
    pub model_threshold: Option<f64>,
    pub model_precision: Option<f64>,
    pub model_recall_3d: Option<f64>,
    /// The counts behind the rates (to add modes up): failures, and per side the failures
    /// warned ≥ 3 days ahead, confirmed and expired warnings (the model's 0 where no
    /// threshold reaches the precision: silent).
    pub failures: u64,
    pub baseline_warned_3d: u64,
    pub baseline_confirmed: u64,
    pub baseline_expired: u64,
    pub model_warned_3d: u64,
    pub model_confirmed: u64,
    pub model_expired: u64,
}

impl EqualPrecision {
    /// The sum of the modes' rows against the same baseline, rates from the summed counts.
    fn total(rows: &[&EqualPrecision]) -> Option<EqualPrecision> {
        let first = rows.first()?;
        let mut t = EqualPrecision {
            baseline: first.baseline.clone(),
            ..EqualPrecision::default()
        };
        for r in rows {
            t.failures += r.failures;
            t.baseline_warned_3d += r.baseline_warned_3d;
            t.baseline_confirmed += r.baseline_confirmed;
            t.baseline_expired += r.baseline_expired;
            t.model_warned_3d += r.model_warned_3d;
            t.model_confirmed += r.model_confirmed;
            t.model_expired += r.model_expired;
        }
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        t.precision = ratio(
            t.baseline_confirmed,
            t.baseline_confirmed + t.baseline_expired,
        )
        .unwrap_or(0.0);
        t.baseline_recall_3d = ratio(t.baseline_warned_3d, t.failures);
        t.model_precision = ratio(t.model_confirmed, t.model_confirmed + t.model_expired);
        t.model_recall_3d = ratio(t.model_warned_3d, t.failures);
        Some(t)
    }
}

/// [`EqualPrecision`] of the model's replayed `series` against each baseline row.
fn at_equal_precision(
    series: &[ScoredSeries],
    baselines: &[&ScorerResult],
    horizon: Duration,
) -> Vec<EqualPrecision> {
    let curve = warning_curve(series, horizon, Duration::days(MIN_LEAD_DAYS));
    baselines
        .iter()
        .filter_map(|b| {
            let precision = b.precision?;
            let best = curve
                .iter()
                .filter(|(_, m)| m.warned_ahead > 0 && m.precision.is_some_and(|p| p >= precision))
                .max_by(|a, b| {
                    (a.1.warned_ahead, a.1.precision.unwrap_or(0.0))
                        .partial_cmp(&(b.1.warned_ahead, b.1.precision.unwrap_or(0.0)))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            Some(EqualPrecision {
                baseline: b.scorer.clone(),
                precision,
                baseline_recall_3d: b.recall_3d,
                model_threshold: best.map(|(t, _)| *t),
                model_precision: best.and_then(|(_, m)| m.precision),
                model_recall_3d: best.map(|(_, m)| m.recall),
                failures: b.failures,
                baseline_warned_3d: b.warned_3d,
                baseline_confirmed: b.confirmed,
                baseline_expired: b.expired,
                model_warned_3d: best.map_or(0, |(_, m)| m.warned_ahead),
                model_confirmed: best.map_or(0, |(_, m)| m.confirmed),
                model_expired: best.map_or(0, |(_, m)| m.expired),
            })
        })
        .collect()
}

/// The remaining-life estimates of one method, scored at the failures of the replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LifeScore {
    /// `sensor` (the mode's sensor remaining-life trees) or `weibull_age` (the part's
    /// median Weibull remaining life at its age, at the device's usage rate).
    pub method: String,
    /// Whether predictions use this method (the better on the training's validation).
    pub served: bool,
    /// Failures estimated.
    pub failures: u64,
    /// Root mean square of (estimated − actual failure time), in days.
    pub rmse_days: Option<f64>,
    /// Mean absolute error, in days.
    pub mae_days: Option<f64>,
    /// Mean error, in days (positive: the failure came earlier than estimated).
    pub bias_days: Option<f64>,
    /// Every estimate, for a look at the failures behind the figures.
    pub estimates: Vec<LifeEstimate>,
}

/// One remaining-life estimate at one failure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LifeEstimate {
    pub serial: String,
    pub failed_at: DateTime<Utc>,
    /// When it was estimated: the first midnight after the last report before the failure.
    pub estimated_at: DateTime<Utc>,
    /// Days from `estimated_at` to the failure.
    pub actual_days: f64,
    pub estimated_days: f64,
}

impl LifeScore {
    fn from_estimates(method: &str, served: bool, estimates: Vec<LifeEstimate>) -> Self {
        let errors: Vec<f64> = estimates
            .iter()
            .map(|e| e.estimated_days - e.actual_days)
            .collect();
        let n = errors.len() as f64;
        LifeScore {
            method: method.to_owned(),
            served,
            estimates,
            failures: errors.len() as u64,
            rmse_days: rmse(&errors),
            mae_days: (n > 0.0).then(|| errors.iter().map(|e| e.abs()).sum::<f64>() / n),
            bias_days: (n > 0.0).then(|| errors.iter().sum::<f64>() / n),
        }
    }
}

/// The remaining-life errors (days, estimated − actual failure time) of each method at
/// every failure of the mode in `(t1, t2]`, estimated at the first midnight after the
/// device's last report before the failure, or at the failure day's midnight if that comes
/// first (the C-MAPSS protocol: the estimate from the last data), when it is after `t1`.
fn life_scores(
    params: &RiskParameters,
    data: &PredictionData,
    t1: DateTime<Utc>,
    t2: DateTime<Utc>,
) -> Vec<LifeScore> {
    let (mut sensor, mut weibull) = (Vec::new(), Vec::new());
    for d in data
        .devices
        .iter()
        .filter(|d| params.covers(d.model.as_deref()))
    {
        for f in d.failures.iter().filter(|f| {
            !f.retracted
                && f.failure_mode.as_deref() == Some(params.spec.mode.as_str())
                && f.at > t1
                && f.at <= t2
        }) {
            let Some(last) = d
                .daily
                .values()
                .filter_map(|s| s.iter().rev().find(|x| x.day < f.at).map(|x| x.day))
                .max()
            else {
                continue;
            };
            // a device reporting up to its failure is estimated at the failure's midnight
            let at = (last + Duration::days(1)).min(midnight(f.at));
            if at <= t1 || at > f.at {
                continue;
            }
            let estimate = |estimated_days| LifeEstimate {
                serial: d.serial.to_string(),
                failed_at: f.at,
                estimated_at: at,
                actual_days: days(f.at - at),
                estimated_days,
            };
            if let Some(l) = &params.sensor_life {
                sensor.push(estimate(l.predict_days(&params.spec.compute(d, at))));
            }
            if let Some(w) = params.weibull_days(d, at) {
                weibull.push(estimate(w));
            }
        }
    }
    let preferred = params.sensor_life.as_ref().map(|l| l.preferred);
    let mut out = Vec::new();
    if let Some(p) = preferred {
        out.push(LifeScore::from_estimates("sensor", p, sensor));
    }
    out.push(LifeScore::from_estimates(
        Scorer::WeibullAge.as_str(),
        preferred != Some(true),
        weibull,
    ));
    out
}

/// A whole backtest.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BacktestReport {
    /// Training as of this time.
    pub trained_as_of: DateTime<Utc>,
    /// Replay up to this time.
    pub until: DateTime<Utc>,
    /// Replay step (hours).
    pub step_hours: f64,
    pub modes: Vec<ModeResult>,
    /// Every mode added up, per scorer.
    pub overall: Vec<ScorerResult>,
    /// Every mode added up: the learned model at each baseline's precision, mode by mode.
    pub overall_equal_precision: Vec<EqualPrecision>,
}

/// Trains as of `train.as_of`, replays over `(T1, T2]` (`replay.as_of` is `T2`) at
/// `step`, and scores (see the module doc). `progress` hears what it starts.
pub fn backtest(
    catalog: &Catalog,
    options: &PredictOptions,
    train: &PredictionData,
    replay_data: &PredictionData,
    step: Duration,
    progress: &dyn Fn(&str),
) -> Result<BacktestReport, String> {
    let t1 = train.as_of.ok_or("the training data has no as-of time")?;
    let t2 = replay_data
        .as_of
        .ok_or("the replay data has no as-of time")?;
    if t2 <= t1 {
        return Err(format!(
            "the replay end {t2} is not after the training as-of {t1}"
        ));
    }
    if step <= Duration::zero() {
        return Err("the step must be positive".into());
    }
    progress(&format!("training every failure mode as of {t1}"));
    let models = train_modes(catalog, train, options, &[]);
    let total = models.len();
    let mut modes = Vec::with_capacity(total);
    for (i, model) in models.iter().enumerate() {
        let mode = model.report.failure_mode.clone();
        progress(&format!("[{}/{total}] replaying {mode}", i + 1));
        let Some(params) = RiskParameters::from_trained(model) else {
            modes.push(ModeResult {
                failure_mode: mode,
                horizon_days: model.report.horizon_days,
                deployed: false,
                served_by: None,
                decision: model.report.decision.clone(),
                validated_until: model.report.validate_to,
                devices: 0,
                scorers: Vec::new(),
                remaining_life: Vec::new(),
                equal_precision: Vec::new(),
            });
            continue;
        };
        let horizon = Duration::seconds((params.horizon_days * 86_400.0).round() as i64);
        let series = replay(&params, replay_data, t1, t2, step);
        let thresholds = |s: Scorer| match s {
            Scorer::Model => Some(params.threshold),
            Scorer::WeibullAge => params.weibull.as_ref().map(|w| w.threshold),
            Scorer::AlarmCount => Some(params.alarm_count.threshold),
        };
        let empty = Vec::new();
        let of = |s: Scorer| series.get(&s).unwrap_or(&empty);
        let devices = of(Scorer::Model).len() as u64;
        let model_row = ScorerResult::from_replay(
            Scorer::Model.as_str(),
            thresholds(Scorer::Model),
            of(Scorer::Model),
            horizon,
        );
        // what the live worker would have served: the training's choice, else silence
        let served = model.report.deployed.then_some(params.serving);
        let serving = match served {
            Some(s) => ScorerResult::from_replay(SERVING, thresholds(s), of(s), horizon),
            None => ScorerResult::from_replay(SERVING, None, of(Scorer::Model), horizon),
        };
        let mut scorers = vec![serving, model_row];
        // a baseline the training could not fit has no row
        for s in SCORERS
            .into_iter()
            .filter(|s| *s != Scorer::Model && series.contains_key(s))
        {
            scorers.push(ScorerResult::from_replay(
                s.as_str(),
                thresholds(s),
                of(s),
                horizon,
            ));
        }
        modes.push(ModeResult {
            failure_mode: mode,
            horizon_days: params.horizon_days,
            deployed: model.report.deployed,
            served_by: served.map(|s| s.as_str().to_owned()),
            decision: model.report.decision.clone(),
            validated_until: model.report.validate_to,
            devices,
            equal_precision: at_equal_precision(
                of(Scorer::Model),
                &scorers[2..].iter().collect::<Vec<_>>(),
                horizon,
            ),
            scorers,
            remaining_life: life_scores(&params, replay_data, t1, t2),
        });
    }
    let mut overall: Vec<ScorerResult> = Vec::new();
    for m in &modes {
        for s in &m.scorers {
            match overall.iter_mut().find(|o| o.scorer == s.scorer) {
                Some(o) => o.add(s),
                None => {
                    let mut first = s.clone();
                    first.threshold = None;
                    first.median_lead_days = None;
                    overall.push(first);
                }
            }
        }
    }
    let overall_equal_precision = [Scorer::WeibullAge, Scorer::AlarmCount]
        .iter()
        .filter_map(|b| {
            let rows: Vec<&EqualPrecision> = modes
                .iter()
                .flat_map(|m| &m.equal_precision)
                .filter(|e| e.baseline == b.as_str())
                .collect();
            EqualPrecision::total(&rows)
        })
        .collect();
    Ok(BacktestReport {
        trained_as_of: t1,
        until: t2,
        step_hours: step.num_seconds() as f64 / 3600.0,
        modes,
        overall,
        overall_equal_precision,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{:.1} %", v * 100.0))
}

impl BacktestReport {
    /// The results as a table for the terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "backtest: trained as of {}, replayed to {} every {} h\n",
            self.trained_as_of.to_rfc3339(),
            self.until.to_rfc3339(),
            self.step_hours
        );
        out.push_str(&format!(
            "{:<24} {:<22} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10}\n",
            "failure mode",
            "scorer",
            "warnings",
            "failures",
            "precision",
            "recall",
            "≥ 1 d",
            "≥ 3 d",
            "devices",
            "median lead"
        ));
        let row = |out: &mut String, mode: &str, label: &str, devices: String, s: &ScorerResult| {
            out.push_str(&format!(
                "{:<24} {:<22} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10}\n",
                mode,
                label,
                s.warnings,
                s.failures,
                pct(s.precision),
                pct(s.recall_any),
                pct(s.recall_1d),
                pct(s.recall_3d),
                devices,
                s.median_lead_days
                    .map_or_else(|| "—".to_owned(), |d| format!("{d:.1} d"))
            ));
        };
        for m in &self.modes {
            if m.scorers.is_empty() {
                out.push_str(&format!(
                    "{:<24} no model: {}\n",
                    m.failure_mode, m.decision
                ));
            }
            for s in &m.scorers {
                let label = if s.scorer == SERVING {
                    format!("{SERVING} ({})", m.served_by.as_deref().unwrap_or("none"))
                } else {
                    s.scorer.clone()
                };
                row(&mut out, &m.failure_mode, &label, m.devices.to_string(), s);
            }
        }
        for s in &self.overall {
            row(&mut out, "(all modes)", &s.scorer, String::new(), s);
        }
        for m in self.modes.iter().filter(|m| !m.equal_precision.is_empty()) {
            out.push_str(&format!(
                "\n{}: the learned model at each baseline's precision\n",
                m.failure_mode
            ));
            for e in &m.equal_precision {
                out.push_str(&format!(
                    "  at {}'s {}: ≥ 3 d recall {} (threshold {}, precision {}) vs {}'s {}\n",
                    e.baseline,
                    pct(Some(e.precision)),
                    pct(e.model_recall_3d),
                    e.model_threshold
                        .map_or_else(|| "—".to_owned(), |t| format!("{t:.4}")),
                    pct(e.model_precision),
                    e.baseline,
                    pct(e.baseline_recall_3d)
                ));
            }
        }
        if !self.overall_equal_precision.is_empty() {
            out.push_str(
                "\n(all modes): the learned model at each baseline's precision, mode by mode\n",
            );
            for e in &self.overall_equal_precision {
                out.push_str(&format!(
                    "  at {}'s {}: ≥ 3 d recall {} at precision {} vs {}'s {}\n",
                    e.baseline,
                    pct(Some(e.precision)),
                    pct(e.model_recall_3d),
                    pct(e.model_precision),
                    e.baseline,
                    pct(e.baseline_recall_3d)
                ));
            }
        }
        out.push_str(&format!(
            "\nremaining life at the failures (estimated at the first midnight after the last report, at the latest the failure day's)\n{:<24} {:<22} {:>8} {:>10} {:>10} {:>10}\n",
            "failure mode", "method", "failures", "RMSE", "MAE", "bias"
        ));
        let days = |x: Option<f64>| x.map_or_else(|| "—".to_owned(), |d| format!("{d:.2} d"));
        for m in &self.modes {
            for l in &m.remaining_life {
                let label = if l.served {
                    format!("{} (served)", l.method)
                } else {
                    l.method.clone()
                };
                out.push_str(&format!(
                    "{:<24} {:<22} {:>8} {:>10} {:>10} {:>10}\n",
                    m.failure_mode,
                    label,
                    l.failures,
                    days(l.rmse_days),
                    days(l.mae_days),
                    days(l.bias_days)
                ));
            }
        }
        out
    }

    /// One CSV row per mode and scorer, then the overall rows (mode `all`).
    pub fn csv(&self) -> String {
        let mut c = crate::csv::Csv::default();
        c.fields(&[
            "failure_mode",
            "scorer",
            "deployed",
            "served_by",
            "threshold",
            "warnings",
            "confirmed",
            "expired",
            "failures",
            "precision",
            "recall_any",
            "recall_1d",
            "recall_3d",
            "median_lead_days",
            "devices",
        ]);
        c.end_row();
        let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
        let mut row =
            |mode: &str, deployed: &str, served_by: &str, devices: &str, s: &ScorerResult| {
                c.field(mode);
                c.field(&s.scorer);
                c.field(deployed);
                c.field(served_by);
                c.field(&opt(s.threshold));
                c.field(&s.warnings.to_string());
                c.field(&s.confirmed.to_string());
                c.field(&s.expired.to_string());
                c.field(&s.failures.to_string());
                c.field(&opt(s.precision));
                c.field(&opt(s.recall_any));
                c.field(&opt(s.recall_1d));
                c.field(&opt(s.recall_3d));
                c.field(&opt(s.median_lead_days));
                c.field(devices);
                c.end_row();
            };
        for m in &self.modes {
            for s in &m.scorers {
                row(
                    &m.failure_mode,
                    &m.deployed.to_string(),
                    m.served_by.as_deref().unwrap_or(""),
                    &m.devices.to_string(),
                    s,
                );
            }
        }
        for s in &self.overall {
            row("all", "", "", "", s);
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn day(d: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0)
            .single()
            .expect("day")
            + Duration::days(d)
    }

    /// A device scored daily over days 0..=20 with `high` days at 0.9 (else 0.1).
    fn series(high: &[i64], failures: &[i64]) -> ScoredSeries {
        ScoredSeries {
            times: (0..=20).map(day).collect(),
            scores: (0..=20)
                .map(|d| if high.contains(&d) { 0.9 } else { 0.1 })
                .collect(),
            failures: failures.iter().map(|&d| day(d)).collect(),
        }
    }

    #[test]
    fn warnings_are_counted_with_their_leads_and_precision_is_empty_without_any() {
        let horizon = Duration::days(7);
        // device A: warned on day 2, fails on day 6 (4 days ahead); device B: warned on
        // day 10, no failure by day 17 (expired); device C: fails on day 12 unwarned, and
        // on day 19 warned the day before
        let all = [
            series(&[2], &[6]),
            series(&[10], &[]),
            series(&[18], &[12, 19]),
        ];
        let r = ScorerResult::from_replay("model", Some(0.5), &all, horizon);
        assert_eq!(
            (r.warnings, r.confirmed, r.expired, r.failures),
            (3, 2, 1, 3),
            "{r:?}"
        );
        assert_eq!((r.warned_any, r.warned_1d, r.warned_3d), (2, 2, 1), "{r:?}");
        assert_eq!(r.precision, Some(2.0 / 3.0));
        assert_eq!(r.recall_any, Some(2.0 / 3.0));
        assert_eq!(r.recall_3d, Some(1.0 / 3.0));
        assert_eq!(r.median_lead_days, Some(4.0));

        // a threshold nothing reaches: no warning, precision empty (not 0), recall 0
        let quiet = ScorerResult::from_replay("model", Some(0.95), &all, horizon);
        assert_eq!((quiet.warnings, quiet.failures), (0, 3));
        assert_eq!(quiet.precision, None);
        assert_eq!(quiet.recall_any, Some(0.0));
        // no scorer (a model the training did not deploy): the failures all missed
        let none = ScorerResult::from_replay(SERVING, None, &all, horizon);
        assert_eq!((none.warnings, none.failures, none.precision), (0, 3, None));
        assert_eq!(none.recall_3d, Some(0.0));
        // no failure at all: recall empty
        let calm = ScorerResult::from_replay("model", Some(0.5), &[series(&[], &[])], horizon);
        assert_eq!((calm.recall_any, calm.precision), (None, None));

        // modes add up by counts, not by averaging rates
        let mut sum = r.clone();
        sum.add(&none);
        assert_eq!((sum.warnings, sum.failures, sum.warned_3d), (3, 6, 1));
        assert_eq!(sum.recall_3d, Some(1.0 / 6.0));
        assert_eq!(sum.precision, Some(2.0 / 3.0));
        assert_eq!(sum.median_lead_days, None);

        // the model at the baseline's precision: its best threshold at least as precise
        let baseline = ScorerResult {
            scorer: "weibull_age".into(),
            precision: Some(0.6),
            ..r.clone()
        };
        let eq = at_equal_precision(&all, &[&baseline], horizon);
        let e = &eq[0];
        assert_eq!(e.model_threshold, Some(0.9), "{e:?}");
        assert!(e.model_precision.is_some_and(|p| p >= 0.6), "{e:?}");
        assert_eq!((e.model_warned_3d, e.failures), (1, 3), "{e:?}");
        // modes add up by counts
        let other = EqualPrecision {
            baseline: "weibull_age".into(),
            failures: 7,
            baseline_warned_3d: 1,
            baseline_confirmed: 1,
            baseline_expired: 3,
            model_warned_3d: 4,
            model_confirmed: 4,
            model_expired: 0,
            ..EqualPrecision::default()
        };
        let t = EqualPrecision::total(&[e, &other]).expect("rows");
        assert_eq!((t.failures, t.model_warned_3d), (10, 5));
        assert_eq!(t.model_recall_3d, Some(0.5));
        assert_eq!(t.model_precision, Some(6.0 / 7.0));
        assert_eq!(t.baseline_recall_3d, Some(2.0 / 10.0));
        assert_eq!(t.precision, 3.0 / 7.0);
        assert!(EqualPrecision::total(&[]).is_none());
    }
}
