//! Remaining life from the sensors: gradient-boosted regression trees ([`super::gbm`],
//! squared loss) from a failure mode's features ([`super::features`]) to the days until
//! the part fails, learned per failure mode next to the risk model.
//!
//! **Target.** At a sample instant `t` of a device, the next event of the mode's part after
//! `t` among the data known at training: a confirmed failure of the mode at `f` gives
//! `min(f − t, cap)` days; a renewal of the part (or the end of what is known) at `e`
//! censors it, and the sample counts only when `e − t ≥ cap` (its target is then `cap`
//! exactly, whatever came later). `cap` = `remaining_life_cap_days` (125): a part further
//! from failure than that looks healthy, and the sensors cannot say how far (the
//! piecewise-linear target of the C-MAPSS literature, Heimes 2008, where 125–130 cycles
//! is the usual knee).
//!
//! **Validation.** The same time split as the risk model: trees fitted on the training
//! samples (targets known before the validation window), scored on the validation samples
//! (targets known at the end of the data). The report keeps the RMSE in days next to the
//! `weibull_age` remaining life's (its median, at the device's usage rate) on the same
//! samples; predictions use the sensor estimate only where it was the better
//! ([`SensorLife::preferred`]). The interval is the predicted days plus the validation
//! residuals' (actual − predicted) central quantiles at `interval_confidence`.

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::prediction::DeviceHistory;
use serde::{Deserialize, Serialize};

use super::features::{FeatureSpec, renews};
use super::gbm::{self, Gbm, GbmOptions, Loss};

/// The sensor remaining-life model of one failure mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorLife {
    pub trees: Gbm,
    /// Days the target is capped at.
    pub cap_days: f64,
    /// Lower and upper quantile of the validation residuals (actual − predicted days).
    pub residual_low: f64,
    pub residual_high: f64,
    /// Validation samples with a known target.
    pub samples: usize,
    /// Validation RMSE (days) of the sensor estimate.
    pub rmse_days: f64,
    /// Validation RMSE (days) of the `weibull_age` median remaining life on the samples it
    /// could estimate (`None` without a Weibull fit or a usage rate).
    pub weibull_rmse_days: Option<f64>,
    /// Whether predictions use this estimate: its RMSE beats the Weibull one's.
    pub preferred: bool,
}

/// A remaining-life estimate in days from `as_of`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LifeDays {
    pub median: f64,
    pub low: f64,
    /// `None` when the estimate is at the cap (the part looks healthy: no upper bound).
    pub high: Option<f64>,
}

impl SensorLife {
    /// Days until failure from a raw feature vector, within `[0, cap]`.
    pub fn predict_days(&self, x: &[f64]) -> f64 {
        self.trees.predict(x).clamp(0.0, self.cap_days)
    }

    /// The estimate with its interval.
    pub fn estimate(&self, x: &[f64]) -> LifeDays {
        let median = self.predict_days(x);
        LifeDays {
            median,
            low: (median + self.residual_low).max(0.0),
            high: (median < 0.95 * self.cap_days)
                .then(|| (median + self.residual_high).max(median)),
        }
    }
}

/// The next event of the mode's part after `as_of`: `(at, true)` for a confirmed failure
/// of the mode, `(at, false)` for a renewal of the part; `None` when neither follows.
pub fn next_event(
    device: &DeviceHistory,
    spec: &FeatureSpec,
    as_of: DateTime<Utc>,
) -> Option<(DateTime<Utc>, bool)> {
    let failure = device
        .failures
        .iter()
        .filter(|f| !f.retracted && f.failure_mode.as_deref() == Some(spec.mode.as_str()))
        .map(|f| f.at)
        .filter(|&at| at > as_of)
        .min();
    let renewal = device
        .replacements
        .iter()
        .filter(|r| renews(r, &spec.mode, spec.component_of(device)))
        .map(|r| r.at)
        .filter(|&at| at > as_of)
        .min();
    match (failure, renewal) {
        (Some(f), Some(r)) if r < f => Some((r, false)),
        (Some(f), _) => Some((f, true)),
        (None, Some(r)) => Some((r, false)),
        (None, None) => None,
    }
}

/// The target (days to failure, capped) of a sample at `as_of` whose next event is
/// `next`, with what is known up to `known_until`; `None` when censored short of the cap.
pub fn target_days(
    as_of: DateTime<Utc>,
    next: Option<(DateTime<Utc>, bool)>,
    known_until: DateTime<Utc>,
    cap_days: f64,
) -> Option<f64> {
    match next {
        Some((at, true)) if at <= known_until => Some(days(at - as_of).min(cap_days)),
        Some((at, false)) if at <= known_until => {
            (days(at - as_of) >= cap_days).then_some(cap_days)
        }
        _ => (days(known_until - as_of) >= cap_days).then_some(cap_days),
    }
}

/// A duration in days (fractional).
pub fn days(d: Duration) -> f64 {
    d.num_seconds() as f64 / 86_400.0
}

/// Root mean square of the errors; `None` when empty.
pub fn rmse(errors: &[f64]) -> Option<f64> {
    (!errors.is_empty())
        .then(|| (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt())
}

/// The `q`-quantile of `v` (linear between order statistics); `None` when empty.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(s[lo] + (s[hi] - s[lo]) * (pos - lo as f64))
}

/// One sample for the remaining-life model: features, target days, and the Weibull
/// median remaining days where it can be estimated.
pub struct LifeSample<'a> {
    pub x: &'a [f64],
    pub days: f64,
    pub weibull_days: Option<f64>,
}

