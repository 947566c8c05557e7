//! Versioned migrations, applied in order inside one transaction each; the version is
//! kept in `PRAGMA user_version`.

use fleetpulse_domain::store::StoreError;
use rusqlite::Connection;

use crate::convert::sql_err;

/// Every migration, oldest first. Never edit a released one: add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_sink_spool.sql"),
    include_str!("../migrations/0003_device_credentials.sql"),
    include_str!("../migrations/0004_dispatch.sql"),
    include_str!("../migrations/0005_webhooks.sql"),
    include_str!("../migrations/0006_dispatch_indexes.sql"),
    include_str!("../migrations/0007_reliability.sql"),
    include_str!("../migrations/0008_ingest_journal.sql"),
    include_str!("../migrations/0009_predictions.sql"),
    include_str!("../migrations/0010_dead_letter_repeats.sql"),
    include_str!("../migrations/0011_components.sql"),
    include_str!("../migrations/0012_order_resolution.sql"),
    include_str!("../migrations/0013_overview_indexes.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {current}, but this fleetpulse knows only up to version {SCHEMA_VERSION}: \
             it was written by a newer release; run that release or restore a backup"
        )));
    }
    for (idx, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let version = idx as i64 + 1;
        let tx = conn.transaction().map_err(sql_err)?;
        tx.execute_batch(sql).map_err(sql_err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        tracing::info!(version, "store schema migrated");
    }
    Ok(())
}
