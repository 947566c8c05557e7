//! Failure-risk features of one device at one instant, derived generically: every numeric
//! field of the device's daily summaries, the alarm codes of its catalog models, and the
//! part named by the failure mode. No field name is special (the runtime meter only gives
//! the part ages).
//!
//! Only data known at `as_of` is read: days and hours that started before it, alarm
//! episodes started before it (an end after `as_of` is ignored), failures and replacements
//! before it. Truncating the history after `as_of` changes no feature (tested).
//!
//! Per field `f` (days `[as_of − w, as_of)`):
//! - `f:mean_1d`, `f:mean_7d`, `f:mean_30d` — mean of the daily means;
//! - `f:min_7d`, `f:max_7d` — extremes of the daily means;
//! - `f:step_7d` — mean absolute change from one daily mean to the next;
//! - `f:sd_7d` — standard deviation of the daily means;
//! - `f:trend_7d`, `f:trend_30d` — least-squares slope of the daily means per day over 7
//!   and 30 days (a slow wear-out shows in a month before it shows in a week);
//! - `f:dev_1d`, `f:dev_3d`, `f:dev_7d` — deviation of the 1-, 3- and 7-day means from
//!   the device's own baseline (median of the daily means in `[as_of − 90 d, as_of − 30 d)`),
//!   in robust standard deviations (1.4826 · MAD, at least 1 % of the baseline's magnitude);
//! - `f:devmin_3d`, `f:devmax_3d` — the smallest and largest deviation of the last three
//!   daily means: a shift that has lasted three days, not a spike;
//! - `f:rise_3d` — the last daily mean minus the one three days before, in robust sd per
//!   day;
//! - `f:accel_3d` — the curvature of the last three daily means (`m₃ − 2m₂ + m₁`, in
//!   robust sd): a wear-out precursor accelerates, a transient excursion that has peaked
//!   bends the other way;
//! - `f:run_up`, `f:run_down` — how many consecutive daily means up to the last one rose
//!   (fell) by more than one robust sd each: a degradation keeps going one way, a transient
//!   excursion turns after a day or two;
//! - `f:dev_last` — deviation of the last reading of the last day (its `last`) from the
//!   baseline, in robust sd: at midnight the last day's mean lags a precursor that grows
//!   through the day by about half a day, its last reading does not;
//!
//! **Independent of the reporting rhythm.** Every feature reads daily means, never a
//! within-day extreme or range (`dev_last` reads one reading, the day's last, whose hour
//! follows the rhythm): a day of 24 hourly readings
//! and a day of 4 six-hourly ones of the same signal have the same mean, but not the same
//! minimum, maximum or range (a device reporting once a day has a range of 0, a cumulative
//! meter's range is the day's use only when it reports twice or more). Tested: the same
//! signal reported hourly and every 6 hours gives the same features.
//!
//! The deviation features are compressed as `sign(x) · ln(1 + |x|)`: a shift of 50 robust
//! sd and one of 500 are both "far off", and the linear model should not be dominated by
//! the size of a few.
//!
//! **After a repair.** A confirmed failure repaired by replacing its part leaves the days
//! before the repair behind: the windows above (not the baseline) and the alarm counts
//! start at the midnight after the repair, so the failure's own readings do not look like
//! a new precursor.
//!
//! Per alarm code `c`: `alarm:c:1d`, `alarm:c:3d`, `alarm:c:7d`, `alarm:c:30d` — episodes
//! started in the window. Per catalog model `m` when the mode spans several: `model:m`,
//! 1 for the device's model, else 0.
//! Part and device: `part:runtime_since_replacement` and `part:days_since_replacement`
//! (since the last replacement of the part of the failure mode — a replacement named by
//! the mode, or a renewal of the catalog component that owns the mode on the device's
//! model, which renews every mode of it — or its last confirmed failure; since the
//! device's start otherwise), `device:runtime_hours`, `device:age_days` (from the
//! commissioning where known, else the registration: back-filled history has no negative
//! age). A missing value is NaN (imputed as the training mean).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::prediction::{DeviceHistory, FieldDay, Replacement};

use super::depletion::{RUNTIME_FIELD, runtime_now};
use super::usage::known_days;

