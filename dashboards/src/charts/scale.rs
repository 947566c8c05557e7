//! Scales and ticks shared by the charts: a linear scale with "nice" 1-2-5 ticks, decade
//! ticks for logarithmic axes, a time scale for UTC ranges, and tick-label formatting
//! that never prints floating-point noise such as `0.30000000000000004`.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeDelta, Timelike, Utc};

/// Largest magnitude the charts draw. Values beyond it are clamped so that spans
/// (`hi − lo`) stay finite; no real measurement comes near it.
pub const MAX_MAGNITUDE: f64 = 1e300;

/// Clamps a value to ±[`MAX_MAGNITUDE`]; NaN becomes 0. Used on every value before it
/// reaches a scale, so that no scale sees an infinite span.
pub fn clamp_value(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE)
    }
}

/// A linear map from a data interval (`domain`) to a pixel interval (`range`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearScale {
    /// Data values at the two ends, `(lo, hi)`.
    pub domain: (f64, f64),
    /// Pixel positions of `domain.0` and `domain.1` (may be reversed, as for y axes).
    pub range: (f64, f64),
}

impl LinearScale {
    /// A scale from `domain` to `range`. A degenerate or non-finite domain is widened
    /// (see [`widen_domain`]) so that [`LinearScale::map`] never divides by zero.
    pub fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        Self {
            domain: widen_domain(domain.0, domain.1),
            range,
        }
    }

    /// The pixel position of `v` (not clamped to the range: callers clip).
    pub fn map(&self, v: f64) -> f64 {
        let (d0, d1) = self.domain;
        let t = (clamp_value(v) - d0) / (d1 - d0);
        let p = self.range.0 + t * (self.range.1 - self.range.0);
        if p.is_finite() { p } else { self.range.0 }
    }
}

/// Orders `(lo, hi)`, replaces non-finite ends and widens an empty or numerically
/// negligible span (relative width below 1e-9) around its centre, by 10 % of the
/// magnitude or by 1 when the value is 0. The result always has `lo < hi` and a finite
/// span.
pub fn widen_domain(lo: f64, hi: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (clamp_value(lo), clamp_value(hi));
    if lo > hi {
        std::mem::swap(&mut lo, &mut hi);
    }
    let mag = lo.abs().max(hi.abs());
    if hi - lo <= mag * 1e-9 || hi - lo < f64::MIN_POSITIVE {
        let mid = lo / 2.0 + hi / 2.0;
        let pad = if mid == 0.0 { 1.0 } else { mid.abs() * 0.1 };
        (mid - pad, mid + pad)
    } else {
        (lo, hi)
    }
}

/// A step of the 1-2-5 sequence: `mantissa × 10^exponent` with mantissa 1, 2 or 5.
/// Kept in this form so tick values are computed exactly (`3 / 10`, not `3 × 0.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NiceStep {
    /// 1, 2 or 5.
    pub mantissa: i64,
    /// Power of ten.
    pub exponent: i32,
}

impl NiceStep {
    /// The smallest 1-2-5 step not below `raw` (which must be positive and finite;
    /// anything else gives 1).
    pub fn at_least(raw: f64) -> Self {
        if !(raw.is_finite() && raw > 0.0) {
            return Self {
                mantissa: 1,
                exponent: 0,
            };
        }
        let mut exponent = raw.log10().floor() as i32;
        let norm = raw / 10f64.powi(exponent);
        let mantissa = if norm <= 1.0 + 1e-9 {
            1
        } else if norm <= 2.0 + 1e-9 {
            2
        } else if norm <= 5.0 + 1e-9 {
            5
        } else {
            exponent += 1;
            1
        };
        Self { mantissa, exponent }
    }

    /// The step as a number.
    pub fn value(&self) -> f64 {
        self.times(1)
    }