/// Fits the trees on `train`, validates on `valid` (see the module doc); `None` when
/// either has fewer than `min_samples` samples.
pub fn fit_sensor_life(
    train: &[LifeSample],
    valid: &[LifeSample],
    cap_days: f64,
    confidence: f64,
    options: &GbmOptions,
    min_samples: usize,
) -> Result<Option<SensorLife>, String> {
    if train.len() < min_samples || valid.len() < min_samples {
        return Ok(None);
    }
    let rows: Vec<&[f64]> = train.iter().map(|s| s.x).collect();
    let y: Vec<f64> = train.iter().map(|s| s.days).collect();
    let trees = gbm::fit(&rows, &y, Loss::Squared, options)?;
    let mut life = SensorLife {
        trees,
        cap_days,
        residual_low: 0.0,
        residual_high: 0.0,
        samples: valid.len(),
        rmse_days: 0.0,
        weibull_rmse_days: None,
        preferred: false,
    };
    let residuals: Vec<f64> = valid
        .iter()
        .map(|s| s.days - life.predict_days(s.x))
        .collect();
    let tail = (1.0 - confidence.clamp(0.01, 0.999)) / 2.0;
    life.residual_low = quantile(&residuals, tail).unwrap_or(0.0);
    life.residual_high = quantile(&residuals, 1.0 - tail).unwrap_or(0.0);
    life.rmse_days = rmse(&residuals).unwrap_or(f64::NAN);
    // the Weibull median on the samples it can estimate, and the sensors on the same ones
    let (mut w_err, mut s_err) = (Vec::new(), Vec::new());
    for (s, r) in valid.iter().zip(&residuals) {
        if let Some(w) = s.weibull_days {
            w_err.push(w.min(cap_days) - s.days);
            s_err.push(*r);
        }
    }
    life.weibull_rmse_days = rmse(&w_err);
    life.preferred = match (rmse(&s_err), life.weibull_rmse_days) {
        (Some(s), Some(w)) => s < w,
        _ => true,
    };
    Ok(Some(life))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(d: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("t")
            + Duration::days(d)
    }

    #[test]
    fn targets_are_capped_and_censored_ones_count_only_past_the_cap() {
        let cap = 125.0;
        // a failure 30 days on, known: 30; one 200 days on: the cap
        assert_eq!(
            target_days(t(0), Some((t(30), true)), t(400), cap),
            Some(30.0)
        );
        assert_eq!(
            target_days(t(0), Some((t(200), true)), t(400), cap),
            Some(cap)
        );
        // the failure is after what is known: censored at the end of the data
        assert_eq!(target_days(t(0), Some((t(30), true)), t(20), cap), None);
        assert_eq!(
            target_days(t(0), Some((t(300), true)), t(130), cap),
            Some(cap)
        );
        // a renewal 50 days on censors it short of the cap; one 126 days on does not
        assert_eq!(target_days(t(0), Some((t(50), false)), t(400), cap), None);
        assert_eq!(
            target_days(t(0), Some((t(126), false)), t(400), cap),
            Some(cap)
        );
        // nothing follows: the cap once the data runs that long
        assert_eq!(target_days(t(0), None, t(100), cap), None);
        assert_eq!(target_days(t(0), None, t(125), cap), Some(cap));
    }

    #[test]
    fn the_sensor_life_learns_a_degradation_and_is_preferred_over_a_worse_rule() {
        // days to failure = 100 − 10·x0 (a sensor that rises as the part wears), the
        // "Weibull" rule guessing 60 days for everyone
        let xs: Vec<Vec<f64>> = (0..2000)
            .map(|i| vec![(i % 100) as f64 / 10.0, (i % 7) as f64])
            .collect();
        let sample = |x: &[f64]| (100.0 - 10.0 * x[0]).clamp(0.0, 125.0);
        let (a, b) = xs.split_at(1500);
        let train: Vec<LifeSample> = a
            .iter()
            .map(|x| LifeSample {
                x,
                days: sample(x),
                weibull_days: Some(60.0),
            })
            .collect();
        let valid: Vec<LifeSample> = b
            .iter()
            .map(|x| LifeSample {
                x,
                days: sample(x),
                weibull_days: Some(60.0),
            })
            .collect();
        let life = fit_sensor_life(&train, &valid, 125.0, 0.8, &GbmOptions::default(), 50)
            .expect("fits")
            .expect("enough samples");
        assert!(life.rmse_days < 3.0, "{}", life.rmse_days);
        // the constant rule: RMSE² = var + bias² of 100 − 10·x0 over x0 on 0, 0.1, …, 9.9
        // (mean 50.5, variance 833.25) against 60: √(833.25 + 9.5²) = 30.389
        let w = life.weibull_rmse_days.expect("weibull");
        assert!((w - 30.389).abs() < 1e-3, "{w}");
        assert!(life.preferred);
        let e = life.estimate(&[5.0, 0.0]);
        assert!((e.median - 50.0).abs() < 3.0 && e.low <= e.median, "{e:?}");
        assert!(e.high.is_some_and(|h| h >= e.median), "{e:?}");
        // too few samples: no model
        assert!(
            fit_sensor_life(&train[..10], &valid, 125.0, 0.8, &GbmOptions::default(), 50)
                .expect("no error")
                .is_none()
        );
        assert_eq!(rmse(&[3.0, -4.0]), Some((12.5f64).sqrt()));
    }
}
