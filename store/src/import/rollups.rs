//! Imported values into the hourly rollups, beside live telemetry: an imported hour has
//! `last_seq = 0`; an hour that holds live data (`last_seq > 0`) is never changed by an
//! import.

use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{OptionalExtension, Transaction, params};

use crate::convert::sql_err;

/// The values of one field in one hour.
#[derive(Clone, Copy, Debug)]
pub(super) struct Acc {
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value latest in time.
    pub last: f64,
    /// Its time (ms), to order several imports into one hour.
    pub last_at: i64,
}

impl Acc {
    pub(super) fn new(at: i64, v: f64) -> Self {
        Self {
            count: 1,
            sum: v,
            min: v,
            max: v,
            last: v,
            last_at: at,
        }
    }

    pub(super) fn add(&mut self, at: i64, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if at >= self.last_at {
            self.last = v;
            self.last_at = at;
        }
    }
}

/// Whether any field of the device's `hour` holds live telemetry.
pub(super) fn hour_is_live(
    tx: &Transaction<'_>,
    serial: &Serial,
    hour: i64,
) -> Result<bool, StoreError> {
    tx.prepare_cached(
        "SELECT 1 FROM rollups WHERE serial = ?1 AND hour = ?2 AND last_seq > 0 LIMIT 1",
    )
    .and_then(|mut s| s.exists(params![serial.as_str(), hour]))
    .map_err(sql_err)
}

/// Adds `acc` to the imported rollup of (serial, hour, field). `false` (nothing written)
/// when that rollup holds live data. An imported hour keeps as `last` the larger of the
/// two (the meters imported this way are cumulative, so the later reading is the larger).
pub(super) fn merge(
    tx: &Transaction<'_>,
    serial: &Serial,
    hour: i64,
    field: &str,
    acc: Acc,
) -> Result<bool, StoreError> {
    let live: Option<i64> = tx
        .prepare_cached(
            "SELECT last_seq FROM rollups WHERE serial = ?1 AND hour = ?2 AND field = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![serial.as_str(), hour, field], |r| r.get(0))
                .optional()
        })
        .map_err(sql_err)?;
    if live.is_some_and(|seq| seq > 0) {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO rollups (serial, hour, field, count, sum, min, max, last, last_seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0) \
         ON CONFLICT (serial, hour, field) DO UPDATE SET \
           count = count + excluded.count, sum = sum + excluded.sum, \
           min = MIN(min, excluded.min), max = MAX(max, excluded.max), \
           last = MAX(last, excluded.last)",
    )
    .and_then(|mut s| {
        s.execute(params![
            serial.as_str(),
            hour,
            field,
            acc.count,
            acc.sum,
            acc.min,
            acc.max,
            acc.last
        ])
    })
    .map_err(sql_err)?;
    crate::exposure::mark_dirty(tx, serial, [(hour, field)].iter())?;
    Ok(true)
}