    /// `k × step`, computed as an integer scaled once by a power of ten so that, e.g.,
    /// `3 × 0.1` is exactly the double nearest 0.3.
    pub fn times(&self, k: i64) -> f64 {
        let n = (k.saturating_mul(self.mantissa)) as f64;
        if self.exponent < 0 {
            n / 10f64.powi(-self.exponent)
        } else {
            n * 10f64.powi(self.exponent)
        }
    }

    /// Decimal places needed to print multiples of this step exactly.
    pub fn decimals(&self) -> usize {
        if self.exponent < 0 {
            (-self.exponent) as usize
        } else {
            0
        }
    }
}

/// Ticks of a linear axis: the values and the step they were built with.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticks {
    /// The tick values, ascending, all multiples of `step`.
    pub values: Vec<f64>,
    /// The 1-2-5 step between ticks.
    pub step: NiceStep,
}

impl Ticks {
    /// The tick values formatted for labels with the step's precision.
    pub fn labels(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|&v| format_tick(v, self.step))
            .collect()
    }

    /// The first and last tick (the axis extent after [`nice_ticks`] extended it).
    pub fn extent(&self) -> (f64, f64) {
        match (self.values.first(), self.values.last()) {
            (Some(&a), Some(&b)) if a < b => (a, b),
            _ => widen_domain(0.0, 0.0),
        }
    }
}

/// "Nice" ticks for the data interval `[lo, hi]`: a 1-2-5 step chosen so that at most
/// `max_ticks` (at least 2) ticks cover the interval, with the first tick at or below
/// `lo` and the last at or above `hi` (the axis is extended to whole steps). Degenerate
/// intervals are widened first ([`widen_domain`]).
pub fn nice_ticks(lo: f64, hi: f64, max_ticks: usize) -> Ticks {
    let (lo, hi) = widen_domain(lo, hi);
    let intervals = max_ticks.max(2) - 1;
    // the first step with few enough ticks after extending to whole steps
    let mut step = NiceStep::at_least((hi - lo) / intervals as f64);
    loop {
        let s = step.value();
        let k0 = (lo / s).floor();
        let k1 = (hi / s).ceil();
        if k1 - k0 <= intervals as f64 || step.exponent > 300 {
            let (k0, k1) = (k0 as i64, k1 as i64);
            let values = (k0..=k1).map(|k| step.times(k)).collect();
            return Ticks { values, step };
        }
        step = NiceStep::at_least(s * 1.000_001);
    }
}

/// Formats a tick value that is a multiple of `step`: as many decimals as the step has,
/// no sign on zero, and scientific notation (`1.5e12`) for magnitudes of 1e12 and above
/// or steps below 1e-6.
pub fn format_tick(value: f64, step: NiceStep) -> String {
    if !value.is_finite() {
        return String::new();
    }
    let mag = value.abs();
    if mag >= 1e12 || step.exponent < -6 {
        if value == 0.0 {
            return "0".to_string();
        }
        // mantissa digits: from the value's order down to the step's order
        let digits = (mag.log10().floor() as i32 - step.exponent).clamp(0, 6) as usize;
        return trim_exponent(format!("{value:.digits$e}"));
    }
    let s = format!("{value:.prec$}", prec = step.decimals());
    strip_negative_zero(s)
}

