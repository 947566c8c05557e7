//! Consumable depletion and runtime-hour service intervals.
//!
//! **Depletion** of a consumable = its percentage field reaching the catalog's
//! `order_at_pct`, the level at which it must be replaced (the order rule's level).
//! Per device:
//! 1. Points `(runtime hours, level)`: the daily `last` of the field paired with the daily
//!    `last` of the runtime meter (days before `as_of`), and for the recent window the
//!    hourly `last` pairs instead (finer).
//! 2. The **current life** starts after the last reset: a rise of the level by more than
//!    [`RESET_RISE_PCT`] over the two points before that persists at the next point (so one
//!    stray low or high reading is not a reset), or a `Replacement` of the consumable.
//! 3. Wear per runtime hour = −slope of a least-squares line level ~ runtime over the
//!    current life, refitted once without the points whose residual exceeds 4 robust
//!    standard deviations (1.4826 · MAD): noisy and stray readings do not bend it. It needs
//!    [`MIN_POINTS`] points over [`MIN_SPAN_HOURS`] runtime hours; otherwise the previous
//!    life's slope, otherwise the catalog's rated life (100 % / `rated_life_hours`).
//! 4. Hours left = (fitted level now − `order_at_pct`) / wear; the slope's standard error
//!    gives the hours' interval; [`UsageProfile::when_run`] turns hours into a date with
//!    the use uncertainty added.
//!
//! **Service** due: the next multiple of `service_interval_hours` after the last `service`
//! replacement (its meter reading), or of the meter itself when there was none; the date
//! from the usage profile.

use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::ConsumableSpec;
use fleetpulse_domain::prediction::{DeviceHistory, FieldDay, HourPoint, Replacement};

use super::usage::{DueDates, UsageProfile, known_days};

/// A rise of the level between two points larger than this is a replacement.
pub const RESET_RISE_PCT: f64 = 10.0;
/// Points a life needs for its own slope.
pub const MIN_POINTS: usize = 4;
/// Runtime hours a life must span for its own slope.
pub const MIN_SPAN_HOURS: f64 = 24.0;

/// The runtime meter field of the telemetry contract.
pub const RUNTIME_FIELD: &str = "runtime_hours";

/// One observation of a consumable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelPoint {
    pub at: DateTime<Utc>,
    pub runtime: f64,
    pub level: f64,
}

/// A straight-line fit of level against runtime hours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WearFit {
    /// Level at runtime 0 of the line.
    pub intercept: f64,
    /// Level change per runtime hour (negative while wearing).
    pub slope: f64,
    pub slope_se: f64,
    pub points: usize,
    pub dropped: usize,
}

/// Where the wear rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WearSource {
    CurrentLife,
    PreviousLife,
    RatedLife,
}

impl WearSource {
    pub fn as_str(self) -> &'static str {
        match self {
            WearSource::CurrentLife => "current_life",
            WearSource::PreviousLife => "previous_life",
            WearSource::RatedLife => "rated_life",
        }
    }
}

/// The depletion forecast of one consumable of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct Depletion {
    pub level_now: f64,
    pub runtime_now: f64,
    /// Percentage points per runtime hour.
    pub wear_per_hour: f64,
    pub wear_se: f64,
    pub source: WearSource,
    pub hours_left: f64,
    /// Points of the current life and outliers dropped.
    pub points: usize,
    pub dropped: usize,
    pub life_started_at: Option<DateTime<Utc>>,
    /// `None` without a usage profile (then only `hours_left` is known).
    pub dates: Option<DueDates>,
}

/// Appends a point for every `levels` entry whose period has a `meter` entry (both
/// sorted by `start`), stamped at the period's end (`start + span`).
fn join_on_time<T>(
    levels: &[T],
    meter: &[T],
    start: impl Fn(&T) -> DateTime<Utc>,
    last: impl Fn(&T) -> f64,
    span: chrono::Duration,
    out: &mut Vec<LevelPoint>,
) {
    let mut j = 0;
    for p in levels {
        while j < meter.len() && start(&meter[j]) < start(p) {
            j += 1;
        }
        if j < meter.len() && start(&meter[j]) == start(p) {
            out.push(LevelPoint {
                at: start(p) + span,
                runtime: last(&meter[j]),
                level: last(p),
            });
        }
    }
}

