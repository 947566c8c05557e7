//! History import from CSV: devices, past failures (`failure_events`, source `import`),
//! maintenance records (`maintenance_records`), meter history, telemetry backfill and
//! alarm episodes (`alarm_episodes` with an import key), so a company can start with
//! years of history. Columns and rules: docs/reliability-data.md.
//!
//! - The header names the columns (any order); an unknown column or a missing required
//!   one refuses the whole file, naming it (a typo is not a silently empty column).
//! - Each data row is checked on its own; a bad row is reported with its line number
//!   (the header is line 1) and the reason, and the good rows are loaded. The whole file
//!   is one transaction: it lands entirely (its good rows) or not at all.
//! - Unknown serials are reported, not registered: history for a device nobody
//!   registered would have no model, and statistics by model would silently miss it.
//! - Re-importing is harmless: each row has an import key (failures: serial, time, fault
//!   code, component and failure mode; maintenance: serial, time, kind and component;
//!   alarms: serial, code and start) and a row whose key was loaded before counts as a
//!   duplicate.
//! - Components, failure modes and maintenance kinds are the catalog's: a name the
//!   device's model does not have is refused on its line.
//! - A failure row whose device already has a recorded (alarm or repair order) event of
//!   the same code within 24 hours is the same incident: reported, not loaded; so is an
//!   alarm row overlapping an ended live episode of its code (one overlapping the open
//!   live episode is refused).

mod alarms;
mod devices;
mod failures;
mod maintenance;
mod meters;
pub(crate) mod readback;
mod rollups;
mod telemetry;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::csv::split_line;
use fleetpulse_domain::reliability::{ImportKind, ImportReport, ImportRowIssue};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::convert::sql_err;

/// Longest notes accepted.
const MAX_NOTES: usize = 4000;
/// Longest failure mode or consumable id accepted.
const MAX_ID: usize = 64;

/// The columns a file of most kinds must have.
const REQUIRED: &[&str] = &["serial", "at"];

/// A data row by column name (empty cells left out), with its line number.
struct Row {
    line: usize,
    cells: HashMap<String, String>,
}

impl Row {
    fn get(&self, column: &str) -> Option<&str> {
        self.cells.get(column).map(String::as_str)
    }
}

type Rows = Vec<Result<Row, ImportRowIssue>>;

/// Which header names a kind takes.
enum Columns<'a> {
    /// These names.
    Listed(&'a [&'a str]),
    /// `serial`, `at` and any telemetry field name (`[a-z][a-z0-9_]{0,63}`).
    Fields,
}

impl Columns<'_> {
    fn allows(&self, name: &str) -> bool {
        match self {
            Self::Listed(names) => names.contains(&name),
            Self::Fields => fleetpulse_domain::catalog::is_catalog_id(name),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Listed(names) => names.join(", "),
            Self::Fields => "serial, at and telemetry field names ([a-z][a-z0-9_]{0,63})".into(),
        }
    }
}

fn rows(text: &str, allowed: Columns<'_>, required: &[&str]) -> Result<Rows, StoreError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(StoreError::Invalid(
            "the file is empty: expected a header row naming the columns".into(),
        ));
    };
    let names: Vec<String> = split_line(header.trim_start_matches('\u{feff}'))
        .map_err(|e| StoreError::Invalid(format!("header (line 1): {e}")))?
        .into_iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for n in &names {
        if !allowed.allows(n) {
            return Err(StoreError::Invalid(format!(
                "header: unknown column {n:?} (columns: {})",
                allowed.describe()
            )));
        }
        if names.iter().filter(|m| *m == n).count() > 1 {
            return Err(StoreError::Invalid(format!(
                "header: column {n:?} appears twice"
            )));
        }
    }
    for r in required {
        if !names.iter().any(|n| n == r) {
            return Err(StoreError::Invalid(format!(
                "header: the required column {r:?} is missing (columns: {})",
                allowed.describe()
            )));
        }
    }
    Ok(lines
        .map(|(line, text)| {
            let cells = split_line(text).map_err(|reason| ImportRowIssue { line, reason })?;
            if cells.len() != names.len() {
                return Err(ImportRowIssue {
                    line,
                    reason: format!(
                        "{} fields, but the header names {} columns",
                        cells.len(),
                        names.len()
                    ),
                });
            }
            let cells = names
                .iter()
                .cloned()
                .zip(cells.into_iter().map(|c| c.trim().to_owned()))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            Ok(Row { line, cells })
        })
        .collect())
}