/// Formats a value with `sig` significant digits for legends and value labels: no
/// exponent between 1e-4 and 1e12 (large values are rounded to integers), trailing
/// zeros after the decimal point removed, no sign on zero, empty for non-finite values.
pub fn format_value(value: f64, sig: usize) -> String {
    if !value.is_finite() {
        return String::new();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let sig = sig.clamp(1, 15);
    let mag = value.abs();
    if !(1e-4..1e12).contains(&mag) {
        let prec = sig - 1;
        return trim_exponent(format!("{value:.prec$e}"));
    }
    let order = mag.log10().floor() as i32;
    let decimals = (sig as i32 - 1 - order).max(0) as usize;
    let mut s = format!("{value:.decimals$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    strip_negative_zero(s)
}

fn strip_negative_zero(s: String) -> String {
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// `1.50e12` → `1.5e12`; `2.00e-7` → `2e-7`.
fn trim_exponent(s: String) -> String {
    match s.split_once('e') {
        Some((m, e)) if m.contains('.') => {
            let m = m.trim_end_matches('0').trim_end_matches('.');
            format!("{m}e{e}")
        }
        _ => s,
    }
}

/// Decade ticks (powers of ten) covering `[lo, hi]` for a log10 axis: from the decade at
/// or below `lo` to the decade at or above `hi`, at least two. Non-positive or
/// non-finite bounds fall back to what is usable (`[1, 10]` when nothing is).
pub fn log10_decades(lo: f64, hi: f64) -> Vec<f64> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    let (lo, hi) = match (ok(lo), ok(hi)) {
        (true, true) => (lo.min(hi), lo.max(hi)),
        (true, false) => (lo, lo),
        (false, true) => (hi, hi),
        (false, false) => (1.0, 10.0),
    };
    let k0 = (lo.log10() + 1e-12).floor().clamp(-300.0, 299.0) as i32;
    let k1 = ((hi.log10() - 1e-12).ceil().clamp(-300.0, 300.0) as i32).max(k0 + 1);
    (k0..=k1).map(|k| 10f64.powi(k)).collect()
}

/// Formats a decade tick `10^k` for labels: plain up to 100 000 (`0.01`, `1000`), then
/// `1e6`, `1e7`, …, and `1e-3` below 0.01.
pub fn format_decade(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return String::new();
    }
    let k = v.log10().round() as i32;
    if (-2..=5).contains(&k) {
        format_value(10f64.powi(k), 1)
    } else {
        format!("1e{k}")
    }
}

/// The unit of a time tick step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Minutes.
    Minute,
    /// Hours.
    Hour,
    /// Days.
    Day,
    /// Weeks, starting on Monday.
    Week,
    /// Calendar months.
    Month,
    /// Calendar years.
    Year,
}

/// A step between time ticks: `count` of `unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeStep {
    /// The calendar unit.
    pub unit: TimeUnit,
    /// How many units between ticks.
    pub count: u32,
}

impl TimeStep {
    /// Approximate length in seconds, used to pick a step for a range.
    fn approx_seconds(&self) -> f64 {
        let unit = match self.unit {
            TimeUnit::Minute => 60.0,
            TimeUnit::Hour => 3600.0,
            TimeUnit::Day => 86_400.0,
            TimeUnit::Week => 7.0 * 86_400.0,
            TimeUnit::Month => 30.44 * 86_400.0,
            TimeUnit::Year => 365.25 * 86_400.0,
        };
        unit * f64::from(self.count)
    }
}

/// The candidate steps, shortest first; years beyond the list use 1-2-5 multiples.
const TIME_STEPS: &[(TimeUnit, u32)] = &[
    (TimeUnit::Minute, 1),
    (TimeUnit::Minute, 5),
    (TimeUnit::Minute, 15),
    (TimeUnit::Minute, 30),
    (TimeUnit::Hour, 1),
    (TimeUnit::Hour, 2),
    (TimeUnit::Hour, 3),
    (TimeUnit::Hour, 6),
    (TimeUnit::Hour, 12),
    (TimeUnit::Day, 1),
    (TimeUnit::Day, 2),
    (TimeUnit::Week, 1),
    (TimeUnit::Week, 2),
    (TimeUnit::Month, 1),
    (TimeUnit::Month, 2),
    (TimeUnit::Month, 3),
    (TimeUnit::Month, 6),
    (TimeUnit::Year, 1),
];

/// A tick on a time axis: its instant and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeTick {
    /// The instant of the tick, on a calendar boundary of the step (UTC).
    pub at: DateTime<Utc>,
    /// Its label: `HH:MM` for minute and hour steps (the date, `DD Mon`, at midnight),
    /// `DD Mon` for day and week steps, `Mon YYYY` for month steps, `YYYY` for years.
    pub label: String,
}