/// The (time, runtime, level) points of `field` known at `as_of`.
pub fn level_points(device: &DeviceHistory, field: &str, as_of: DateTime<Utc>) -> Vec<LevelPoint> {
    let empty_d: Vec<FieldDay> = Vec::new();
    let empty_h: Vec<HourPoint> = Vec::new();
    let level_d = known_days(device.daily.get(field).unwrap_or(&empty_d), as_of);
    let meter_d = known_days(device.daily.get(RUNTIME_FIELD).unwrap_or(&empty_d), as_of);
    let hourly = |f: &str| {
        let h = device.recent_hourly.get(f).unwrap_or(&empty_h);
        &h[..h.partition_point(|p| p.hour < as_of)]
    };
    let (level_h, meter_h) = (hourly(field), hourly(RUNTIME_FIELD));
    // daily points before the hourly window (a day's last is at the day's end)
    let first_hour = level_h.first().map(|p| p.hour);
    let level_d = &level_d[..level_d
        .partition_point(|d| first_hour.is_none_or(|h| d.day + chrono::Duration::days(1) <= h))];
    let mut out = Vec::new();
    join_on_time(
        level_d,
        meter_d,
        |d| d.day,
        |d| d.last,
        chrono::Duration::days(1),
        &mut out,
    );
    join_on_time(
        level_h,
        meter_h,
        |p| p.hour,
        |p| p.last,
        chrono::Duration::hours(1),
        &mut out,
    );
    out
}

/// Splits points into lives at each reset (level rise or replacement record); returns the
/// start index of each life.
pub fn life_starts(points: &[LevelPoint], replacements: &[&Replacement]) -> Vec<usize> {
    let mut starts = vec![0];
    for i in 1..points.len() {
        // a rise that is neither the recovery from one low stray reading nor one high
        // stray reading itself
        let above = |j: usize| points[i].level - points[j].level > RESET_RISE_PCT;
        let rise = above(i - 1)
            && (i < 2 || above(i - 2))
            && points
                .get(i + 1)
                .is_none_or(|next| next.level - points[i - 1].level > RESET_RISE_PCT);
        let replaced = replacements
            .iter()
            .any(|r| r.at >= points[i - 1].at && r.at < points[i].at);
        if rise || replaced {
            starts.push(i);
        }
    }
    starts
}

fn ols(points: &[LevelPoint]) -> Option<(f64, f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.runtime).sum::<f64>() / n;
    let my = points.iter().map(|p| p.level).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.runtime - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points
        .iter()
        .map(|p| (p.runtime - mx) * (p.level - my))
        .sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = points
        .iter()
        .map(|p| (p.level - intercept - slope * p.runtime).powi(2))
        .sum();
    let se = (sse / (n - 2.0).max(1.0) / sxx).sqrt();
    Some((intercept, slope, se))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Robust line of level against runtime (see the module documentation).
pub fn fit_wear(points: &[LevelPoint]) -> Option<WearFit> {
    let span = points.last()?.runtime - points.first()?.runtime;
    if points.len() < MIN_POINTS || span < MIN_SPAN_HOURS {
        return None;
    }
    let (a, b, _) = ols(points)?;
    let mut resid: Vec<f64> = points.iter().map(|p| p.level - a - b * p.runtime).collect();
    let mut abs: Vec<f64> = resid.iter().map(|r| r.abs()).collect();
    let mad = median(&mut abs);
    let cut = 4.0 * 1.4826 * mad.max(1e-9);
    let kept: Vec<LevelPoint> = points
        .iter()
        .zip(resid.iter_mut())
        .filter(|(_, r)| r.abs() <= cut)
        .map(|(p, _)| *p)
        .collect();
    let (a, b, se) = if kept.len() >= MIN_POINTS {
        ols(&kept)?
    } else {
        ols(points)?
    };
    Some(WearFit {
        intercept: a,
        slope: b,
        slope_se: se,
        points: kept.len(),
        dropped: points.len() - kept.len(),
    })
}

