//! Operating hours per (month, serial), consolidated from the hourly rollups of the
//! runtime-hour meter (`exposure_months`, migration 0007).
//!
//! The ingest commit only marks a (month, serial) dirty when a `runtime_hours` rollup of
//! that month changed ([`mark_dirty`]: `INSERT OR IGNORE` on a key that starts with the
//! month, so the current month's markers are contiguous and a repeat costs one lookup).
//! [`fold_dirty`] refolds the marked pairs off the ingest path: the consolidation loop of
//! `serve` runs it every 15 minutes and every reliability read runs it first, so a
//! backlog that lands in past hours is folded again before anyone reads the month.
//!
//! How a month is folded ([`fold_samples`]): the hourly `last` values of `runtime_hours`
//! in order, between the meter's last value before the month (the baseline) and its
//! first value after the month. Each step adds the meter's increment; a step that crosses
//! a month boundary is split between the months pro rata by time, so a month counts only
//! the hours of its own calendar span, and a month the meter was silent through gets its
//! share of the step across it (a row with `samples` 0). A decrease is a meter reset: the
//! step adds the new value (the hours since the reset), at most the hours elapsed. An
//! increase larger than the hours elapsed (plus one, for where the last values fall in
//! their hours) is a meter jump, capped at that. A month never counts more than its
//! calendar hours. A step longer than [`GAP_THRESHOLD_HOURS`] is a gap: the meter's
//! increment over it still counts (the meter runs while the device is silent), each month
//! counts the gap hours that fall in it, and the gap is reported with its length in the
//! month where the meter speaks again. The first value a device ever reports adds
//! nothing: the hours before it are its age, not exposure we saw.

use chrono::{Datelike, TimeZone, Utc};
use fleetpulse_domain::reliability::ConsolidationReport;
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::convert::{from_ms, sql_err};

/// The telemetry field of the runtime-hour meter.
pub(crate) const RUNTIME_FIELD: &str = "runtime_hours";

/// A silence between two meter values longer than this is reported as a gap.
pub const GAP_THRESHOLD_HOURS: f64 = 24.0;

/// Pairs refolded per transaction: the write connection is shared with ingest, so a long
/// pass yields between chunks.
const CHUNK: usize = 64;

const HOUR_MS: f64 = 3_600_000.0;

/// First instant (ms) of the UTC month containing `ms`.
pub(crate) fn month_of(ms: i64) -> i64 {
    let t = from_ms(ms);
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .map_or(ms, |d| d.timestamp_millis())
}

/// First instant (ms) of the month after the one starting at `month`.
pub(crate) fn next_month(month: i64) -> i64 {
    let t = from_ms(month);
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map_or(month + 31 * 24 * 3_600_000, |d| d.timestamp_millis())
}

/// Commit hook: marks the months of the `runtime_hours` rollups a commit wrote for
/// `serial` as needing a refold. O(1) per rollup key, one `INSERT OR IGNORE` per month.
pub(crate) fn mark_dirty<'k, 'f: 'k, I>(
    tx: &Transaction<'_>,
    serial: &Serial,
    keys: I,
) -> Result<(), StoreError>
where
    I: IntoIterator<Item = &'k (i64, &'f str)>,
{
    let mut months: Vec<i64> = Vec::new();
    for (hour, field) in keys {
        if *field == RUNTIME_FIELD {
            let m = month_of(*hour);
            if !months.contains(&m) {
                months.push(m);
            }
        }
    }
    if months.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached("INSERT OR IGNORE INTO exposure_dirty (month, serial) VALUES (?1, ?2)")
        .map_err(sql_err)?;
    for m in months {
        stmt.execute(params![m, serial.as_str()]).map_err(sql_err)?;
    }
    Ok(())
}

/// One finding of a fold.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Finding {
    pub at: i64,
    pub kind: &'static str,
    pub detail: String,
}

/// The fold of one month.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Fold {
    pub hours: f64,
    pub resets: u32,
    pub gaps: u32,
    pub gap_hours: f64,
    pub findings: Vec<Finding>,
}

