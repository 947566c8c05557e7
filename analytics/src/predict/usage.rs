//! Usage rate: runtime hours per calendar day, from the daily `last` of the runtime meter,
//! with a weekday pattern and a seasonal factor from the same time last year, and the
//! forecast of the calendar date by which a number of runtime hours will have run.
//!
//! - Daily use `uₖ` = meter `last` of day k − meter `last` of day k−1 (consecutive days
//!   only; a meter that goes back gives no value).
//! - **Recent rate** `r` = mean of `uₖ` over the last [`RECENT_DAYS`] days with a value;
//!   its standard error from the day-to-day spread.
//! - **Weekday factor** `w(d)` = mean use on weekday d / mean use, over the last
//!   [`WEEKDAY_DAYS`] days (1 where a weekday has fewer than 2 values).
//! - **Seasonal factor** for a future day t: mean use in the ±14 days around t − 364 days
//!   divided by the mean use in the ±14 days around `as_of` − 364 days (364 keeps the
//!   weekday), when both windows have at least 10 days of data; clamped to 0.5..2.
//! - Expected use of a future day t: `r · w(weekday t) · s(t)`; the cumulative use after
//!   n days has standard deviation `√(n σ² + (n · se)²)` (σ: spread of daily use around
//!   its weekday mean, se: standard error of `r`).

use chrono::{DateTime, Datelike, Duration, Utc};
use fleetpulse_domain::prediction::FieldDay;

/// Days of history behind the recent rate.
pub const RECENT_DAYS: i64 = 28;
/// Days of history behind the weekday pattern.
pub const WEEKDAY_DAYS: i64 = 56;
/// Longest forecast, in days: beyond it a date is not predicted.
pub const MAX_FORECAST_DAYS: i64 = 3 * 366;

/// The days of a series that started before `as_of` (the data known at `as_of`).
pub fn known_days(days: &[FieldDay], as_of: DateTime<Utc>) -> &[FieldDay] {
    &days[..days.partition_point(|d| d.day < as_of)]
}

/// A device's usage as known at `as_of`.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageProfile {
    pub as_of: DateTime<Utc>,
    /// Runtime hours per calendar day (recent mean).
    pub rate_per_day: f64,
    /// Standard error of `rate_per_day`.
    pub rate_se: f64,
    /// Day-to-day standard deviation of use around the weekday pattern.
    pub daily_sd: f64,
    /// Factor per weekday, Monday first.
    pub weekday: [f64; 7],
    /// Days with a use value behind the rate.
    pub days: usize,
    /// Daily use by day number (days since the epoch), for the seasonal factor.
    history: Vec<(i64, f64)>,
}

fn day_number(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(86_400)
}

impl UsageProfile {
    /// The profile from the runtime meter's daily series; `None` with fewer than 3 days
    /// of use.
    pub fn from_meter(meter: &[FieldDay], as_of: DateTime<Utc>) -> Option<Self> {
        let days = known_days(meter, as_of);
        let mut history: Vec<(i64, f64)> = Vec::new();
        for pair in days.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if day_number(b.day) - day_number(a.day) == 1 && b.last >= a.last {
                history.push((day_number(b.day), b.last - a.last));
            }
        }
        let now = day_number(as_of);
        let recent: Vec<(i64, f64)> = history
            .iter()
            .copied()
            .filter(|&(d, _)| d >= now - RECENT_DAYS)
            .collect();
        if recent.len() < 3 {
            return None;
        }
        let rate = recent.iter().map(|x| x.1).sum::<f64>() / recent.len() as f64;
        let weekday_window: Vec<(i64, f64)> = history
            .iter()
            .copied()
            .filter(|&(d, _)| d >= now - WEEKDAY_DAYS)
            .collect();
        let overall =
            weekday_window.iter().map(|x| x.1).sum::<f64>() / weekday_window.len().max(1) as f64;
        let mut weekday = [1.0; 7];
        if overall > 0.0 {
            for (wd, factor) in weekday.iter_mut().enumerate() {
                let v: Vec<f64> = weekday_window
                    .iter()
                    .filter(|&&(d, _)| weekday_of(d) == wd)
                    .map(|x| x.1)
                    .collect();
                if v.len() >= 2 {
                    *factor = (v.iter().sum::<f64>() / v.len() as f64 / overall).clamp(0.1, 5.0);
                }
            }
        }
        // spread around the weekday pattern
        let resid: Vec<f64> = recent
            .iter()
            .map(|&(d, u)| u - rate * weekday[weekday_of(d)])
            .collect();
        let n = resid.len() as f64;
        let mean_r = resid.iter().sum::<f64>() / n;
        let var = resid.iter().map(|r| (r - mean_r).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let daily_sd = var.sqrt();
        Some(UsageProfile {
            as_of,
            rate_per_day: rate,
            rate_se: daily_sd / n.sqrt(),
            daily_sd,
            weekday,
            days: recent.len(),
            history,
        })
    }

