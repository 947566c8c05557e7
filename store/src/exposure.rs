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
//! in order, starting from the meter's last value before the month (the baseline). Each
//! step adds the meter's increment. A decrease is a meter reset: the step adds the new
//! value (the hours since the reset), at most the hours elapsed. An increase larger than
//! the hours elapsed (plus one, for where the last values fall in their hours) is a
//! meter jump, capped at that. A step longer than [`GAP_THRESHOLD_HOURS`] is a gap: the
//! meter's increment over it still counts (the meter runs while the device is silent),
//! and the gap is reported with its length in the month where the meter speaks again.
//! The first value a device ever reports adds nothing: the hours before it are its age,
//! not exposure we saw.

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

/// Folds one month's hourly meter values (`(hour start ms, last value)`, in hour order)
/// from the baseline (the last value before the month). Pure: see the module doc.
pub(crate) fn fold_samples(baseline: Option<(i64, f64)>, samples: &[(i64, f64)]) -> Fold {
    let mut fold = Fold::default();
    let mut prev = baseline;
    for &(hour, value) in samples {
        let Some((ph, pv)) = prev else {
            prev = Some((hour, value));
            continue;
        };
        let elapsed = (hour - ph) as f64 / HOUR_MS;
        let allowed = elapsed + 1.0;
        let step = if value < pv {
            fold.resets += 1;
            let step = value.clamp(0.0, allowed);
            fold.findings.push(Finding {
                at: hour,
                kind: "meter_reset",
                detail: format!(
                    "runtime_hours fell from {pv} to {value} between {} and {}: a meter reset; the step counts {step:.2} h",
                    rfc(ph),
                    rfc(hour)
                ),
            });
            step
        } else if value - pv > allowed {
            fold.findings.push(Finding {
                at: hour,
                kind: "meter_jump",
                detail: format!(
                    "runtime_hours rose from {pv} to {value} in {elapsed:.0} h between {} and {}: more than the clock allows; counted as {allowed:.0} h",
                    rfc(ph),
                    rfc(hour)
                ),
            });
            allowed
        } else {
            value - pv
        };
        if elapsed > GAP_THRESHOLD_HOURS {
            fold.gaps += 1;
            fold.gap_hours += elapsed;
            fold.findings.push(Finding {
                at: ph,
                kind: "gap",
                detail: format!(
                    "no runtime_hours for {elapsed:.0} h, from {} to {}; the meter's {step:.2} h over the silence are counted",
                    rfc(ph),
                    rfc(hour)
                ),
            });
        }
        fold.hours += step;
        prev = Some((hour, value));
    }
    fold
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

/// Refolds one (month, serial); returns the rollup rows read. When the month's last
/// meter value changed, the next month with a value is marked dirty (its baseline moved).
fn fold_pair(
    tx: &Transaction<'_>,
    month: i64,
    serial: &str,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let end = next_month(month);
    let baseline: Option<(i64, f64)> = tx
        .prepare_cached(
            "SELECT hour, last FROM rollups WHERE serial = ?1 AND hour < ?2 AND field = ?3 \
             ORDER BY hour DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![serial, month, RUNTIME_FIELD], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(sql_err)?;
    let samples: Vec<(i64, f64)> = {
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
    let old_last: Option<(i64, f64)> = tx
        .prepare_cached(
            "SELECT last_hour, last_value FROM exposure_months WHERE month = ?1 AND serial = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![month, serial], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql_err)?;
    tx.prepare_cached("DELETE FROM exposure_findings WHERE month = ?1 AND serial = ?2")
        .and_then(|mut s| s.execute(params![month, serial]))
        .map_err(sql_err)?;
    let (Some(&first), Some(&last)) = (samples.first(), samples.last()) else {
        tx.prepare_cached("DELETE FROM exposure_months WHERE month = ?1 AND serial = ?2")
            .and_then(|mut s| s.execute(params![month, serial]))
            .map_err(sql_err)?;
        if old_last.is_some() {
            mark_next(tx, serial, end)?;
        }
        return Ok(0);
    };
    let fold = fold_samples(baseline, &samples);
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
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO exposure_findings (month, serial, at, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql_err)?;
    for f in &fold.findings {
        stmt.execute(params![month, serial, f.at, f.kind, f.detail])
            .map_err(sql_err)?;
    }
    if old_last != Some(last) {
        mark_next(tx, serial, end)?;
    }
    Ok(samples.len() + usize::from(baseline.is_some()))
}

/// Marks the first month from `from` on in which `serial` has a meter value.
fn mark_next(tx: &Transaction<'_>, serial: &str, from: i64) -> Result<(), StoreError> {
    let next: Option<i64> = tx
        .prepare_cached(
            "SELECT hour FROM rollups WHERE serial = ?1 AND hour >= ?2 AND field = ?3 ORDER BY hour LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![serial, from, RUNTIME_FIELD], |r| r.get(0))
                .optional()
        })
        .map_err(sql_err)?;
    if let Some(hour) = next {
        tx.prepare_cached("INSERT OR IGNORE INTO exposure_dirty (month, serial) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![month_of(hour), serial]))
            .map_err(sql_err)?;
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

    #[test]
    fn increments_add_up_from_the_baseline() {
        let fold = fold_samples(
            Some((t(-1), 100.0)),
            &[(t(0), 101.0), (t(1), 101.5), (t(2), 102.5)],
        );
        assert!((fold.hours - 2.5).abs() < 1e-9);
        assert_eq!((fold.resets, fold.gaps), (0, 0));
        assert!(fold.findings.is_empty());
    }

    #[test]
    fn the_first_value_ever_adds_nothing() {
        let fold = fold_samples(None, &[(t(0), 5000.0), (t(1), 5001.0)]);
        assert!((fold.hours - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_decrease_is_a_reset_and_the_hours_after_it_count() {
        let fold = fold_samples(
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
        let fold = fold_samples(None, &[(t(0), 30_000.0), (t(1), 20_000.0)]);
        assert_eq!(fold.resets, 1);
        assert!((fold.hours - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_long_silence_is_a_gap_whose_meter_hours_still_count() {
        let fold = fold_samples(None, &[(t(0), 10.0), (t(48), 40.0), (t(49), 41.0)]);
        assert_eq!(fold.gaps, 1);
        assert!((fold.gap_hours - 48.0).abs() < 1e-9);
        assert!((fold.hours - 31.0).abs() < 1e-9);
        let gap = fold.findings.iter().find(|f| f.kind == "gap").expect("gap");
        assert_eq!(gap.at, t(0));
        // a silence at the threshold is no gap
        assert_eq!(fold_samples(None, &[(t(0), 1.0), (t(24), 2.0)]).gaps, 0);
    }

    #[test]
    fn a_jump_beyond_the_clock_is_capped_and_reported() {
        let fold = fold_samples(None, &[(t(0), 10.0), (t(1), 500.0)]);
        assert!((fold.hours - 2.0).abs() < 1e-9);
        assert_eq!(fold.findings[0].kind, "meter_jump");
    }
}
