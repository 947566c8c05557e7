//! The embedded store: SQLite in WAL mode behind [`fleetpulse_domain::store::Store`].
//!
//! Data model (see `migrations/0001_init.sql`): the device registry, each device's latest
//! state, raw readings keyed by `(serial, seq)`, hourly rollups per device and field,
//! alarm episodes, orders (one active per serial and cause) and dead letters; and
//! (migration 0003) the digests of per-device MQTT tokens, behind
//! [`fleetpulse_domain::credentials::DeviceCredentials`].
//!
//! Guarantees:
//! - `commit_batch` applies a whole batch — readings, latest state, rollups, episodes,
//!   status, dead letters and the orders the rules raise — in one transaction and
//!   returns only after it is committed (`synchronous = FULL` by default: durable even on
//!   power loss; `Durability::Normal` survives a process crash only).
//! - Redelivery is harmless: a reading whose `(serial, seq)` is stored is ignored and
//!   counted as a duplicate; it changes nothing else.
//! - With `sink_spool`, the same transaction appends the batch's new readings to the
//!   time-series sink spool (a transactional outbox), so each stored reading reaches
//!   the spool exactly once.
//! - Writes are serialised on one connection; reads use a small pool of read-only
//!   connections that WAL lets run beside the writer. All SQLite work runs on tokio's
//!   blocking pool, never on the async workers.
//! - The write-ahead log stays bounded: SQLite checkpoints it every 64 MiB and truncates
//!   it back to 64 MiB ([`WAL_LIMIT_BYTES`]); closing the store ([`SqliteStore::close`],
//!   or dropping its last handle) checkpoints it and removes it, and a long-running
//!   process calls [`SqliteStore::checkpoint_if_over`] after its big writes.

mod audit;
mod cache;
mod convert;
mod credentials;
mod dispatch;
mod exposure;
mod import;
mod lives;
mod orders;
mod overview;
mod predictions;
mod read;
mod reliability;
mod resolution;
mod schema;
mod sla;
mod spool;
mod webhooks;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use fleetpulse_domain::alarm::AlarmEpisode;
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::clock::Clock;
use fleetpulse_domain::order::Order;
use fleetpulse_domain::reliability::{
    ConsolidationReport, DataRequest, ImportKind, ImportReport, ReliabilityData, ReliabilitySource,
};
use fleetpulse_domain::rules::OrderRules;
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{
    AlarmQuery, CommitReport, DayCount, DeadLetter, DeadLetterQuery, Device, DeviceDetail,
    DeviceQuery, DeviceSummary, FleetOverview, IngestBatch, NewDevice, OrderQuery, Page,
    ReadingQuery, Rollup, SpoolChunk, SpoolStats, Store, StoreError, StoreStats, StoredReading,
    UnknownDevicePolicy,
};
use rusqlite::{Connection, OpenFlags};

pub use exposure::GAP_THRESHOLD_HOURS;
pub use schema::SCHEMA_VERSION;

/// How hard a commit works to survive a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: a returned commit survives power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: survives a process crash; the last commits may be lost
    /// on power loss. Faster.
    Normal,
}

/// What the store needs besides its file.
#[derive(Clone)]
pub struct StoreOptions {
    /// Models and alarm codes (severity of episodes, auto-registration, rules).
    pub catalog: Arc<Catalog>,
    /// Streaming rules evaluated inside each commit.
    pub rules: Arc<dyn OrderRules>,
    /// What happens to readings from unregistered serials.
    pub unknown_device: UnknownDevicePolicy,
    pub durability: Durability,
    /// Keep the time-series sink spool: every commit appends its new readings to it as
    /// line protocol, in the same transaction (on when a sink is configured).
    pub sink_spool: bool,
    /// The writer connection's SQLite page cache, in MiB ([`DEFAULT_CACHE_MIB`]).
    pub cache_mib: u32,
    /// The process's clock: every "now" the store stamps (commits, orders, events,
    /// imports, SLA deadlines) is read from it.
    pub clock: Clock,
}