    fn mean_around(&self, centre: i64) -> Option<f64> {
        let lo = self.history.partition_point(|&(d, _)| d < centre - 14);
        let hi = self.history.partition_point(|&(d, _)| d <= centre + 14);
        let w = &self.history[lo..hi];
        (w.len() >= 10).then(|| w.iter().map(|x| x.1).sum::<f64>() / w.len() as f64)
    }

    /// The seasonal factor of day number `day` (1 without a year of history).
    pub fn seasonal(&self, day: i64) -> f64 {
        let now = day_number(self.as_of);
        match (self.mean_around(day - 364), self.mean_around(now - 364)) {
            (Some(then), Some(base)) if base > 0.0 => (then / base).clamp(0.5, 2.0),
            _ => 1.0,
        }
    }

    /// Expected runtime hours of day number `day`.
    pub fn expected_on(&self, day: i64) -> f64 {
        self.rate_per_day * self.weekday[weekday_of(day)] * self.seasonal(day)
    }

    /// When `hours` more runtime hours will have run, counted from `from` (≥ `as_of`
    /// usually): the expected date and an interval at normal quantile `z` (the early end
    /// when use runs high and `hours_low` are needed, the late end when it runs low and
    /// `hours_high` are needed). `None` when the rate is zero or the date is beyond
    /// [`MAX_FORECAST_DAYS`].
    pub fn when_run(
        &self,
        from: DateTime<Utc>,
        hours: f64,
        hours_low: f64,
        hours_high: f64,
        z: f64,
    ) -> Option<DueDates> {
        if self.rate_per_day <= 1e-9 {
            return None;
        }
        let hours = hours.max(0.0);
        let hours_low = hours_low.clamp(0.0, hours);
        let hours_high = hours_high.max(hours);
        let start_day = day_number(from);
        // the rest of the current day counts as a fraction of it
        let frac0 = 1.0 - (from - day_start(start_day)).num_seconds() as f64 / 86_400.0;
        let (mut mean, mut prev_mean) = (0.0, 0.0);
        let (mut upper_prev, mut lower_prev) = (0.0, 0.0);
        let (mut due, mut low, mut high) = (None, None, None);
        let mut elapsed_days = 0.0;
        for k in 0..MAX_FORECAST_DAYS {
            let span = if k == 0 { frac0 } else { 1.0 };
            let day = start_day + k;
            mean += self.expected_on(day) * span;
            elapsed_days += span;
            let sd = (elapsed_days * self.daily_sd.powi(2) + (elapsed_days * self.rate_se).powi(2))
                .sqrt();
            let upper = mean + z * sd;
            let lower = (mean - z * sd).max(0.0);
            let at = |prev: f64, now: f64, target: f64| {
                let f = if now > prev {
                    ((target - prev) / (now - prev)).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                let base = elapsed_days - span;
                from + Duration::seconds(((base + f * span) * 86_400.0) as i64)
            };
            if due.is_none() && mean >= hours {
                due = Some(at(prev_mean, mean, hours));
            }
            if low.is_none() && upper >= hours_low {
                low = Some(at(upper_prev, upper, hours_low));
            }
            if high.is_none() && lower >= hours_high {
                high = Some(at(lower_prev, lower, hours_high));
            }
            if due.is_some() && low.is_some() && high.is_some() {
                break;
            }
            prev_mean = mean;
            upper_prev = upper;
            lower_prev = lower;
        }
        let due = due?;
        Some(DueDates {
            due,
            low: low.unwrap_or(from).min(due),
            high: high.map(|h| h.max(due)),
        })
    }
}

/// A forecast date with its interval (`high` is `None` when beyond the forecast range).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DueDates {
    pub due: DateTime<Utc>,
    pub low: DateTime<Utc>,
    pub high: Option<DateTime<Utc>>,
}

