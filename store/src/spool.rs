//! The time-series sink spool (see `migrations/0002_sink_spool.sql`).

use chrono::{DateTime, Utc};
use fleetpulse_domain::store::{SpoolChunk, SpoolStats, StoreError};
use rusqlite::{Connection, Transaction, params};

use crate::convert::{from_ms, ms, sql_err};

/// A batch's lines, gathered during the commit.
#[derive(Default)]
pub(crate) struct SpoolBuffer {
    pub(crate) body: String,
    pub(crate) readings: usize,
}

/// Appends the gathered lines as one chunk (nothing when there are none).
pub(crate) fn append(
    tx: &Transaction<'_>,
    buffer: &SpoolBuffer,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if buffer.readings == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO sink_spool (created_at, readings, bytes, body) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            ms(now),
            buffer.readings as i64,
            buffer.body.len() as i64,
            buffer.body
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn peek(
    conn: &Connection,
    max_readings: usize,
    max_bytes: usize,
) -> Result<Vec<SpoolChunk>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, created_at, readings, bytes, body FROM sink_spool ORDER BY id LIMIT 1000",
        )
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut chunks = Vec::new();
    let (mut readings, mut bytes) = (0usize, 0usize);
    while let Some(row) = rows.next().map_err(sql_err)? {
        let n = usize::try_from(row.get::<_, i64>(2).map_err(sql_err)?).unwrap_or(0);
        let len = usize::try_from(row.get::<_, i64>(3).map_err(sql_err)?).unwrap_or(0);
        if !chunks.is_empty() && (readings + n > max_readings || bytes + len > max_bytes) {
            break;
        }
        readings += n;
        bytes += len;
        chunks.push(SpoolChunk {
            id: row.get(0).map_err(sql_err)?,
            created_at: from_ms(row.get(1).map_err(sql_err)?),
            readings: n,
            body: row.get(4).map_err(sql_err)?,
        });
    }
    Ok(chunks)
}

pub(crate) fn remove(conn: &Connection, through: i64) -> Result<u64, StoreError> {
    conn.prepare_cached("DELETE FROM sink_spool WHERE id <= ?1")
        .and_then(|mut s| s.execute([through]))
        .map(|n| n as u64)
        .map_err(sql_err)
}

pub(crate) fn stats(conn: &Connection) -> Result<SpoolStats, StoreError> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(readings), 0), COALESCE(SUM(bytes), 0), MIN(created_at) \
         FROM sink_spool",
        [],
        |r| {
            Ok(SpoolStats {
                chunks: r.get::<_, i64>(0)?.max(0) as u64,
                readings: r.get::<_, i64>(1)?.max(0) as u64,
                bytes: r.get::<_, i64>(2)?.max(0) as u64,
                oldest: r.get::<_, Option<i64>>(3)?.map(from_ms),
            })
        },
    )
    .map_err(sql_err)
}