/// The writer's page cache unless configured (`data.cache_mib`). A 64 MiB cache was no
/// faster in the ingest benchmark (10 000 devices, a 1 000 000-reading store,
/// `docs/benchmarks.md`) and was a fifth of its RSS; a much larger store may want more.
pub const DEFAULT_CACHE_MIB: u32 = 16;

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // Fields drop in order: the read-only readers close before the writer. SQLite
    // checkpoints the WAL and removes it when the last connection to the database
    // closes, but a read-only connection closing last can do neither: the WAL then
    // outlives every process that writes little (one `fleetpulse predict`), and each
    // next one recovers, appends to and checkpoints the whole file again (issue 21:
    // 2.2 GB after 2 209 runs).
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Writer>,
    opts: StoreOptions,
    /// Rows in `readings`, kept by the writer (counted once at open, then adjusted by
    /// every commit and retention delete) so that `stats` does not scan the table:
    /// `COUNT(*)` over millions of readings costs tens of milliseconds per call.
    readings: AtomicU64,
}

/// The write connection and the cache of what it committed per device.
struct Writer {
    conn: Connection,
    cache: cache::DeviceCache,
}

/// WAL pages written before a commit checkpoints them into the database file (SQLite's
/// default is 1 000, 4 MiB). With thousands of devices a batch dirties thousands of
/// pages, so the default checkpoints after nearly every commit and writes the hot pages
/// (latest state, rollups, devices) twice per batch; 16 384 pages (64 MiB of WAL)
/// lets one checkpoint absorb many commits' versions of the same page. Durability is
/// unchanged: a commit is durable once its WAL frames are synced.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// The size the `-wal` file is truncated back to once checkpointed and restarted
/// (`journal_size_limit`; without it the file keeps its largest size), and the size above
/// which a long-running process asks for a full checkpoint
/// ([`SqliteStore::checkpoint_if_over`]): 64 MiB, the autocheckpoint's size.
pub const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// How long an explicit checkpoint waits for readers and writers to leave the WAL
/// before it settles for what it could copy: it holds the write connection meanwhile.
const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_secs(1);

/// The busy timeout of every connection.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a checkpoint (`PRAGMA wal_checkpoint(TRUNCATE)`) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// A reader or writer kept it from finishing within its wait: the WAL was copied up
    /// to what they still read and is not truncated.
    pub busy: bool,
    /// Frames in the WAL before the checkpoint.
    pub log_frames: i64,
    /// Frames copied into the database file.
    pub checkpointed_frames: i64,
    /// Size of the `-wal` file afterwards.
    pub wal_bytes: u64,
}