/// The device an imported row names.
struct DeviceFacts {
    model: Option<String>,
    kind: Option<String>,
}

fn device(tx: &Transaction<'_>, serial: &Serial) -> Result<Option<DeviceFacts>, StoreError> {
    tx.prepare_cached("SELECT model, kind FROM devices WHERE serial = ?1")
        .and_then(|mut s| {
            s.query_row([serial.as_str()], |r| {
                Ok(DeviceFacts {
                    model: r.get(0)?,
                    kind: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(sql_err)
}

/// The checks every kind of row shares: serial (registered), time, meter, notes.
pub(super) struct Common {
    serial: Serial,
    at: DateTime<Utc>,
    runtime_hours: Option<f64>,
    notes: Option<String>,
    device: DeviceFacts,
}

/// [`common_at`] with the time in the `at` column.
fn common(
    tx: &Transaction<'_>,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Result<Common, String>, StoreError> {
    common_at(tx, row, "at", now)
}

/// The shared checks, with the row's time in `time_column` (required).
fn common_at(
    tx: &Transaction<'_>,
    row: &Row,
    time_column: &str,
    now: DateTime<Utc>,
) -> Result<Result<Common, String>, StoreError> {
    let serial_text = row.get("serial").unwrap_or_default();
    if serial_text.is_empty() {
        return Ok(Err("serial is empty".into()));
    }
    let serial = match Serial::parse(serial_text) {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("serial: {e}"))),
    };
    let at = match time(row, time_column, now) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Ok(Err(format!(
                "{time_column} is empty (an RFC 3339 time, e.g. 2025-03-01T10:00:00Z)"
            )));
        }
        Err(e) => return Ok(Err(e)),
    };
    let runtime_hours = match row.get("runtime_hours") {
        None => None,
        Some(t) => match t.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
            _ => {
                return Ok(Err(format!(
                    "runtime_hours {t:?} is not a non-negative number"
                )));
            }
        },
    };
    let notes = row.get("notes").map(str::to_owned);
    if notes
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTES)
    {
        return Ok(Err(format!("notes are longer than {MAX_NOTES} characters")));
    }
    let Some(device) = device(tx, &serial)? else {
        return Ok(Err(format!(
            "serial {serial} is not registered: register it first (POST /api/v1/devices or /api/v1/devices/import), then import again"
        )));
    };
    Ok(Ok(Common {
        serial,
        at,
        runtime_hours,
        notes,
        device,
    }))
}

/// The time in `column` (`None`: empty): RFC 3339 with an offset, of any age, not in the
/// future.
fn time(row: &Row, column: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    let Some(text) = row.get(column) else {
        return Ok(None);
    };
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            format!(
                "{column} {text:?} is not an RFC 3339 time with an offset (e.g. 2025-03-01T10:00:00Z): {e}"
            )
        })?
        .with_timezone(&Utc);
    if at > now {
        return Err(format!("{column} {text} is in the future"));
    }
    Ok(Some(at))
}

fn identifier(row: &Row, column: &str) -> Result<Option<String>, String> {
    match row.get(column) {
        None => Ok(None),
        Some(v)
            if v.len() <= MAX_ID
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            Ok(Some(v.to_owned()))
        }
        Some(v) => Err(format!(
            "{column} {v:?} must be 1 to {MAX_ID} characters of letters, digits, '_', '-' or '.'"
        )),
    }
}