/// The depletion forecast of `consumable` on `device` at `as_of`; `None` without any
/// reading of its field.
pub fn forecast_depletion(
    device: &DeviceHistory,
    consumable: &ConsumableSpec,
    usage: Option<&UsageProfile>,
    as_of: DateTime<Utc>,
    z: f64,
) -> Option<Depletion> {
    let points = level_points(device, &consumable.field, as_of);
    let last = *points.last()?;
    let replacements: Vec<&Replacement> = device
        .replacements
        .iter()
        .filter(|r| r.part == consumable.id && r.at < as_of)
        .collect();
    let starts = life_starts(&points, &replacements);
    let current_start = *starts.last().unwrap_or(&0);
    let current = &points[current_start..];
    let rated = 100.0 / consumable.rated_life_hours;
    let own = fit_wear(current).filter(|f| f.slope < 0.0);
    let previous = (starts.len() >= 2)
        .then(|| fit_wear(&points[starts[starts.len() - 2]..current_start]))
        .flatten()
        .filter(|f| f.slope < 0.0);
    let (wear, wear_se, source, fit_points, dropped) = match (own, previous) {
        (Some(f), _) => (
            -f.slope,
            f.slope_se,
            WearSource::CurrentLife,
            f.points,
            f.dropped,
        ),
        (None, Some(f)) => (
            -f.slope,
            f.slope_se,
            WearSource::PreviousLife,
            current.len(),
            0,
        ),
        (None, None) => (rated, 0.25 * rated, WearSource::RatedLife, current.len(), 0),
    };
    let level_now = match own {
        Some(f) => f.intercept + f.slope * last.runtime,
        // too few points of this life: the mean of its points carried to now
        None => {
            let n = current.len() as f64;
            let mean_level = current.iter().map(|p| p.level).sum::<f64>() / n;
            let mean_rt = current.iter().map(|p| p.runtime).sum::<f64>() / n;
            mean_level - wear * (last.runtime - mean_rt)
        }
    };
    let margin = level_now - consumable.order_at_pct;
    let hours_left = (margin / wear).max(0.0);
    let hours_low = (margin / (wear + z * wear_se)).max(0.0);
    let slow = (wear - z * wear_se).max(0.5 * wear);
    let hours_high = (margin / slow).max(0.0);
    // runtime since the last point (it ended before as_of)
    let dates = usage.and_then(|u| {
        if margin <= 0.0 {
            return Some(DueDates {
                due: as_of,
                low: as_of,
                high: Some(as_of),
            });
        }
        u.when_run(last.at.min(as_of), hours_left, hours_low, hours_high, z)
            .map(|d| DueDates {
                due: d.due.max(as_of),
                low: d.low.max(as_of),
                high: d.high.map(|h| h.max(as_of)),
            })
    });
    Some(Depletion {
        level_now,
        runtime_now: last.runtime,
        wear_per_hour: wear,
        wear_se,
        source,
        hours_left,
        points: fit_points,
        dropped,
        life_started_at: (current_start > 0).then(|| points[current_start].at),
        dates,
    })
}

/// The service forecast of a device at `as_of`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDue {
    pub interval_hours: f64,
    pub runtime_now: f64,
    /// Meter reading at which the next service is due.
    pub due_meter: f64,
    /// `service_replacement` or `meter_multiple`.
    pub basis: &'static str,
    pub last_service_at: Option<DateTime<Utc>>,
    pub hours_left: f64,
    pub dates: Option<DueDates>,
}

/// The meter reading at or before `at` from the daily series (`last` of the day before).
fn meter_at(device: &DeviceHistory, at: DateTime<Utc>) -> Option<f64> {
    let days = device.daily.get(RUNTIME_FIELD)?;
    let i = days.partition_point(|d| d.day + chrono::Duration::days(1) <= at);
    if i > 0 {
        Some(days[i - 1].last)
    } else {
        days.first().map(|d| d.min)
    }
}

/// The runtime meter's last known reading at `as_of` (hourly if newer than daily).
pub fn runtime_now(device: &DeviceHistory, as_of: DateTime<Utc>) -> Option<f64> {
    let daily = device
        .daily
        .get(RUNTIME_FIELD)
        .and_then(|d| known_days(d, as_of).last().map(|d| d.last));
    let hourly = device.recent_hourly.get(RUNTIME_FIELD).and_then(|h| {
        let h = &h[..h.partition_point(|p| p.hour < as_of)];
        h.last().map(|p| p.last)
    });
    match (daily, hourly) {
        (Some(d), Some(h)) => Some(d.max(h)),
        (d, h) => d.or(h),
    }
}

/// When the next runtime-hour service is due; `None` without an interval or a meter.
pub fn forecast_service(
    device: &DeviceHistory,
    interval_hours: f64,
    usage: Option<&UsageProfile>,
    as_of: DateTime<Utc>,
    z: f64,
) -> Option<ServiceDue> {
    if interval_hours <= 0.0 {
        return None;
    }
    let now = runtime_now(device, as_of)?;
    let last_service = device
        .replacements
        .iter()
        .filter(|r| r.part == "service" && r.at < as_of)
        .max_by_key(|r| r.at);
    let (due_meter, basis) = match last_service {
        Some(r) => {
            let at = r
                .runtime_hours
                .or_else(|| meter_at(device, r.at))
                .unwrap_or(now);
            (at + interval_hours, "service_replacement")
        }
        None => {
            let next = ((now / interval_hours).floor() + 1.0) * interval_hours;
            (next, "meter_multiple")
        }
    };
    let hours_left = (due_meter - now).max(0.0);
    let dates = usage.and_then(|u| {
        if hours_left <= 0.0 {
            Some(DueDates {
                due: as_of,
                low: as_of,
                high: Some(as_of),
            })
        } else {
            u.when_run(as_of, hours_left, hours_left, hours_left, z)
        }
    });
    Some(ServiceDue {
        interval_hours,
        runtime_now: now,
        due_meter,
        basis,
        last_service_at: last_service.map(|r| r.at),
        hours_left,
        dates,
    })
}