/// Picks the shortest step from minutes to years that gives at most `max_ticks` ticks
/// over `[from, to]` (at least 2 ticks allowed).
pub fn time_step(from: DateTime<Utc>, to: DateTime<Utc>, max_ticks: usize) -> TimeStep {
    let span = (to - from).num_milliseconds().unsigned_abs() as f64 / 1000.0;
    let max = max_ticks.max(2) as f64;
    for &(unit, count) in TIME_STEPS {
        let step = TimeStep { unit, count };
        if span / step.approx_seconds() < max {
            return step;
        }
    }
    let years = span / (365.25 * 86_400.0) / (max - 1.0);
    let nice = NiceStep::at_least(years).value().clamp(1.0, 1e5);
    TimeStep {
        unit: TimeUnit::Year,
        count: nice as u32,
    }
}

/// Ticks for the UTC range `[from, to]`: a step from [`time_step`], ticks on calendar
/// boundaries of that step (midnight, Mondays, first of the month, 1 January) within the
/// range. Empty when `from >= to`.
pub fn time_ticks(from: DateTime<Utc>, to: DateTime<Utc>, max_ticks: usize) -> Vec<TimeTick> {
    if from >= to {
        return Vec::new();
    }
    let step = time_step(from, to, max_ticks);
    let mut out = Vec::new();
    let mut t = align_time(from, step);
    // a safety bound: the step was chosen for at most max_ticks (+ alignment slack)
    let limit = max_ticks.max(2) * 2 + 4;
    while t <= to && out.len() < limit {
        if t >= from {
            out.push(TimeTick {
                at: t,
                label: time_label(t, step),
            });
        }
        match advance_time(t, step) {
            Some(next) if next > t => t = next,
            _ => break,
        }
    }
    out
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0)
        .map(|n| n.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest step boundary at or before `t`.
fn align_time(t: DateTime<Utc>, step: TimeStep) -> DateTime<Utc> {
    let n = step.count.max(1);
    let date = t.date_naive();
    match step.unit {
        TimeUnit::Minute => {
            let m = t.minute() - t.minute() % n;
            date.and_hms_opt(t.hour(), m, 0)
                .map(|x| x.and_utc())
                .unwrap_or(t)
        }
        TimeUnit::Hour => {
            let h = t.hour() - t.hour() % n;
            date.and_hms_opt(h, 0, 0).map(|x| x.and_utc()).unwrap_or(t)
        }
        TimeUnit::Day => {
            let days = i64::from(date.num_days_from_ce());
            let back = days.rem_euclid(i64::from(n));
            midnight(date) - TimeDelta::days(back)
        }
        TimeUnit::Week => {
            let back = i64::from(date.weekday().num_days_from_monday());
            midnight(date) - TimeDelta::days(back)
        }
        TimeUnit::Month => {
            let m0 = date.month0() - date.month0() % n;
            NaiveDate::from_ymd_opt(date.year(), m0 + 1, 1)
                .map(midnight)
                .unwrap_or(t)
        }
        TimeUnit::Year => {
            let y = date.year() - date.year().rem_euclid(n as i32);
            NaiveDate::from_ymd_opt(y, 1, 1).map(midnight).unwrap_or(t)
        }
    }
}

fn advance_time(t: DateTime<Utc>, step: TimeStep) -> Option<DateTime<Utc>> {
    let n = step.count.max(1);
    match step.unit {
        TimeUnit::Minute => t.checked_add_signed(TimeDelta::minutes(i64::from(n))),
        TimeUnit::Hour => t.checked_add_signed(TimeDelta::hours(i64::from(n))),
        TimeUnit::Day => t.checked_add_signed(TimeDelta::days(i64::from(n))),
        TimeUnit::Week => t.checked_add_signed(TimeDelta::weeks(i64::from(n))),
        TimeUnit::Month => t.checked_add_months(Months::new(n)),
        TimeUnit::Year => t.checked_add_months(Months::new(n.saturating_mul(12))),
    }
}

fn time_label(t: DateTime<Utc>, step: TimeStep) -> String {
    match step.unit {
        TimeUnit::Minute | TimeUnit::Hour => {
            if t.hour() == 0 && t.minute() == 0 {
                t.format("%d %b").to_string()
            } else {
                t.format("%H:%M").to_string()
            }
        }
        TimeUnit::Day | TimeUnit::Week => t.format("%d %b").to_string(),
        TimeUnit::Month => t.format("%b %Y").to_string(),
        TimeUnit::Year => t.format("%Y").to_string(),
    }
}

/// A linear map from a UTC range to a pixel interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeScale {
    /// Start of the range.
    pub from: DateTime<Utc>,
    /// End of the range (after `from`; a degenerate range maps everything to the start).
    pub to: DateTime<Utc>,
    /// Pixel positions of `from` and `to`.
    pub range: (f64, f64),
}

