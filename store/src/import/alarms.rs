//! Alarm rows: `serial, started_at, ended_at, code, severity, runtime_hours`: past alarm
//! (error) events as alarm episodes, which the predictors read as the live ones.
//!
//! - `code` is any alarm code the live ingest takes ([`AlarmCode`]: third-party codes
//!   such as `ERROR1` too); a code the device's model has no catalog entry for is kept,
//!   as live, with no severity unless the row gives one.
//! - An empty `ended_at` is an instant event: it ends when it starts (duration 0). An
//!   imported episode has always ended, so the live path never closes or extends it;
//!   `ended_at` before `started_at` is refused.
//! - Nothing else follows from an episode loaded here: no failure event (past failures
//!   come from the failures import), no order, no rule.
//! - An episode overlapping the device's open live episode of the same code is refused:
//!   the device is reporting that alarm now. One overlapping an ended live episode of the
//!   same code is the same episode: reported as the same incident, not loaded.
//! - The identity of an episode is (serial, code, start); its import key is
//!   `alarm|serial|code|started_at` (ms). The same episode again is a duplicate; another
//!   end for it is refused on the line.

use chrono::{DateTime, Utc};
use fleetpulse_domain::alarm::{AlarmCode, Severity};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::store::StoreError;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Loaded, Row, common_at, time};
use crate::convert::{from_ms, ms, sql_err};

/// The columns of an alarm file.
pub(super) const COLUMNS: &[&str] = &[
    "serial",
    "started_at",
    "ended_at",
    "code",
    "severity",
    "runtime_hours",
];

/// The columns every alarm file has.
pub(super) const REQUIRED: &[&str] = &["serial", "started_at", "code"];

pub(super) fn import(
    tx: &Transaction<'_>,
    catalog: &Catalog,
    row: &Row,
    now: DateTime<Utc>,
) -> Result<Result<Loaded, String>, StoreError> {
    let c = match common_at(tx, row, "started_at", now)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let code = match row.get("code").map(AlarmCode::parse) {
        Some(Ok(code)) => code,
        Some(Err(e)) => return Ok(Err(format!("code: {e}"))),
        None => return Ok(Err("code is empty (an alarm code, e.g. E101)".into())),
    };
    let ended = match time(row, "ended_at", now) {
        Ok(t) => t.unwrap_or(c.at),
        Err(e) => return Ok(Err(e)),
    };
    if ended < c.at {
        return Ok(Err(format!(
            "ended_at {} is before started_at {}",
            ended.to_rfc3339(),
            c.at.to_rfc3339()
        )));
    }
    let severity = match row.get("severity") {
        Some(text) => match text.parse::<Severity>() {
            Ok(s) => Some(s),
            Err(e) => return Ok(Err(format!("severity: {e}"))),
        },
        None => c
            .device
            .model
            .as_deref()
            .and_then(|m| catalog.model(m))
            .and_then(|m| m.alarm(&code))
            .map(|a| a.severity),
    };
    let (serial, start, end) = (c.serial.as_str(), ms(c.at), ms(ended));
    let key = format!("alarm|{serial}|{code}|{start}");

    let imported_end: Option<Option<i64>> = tx
        .prepare_cached("SELECT ended_at FROM alarm_episodes WHERE import_key = ?1")
        .and_then(|mut s| s.query_row([&key], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    if let Some(before) = imported_end {
        if before == Some(end) {
            return Ok(Ok(Loaded::Duplicate));
        }
        let before = before.map_or_else(|| "never".into(), |t| from_ms(t).to_rfc3339());
        return Ok(Err(format!(
            "the episode of {code} on {serial} started at {} was imported before ending at {before}, not {}",
            c.at.to_rfc3339(),
            ended.to_rfc3339()
        )));
    }

    // an open episode is the live one: imported episodes always end
    let open: Option<(i64, i64)> = tx
        .prepare_cached(
            "SELECT id, started_at FROM alarm_episodes WHERE serial = ?1 AND code = ?2 \
             AND ended_at IS NULL AND started_at <= ?3 LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![serial, code.as_str(), end], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(sql_err)?;
    if let Some((id, since)) = open {
        return Ok(Err(format!(
            "overlaps the open live episode {id} of {code} on {serial} (active since {}): \
             import only episodes that ended before it started",
            from_ms(since).to_rfc3339()
        )));
    }
    let live: Option<(i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, started_at, ended_at FROM alarm_episodes WHERE serial = ?1 AND code = ?2 \
             AND import_key IS NULL AND started_at <= ?4 AND ended_at >= ?3 ORDER BY started_at LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![serial, code.as_str(), start, end], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(sql_err)?;
    if let Some((id, from, to)) = live {
        return Ok(Ok(Loaded::SameIncident(format!(
            "overlaps the live episode {id} of {code} on {serial} ({} to {}): the same episode, not loaded",
            from_ms(from).to_rfc3339(),
            from_ms(to).to_rfc3339()
        ))));
    }

    // the columns live ingest fills, with no sequence numbers (none was received)
    tx.prepare_cached(
        "INSERT INTO alarm_episodes (serial, code, severity, started_at, started_seq, ended_at, ended_seq, \
         duration_s, runtime_hours_at_start, import_key) \
         VALUES (?1, ?2, ?3, ?4, 0, ?5, NULL, (?5 - ?4) / 1000.0, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            serial,
            code.as_str(),
            severity.map(Severity::as_str),
            start,
            end,
            c.runtime_hours,
            key
        ])
    })
    .map_err(sql_err)?;
    Ok(Ok(Loaded::Imported))
}