fn day_start(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(day * 86_400, 0).unwrap_or_default()
}

fn weekday_of(day: i64) -> usize {
    day_start(day).weekday().num_days_from_monday() as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;

    use super::*;

    pub(crate) fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .expect("valid date")
    }

    /// A meter series: `use_of(day index)` hours each day from `start`.
    pub(crate) fn meter(
        start: DateTime<Utc>,
        days: usize,
        use_of: impl Fn(usize) -> f64,
    ) -> Vec<FieldDay> {
        let mut m = 1000.0;
        (0..days)
            .map(|i| {
                m += use_of(i);
                FieldDay {
                    day: start + Duration::days(i as i64),
                    count: 24,
                    mean: m,
                    min: m,
                    max: m,
                    last: m,
                }
            })
            .collect()
    }

    #[test]
    fn a_steady_user_gets_its_rate_and_a_date_by_simple_division() {
        let series = meter(t(2026, 1, 1), 60, |_| 10.0);
        let as_of = t(2026, 3, 2); // the day after the last one
        let u = UsageProfile::from_meter(&series, as_of).expect("profile");
        assert!((u.rate_per_day - 10.0).abs() < 1e-9);
        assert!(u.daily_sd < 1e-9);
        assert!(u.weekday.iter().all(|w| (w - 1.0).abs() < 1e-9));
        // 55 h at 10 h/day: 5.5 days
        let d = u.when_run(as_of, 55.0, 55.0, 55.0, 1.28).expect("date");
        assert_eq!(d.due, as_of + Duration::hours(132));
        assert_eq!(d.low, d.due);
        assert_eq!(d.high, Some(d.due));
    }

    #[test]
    fn the_weekday_pattern_is_learned_and_future_days_follow_it() {
        // 2026-01-05 is a Monday; weekends run 20 h, weekdays 8 h
        let start = t(2026, 1, 5);
        let series = meter(start, 70, |i| if i % 7 >= 5 { 20.0 } else { 8.0 });
        let as_of = start + Duration::days(70); // a Monday
        let u = UsageProfile::from_meter(&series, as_of).expect("profile");
        let mean = (5.0 * 8.0 + 2.0 * 20.0) / 7.0;
        assert!((u.rate_per_day - mean).abs() < 0.5, "{}", u.rate_per_day);
        assert!((u.weekday[5] * u.rate_per_day - 20.0).abs() < 1.0);
        assert!((u.weekday[0] * u.rate_per_day - 8.0).abs() < 1.0);
        // 40 h from Monday 00:00: Mon..Fri use 5 × 8 = 40 h → end of Friday
        let d = u.when_run(as_of, 40.0, 40.0, 40.0, 0.0).expect("date");
        let days = (d.due - as_of).num_hours() as f64 / 24.0;
        assert!((days - 5.0).abs() < 0.3, "{days}");
    }

    #[test]
    fn the_interval_widens_with_noisy_use() {
        let series = meter(t(2026, 1, 1), 60, |i| if i % 2 == 0 { 6.0 } else { 14.0 });
        let as_of = t(2026, 3, 2);
        let u = UsageProfile::from_meter(&series, as_of).expect("profile");
        let d = u.when_run(as_of, 200.0, 200.0, 200.0, 1.28).expect("date");
        let high = d.high.expect("high");
        assert!(d.low < d.due && d.due < high);
        assert!(UsageProfile::from_meter(&series[..2], as_of).is_none());
    }

    #[test]
    fn last_years_season_scales_the_forecast() {
        // one year at 8 h/day, then a summer at 16 h/day, then 8 again
        let start = t(2025, 1, 1);
        let series = meter(
            start,
            500,
            |i| if (150..240).contains(&i) { 16.0 } else { 8.0 },
        );
        // as_of a year after day 120: the coming days were twice as busy last year
        let as_of = start + Duration::days(120 + 364);
        let u = UsageProfile::from_meter(&series, as_of).expect("profile");
        let now = day_number(as_of);
        assert!((u.seasonal(now) - 1.0).abs() < 1e-9);
        assert!((u.seasonal(now + 60) - 2.0).abs() < 1e-9);
    }
}