fn rfc(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The share of the step from hour `ph` to hour `h` that falls in `[month, end)`: steps
/// are split pro rata by time at month boundaries.
fn share_in_month(ph: i64, h: i64, month: i64, end: i64) -> f64 {
    if h <= ph {
        return if h >= month && h < end { 1.0 } else { 0.0 };
    }
    let overlap = (h.min(end) - ph.max(month)).max(0);
    overlap as f64 / (h - ph) as f64
}

/// Folds the month `[month, end)` of a meter: its hourly values (`(hour start ms, last
/// value)`, in hour order) between the baseline (the last value before the month) and
/// `next` (the first value from `end` on). Every step counts the share of its increment
/// that falls in the month by time, so a step across a month boundary is split between
/// the two months and a month with no value of its own gets its share of the step across
/// it. Findings (resets, jumps, gaps) belong to the month in which their step ends. The
/// month never counts more than its calendar hours. Pure: see the module doc.
pub(crate) fn fold_samples(
    baseline: Option<(i64, f64)>,
    samples: &[(i64, f64)],
    next: Option<(i64, f64)>,
    month: i64,
    end: i64,
) -> Fold {
    let mut fold = Fold::default();
    let mut prev = baseline;
    for (hour, value) in samples.iter().copied().chain(next) {
        let Some((ph, pv)) = prev else {
            prev = Some((hour, value));
            continue;
        };
        prev = Some((hour, value));
        let ends_here = hour >= month && hour < end;
        let elapsed = (hour - ph) as f64 / HOUR_MS;
        let allowed = elapsed + 1.0;
        let step = if value < pv {
            let step = value.clamp(0.0, allowed);
            if ends_here {
                fold.resets += 1;
                fold.findings.push(Finding {
                    at: hour,
                    kind: "meter_reset",
                    detail: format!(
                        "runtime_hours fell from {pv} to {value} between {} and {}: a meter reset; the step counts {step:.2} h",
                        rfc(ph),
                        rfc(hour)
                    ),
                });
            }
            step
        } else if value - pv > allowed {
            if ends_here {
                fold.findings.push(Finding {
                    at: hour,
                    kind: "meter_jump",
                    detail: format!(
                        "runtime_hours rose from {pv} to {value} in {elapsed:.0} h between {} and {}: more than the clock allows; counted as {allowed:.0} h",
                        rfc(ph),
                        rfc(hour)
                    ),
                });
            }
            allowed
        } else {
            value - pv
        };
        let share = share_in_month(ph, hour, month, end);
        if elapsed > GAP_THRESHOLD_HOURS {
            fold.gap_hours += elapsed * share;
            if ends_here {
                fold.gaps += 1;
                fold.findings.push(Finding {
                    at: ph,
                    kind: "gap",
                    detail: if share < 1.0 {
                        format!(
                            "no runtime_hours for {elapsed:.0} h, from {} to {}; the meter's {step:.2} h over the silence are counted, split between the months by time ({:.2} h in this month)",
                            rfc(ph),
                            rfc(hour),
                            step * share
                        )
                    } else {
                        format!(
                            "no runtime_hours for {elapsed:.0} h, from {} to {}; the meter's {step:.2} h over the silence are counted",
                            rfc(ph),
                            rfc(hour)
                        )
                    },
                });
            }
        }
        fold.hours += step * share;
    }
    cap_at_calendar_hours(&mut fold, month, end);
    fold
}

/// A month counts at most its calendar hours. Sums of capped steps can exceed them by up
/// to the clock's slack (where the last values fall in their hours): that excess is cut
/// silently; a larger one is reported as a `meter_jump` at the month's last second.
fn cap_at_calendar_hours(fold: &mut Fold, month: i64, end: i64) {
    let calendar = (end - month) as f64 / HOUR_MS;
    if fold.hours <= calendar {
        return;
    }
    let excess = fold.hours - calendar;
    if excess > 1.0 {
        fold.findings.push(Finding {
            at: end - 1_000,
            kind: "meter_jump",
            detail: format!(
                "runtime_hours add up to {:.2} h in the month from {}: more than its {calendar:.0} calendar hours; counted as {calendar:.0} h",
                fold.hours,
                rfc(month)
            ),
        });
    }
    fold.hours = calendar;
}

/// Refolds dirty (month, serial) pairs, oldest month first, in transactions of
/// [`CHUNK`] pairs, until none is left or `max_pairs` were folded.
pub(crate) fn fold_dirty(
    conn: &mut Connection,
    max_pairs: usize,
    now_ms: i64,
) -> Result<ConsolidationReport, StoreError> {
    let mut report = ConsolidationReport::default();
    while report.pairs < max_pairs {
        let tx = conn.transaction().map_err(sql_err)?;
        let take = CHUNK.min(max_pairs - report.pairs);
        let pairs: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT month, serial FROM exposure_dirty ORDER BY month, serial LIMIT ?1",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([take as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?;
            rows.collect::<Result<_, _>>().map_err(sql_err)?
        };
        if pairs.is_empty() {
            break;
        }
        for (month, serial) in &pairs {
            report.rollup_rows += fold_pair(&tx, *month, serial, now_ms)?;
            tx.prepare_cached("DELETE FROM exposure_dirty WHERE month = ?1 AND serial = ?2")
                .and_then(|mut s| s.execute(params![month, serial]))
                .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)?;
        report.pairs += pairs.len();
    }
    report.remaining = conn
        .query_row("SELECT COUNT(*) FROM exposure_dirty", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql_err)? as usize;
    Ok(report)
}