/// Days of the device's own baseline: `[as_of − BASELINE_FROM, as_of − BASELINE_TO)`.
pub const BASELINE_FROM: i64 = 90;
pub const BASELINE_TO: i64 = 30;
/// The robust sd of a baseline is at least this share of its magnitude (a field that
/// never moves would otherwise make every change infinitely many sds).
pub const SCALE_FLOOR: f64 = 0.01;
/// Daily history a feature may read (days before `as_of`).
pub const LOOKBACK_DAYS: i64 = BASELINE_FROM;

/// The per-field feature suffixes, in order.
pub const FIELD_FEATURES: &[&str] = &[
    "mean_1d",
    "mean_7d",
    "mean_30d",
    "min_7d",
    "max_7d",
    "step_7d",
    "sd_7d",
    "trend_7d",
    "trend_30d",
    "dev_1d",
    "dev_3d",
    "dev_7d",
    "devmin_3d",
    "devmax_3d",
    "rise_3d",
    "accel_3d",
    "run_up",
    "run_down",
    "dev_last",
];

/// What a model's features are made of.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpec {
    /// Failure mode (= the part whose age counts).
    pub mode: String,
    pub fields: Vec<String>,
    pub codes: Vec<String>,
    /// The catalog component that owns `mode`, per model id (`Catalog::failure_mode`): a
    /// renewal of it renews the mode's part. Empty in models trained before components
    /// (a replacement must then name the mode).
    #[serde(default)]
    pub components: BTreeMap<String, String>,
    /// The catalog models the mode spans when more than one: an indicator feature each
    /// (`model:<id>`). Empty with one model, and in models trained before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The feature layout the vector follows ([`FEATURE_LAYOUT`]); 0 in models trained
    /// before layouts, whose vectors this code no longer computes.
    #[serde(default)]
    pub layout: u32,
}

/// The layout of [`FeatureSpec::compute`]'s vector. 1: rhythm-independent field features,
/// alarm counts over 1, 3, 7 and 30 days, model indicators (issue 22). A stored model of
/// another layout is not served: its weights would meet other features.
pub const FEATURE_LAYOUT: u32 = 1;

/// The windows (days) of the per-code alarm counts.
pub const ALARM_WINDOWS: [i64; 4] = [1, 3, 7, 30];

impl FeatureSpec {
    /// Feature names, in vector order.
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for f in &self.fields {
            for s in FIELD_FEATURES {
                v.push(format!("{f}:{s}"));
            }
        }
        for c in &self.codes {
            for w in ALARM_WINDOWS {
                v.push(format!("alarm:{c}:{w}d"));
            }
        }
        for m in &self.models {
            v.push(format!("model:{m}"));
        }
        v.extend(
            [
                "part:runtime_since_replacement",
                "part:days_since_replacement",
                "device:runtime_hours",
                "device:age_days",
            ]
            .map(String::from),
        );
        v
    }

    /// The component of the mode on `device`'s model, when the catalog declared one.
    pub fn component_of(&self, device: &DeviceHistory) -> Option<&str> {
        self.components
            .get(device.model.as_deref()?)
            .map(String::as_str)
    }

    /// The age of the mode's part on `device` at `as_of` ([`part_age`]).
    pub fn part_age(&self, device: &DeviceHistory, as_of: DateTime<Utc>) -> PartAge {
        part_age(device, &self.mode, self.component_of(device), as_of)
    }

    /// The feature vector of `device` at `as_of` (see the module documentation).
    pub fn compute(&self, device: &DeviceHistory, as_of: DateTime<Utc>) -> Vec<f64> {
        let mut v = Vec::with_capacity(self.fields.len() * FIELD_FEATURES.len() + 40);
        let repaired = last_repair(device, as_of);
        for f in &self.fields {
            let days = device
                .daily
                .get(f)
                .map(|d| known_days(d, as_of))
                .unwrap_or(&[]);
            field_features(days, as_of, repaired, &mut v);
        }
        for c in &self.codes {
            let count = |w: i64| {
                let from =
                    (as_of - Duration::days(w)).max(repaired.unwrap_or(DateTime::<Utc>::MIN_UTC));
                device
                    .alarms
                    .iter()
                    .filter(|a| a.code == *c && a.started_at >= from && a.started_at < as_of)
                    .count() as f64
            };
            for w in ALARM_WINDOWS {
                v.push(count(w));
            }
        }
        for m in &self.models {
            v.push(f64::from(u8::from(
                device.model.as_deref() == Some(m.as_str()),
            )));
        }
        let part = self.part_age(device, as_of);
        v.push(part.runtime_since);
        v.push(part.days_since);
        v.push(runtime_now(device, as_of).unwrap_or(f64::NAN));
        v.push((as_of - device.started_at()).num_seconds() as f64 / 86_400.0);
        v
    }
}