impl TimeScale {
    /// The pixel position of `t` (not clamped: callers clip).
    pub fn map(&self, t: DateTime<Utc>) -> f64 {
        let span = (self.to - self.from).num_milliseconds() as f64;
        if span <= 0.0 {
            return self.range.0;
        }
        let dt = (t - self.from).num_milliseconds() as f64;
        self.range.0 + dt / span * (self.range.1 - self.range.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn nice_ticks_use_one_two_five_steps_and_cover_the_data() {
        let t = nice_ticks(0.0, 1.0, 6);
        assert_eq!(t.values, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(t.labels(), vec!["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = nice_ticks(3.2, 97.5, 6);
        assert_eq!(t.values, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let t = nice_ticks(-7.0, 12.0, 8);
        assert_eq!(t.step.value(), 5.0);
        assert_eq!(t.values, vec![-10.0, -5.0, 0.0, 5.0, 10.0, 15.0]);
        for (lo, hi) in [
            (0.001, 0.0047),
            (12345.0, 98765.0),
            (-3e7, -1e7),
            (0.1, 0.35),
        ] {
            let t = nice_ticks(lo, hi, 6);
            assert!(
                t.values.len() <= 6 && t.values.len() >= 2,
                "{lo}..{hi}: {t:?}"
            );
            assert!(
                t.extent().0 <= lo && t.extent().1 >= hi,
                "{lo}..{hi}: {t:?}"
            );
            assert!([1, 2, 5].contains(&t.step.mantissa));
        }
    }

    #[test]
    fn tick_labels_have_no_floating_point_noise() {
        let t = nice_ticks(0.0, 0.5, 6);
        assert_eq!(t.labels(), vec!["0.0", "0.1", "0.2", "0.3", "0.4", "0.5"]);
        // 3 × 0.1 is computed as 3 / 10
        assert_eq!(t.values[3], 0.3);
        let t = nice_ticks(-0.05, 0.05, 3);
        assert_eq!(t.labels(), vec!["-0.05", "0.00", "0.05"]);
        let step = NiceStep::at_least(1e12);
        assert_eq!(format_tick(3e12, step), "3e12");
        let step = NiceStep::at_least(5e11);
        assert_eq!(format_tick(1.5e12, step), "1.5e12");
        assert_eq!(format_tick(-0.0, NiceStep::at_least(0.1)), "0.0");
        assert_eq!(format_tick(f64::NAN, NiceStep::at_least(1.0)), "");
    }

    #[test]
    fn format_value_rounds_to_significant_digits() {
        assert_eq!(format_value(1.8347, 3), "1.83");
        assert_eq!(format_value(592.4, 3), "592");
        assert_eq!(format_value(12_345.6, 3), "12346");
        assert_eq!(format_value(0.1 + 0.2, 3), "0.3");
        assert_eq!(format_value(2.0, 3), "2");
        assert_eq!(format_value(-0.00001, 2), "-1e-5");
        assert_eq!(format_value(f64::INFINITY, 3), "");
        assert_eq!(format_value(3e15, 3), "3e15");
    }

    #[test]
    fn degenerate_and_huge_domains_are_widened_to_finite_spans() {
        assert_eq!(widen_domain(5.0, 5.0), (4.5, 5.5));
        assert_eq!(widen_domain(0.0, 0.0), (-1.0, 1.0));
        assert_eq!(widen_domain(3.0, 1.0), (1.0, 3.0));
        let (lo, hi) = widen_domain(-f64::MAX, f64::MAX);
        assert!((hi - lo).is_finite());
        let t = nice_ticks(-f64::MAX, f64::INFINITY, 6);
        assert!(t.values.iter().all(|v| v.is_finite()));
        assert!(
            t.labels()
                .iter()
                .all(|l| !l.contains("inf") && !l.contains("NaN"))
        );
        let t = nice_ticks(1e15, 1e15 + 1.0, 6);
        assert!(t.values.len() >= 2 && t.values.len() <= 6, "{t:?}");
        let s = LinearScale::new((2.0, 2.0), (0.0, 100.0));
        assert!((s.map(2.0) - 50.0).abs() < 1e-9);
        assert!(s.map(f64::NAN).is_finite());
    }

    #[test]
    fn decades_cover_the_range() {
        assert_eq!(log10_decades(5100.0, 40000.0), vec![1e3, 1e4, 1e5]);
        assert_eq!(log10_decades(1000.0, 1000.0), vec![1e3, 1e4]);
        assert_eq!(log10_decades(100.0, 1000.0), vec![1e2, 1e3]);
        assert_eq!(log10_decades(-1.0, f64::NAN), vec![1.0, 10.0]);
        assert_eq!(format_decade(1e3), "1000");
        assert_eq!(format_decade(0.01), "0.01");
        assert_eq!(format_decade(1e6), "1e6");
    }

    #[test]
    fn time_ticks_fall_on_calendar_boundaries() {
        // 1 day: 3-hour ticks with the date at midnight
        let t = time_ticks(utc(2024, 3, 4, 0, 0), utc(2024, 3, 5, 0, 0), 10);
        let labels: Vec<_> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "04 Mar", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00", "05 Mar"
            ]
        );
        // 30 days: weekly ticks on Mondays
        let t = time_ticks(utc(2024, 3, 1, 12, 0), utc(2024, 3, 31, 0, 0), 8);
        assert!(t.iter().all(|t| t.at.weekday() == chrono::Weekday::Mon));
        assert_eq!(t[0].label, "04 Mar");
        // a year: month ticks
        let t = time_ticks(utc(2024, 1, 15, 0, 0), utc(2025, 1, 15, 0, 0), 8);
        assert_eq!(t[0].label, "Mar 2024");
        assert!(t.iter().all(|t| t.at.day() == 1 && t.at.month0() % 2 == 0));
        // 20 minutes: 5-minute ticks
        let t = time_ticks(utc(2024, 1, 1, 10, 2), utc(2024, 1, 1, 10, 22), 6);
        let labels: Vec<_> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["10:05", "10:10", "10:15", "10:20"]);
        // decades of years
        let t = time_ticks(utc(1900, 1, 1, 0, 0), utc(2100, 1, 1, 0, 0), 6);
        assert!(t.len() >= 2 && t.len() <= 6, "{t:?}");
        assert!(time_ticks(utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 0, 0), 6).is_empty());
    }

    #[test]
    fn time_scale_maps_linearly() {
        let s = TimeScale {
            from: utc(2024, 1, 1, 0, 0),
            to: utc(2024, 1, 2, 0, 0),
            range: (100.0, 340.0),
        };
        assert_eq!(s.map(utc(2024, 1, 1, 12, 0)), 220.0);
        assert_eq!(s.map(utc(2024, 1, 1, 0, 0)), 100.0);
    }
}
