//! Failure rows: `serial, at, runtime_hours, fault_code, failure_mode, component, notes`.
//!
//! `component` and `failure_mode` are resolved by the catalog
//! ([`Catalog::resolve_failure`]): a name the device's model does not have is refused on
//! its line; naming neither is a device-level failure (the mode its code indicates, if
//! any). The identity of a failure is (serial, time, code, component, mode), so two
//! components failing at the same instant are two events. Its import key is
//! `failure|serial|at|code|component|mode`; a row loaded before components existed has
//! the key `failure|serial|at|code`, and counts as the same failure when its resolved
//! component and mode are this row's.

use chrono::{DateTime, Utc};
use fleetpulse_domain::alarm::AlarmCode;
use fleetpulse_domain::catalog::Catalog;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Loaded, Row, common, identifier};
use crate::convert::{ms, sql_err};
use crate::reliability::SAME_INCIDENT_HOURS;
use fleetpulse_domain::store::StoreError;

/// The columns of a failure file.
pub(super) const COLUMNS: &[&str] = &[
    "serial",
    "at",
    "runtime_hours",
    "fault_code",
    "failure_mode",
    "component",
    "notes",
];

/// The import key of a failure with this identity.
fn key(
    serial: &str,
    at: DateTime<Utc>,
    code: Option<&str>,
    resolved: Option<(&str, &str)>,
) -> String {
    let (component, mode) = resolved.unwrap_or(("", ""));
    format!(
        "failure|{serial}|{}|{}|{component}|{mode}",
        ms(at),
        code.unwrap_or("")
    )
}

/// The key a row got before components existed.
fn old_key(serial: &str, at: DateTime<Utc>, code: Option<&str>) -> String {
    format!("failure|{serial}|{}|{}", ms(at), code.unwrap_or(""))
}

/// Whether a row loaded under the old key (serial, time, code) has the same resolved
/// component and mode as this one.
fn loaded_under_old_key(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    model: Option<&str>,
    old: &str,
    resolved: Option<(&str, &str)>,
) -> Result<bool, StoreError> {
    let stored: Option<(Option<String>, Option<String>, Option<String>)> = tx
        .prepare_cached(
            "SELECT component, failure_mode, fault_code FROM failure_events WHERE import_key = ?1",
        )
        .and_then(|mut s| {
            s.query_row([old], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(sql_err)?;
    let Some((component, mode, code)) = stored else {
        return Ok(false);
    };
    let code = code.as_deref().and_then(|c| AlarmCode::parse(c).ok());
    let theirs = match model {
        Some(m) => catalog
            .resolve_failure(m, component.as_deref(), mode.as_deref(), code.as_ref())
            .ok()
            .flatten()
            .map(|(c, f)| (c.to_string(), f.to_string())),
        None => None,
    };
    // an old row whose mode the catalog no longer resolves is compared by its text
    let theirs = theirs.or_else(|| mode.map(|m| (component.unwrap_or_default(), m)));
    Ok(theirs.as_ref().map(|(c, f)| (c.as_str(), f.as_str())) == resolved)
}

pub(super) fn import(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Result<Loaded, String>, StoreError> {
    let c = match common(tx, row, now)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let code = match row.get("fault_code").map(AlarmCode::parse).transpose() {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("fault_code: {e}"))),
    };
    let mode = match identifier(row, "failure_mode") {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let component = match identifier(row, "component") {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let resolved = match c.device.model.as_deref() {
        Some(model) => match catalog.resolve_failure(
            model,
            component.as_deref(),
            mode.as_deref(),
            code.as_ref(),
        ) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        },
        None if component.is_some() || mode.is_some() => {
            return Ok(Err(format!(
                "serial {} has no model: a component or failure mode cannot be resolved",
                c.serial
            )));
        }
        None => None,
    };
    let resolved_text = resolved.as_ref().map(|(c, f)| (c.as_str(), f.as_str()));
    let code_text = code.as_ref().map(|c| c.to_string());
    let key = key(c.serial.as_str(), c.at, code_text.as_deref(), resolved_text);
    let exists: bool = tx
        .prepare_cached("SELECT 1 FROM failure_events WHERE import_key = ?1")
        .and_then(|mut s| s.exists([&key]))
        .map_err(sql_err)?;
    if exists
        || loaded_under_old_key(
            tx,
            catalog,
            c.device.model.as_deref(),
            &old_key(c.serial.as_str(), c.at, code_text.as_deref()),
            resolved_text,
        )?
    {
        return Ok(Ok(Loaded::Duplicate));
    }
    if let Some(code) = &code_text {
        let window = SAME_INCIDENT_HOURS * 3_600_000;
        let live: Option<(i64, String)> = tx
            .prepare_cached(
                "SELECT id, source FROM failure_events WHERE serial = ?1 AND fault_code = ?2 AND source <> 'import' \
                 AND retracted_at IS NULL AND at BETWEEN ?3 AND ?4 LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![c.serial.as_str(), code, ms(c.at) - window, ms(c.at) + window],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(sql_err)?;
        if let Some((id, source)) = live {
            return Ok(Ok(Loaded::SameIncident(format!(
                "failure event {id} (source {source}) of {} with code {code} is within 24 h: the same incident, not loaded",
                c.serial
            ))));
        }
    }
    let (component, mode) = match resolved {
        Some((c, f)) => (Some(c.to_string()), Some(f.to_string())),
        None => (None, None),
    };
    tx.prepare_cached(
        "INSERT INTO failure_events (serial, at, runtime_hours, source, fault_code, failure_mode, component, notes, \
         model, kind, import_key, updated_at) VALUES (?1, ?2, ?3, 'import', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.serial.as_str(),
            ms(c.at),
            c.runtime_hours,
            code_text,
            mode,
            component,
            c.notes,
            c.device.model,
            c.device.kind,
            key,
            ms(now)
        ])
    })
    .map_err(sql_err)?;
    Ok(Ok(Loaded::Imported))
}