/// The age of the part a failure mode names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartAge {
    pub runtime_since: f64,
    pub days_since: f64,
    /// Whether a replacement or failure of the part is known (else: since the start).
    pub known: bool,
}

/// Whether `r` renewed the part of failure mode `mode`, owned by `component` on the
/// device's model: a replacement named by the mode (consumables, modes with no component
/// declared, records from before components), or a renewal of the component, which
/// renews every failure mode of it.
pub fn renews(r: &Replacement, mode: &str, component: Option<&str>) -> bool {
    r.part == mode || component.is_some_and(|c| r.component.as_deref() == Some(c))
}

/// Runtime hours and days since the part of `mode` (owned by `component` on the device's
/// model, when known) was last replaced (or last failed: a confirmed failure is repaired
/// by replacing it), at `as_of`; since the device's start when neither is known.
pub fn part_age(
    device: &DeviceHistory,
    mode: &str,
    component: Option<&str>,
    as_of: DateTime<Utc>,
) -> PartAge {
    let meter = runtime_now(device, as_of).unwrap_or(f64::NAN);
    let replaced = device
        .replacements
        .iter()
        .filter(|r| renews(r, mode, component) && r.at < as_of)
        .map(|r| (r.at, r.runtime_hours));
    let failed = device
        .failures
        .iter()
        .filter(|f| !f.retracted && f.failure_mode.as_deref() == Some(mode) && f.at < as_of)
        .map(|f| (f.at, f.runtime_hours));
    match replaced.chain(failed).max_by_key(|x| x.0) {
        Some((at, rt)) => {
            let rt = rt.or_else(|| meter_before(device, at));
            PartAge {
                runtime_since: rt.map_or(f64::NAN, |r| (meter - r).max(0.0)),
                days_since: (as_of - at).num_seconds() as f64 / 86_400.0,
                known: true,
            }
        }
        None => PartAge {
            runtime_since: meter,
            days_since: (as_of - device.started_at()).num_seconds() as f64 / 86_400.0,
            known: false,
        },
    }
}

/// When the device was last repaired before `as_of`: the latest replacement of a part
/// whose confirmed failure came before it.
pub fn last_repair(device: &DeviceHistory, as_of: DateTime<Utc>) -> Option<DateTime<Utc>> {
    device
        .replacements
        .iter()
        .filter(|r| r.at < as_of)
        .filter(|r| {
            device.failures.iter().any(|f| {
                !f.retracted && f.at <= r.at && f.failure_mode.as_deref() == Some(r.part.as_str())
            })
        })
        .map(|r| r.at)
        .max()
}

fn meter_before(device: &DeviceHistory, at: DateTime<Utc>) -> Option<f64> {
    let days = device.daily.get(RUNTIME_FIELD)?;
    let i = days.partition_point(|d| d.day < at);
    (i > 0).then(|| days[i - 1].last)
}

fn window(days: &[FieldDay], as_of: DateTime<Utc>, from: i64, to: i64) -> &[FieldDay] {
    let lo = days.partition_point(|d| d.day < as_of - Duration::days(from));
    let hi = days.partition_point(|d| d.day < as_of - Duration::days(to));
    &days[lo..hi.max(lo)]
}

