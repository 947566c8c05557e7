//! The writer's cache of what every commit reads per device: its registry facts and its
//! latest state.
//!
//! With thousands of devices, each appearing about once per batch, reading the device
//! row and parsing the latest state's JSON cost two lookups per device per batch, and
//! rewriting an unchanged `devices` row dirties a page for nothing. The cache holds the
//! committed values, so a commit reads them from memory.
//!
//! It is only ever a copy of committed rows:
//! - entries are put in **after** the transaction that wrote them committed, never from
//!   inside it, so a rolled-back batch leaves the cache as it was;
//! - any write through the store other than the ones known to leave devices and latest
//!   state alone clears it (`SqliteStore::write`), and so does a commit by any other
//!   connection or process (`PRAGMA data_version` changes, e.g. `fleetpulse device …`
//!   run beside `serve`), checked at the start of every batch;
//! - it is bounded ([`MAX_ENTRIES`]): past that it is cleared and refilled, which costs
//!   what no cache costs.

use std::collections::HashMap;

use fleetpulse_domain::device::{Criticality, LifecycleStatus};
use fleetpulse_domain::rules::LatestState;
use fleetpulse_domain::serial::Serial;
use rusqlite::Connection;

use crate::convert::sql_err;
use fleetpulse_domain::store::StoreError;

/// Devices kept; about 1 KiB each with a typical latest state.
pub(crate) const MAX_ENTRIES: usize = 50_000;

/// `devices.last_seen_at` is rewritten at most this often (ms) while a device streams;
/// `latest_state.received_at` (served with the device) is exact.
pub(crate) const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;

/// The registry facts a commit needs about a device.
#[derive(Clone, Debug)]
pub(crate) struct DeviceRow {
    pub(crate) model: Option<String>,
    pub(crate) status: LifecycleStatus,
    pub(crate) criticality: Criticality,
}

/// One device as committed.
#[derive(Clone, Debug)]
pub(crate) struct CachedDevice {
    pub(crate) row: DeviceRow,
    /// `devices.connection` is `online`.
    pub(crate) online: bool,
    pub(crate) firmware: Option<String>,
    pub(crate) last_seen_ms: i64,
    /// `None`: no latest state row yet.
    pub(crate) latest: Option<LatestState>,
}

#[derive(Default)]
pub(crate) struct DeviceCache {
    devices: HashMap<Serial, CachedDevice>,
    /// `PRAGMA data_version` when the cache was last known to be current.
    data_version: Option<i64>,
}

impl DeviceCache {
    pub(crate) fn get(&self, serial: &Serial) -> Option<&CachedDevice> {
        self.devices.get(serial)
    }

    pub(crate) fn clear(&mut self) {
        self.devices.clear();
    }

    /// Clears the cache when another connection committed since the last check.
    pub(crate) fn check_external_writes(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let version: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(sql_err)?;
        if self.data_version != Some(version) {
            self.devices.clear();
            self.data_version = Some(version);
        }
        Ok(())
    }

    /// Puts what a committed batch wrote; `None` removes the serial.
    pub(crate) fn apply(&mut self, updates: Vec<(Serial, Option<CachedDevice>)>) {
        if self.devices.len() + updates.len() > MAX_ENTRIES {
            self.devices.clear();
        }
        for (serial, entry) in updates {
            match entry {
                Some(e) => {
                    self.devices.insert(serial, e);
                }
                None => {
                    self.devices.remove(&serial);
                }
            }
        }
    }
}
