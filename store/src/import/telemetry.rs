//! Telemetry backfill rows: `serial, at, <field>…` (wide: one column per telemetry
//! field), for registered devices, of any age.
//!
//! Each row is checked as a live reading is (field names, known ranges, the size of
//! values, the number of fields), except for the age limit. The rows are written as
//! hourly rollups (what the statistics and predictors read), not as raw readings: per
//! (serial, hour) one rollup per field with `last_seq = 0`, and the hour recorded in
//! `backfill_hours` with a digest of its rows. An hour that already holds live telemetry
//! is refused on each of its lines; an hour back-filled before with the same rows is a
//! duplicate, with other rows it is refused on its lines. No rules run and no orders are
//! raised: this is history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fleetpulse_domain::reliability::{ImportReport, ImportRowIssue};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Map, Value};

use super::rollups::{Acc, hour_is_live, merge};
use super::{Row, Rows, common};
use crate::convert::{from_ms, hour_of, ms, sql_err};

/// One checked row.
struct Good {
    line: usize,
    at: i64,
    values: BTreeMap<String, f64>,
}

/// The limits of live telemetry without its age limit (a backfill is old by nature).
fn limits() -> TelemetryLimits {
    TelemetryLimits {
        max_age_days: 200 * 366,
        ..TelemetryLimits::default()
    }
}

/// Checks a row as the live path checks a reading.
fn check(
    row: &Row,
    serial: &Serial,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, f64>, String> {
    let mut obj = Map::new();
    obj.insert("seq".into(), Value::from(row.line as u64));
    obj.insert("ts".into(), Value::String(at.to_rfc3339()));
    for (k, v) in &row.cells {
        if matches!(k.as_str(), "serial" | "at") {
            continue;
        }
        let x = v
            .parse::<f64>()
            .map_err(|_| format!("{k} {v:?} is not a number"))?;
        let n = serde_json::Number::from_f64(x)
            .ok_or_else(|| format!("{k} {v:?} is not a finite number"))?;
        obj.insert(k.clone(), Value::Number(n));
    }
    let payload = Value::Object(obj).to_string();
    let mut parsed = parse_telemetry(serial, payload.as_bytes(), now, &limits());
    match parsed.pop() {
        Some(Ok(r)) if parsed.is_empty() => {
            if r.values.is_empty() {
                Err("no telemetry value on the row".into())
            } else {
                Ok(r.values)
            }
        }
        Some(Err(e)) => Err(e.detail),
        _ => Err("not one reading".into()),
    }
}

/// A digest of an hour's rows (FNV-1a over their canonical text), to tell a re-sent hour
/// from a different one.
fn digest(rows: &[&Good]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut rows: Vec<&&Good> = rows.iter().collect();
    rows.sort_by(|a, b| {
        a.at.cmp(&b.at)
            .then_with(|| format!("{:?}", a.values).cmp(&format!("{:?}", b.values)))
    });
    for g in rows {
        for b in format!("{}|{:?};", g.at, g.values).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Loads the rows; see the module doc.
pub(super) fn import(
    tx: &Transaction<'_>,
    rows: Rows,
    now: DateTime<Utc>,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    let mut hours: BTreeMap<(String, i64), Vec<Good>> = BTreeMap::new();
    let mut serials: BTreeMap<String, Serial> = BTreeMap::new();
    for row in rows {
        let row = match row {
            Ok(r) => r,
            Err(issue) => {
                report.errors.push(issue);
                continue;
            }
        };
        let line = row.line;
        let c = match common(tx, &row, now)? {
            Ok(c) => c,
            Err(reason) => {
                report.errors.push(ImportRowIssue { line, reason });
                continue;
            }
        };
        match check(&row, &c.serial, c.at, now) {
            Ok(values) => {
                let at = ms(c.at);
                serials.insert(c.serial.to_string(), c.serial.clone());
                hours
                    .entry((c.serial.to_string(), hour_of(at)))
                    .or_default()
                    .push(Good { line, at, values });
            }
            Err(reason) => report.errors.push(ImportRowIssue { line, reason }),
        }
    }
    for ((serial_text, hour), goods) in hours {
        let serial = &serials[&serial_text];
        let refuse = |report: &mut ImportReport, reason: String| {
            for g in &goods {
                report.errors.push(ImportRowIssue {
                    line: g.line,
                    reason: reason.clone(),
                });
            }
        };
        let refs: Vec<&Good> = goods.iter().collect();
        let sum = digest(&refs);
        let before: Option<String> = tx
            .prepare_cached("SELECT digest FROM backfill_hours WHERE serial = ?1 AND hour = ?2")
            .and_then(|mut s| {
                s.query_row(params![serial.as_str(), hour], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_err)?;
        match before {
            Some(d) if d == sum => {
                report.duplicates += goods.len();
                continue;
            }
            Some(_) => {
                refuse(
                    report,
                    format!(
                        "the hour {} of {serial} was back-filled before with other rows: a back-filled hour is imported whole, once",
                        from_ms(hour).to_rfc3339()
                    ),
                );
                continue;
            }
            None => {}
        }
        if hour_is_live(tx, serial, hour)? {
            refuse(
                report,
                format!(
                    "the hour {} of {serial} overlaps live telemetry",
                    from_ms(hour).to_rfc3339()
                ),
            );
            continue;
        }
        let mut accs: BTreeMap<&str, Acc> = BTreeMap::new();
        for g in &goods {
            for (field, &v) in &g.values {
                accs.entry(field.as_str())
                    .and_modify(|a| a.add(g.at, v))
                    .or_insert_with(|| Acc::new(g.at, v));
            }
        }
        for (field, acc) in accs {
            merge(tx, serial, hour, field, acc)?;
        }
        tx.prepare_cached(
            "INSERT INTO backfill_hours (serial, hour, digest, imported_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![serial.as_str(), hour, sum, ms(now)]))
        .map_err(sql_err)?;
        report.imported += goods.len();
    }
    // one hour's lines are reported together; keep the report in line order
    report.errors.sort_by_key(|e| e.line);
    Ok(())
}