/// Imports `text` in one transaction; see the module doc.
pub(crate) fn import(
    conn: &mut Connection,
    catalog: &Catalog,
    kind: ImportKind,
    text: &str,
    now: DateTime<Utc>,
) -> Result<ImportReport, StoreError> {
    let meter_columns = meters::columns(catalog);
    let meter_columns: Vec<&str> = meter_columns.iter().map(String::as_str).collect();
    let (allowed, required) = match kind {
        ImportKind::Devices => (Columns::Listed(devices::COLUMNS), devices::REQUIRED),
        ImportKind::Failures => (Columns::Listed(failures::COLUMNS), REQUIRED),
        ImportKind::Maintenance => (Columns::Listed(maintenance::COLUMNS), REQUIRED),
        ImportKind::Meters => (Columns::Listed(&meter_columns), REQUIRED),
        ImportKind::Telemetry => (Columns::Fields, REQUIRED),
        ImportKind::Alarms => (Columns::Listed(alarms::COLUMNS), alarms::REQUIRED),
    };
    let rows = rows(text, allowed, required)?;
    let tx = conn.transaction().map_err(sql_err)?;
    let mut report = ImportReport {
        rows: rows.len(),
        ..Default::default()
    };
    if kind == ImportKind::Telemetry {
        telemetry::import(&tx, rows, now, &mut report)?;
        tx.commit().map_err(sql_err)?;
        tracing::info!(kind = ?kind, rows = report.rows, imported = report.imported, duplicates = report.duplicates, errors = report.errors.len(), "history imported");
        return Ok(report);
    }
    for row in rows {
        let row = match row {
            Ok(r) => r,
            Err(issue) => {
                report.errors.push(issue);
                continue;
            }
        };
        let line = row.line;
        let done = match kind {
            ImportKind::Devices => devices::import(&tx, catalog, &row, now)?,
            ImportKind::Failures => failures::import(&tx, catalog, &row, now)?,
            ImportKind::Maintenance => maintenance::import(&tx, catalog, &row, now)?,
            ImportKind::Meters => meters::import(&tx, &row, now)?,
            ImportKind::Alarms => alarms::import(&tx, catalog, &row, now)?,
            ImportKind::Telemetry => unreachable!("telemetry rows are loaded by the hour, above"),
        };
        match done {
            Ok(Loaded::Imported) => report.imported += 1,
            Ok(Loaded::Duplicate) => report.duplicates += 1,
            Ok(Loaded::SameIncident(reason)) => {
                report.same_incident.push(ImportRowIssue { line, reason });
            }
            Err(reason) => report.errors.push(ImportRowIssue { line, reason }),
        }
    }
    tx.commit().map_err(sql_err)?;
    tracing::info!(kind = ?kind, rows = report.rows, imported = report.imported, duplicates = report.duplicates, errors = report.errors.len(), "history imported");
    Ok(report)
}

enum Loaded {
    Imported,
    Duplicate,
    SameIncident(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_an_unknown_or_missing_column_refuses_the_file() {
        let e = rows(
            "serial,at,fualt_code\n",
            Columns::Listed(failures::COLUMNS),
            REQUIRED,
        )
        .err()
        .expect("refused");
        assert!(e.to_string().contains("fualt_code"), "{e}");
        let e = rows(
            "serial,runtime_hours\n",
            Columns::Listed(failures::COLUMNS),
            REQUIRED,
        )
        .err()
        .expect("refused");
        assert!(e.to_string().contains("\"at\""), "{e}");
        assert!(rows("\n\n", Columns::Listed(failures::COLUMNS), REQUIRED).is_err());
    }

    #[test]
    fn rows_keep_their_physical_line_numbers() {
        let rows = rows(
            "serial,at\n\nA,2025-01-01T00:00:00Z\nB\n",
            Columns::Listed(failures::COLUMNS),
            REQUIRED,
        )
        .expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_ref().map(|r| r.line).ok(), Some(3));
        assert_eq!(rows[1].as_ref().err().map(|e| e.line), Some(4));
    }
}
