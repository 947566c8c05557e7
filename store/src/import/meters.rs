//! Meter history rows: `serial, at, runtime_hours, <meter field>…` (wide: one column per
//! cumulative meter, in hours).
//!
//! The meter columns a file may have: `runtime_hours`, the known hour meters of the
//! telemetry contract (`sieve_bed_hours`, `blower_hours`, …) and every field a catalog
//! component ages on (`ages_on = "meter:<field>"`). Each value is kept in
//! `meter_history` (serial, field, time) and merged into the hourly rollups as imported
//! data, except in an hour that holds live telemetry (the live values win there); the
//! months of changed `runtime_hours` are refolded. Re-importing the same values is a
//! duplicate; another value at a time already imported is refused on the line.

use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::store::StoreError;
use fleetpulse_domain::telemetry::{KNOWN_FIELDS, known_field};
use rusqlite::{OptionalExtension, Transaction, params};

use super::rollups::{Acc, merge};
use super::{Loaded, Row, common};
use crate::convert::{hour_of, ms, sql_err};

/// The columns of a meter file under this catalog.
pub(super) fn columns(catalog: &Catalog) -> Vec<String> {
    let mut cols: Vec<String> = vec!["serial".into(), "at".into()];
    cols.extend(meter_fields(catalog));
    cols
}

/// `runtime_hours`, the known hour meters and the catalog's `meter:` fields, sorted.
fn meter_fields(catalog: &Catalog) -> Vec<String> {
    let mut fields: Vec<String> = KNOWN_FIELDS
        .iter()
        .filter(|f| f.unit == "h")
        .map(|f| f.name.to_owned())
        .collect();
    for m in catalog.models() {
        for c in catalog.components(m.id.as_str()) {
            if let Some(f) = c.ages_on.field() {
                fields.push(f.to_owned());
            }
        }
    }
    fields.sort();
    fields.dedup();
    fields
}

pub(super) fn import(
    tx: &Transaction<'_>,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Result<Loaded, String>, StoreError> {
    let c = match common(tx, row, now)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut values: Vec<(&str, f64)> = Vec::new();
    for (field, text) in &row.cells {
        if matches!(field.as_str(), "serial" | "at") {
            continue;
        }
        let v = match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => v,
            _ => {
                return Ok(Err(format!(
                    "{field} {text:?} is not a non-negative number"
                )));
            }
        };
        if let Some(k) = known_field(field)
            && v > k.max
        {
            return Ok(Err(format!("{field} = {v} is over {} {}", k.max, k.unit)));
        }
        values.push((field.as_str(), v));
    }
    if values.is_empty() {
        return Ok(Err("no meter value on the row".into()));
    }
    values.sort_by(|a, b| a.0.cmp(b.0));
    let at = ms(c.at);
    let mut new = Vec::new();
    for &(field, v) in &values {
        let before: Option<f64> = tx
            .prepare_cached(
                "SELECT value FROM meter_history WHERE serial = ?1 AND field = ?2 AND at = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![c.serial.as_str(), field, at], |r| r.get(0))
                    .optional()
            })
            .map_err(sql_err)?;
        match before {
            Some(b) if b == v => {}
            Some(b) => {
                return Ok(Err(format!(
                    "{field} of {} at {} was imported before as {b}, not {v}",
                    c.serial,
                    c.at.to_rfc3339()
                )));
            }
            None => new.push((field, v)),
        }
    }
    if new.is_empty() {
        return Ok(Ok(Loaded::Duplicate));
    }
    for (field, v) in new {
        tx.prepare_cached(
            "INSERT INTO meter_history (serial, field, at, value, imported_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![c.serial.as_str(), field, at, v, ms(now)]))
        .map_err(sql_err)?;
        merge(tx, &c.serial, hour_of(at), field, Acc::new(at, v))?;
    }
    Ok(Ok(Loaded::Imported))
}