fn mean(x: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for v in x {
        s += v;
        n += 1;
    }
    if n == 0 { f64::NAN } else { s / n as f64 }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `sign(x) · ln(1 + |x|)`.
fn compress(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

/// Consecutive steps of the daily means up to the last one in one direction (`sign` +1
/// up, −1 down), each by more than `scale`.
fn run(days: &[FieldDay], scale: f64, sign: f64) -> f64 {
    let mut n = 0usize;
    for w in days.windows(2).rev() {
        if sign * (w[1].mean - w[0].mean) > scale {
            n += 1;
        } else {
            break;
        }
    }
    n as f64
}

fn field_features(
    days: &[FieldDay],
    as_of: DateTime<Utc>,
    repaired: Option<DateTime<Utc>>,
    out: &mut Vec<f64>,
) {
    let start = out.len();
    // the device's own baseline reads through a repair; the recent windows do not
    let mut base: Vec<f64> = window(days, as_of, BASELINE_FROM, BASELINE_TO)
        .iter()
        .map(|d| d.mean)
        .collect();
    let baseline = (base.len() >= 7).then(|| {
        let b = median(&mut base);
        let mut dev: Vec<f64> = base.iter().map(|x| (x - b).abs()).collect();
        let scale = (1.4826 * median(&mut dev))
            .max(SCALE_FLOOR * b.abs())
            .max(1e-6);
        (b, scale)
    });
    let days = match repaired {
        // the day of the repair holds readings from before it
        Some(at) => &days[days.partition_point(|d| d.day <= at)..],
        None => days,
    };
    let d1 = window(days, as_of, 1, 0);
    let d3 = window(days, as_of, 3, 0);
    let d7 = window(days, as_of, 7, 0);
    let d30 = window(days, as_of, 30, 0);
    let m1 = mean(d1.iter().map(|d| d.mean));
    let m3 = mean(d3.iter().map(|d| d.mean));
    let m7 = mean(d7.iter().map(|d| d.mean));
    out.push(m1);
    out.push(m7);
    out.push(mean(d30.iter().map(|d| d.mean)));
    out.push(
        d7.iter()
            .map(|d| d.mean)
            .reduce(f64::min)
            .unwrap_or(f64::NAN),
    );
    out.push(
        d7.iter()
            .map(|d| d.mean)
            .reduce(f64::max)
            .unwrap_or(f64::NAN),
    );
    out.push(mean(d7.windows(2).map(|w| (w[1].mean - w[0].mean).abs())));
    let sd = if d7.len() >= 2 {
        let v = d7.iter().map(|d| (d.mean - m7).powi(2)).sum::<f64>() / (d7.len() - 1) as f64;
        v.sqrt()
    } else {
        f64::NAN
    };
    out.push(sd);
    out.push(trend(d7));
    out.push(trend(d30));
    let Some((b, scale)) = baseline else {
        // every feature measured from the baseline is missing
        out.resize(start + FIELD_FEATURES.len(), f64::NAN);
        return;
    };
    let dev = |m: f64| compress((m - b) / scale);
    out.push(dev(m1));
    out.push(dev(m3));
    out.push(dev(m7));
    let devs = d3.iter().map(|d| (d.mean - b) / scale);
    let (lo, hi) = devs.fold((f64::NAN, f64::NAN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    out.push(compress(lo));
    out.push(compress(hi));
    let rise = match d7.len() {
        n if n >= 4 => (d7[n - 1].mean - d7[n - 4].mean) / (3.0 * scale),
        _ => f64::NAN,
    };
    out.push(compress(rise));
    let accel = match d3 {
        [a, b, c] => (c.mean - 2.0 * b.mean + a.mean) / scale,
        _ => f64::NAN,
    };
    out.push(compress(accel));
    out.push(run(d7, scale, 1.0));
    out.push(run(d7, scale, -1.0));
    out.push(d1.last().map_or(f64::NAN, |d| dev(d.last)));
}

/// Least-squares slope of the daily means per day; NaN with fewer than 3 days.
fn trend(days: &[FieldDay]) -> f64 {
    if days.len() < 3 {
        return f64::NAN;
    }
    let t0 = days[0].day;
    let xs: Vec<f64> = days
        .iter()
        .map(|d| (d.day - t0).num_seconds() as f64 / 86_400.0)
        .collect();
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = days.iter().map(|d| d.mean).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs
        .iter()
        .zip(days)
        .map(|(x, d)| (x - mx) * (d.mean - my))
        .sum();
    if sxx > 0.0 { sxy / sxx } else { f64::NAN }
}
