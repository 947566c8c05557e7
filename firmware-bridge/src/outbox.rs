//! The on-disk outbox: one SQLite file (`outbox.db`, WAL, `synchronous = FULL`) holding
//! every reading that was taken but whose PUBACK has not arrived, and each device's next
//! `seq`.
//!
//! - A reading is committed here **before** it is published; it is deleted only after
//!   its PUBACK (and the PUBACKs of every earlier reading of the device) arrived.
//! - A device's `seq` is stored in the same transaction as its reading, so it never goes
//!   backwards across restarts. A device seen for the first time starts at the wall
//!   clock in milliseconds: even if this file is lost, new readings are not mistaken for
//!   duplicates of old ones (as long as a device is polled at most once a millisecond).
//! - After a restart every reading still here is published again, in `seq` order, before
//!   new ones; fleetpulse deduplicates on `(serial, seq)`, so a resend is harmless.
//!
//! All calls block on SQLite: call them from a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

/// What the outbox held when it was opened, by serial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceBacklog {
    /// The `seq` the next reading gets (none: the device was never seen).
    pub next_seq: Option<u64>,
    /// Readings not yet acknowledged, in `seq` order.
    pub pending: Vec<(u64, Vec<u8>)>,
}

/// A reading to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub serial: String,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The outbox file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {source}")]
pub struct OutboxError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

/// The open outbox.
pub struct DiskOutbox {
    conn: Connection,
    path: PathBuf,
}

impl DiskOutbox {
    /// Opens (creating if needed) `dir/outbox.db`.
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        let path = dir.join("outbox.db");
        let err = |source| OutboxError {
            path: path.clone(),
            source,
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(err(rusqlite::Error::InvalidPath(PathBuf::from(format!(
                "{}: {e}",
                dir.display()
            )))));
        }
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS device_seq (
                 serial   TEXT PRIMARY KEY,
                 next_seq INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS outbox (
                 serial  TEXT NOT NULL,
                 seq     INTEGER NOT NULL,
                 payload BLOB NOT NULL,
                 PRIMARY KEY (serial, seq)
             ) WITHOUT ROWID;",
        )
        .map_err(err)?;
        Ok(DiskOutbox { conn, path })
    }

    fn err(&self, source: rusqlite::Error) -> OutboxError {
        OutboxError {
            path: self.path.clone(),
            source,
        }
    }

    /// Everything held, by serial.
    pub fn recover(&self) -> Result<BTreeMap<String, DeviceBacklog>, OutboxError> {
        let mut out: BTreeMap<String, DeviceBacklog> = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT serial, next_seq FROM device_seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (serial, next) = row.map_err(|e| self.err(e))?;
            out.entry(serial).or_default().next_seq = Some(next.max(0) as u64);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT serial, seq, payload FROM outbox ORDER BY serial, seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (serial, seq, payload) = row.map_err(|e| self.err(e))?;
            out.entry(serial)
                .or_default()
                .pending
                .push((seq.max(0) as u64, payload));
        }
        Ok(out)
    }

    /// Stores readings and advances their devices' next `seq`, in one durable transaction.
    pub fn append(&mut self, rows: &[Row]) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let err = |source| OutboxError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO outbox (serial, seq, payload) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            let mut next = tx
                .prepare_cached(
                    "INSERT INTO device_seq (serial, next_seq) VALUES (?1, ?2) \
                     ON CONFLICT (serial) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                )
                .map_err(err)?;
            for r in rows {
                let seq = r.seq as i64;
                insert
                    .execute(params![r.serial, seq, r.payload])
                    .map_err(err)?;
                next.execute(params![r.serial, seq + 1]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Deletes, per serial, every reading with `seq <= up_to` (all acknowledged).
    pub fn remove_acked(&mut self, acked: &[(String, u64)]) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let err = |source| OutboxError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM outbox WHERE serial = ?1 AND seq <= ?2")
                .map_err(err)?;
            for (serial, up_to) in acked {
                delete
                    .execute(params![serial, *up_to as i64])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_and_seq_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut o = DiskOutbox::open(dir.path()).expect("open");
            let rows: Vec<Row> = (5..10)
                .map(|seq| Row {
                    serial: "OC5-1".into(),
                    seq,
                    payload: format!("r{seq}").into_bytes(),
                })
                .collect();
            o.append(&rows).expect("append");
            o.remove_acked(&[("OC5-1".into(), 6)]).expect("remove");
        }
        let o = DiskOutbox::open(dir.path()).expect("reopen");
        let got = o.recover().expect("recover");
        let b = &got["OC5-1"];
        assert_eq!(b.next_seq, Some(10));
        assert_eq!(
            b.pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert_eq!(b.pending[0].1, b"r7");
    }
}