/// Read connections kept open for reuse.
const READER_POOL: usize = 4;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// A database written by a newer fleetpulse is refused.
    /// The latest instant the store file at `path` holds (readings, hourly rollups,
    /// order events) and whether it has any device, read from the file without opening
    /// the store (no migration, no writer); `(None, false)` when there is no file. A
    /// process that runs on a simulated clock starts it after this instant.
    pub fn latest_instant(path: &Path) -> Result<(Option<DateTime<Utc>>, bool), StoreError> {
        if !path.exists() {
            return Ok((None, false));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(convert::sql_err)?;
        // a file from before a table existed answers None for it
        let max = |sql: &str| -> Option<i64> {
            conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .ok()
                .flatten()
        };
        let latest = [
            max("SELECT MAX(ts) FROM readings"),
            max("SELECT MAX(hour) + 3600000 FROM rollups"),
            max("SELECT MAX(at) FROM order_events"),
        ]
        .into_iter()
        .flatten()
        .max()
        .and_then(DateTime::from_timestamp_millis);
        let has_devices = max("SELECT COUNT(*) FROM devices").unwrap_or(0) > 0;
        Ok((latest, has_devices))
    }

    /// The store's clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.opts.clock.now()
    }

    /// The clock the store reads "now" from.
    pub fn clock(&self) -> Clock {
        self.inner.opts.clock
    }

    pub async fn open(path: &Path, opts: StoreOptions) -> Result<SqliteStore, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, opts))
            .await
            .map_err(|e| StoreError::Internal(format!("store open task failed: {e}")))?
    }

    fn open_blocking(path: PathBuf, opts: StoreOptions) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = Connection::open(&path).map_err(convert::sql_err)?;
        let sync = match opts.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = {busy_ms}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{cache_kib}; \
             PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}; \
             PRAGMA journal_size_limit = {WAL_LIMIT_BYTES};",
            cache_kib = u64::from(opts.cache_mib.max(1)) * 1024,
            busy_ms = BUSY_TIMEOUT.as_millis()
        ))
        .map_err(convert::sql_err)?;
        // One commit runs about a dozen distinct statements (more with orders, episodes
        // and dead letters); the default cache of 16 would evict and re-prepare them.
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn)?;
        let readings: i64 = conn
            .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
            .map_err(convert::sql_err)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Writer {
                    conn,
                    cache: cache::DeviceCache::default(),
                }),
                readers: Mutex::new(Vec::new()),
                opts,
                readings: AtomicU64::new(u64::try_from(readings).unwrap_or(0)),
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Size of the write-ahead log (`<path>-wal`) in bytes; 0 when there is none.
    pub fn wal_bytes(&self) -> u64 {
        wal_bytes(&self.inner.path)
    }

    /// Copies the whole WAL into the database file and truncates it to 0 bytes
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`), waiting at most a second for readers and
    /// writers to leave it (then it copies what it can: [`Checkpoint::busy`]). Holds the
    /// write connection meanwhile.
    pub async fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let path = self.inner.path.clone();
        let cp = self
            .write_keeping_cache(move |conn, _, _| checkpoint(conn, &path))
            .await?;
        tracing::debug!(
            busy = cp.busy,
            log_frames = cp.log_frames,
            checkpointed_frames = cp.checkpointed_frames,
            wal_bytes = cp.wal_bytes,
            "WAL checkpoint"
        );
        Ok(cp)
    }

    /// [`Self::checkpoint`] when the WAL is larger than `bytes`; `None` otherwise.
    pub async fn checkpoint_if_over(&self, bytes: u64) -> Result<Option<Checkpoint>, StoreError> {
        if self.wal_bytes() <= bytes {
            return Ok(None);
        }
        self.checkpoint().await.map(Some)
    }

    /// Closes the store: the pooled readers first, then a checkpoint that empties the
    /// WAL, then the write connection (SQLite removes the WAL when the last connection
    /// closes). When other handles of this store are still alive, the connections close
    /// with the last of them.
    pub async fn close(self) -> Result<Checkpoint, StoreError> {
        let inner = self.inner;
        let path = inner.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(mut pool) = inner.readers.lock() {
                pool.clear();
            }
            let cp = {
                let writer = inner.writer.lock().map_err(|_| {
                    StoreError::Internal("write connection poisoned by an earlier panic".into())
                })?;
                checkpoint(&writer.conn, &inner.path)?
            };
            if let Ok(inner) = Arc::try_unwrap(inner) {
                let writer = inner.writer.into_inner().map_err(|_| {
                    StoreError::Internal("write connection poisoned by an earlier panic".into())
                })?;
                writer.conn.close().map_err(|(_, e)| convert::sql_err(e))?;
            }
            Ok(Checkpoint {
                wal_bytes: wal_bytes(&path),
                ..cp
            })
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store close task failed: {e}")))?
    }

    /// Runs `f` with the write connection on the blocking pool. `f` may change devices
    /// or latest state, so the writer's device cache is cleared after it.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &StoreOptions, &AtomicU64) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        self.with_writer(move |w, opts, readings| {
            let result = f(&mut w.conn, opts, readings);
            w.cache.clear();
            result
        })
        .await
    }

    /// Like [`Self::write`] for work that touches neither `devices` nor `latest_state`
    /// (spool, retention, webhook deliveries, audit, SLA events): the cache stays.
    async fn write_keeping_cache<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &StoreOptions, &AtomicU64) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        self.with_writer(move |w, opts, readings| f(&mut w.conn, opts, readings))
            .await
    }

    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer, &StoreOptions, &AtomicU64) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut writer = inner.writer.lock().map_err(|_| {
                StoreError::Internal("write connection poisoned by an earlier panic".into())
            })?;
            f(&mut writer, &inner.opts, &inner.readings)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Runs `f` with a pooled read connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &StoreOptions) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn, &inner.opts);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < READER_POOL
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

/// Size of the `-wal` file of the database at `db`; 0 when there is none.
fn wal_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len())
}

/// `PRAGMA wal_checkpoint(TRUNCATE)` on the write connection, waiting at most
/// [`CHECKPOINT_BUSY`] for other connections.
fn checkpoint(conn: &Connection, db: &Path) -> Result<Checkpoint, StoreError> {
    conn.busy_timeout(CHECKPOINT_BUSY)
        .map_err(convert::sql_err)?;
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    conn.busy_timeout(BUSY_TIMEOUT).map_err(convert::sql_err)?;
    let (busy, log_frames, checkpointed_frames) = result.map_err(convert::sql_err)?;
    Ok(Checkpoint {
        busy: busy != 0,
        log_frames,
        checkpointed_frames,
        wal_bytes: wal_bytes(db),
    })
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(convert::sql_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(convert::sql_err)?;
    Ok(conn)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn commit_batch(&self, batch: IngestBatch) -> Result<CommitReport, StoreError> {
        self.commit_shared(Arc::new(batch)).await
    }

    async fn commit_shared(&self, batch: Arc<IngestBatch>) -> Result<CommitReport, StoreError> {
        if batch.is_empty() {
            return Ok(CommitReport::default());
        }
        self.with_writer(move |w, opts, readings| {
            let report =
                write::commit_batch(&mut w.conn, &mut w.cache, opts, &batch, opts.clock.now())?;
            readings.fetch_add(report.stored as u64, Ordering::Relaxed);
            Ok(report)
        })
        .await
    }

    async fn register_device(&self, device: NewDevice) -> Result<Device, StoreError> {
        self.write(move |conn, opts, _| {
            write::register_device(conn, opts, device, opts.clock.now())
        })
        .await
    }

    async fn device(&self, serial: &Serial) -> Result<Option<DeviceDetail>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, _| read::device_detail(conn, &serial))
            .await
    }

    async fn list_devices(&self, query: DeviceQuery) -> Result<Page<DeviceSummary>, StoreError> {
        self.read(move |conn, _| read::list_devices(conn, &query))
            .await
    }

    async fn readings(&self, query: ReadingQuery) -> Result<Page<StoredReading>, StoreError> {
        self.read(move |conn, _| read::readings(conn, &query)).await
    }

    async fn rollups(
        &self,
        serial: &Serial,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, _| read::rollups(conn, &serial, None, from, to))
            .await
    }

    async fn field_rollups(
        &self,
        serial: &Serial,
        field: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let serial = serial.clone();
        let field = field.to_owned();
        self.read(move |conn, _| read::rollups(conn, &serial, Some(&field), from, to))
            .await
    }

    async fn alarm_episodes(&self, query: AlarmQuery) -> Result<Page<AlarmEpisode>, StoreError> {
        self.read(move |conn, _| read::alarm_episodes(conn, &query))
            .await
    }

    async fn list_orders(&self, query: OrderQuery) -> Result<Page<Order>, StoreError> {
        self.read(move |conn, _| read::list_orders(conn, &query))
            .await
    }

    async fn order(&self, id: i64) -> Result<Option<Order>, StoreError> {
        self.read(move |conn, _| read::order(conn, id)).await
    }

    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Page<DeadLetter>, StoreError> {
        self.read(move |conn, _| read::dead_letters(conn, &query))
            .await
    }

    async fn delete_readings_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.write_keeping_cache(move |conn, _, readings| {
            let deleted = write::delete_readings_before(conn, before)?;
            readings.fetch_sub(
                deleted.min(readings.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            Ok(deleted)
        })
        .await
    }

    async fn mark_all_offline(&self, at: DateTime<Utc>) -> Result<u64, StoreError> {
        let _ = at;
        self.write(move |conn, _, _| write::mark_all_offline(conn))
            .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let readings = self.inner.readings.load(Ordering::Relaxed);
        let mut stats = self
            .read(move |conn, _| read::stats(conn, readings))
            .await?;
        stats.wal_bytes = self.wal_bytes();
        Ok(stats)
    }

    async fn fleet_overview(
        &self,
        now: DateTime<Utc>,
        silent_after: chrono::Duration,
    ) -> Result<FleetOverview, StoreError> {
        self.read(move |conn, _| overview::fleet_overview(conn, now, silent_after))
            .await
    }

    async fn order_counts_by_day(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.read(move |conn, _| overview::order_counts_by_day(conn, from, to))
            .await
    }

    async fn spool_peek(
        &self,
        max_readings: usize,
        max_bytes: usize,
    ) -> Result<Vec<SpoolChunk>, StoreError> {
        self.read(move |conn, _| spool::peek(conn, max_readings, max_bytes))
            .await
    }

    async fn spool_remove(&self, through: i64) -> Result<u64, StoreError> {
        self.write_keeping_cache(move |conn, _, _| spool::remove(conn, through))
            .await
    }

    async fn spool_stats(&self) -> Result<SpoolStats, StoreError> {
        self.read(move |conn, _| spool::stats(conn)).await
    }

    async fn journal_applied(&self) -> Result<Option<u64>, StoreError> {
        self.write_keeping_cache(move |conn, _, _| {
            use rusqlite::OptionalExtension;
            let through: Option<i64> = conn
                .query_row(
                    "SELECT applied_through FROM ingest_journal WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(convert::sql_err)?;
            Ok(through.and_then(|t| u64::try_from(t).ok()))
        })
        .await
    }
}

/// Most (month, serial) pairs one read refolds before it answers; the rest wait for the
/// consolidation loop (the read's findings say so).
const READ_FOLD_BOUND: usize = 1_000_000;

#[async_trait::async_trait]
impl ReliabilitySource for SqliteStore {
    async fn reliability_data_for(
        &self,
        request: DataRequest,
    ) -> Result<ReliabilityData, StoreError> {
        let period = request.period;
        if period.from >= period.to {
            return Err(StoreError::Invalid(format!(
                "the period's start {} is not before its end {}",
                period.from, period.to
            )));
        }
        let now = self.now();
        if let Some(as_of) = request.as_of {
            if as_of <= period.from {
                return Err(StoreError::Invalid(format!(
                    "as_of {as_of} is not after the period's start {}",
                    period.from
                )));
            }
            if as_of > now {
                return Err(StoreError::Invalid(format!(
                    "as_of {as_of} is in the future (now {now})"
                )));
            }
        }
        let folded = self.consolidate_exposure(READ_FOLD_BOUND).await?;
        let bounds = reliability::Bounds::of(&request, now);
        // the exposure scan dominates: two readers take a half of the months each
        let (from, to) = (bounds.from, bounds.full_end);
        let whole = async move {
            if to <= exposure::month_of(from) {
                return Ok(reliability::ExposurePart::default());
            }
            match reliability::split_months(from, to) {
                Some(mid) => {
                    let (early, late) = tokio::try_join!(
                        self.read(move |conn, _| reliability::exposure_part(conn, from, mid)),
                        self.read(move |conn, _| reliability::exposure_part(conn, mid, to)),
                    )?;
                    Ok::<_, StoreError>(early.then(late))
                }
                None => {
                    self.read(move |conn, _| reliability::exposure_part(conn, from, to))
                        .await
                }
            }
        };
        let partial = async move {
            if !bounds.partial_month() {
                return Ok((reliability::ExposurePart::default(), Vec::new()));
            }
            self.read(move |conn, _| {
                reliability::exposure_partial(conn, bounds.full_end, bounds.to)
            })
            .await
        };
        let (whole, (partial, partial_quality)) = tokio::try_join!(whole, partial)?;
        let exposure = whole.then(partial);
        let data = self
            .read(move |conn, opts| {
                reliability::reliability_data(
                    conn,
                    &opts.catalog,
                    request,
                    now,
                    exposure,
                    partial_quality,
                )
            })
            .await?;
        if folded.remaining > 0 {
            tracing::warn!(
                remaining = folded.remaining,
                "reliability read: device-months still wait for their fold"
            );
        }
        Ok(data)
    }

    async fn consolidate_exposure(
        &self,
        max_pairs: usize,
    ) -> Result<ConsolidationReport, StoreError> {
        self.write(move |conn, opts, _| {
            exposure::fold_dirty(conn, max_pairs, convert::ms(opts.clock.now()))
        })
        .await
    }

    async fn import_history(
        &self,
        kind: ImportKind,
        csv: String,
    ) -> Result<ImportReport, StoreError> {
        self.write(move |conn, opts, _| {
            import::import(conn, &opts.catalog, kind, &csv, opts.clock.now())
        })
        .await
    }

    async fn device_components(
        &self,
        serial: &Serial,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<fleetpulse_domain::history::DeviceComponent>, StoreError> {
        let serial = serial.clone();
        let now = self.now();
        let (to, known) = match as_of {
            Some(t) => (convert::ms(t.min(now)), convert::ms(t)),
            None => (convert::ms(now) + 1, i64::MAX),
        };
        self.read(move |conn, opts| {
            lives::device_components(conn, &opts.catalog, &serial, to, known)
        })
        .await
    }

    async fn device_maintenance(
        &self,
        serial: &Serial,
    ) -> Result<Vec<fleetpulse_domain::history::MaintenanceEntry>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, _| import::readback::maintenance(conn, &serial))
            .await
    }

    async fn device_meters(
        &self,
        serial: &Serial,
        query: fleetpulse_domain::history::MeterQuery,
    ) -> Result<Vec<fleetpulse_domain::history::MeterValue>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, opts| import::readback::meters(conn, &opts.catalog, &serial, &query))
            .await
    }
}

#[async_trait::async_trait]
impl fleetpulse_domain::store::PredictionStore for SqliteStore {
    async fn prediction_data(
        &self,
        as_of: DateTime<Utc>,
        history_days: u32,
        recent_days: u32,
    ) -> Result<fleetpulse_domain::prediction::PredictionData, StoreError> {
        self.read(move |conn, opts| {
            predictions::prediction_data(conn, &opts.catalog, as_of, history_days, recent_days)
        })
        .await
    }

    async fn apply_predictions(
        &self,
        run: fleetpulse_domain::store::PredictionRun,
        planner: Arc<dyn fleetpulse_domain::store::PredictionPlanner>,
    ) -> Result<fleetpulse_domain::store::RunReport, StoreError> {
        // orders change, and with a graceful end or a status the device rows: the
        // write path clears the writer's device cache
        self.write(move |conn, opts, _| {
            predictions::apply_predictions(conn, &run, &planner, opts.clock.now())
        })
        .await
    }

    async fn predictions(
        &self,
        query: fleetpulse_domain::store::PredictionQuery,
    ) -> Result<Page<fleetpulse_domain::store::StoredPrediction>, StoreError> {
        self.read(move |conn, _| predictions::predictions(conn, &query))
            .await
    }

    async fn save_models(
        &self,
        models: Vec<fleetpulse_domain::prediction::TrainedModel>,
    ) -> Result<usize, StoreError> {
        self.write_keeping_cache(move |conn, _, _| predictions::save_models(conn, &models))
            .await
    }

    async fn models_as_of(
        &self,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<fleetpulse_domain::prediction::TrainedModel>, StoreError> {
        self.read(move |conn, _| predictions::models_as_of(conn, as_of))
            .await
    }

    async fn model_reports(
        &self,
    ) -> Result<Vec<fleetpulse_domain::prediction::ModelReport>, StoreError> {
        self.read(move |conn, _| {
            Ok(predictions::models(conn, None, false)?
                .into_iter()
                .map(|m| m.report)
                .collect())
        })
        .await
    }

    async fn model(
        &self,
        version: &str,
    ) -> Result<Option<fleetpulse_domain::prediction::TrainedModel>, StoreError> {
        let version = version.to_owned();
        self.read(move |conn, _| {
            Ok(predictions::models(conn, Some(&version), false)?
                .into_iter()
                .next())
        })
        .await
    }

    async fn deployed_models(
        &self,
    ) -> Result<Vec<fleetpulse_domain::prediction::TrainedModel>, StoreError> {
        self.read(move |conn, _| predictions::models(conn, None, true))
            .await
    }

    async fn held_orders(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<fleetpulse_domain::store::HeldOrder>, StoreError> {
        self.read(move |conn, _| predictions::held_page(conn, after, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_domain::Policy;

    #[tokio::test]
    async fn the_writer_page_cache_is_the_configured_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (mib, kib) in [(8, -8_192_i64), (DEFAULT_CACHE_MIB, -16_384)] {
            let catalog =
                Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog");
            let policy =
                Policy::from_toml_str(include_str!("../../config/policy.toml")).expect("policy");
            let store = SqliteStore::open(
                &dir.path().join(format!("cache-{mib}.db")),
                StoreOptions {
                    clock: Default::default(),
                    catalog: Arc::new(catalog),
                    rules: Arc::new(fleetpulse_rules::CatalogRules::new(Arc::new(policy))),
                    unknown_device: UnknownDevicePolicy::AutoRegister,
                    durability: Durability::Full,
                    sink_spool: false,
                    cache_mib: mib,
                },
            )
            .await
            .expect("open");
            let writer = store.inner.writer.lock().expect("writer");
            let size: i64 = writer
                .conn
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .expect("pragma");
            assert_eq!(size, kib, "cache_mib = {mib}");
        }
    }
}