/// The meter's last value before `before`.
fn value_before(
    tx: &Transaction<'_>,
    serial: &str,
    before: i64,
) -> Result<Option<(i64, f64)>, StoreError> {
    tx.prepare_cached(
        "SELECT hour, last FROM rollups WHERE serial = ?1 AND hour < ?2 AND field = ?3 \
         ORDER BY hour DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![serial, before, RUNTIME_FIELD], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
    })
    .map_err(sql_err)
}

/// The meter's first value from `from` on.
fn value_from(
    tx: &Transaction<'_>,
    serial: &str,
    from: i64,
) -> Result<Option<(i64, f64)>, StoreError> {
    tx.prepare_cached(
        "SELECT hour, last FROM rollups WHERE serial = ?1 AND hour >= ?2 AND field = ?3 \
         ORDER BY hour LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![serial, from, RUNTIME_FIELD], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
    })
    .map_err(sql_err)
}

type Sample = (i64, f64);

/// Refolds one (month, serial); returns the rollup rows read.
///
/// A month's fold depends on its own values, the last value before it and the first
/// after it. So when the month's first value changed, the months from the one holding
/// the value before up to this one are marked dirty (their step into this month moved);
/// when its last value changed, the months after it up to the one holding the next
/// value. A month with no value of its own between two values gets a row (`samples` 0,
/// first and last = the value before it) when its share of the step across it is not 0.
fn fold_pair(
    tx: &Transaction<'_>,
    month: i64,
    serial: &str,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let end = next_month(month);
    let baseline = value_before(tx, serial, month)?;
    let next = value_from(tx, serial, end)?;
    let samples: Vec<Sample> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT hour, last FROM rollups WHERE serial = ?1 AND hour >= ?2 AND hour < ?3 \
                 AND field = ?4 ORDER BY hour",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![serial, month, end, RUNTIME_FIELD], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(sql_err)?;
        rows.collect::<Result<_, _>>().map_err(sql_err)?
    };
    // the first and last values of the previous fold (none for a month without values)
    let old: Option<(Sample, Sample)> = tx
        .prepare_cached(
            "SELECT first_hour, first_value, last_hour, last_value FROM exposure_months \
             WHERE month = ?1 AND serial = ?2 AND samples > 0",
        )
        .and_then(|mut s| {
            s.query_row(params![month, serial], |r| {
                Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?)))
            })
            .optional()
        })
        .map_err(sql_err)?;
    tx.prepare_cached("DELETE FROM exposure_findings WHERE month = ?1 AND serial = ?2")
        .and_then(|mut s| s.execute(params![month, serial]))
        .map_err(sql_err)?;
    let fold = fold_samples(baseline, &samples, next, month, end);
    let ends = samples.first().copied().zip(samples.last().copied());
    let row_ends = match (ends, baseline) {
        (Some(ends), _) => Some(ends),
        (None, Some(b)) if fold.hours > 0.0 => Some((b, b)),
        _ => None,
    };
    if let Some((first, last)) = row_ends {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO exposure_months (month, serial, hours, resets, gaps, gap_hours, samples, \
             baseline_hour, baseline_value, first_hour, first_value, last_hour, last_value, folded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .and_then(|mut s| {
            s.execute(params![
                month,
                serial,
                fold.hours,
                fold.resets,
                fold.gaps,
                fold.gap_hours,
                samples.len() as i64,
                baseline.map(|b| b.0),
                baseline.map(|b| b.1),
                first.0,
                first.1,
                last.0,
                last.1,
                now_ms
            ])
        })
        .map_err(sql_err)?;
    } else {
        tx.prepare_cached("DELETE FROM exposure_months WHERE month = ?1 AND serial = ?2")
            .and_then(|mut s| s.execute(params![month, serial]))
            .map_err(sql_err)?;
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO exposure_findings (month, serial, at, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql_err)?;
    for f in &fold.findings {
        stmt.execute(params![month, serial, f.at, f.kind, f.detail])
            .map_err(sql_err)?;
    }
    if let Some(b) = baseline {
        let before = month_of(b.0);
        let first = ends.map(|e| e.0);
        if old.map(|o| o.0) != first {
            mark_months(tx, serial, before, month)?;
        } else if first.is_some_and(|f| f.1 != b.1) {
            // the months without values that the step into this month crosses get a row
            // of their own: fold those that have none (after an upgrade, for instance)
            mark_months_without_row(tx, serial, next_month(before), month)?;
        }
    }
    if let Some(n) = next
        && old.map(|o| o.1) != ends.map(|e| e.1)
    {
        mark_months(tx, serial, end, next_month(month_of(n.0)))?;
    }
    Ok(samples.len() + usize::from(baseline.is_some()) + usize::from(next.is_some()))
}

/// Marks the months in `[from, to)` of `serial` dirty.
fn mark_months(tx: &Transaction<'_>, serial: &str, from: i64, to: i64) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("INSERT OR IGNORE INTO exposure_dirty (month, serial) VALUES (?1, ?2)")
        .map_err(sql_err)?;
    let mut m = from;
    while m < to {
        stmt.execute(params![m, serial]).map_err(sql_err)?;
        m = next_month(m);
    }
    Ok(())
}

/// Marks the months in `[from, to)` of `serial` that have no exposure row dirty.
fn mark_months_without_row(
    tx: &Transaction<'_>,
    serial: &str,
    from: i64,
    to: i64,
) -> Result<(), StoreError> {
    let mut m = from;
    while m < to {
        let known: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM exposure_months WHERE month = ?1 AND serial = ?2)",
            )
            .and_then(|mut s| s.query_row(params![m, serial], |r| r.get(0)))
            .map_err(sql_err)?;
        if !known {
            mark_months(tx, serial, m, next_month(m))?;
        }
        m = next_month(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn t(hours: i64) -> i64 {
        1_767_225_600_000 + hours * H // 2026-01-01T00:00:00Z
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(t(0)), t(0));
        assert_eq!(month_of(t(31 * 24 - 1)), t(0));
        assert_eq!(month_of(t(31 * 24)), t(31 * 24));
        assert_eq!(next_month(t(0)), t(31 * 24));
        let dec = Utc
            .with_ymd_and_hms(2025, 12, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(next_month(dec), t(0));
    }

    /// January 2026 (744 h), with no value after it unless given.
    fn jan(baseline: Option<(i64, f64)>, samples: &[(i64, f64)]) -> Fold {
        fold_samples(baseline, samples, None, t(0), t(JAN))
    }

    const JAN: i64 = 31 * 24;
    const FEB: i64 = 28 * 24;

    /// Hourly values of a meter that runs `rate` h per hour, at the hours in `[from, to)`.
    fn meter(rate: f64, from: i64, to: i64) -> Vec<(i64, f64)> {
        (from..to).map(|h| (t(h), rate * h as f64)).collect()
    }

    #[test]
    fn increments_add_up_from_the_baseline_and_the_step_into_the_month_stays_before_it() {
        let fold = jan(
            Some((t(-1), 100.0)),
            &[(t(0), 101.0), (t(1), 101.5), (t(2), 102.5)],
        );
        // Dec 31 23:00 -> Jan 1 00:00 lies in December
        assert!((fold.hours - 1.5).abs() < 1e-9, "{}", fold.hours);
        assert_eq!((fold.resets, fold.gaps), (0, 0));
        assert!(fold.findings.is_empty());
        let dec = fold_samples(
            Some((t(-2), 99.0)),
            &[(t(-1), 100.0)],
            Some((t(0), 101.0)),
            t(-JAN),
            t(0),
        );
        assert!((dec.hours - 2.0).abs() < 1e-9, "{}", dec.hours);
    }

    #[test]
    fn a_device_silent_from_jan_20_to_feb_10_splits_the_silence_by_time() {
        // 24/7: the meter reads the hour count; silent from Jan 20 00:00 to Feb 10 00:00
        let rate = 1.0;
        let jan_values = meter(rate, 0, 19 * 24 + 1);
        let feb_values = meter(rate, 40 * 24, JAN + FEB);
        let march_first = (t(JAN + FEB), rate * (JAN + FEB) as f64);
        let before = Some((t(-1), -rate));
        let jan_fold = fold_samples(
            before,
            &jan_values,
            feb_values.first().copied(),
            t(0),
            t(JAN),
        );
        let feb_fold = fold_samples(
            jan_values.last().copied(),
            &feb_values,
            Some(march_first),
            t(JAN),
            t(JAN + FEB),
        );
        // the old fold credited the whole 504 h silence to February: 959 h > 672 h
        assert!(jan_fold.hours <= JAN as f64 + 1e-9, "{}", jan_fold.hours);
        assert!(feb_fold.hours <= FEB as f64 + 1e-9, "{}", feb_fold.hours);
        let total = march_first.1 - 0.0;
        assert!(
            (jan_fold.hours + feb_fold.hours - total).abs() < 1e-9,
            "{} + {} != {total}",
            jan_fold.hours,
            feb_fold.hours
        );
        assert!((jan_fold.hours - 744.0).abs() < 1e-9);
        assert!((feb_fold.hours - 672.0).abs() < 1e-9);
        // nothing was capped: the totals are the meter's
        assert!(jan_fold.findings.iter().all(|f| f.kind != "meter_jump"));
        assert!(feb_fold.findings.iter().all(|f| f.kind != "meter_jump"));
    }

    #[test]
    fn a_500_hour_gap_across_a_boundary_is_split_and_reported_once() {
        // 0.75 h per hour; silent from Jan 25 12:00 for 500 h (to Feb 14 08:00)
        let rate = 0.75;
        let (stop, speak) = (24 * 24 + 12, 24 * 24 + 12 + 500);
        let jan_values = meter(rate, 0, stop + 1);
        let feb_values = meter(rate, speak, JAN + FEB);
        let march_first = (t(JAN + FEB), rate * (JAN + FEB) as f64);
        let jan_fold = jan(None, &jan_values);
        let jan_fold_next = fold_samples(None, &jan_values, Some(feb_values[0]), t(0), t(JAN));
        let feb_fold = fold_samples(
            jan_values.last().copied(),
            &feb_values,
            Some(march_first),
            t(JAN),
            t(JAN + FEB),
        );
        let step = rate * 500.0;
        let jan_share = (JAN - stop) as f64 / 500.0;
        assert!((jan_fold_next.hours - jan_fold.hours - step * jan_share).abs() < 1e-9);
        assert!((jan_fold_next.hours - rate * JAN as f64).abs() < 1e-9);
        assert!(
            (feb_fold.hours - rate * FEB as f64).abs() < 1e-9,
            "{}",
            feb_fold.hours
        );
        // the gap's hours are split too; it is counted and reported where it ends
        assert!((jan_fold_next.gap_hours - (JAN - stop) as f64).abs() < 1e-9);
        assert!((feb_fold.gap_hours - (speak - JAN) as f64).abs() < 1e-9);
        assert_eq!((jan_fold_next.gaps, feb_fold.gaps), (0, 1));
        assert!(jan_fold_next.findings.is_empty());
        let gap = &feb_fold.findings[0];
        assert_eq!((gap.kind, gap.at), ("gap", t(stop)));
        assert!(gap.detail.contains("500 h"), "{}", gap.detail);
    }

    #[test]
    fn a_month_without_values_gets_its_share_of_the_step_across_it() {
        // last value Dec 21 00:00, next Feb 10 00:00: 1224 h, 0.5 h per hour
        let (from, to) = (-11 * 24, 40 * 24);
        let fold = fold_samples(
            Some((t(from), 0.5 * from as f64)),
            &[],
            Some((t(to), 0.5 * to as f64)),
            t(0),
            t(JAN),
        );
        assert!(
            (fold.hours - 0.5 * JAN as f64).abs() < 1e-9,
            "{}",
            fold.hours
        );
        assert!((fold.gap_hours - JAN as f64).abs() < 1e-9);
        assert_eq!(fold.gaps, 0);
    }

    #[test]
    fn a_month_never_counts_more_than_its_calendar_hours() {
        // every step rises 2 h in 1 h: within the per-step slack, beyond the month's
        let values: Vec<(i64, f64)> = (0..JAN).map(|h| (t(h), 2.0 * h as f64)).collect();
        let fold = jan(None, &values);
        assert!((fold.hours - JAN as f64).abs() < 1e-9, "{}", fold.hours);
        let cap = fold.findings.last().expect("reported");
        assert_eq!((cap.kind, cap.at), ("meter_jump", t(JAN) - 1_000));
        // the slack of where the last values fall is cut silently
        let values = meter(1.0, 0, JAN);
        let fold = fold_samples(
            None,
            &values,
            Some((t(JAN), JAN as f64 + 0.5)),
            t(0),
            t(JAN),
        );
        assert!((fold.hours - JAN as f64).abs() < 1e-9, "{}", fold.hours);
        assert!(fold.findings.is_empty(), "{:?}", fold.findings);
    }

    #[test]
    fn the_first_value_ever_adds_nothing() {
        let fold = jan(None, &[(t(0), 5000.0), (t(1), 5001.0)]);
        assert!((fold.hours - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_decrease_is_a_reset_and_the_hours_after_it_count() {
        let fold = jan(
            None,
            &[(t(0), 900.0), (t(1), 901.0), (t(2), 0.5), (t(3), 1.5)],
        );
        assert_eq!(fold.resets, 1);
        assert!((fold.hours - 2.5).abs() < 1e-9, "{}", fold.hours);
        assert_eq!(fold.findings[0].kind, "meter_reset");
        assert_eq!(fold.findings[0].at, t(2));
    }

    #[test]
    fn a_reset_to_a_high_value_counts_no_more_than_the_clock() {
        let fold = jan(None, &[(t(0), 30_000.0), (t(1), 20_000.0)]);
        assert_eq!(fold.resets, 1);
        assert!((fold.hours - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_long_silence_is_a_gap_whose_meter_hours_still_count() {
        let fold = jan(None, &[(t(0), 10.0), (t(48), 40.0), (t(49), 41.0)]);
        assert_eq!(fold.gaps, 1);
        assert!((fold.gap_hours - 48.0).abs() < 1e-9);
        assert!((fold.hours - 31.0).abs() < 1e-9);
        let gap = fold.findings.iter().find(|f| f.kind == "gap").expect("gap");
        assert_eq!(gap.at, t(0));
        // a silence at the threshold is no gap
        assert_eq!(jan(None, &[(t(0), 1.0), (t(24), 2.0)]).gaps, 0);
    }

    #[test]
    fn a_jump_beyond_the_clock_is_capped_and_reported() {
        let fold = jan(None, &[(t(0), 10.0), (t(1), 500.0)]);
        assert!((fold.hours - 2.0).abs() < 1e-9);
        assert_eq!(fold.findings[0].kind, "meter_jump");
    }
}
