//! The durable state every role shares, as a trait. Implementations: SQLite (the
//! embedded default, `fleetpulse-store`) and later PostgreSQL; both pass the same
//! conformance tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmCode, AlarmEpisode, Severity};
use crate::catalog::ModelId;
use crate::device::{ConnectionState, Criticality, DeviceKind, LifecycleStatus};
use crate::order::{Cause, Order, OrderKind, OrderStatus, Priority};
use crate::rules::LatestState;
use crate::serial::Serial;
use crate::telemetry::{Reading, RejectReason, StatusUpdate};

/// What to do with a reading from a serial nobody registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownDevicePolicy {
    /// Register it with status `unassigned` (model from the payload when the catalog
    /// knows it) and keep its readings.
    AutoRegister,
    /// Dead-letter its readings with reason `unknown_device`.
    Reject,
}

/// A message (or one reading of a backlog) that was refused, to be kept with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewDeadLetter {
    pub received_at: DateTime<Utc>,
    pub topic: String,
    /// MQTT client id of the sender.
    pub client_id: String,
    pub reason: RejectReason,
    pub detail: String,
    /// The payload as received (for a backlog element: that element as JSON).
    pub payload: Vec<u8>,
}

/// How long a refused message received again counts on its dead letter instead of adding
/// a row: from the dead letter's first receipt (`received_at`).
pub const DEAD_LETTER_REPEAT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// A stored dead letter. The same message refused again (same `client_id`, `topic`,
/// `reason` and payload bytes; for `payload_too_large`, whose payload is cut to its
/// first bytes, the same sizes in `detail` too) within [`DEAD_LETTER_REPEAT_WINDOW`] of
/// `received_at` counts on this row (`repeats`, `last_seen_at`): a resend after a lost
/// acknowledgement or a broker's redelivery adds no row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    /// When it was first received.
    pub received_at: DateTime<Utc>,
    pub topic: String,
    pub client_id: String,
    pub reason: RejectReason,
    pub detail: String,
    /// The payload, lossily decoded as UTF-8.
    pub payload: String,
    /// How many times the message was received and refused (1: once; more: resent or
    /// redelivered within 24 h of `received_at`).
    #[schema(minimum = 1)]
    pub repeats: u64,
    /// When it was last received (equals `received_at` when `repeats` is 1).
    pub last_seen_at: DateTime<Utc>,
}

/// Everything one ingest batch commits, in one transaction. Serializable: the ingest
/// journal keeps accepted batches on disk until they are applied.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IngestBatch {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<NewDeadLetter>,
    pub statuses: Vec<StatusUpdate>,
    /// Connections that ended, and how (applied after `statuses`).
    #[serde(default)]
    pub connection_ends: Vec<ConnectionEnd>,
    /// The ingest journal record this batch completes: the store records it in the
    /// same transaction, so after a crash the journal is replayed from the record after
    /// it (see [`Store::journal_applied`]). `None` without a journal.
    #[serde(skip)]
    pub journal_through: Option<u64>,
}

impl IngestBatch {
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
            && self.dead_letters.is_empty()
            && self.statuses.is_empty()
            && self.connection_ends.is_empty()
    }
}

/// A device connection that ended. The built-in endpoint knows how: `graceful` for an
/// MQTT DISCONNECT or an `offline` status the device published itself, not graceful when
/// it publishes the device's last will (socket closed, keepalive timeout, network loss).
/// A bare `offline` status without this note (an external broker's will and a device's
/// own goodbye look alike there) is recorded as lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionEnd {
    pub serial: Serial,
    pub at: DateTime<Utc>,
    pub graceful: bool,
}

/// An order the commit created or updated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderChange {
    pub order_id: i64,
    pub serial: Serial,
    pub cause: Cause,
    /// `true`: a new order; `false`: a repeat trigger updated the active one.
    pub created: bool,
}

/// What a commit did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommitReport {
    /// New readings stored.
    pub stored: usize,
    /// Readings already stored (same serial and seq): ignored.
    pub duplicates: usize,
    /// Refused entries committed as dead letters (including readings refused by the
    /// unknown-device policy), those counted on an existing row included.
    pub dead_lettered: usize,
    /// The same entries counted by reason.
    pub dead_letter_reasons: BTreeMap<RejectReason, usize>,
    /// Of `dead_lettered`, the entries that were a message already dead-lettered
    /// (received again): counted on its row (`repeats`) instead of adding one.
    pub dead_letter_repeats: usize,
    /// Devices registered by the `auto_register` policy.
    pub registered: usize,
    pub orders: Vec<OrderChange>,
    /// New readings appended to the sink spool (0 when the store keeps no spool).
    pub spooled: usize,
    /// Bytes of line protocol appended to the sink spool.
    pub spooled_bytes: usize,
}

/// A device to register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub serial: Serial,
    pub model: ModelId,
    #[serde(default)]
    pub status: Option<LifecycleStatus>,
    /// Defaults to the model's `default_criticality`.
    #[serde(default)]
    pub criticality: Option<Criticality>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    /// When the device entered service (its components' installation, its age from 0);
    /// unknown when absent. Not in the future.
    #[serde(default)]
    pub commissioned_at: Option<DateTime<Utc>>,
    /// Its runtime-hour meter when it joined the fleet (a device registered mid-life).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub runtime_hours_at_registration: Option<f64>,
    /// From when its failures and replacements are complete (history before it is
    /// partial: lives that began earlier enter late). Not before `commissioned_at`.
    #[serde(default)]
    pub observed_from: Option<DateTime<Utc>>,
}

impl NewDevice {
    /// Checks the commissioning facts against each other and `now`; the text names the
    /// field.
    pub fn check_history(&self, now: DateTime<Utc>) -> Result<(), String> {
        if let Some(h) = self.runtime_hours_at_registration
            && !(h.is_finite() && h >= 0.0)
        {
            return Err(format!(
                "runtime_hours_at_registration = {h} must be a non-negative number"
            ));
        }
        if let Some(t) = self.commissioned_at
            && t > now
        {
            return Err(format!(
                "commissioned_at {} is in the future",
                t.to_rfc3339()
            ));
        }
        if let Some(t) = self.observed_from
            && t > now
        {
            return Err(format!("observed_from {} is in the future", t.to_rfc3339()));
        }
        if let (Some(c), Some(o)) = (self.commissioned_at, self.observed_from)
            && o < c
        {
            return Err(format!(
                "observed_from {} is before commissioned_at {}",
                o.to_rfc3339(),
                c.to_rfc3339()
            ));
        }
        Ok(())
    }
}

/// A device in the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    pub serial: Serial,
    pub model: Option<ModelId>,
    pub kind: Option<DeviceKind>,
    pub status: LifecycleStatus,
    pub criticality: Criticality,
    pub region: Option<String>,
    pub address: Option<String>,
    pub firmware: Option<String>,
    pub connection: ConnectionState,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When it entered service, when known.
    pub commissioned_at: Option<DateTime<Utc>>,
    /// Its runtime-hour meter when it joined the fleet, when known.
    pub runtime_hours_at_registration: Option<f64>,
    /// From when its failures and replacements are complete, when known.
    pub observed_from: Option<DateTime<Utc>>,
}

/// A device with its latest state (list view).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceSummary {
    #[serde(flatten)]
    pub device: Device,
    pub latest: Option<LatestState>,
}

/// A device with everything a dispatcher looks at first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: Device,
    pub latest: Option<LatestState>,
    pub open_alarms: Vec<AlarmEpisode>,
    pub open_orders: Vec<Order>,
}

/// A stored reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredReading {
    pub serial: Serial,
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub alarms: Option<Vec<AlarmCode>>,
    pub values: std::collections::BTreeMap<String, f64>,
}

/// Hourly aggregate of one field of one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rollup {
    pub serial: Serial,
    /// Start of the hour (device time).
    pub hour: DateTime<Utc>,
    pub field: String,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// Value of the reading with the highest seq in the hour.
    pub last: f64,
}

/// Keyset pagination: pass `next` back as `after` for the next page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceQuery {
    /// Return serials strictly after this one.
    pub after: Option<String>,
    pub limit: usize,
    pub status: Option<LifecycleStatus>,
    pub model: Option<String>,
    /// Devices of this region only.
    pub region: Option<String>,
    pub criticality: Option<crate::device::Criticality>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReadingQuery {
    pub serial: Serial,
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Return readings strictly after this one in (device time, seq) order.
    pub after: Option<ReadingCursor>,
    pub limit: usize,
}

/// Where a page of one device's readings ended: readings are ordered by device time,
/// then seq, and (time, seq) is unique per device because seq is. Written as
/// `<device time in Unix ms>_<seq>` (e.g. `1767225600000_42`): opaque to clients, who
/// pass a page's `next` back as `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadingCursor {
    /// Device time of the last reading of the page, Unix milliseconds.
    pub ts_ms: i64,
    /// Its sequence number (the store keeps seqs as SQL integers: at most `i64::MAX`).
    pub seq: i64,
}

impl ReadingCursor {
    /// The pattern a cursor matches (for the OpenAPI document): digits on both sides
    /// (a time before 1970 is negative), few enough that each fits an `i64`.
    pub const PATTERN: &'static str = "^-?[0-9]{1,18}_[0-9]{1,18}$";

    /// Parses a cursor as [`std::fmt::Display`] writes it; `None` for anything that does
    /// not match [`Self::PATTERN`] (a `+`, spaces, oversized numbers).
    pub fn parse(raw: &str) -> Option<Self> {
        let (ts, seq) = raw.split_once('_')?;
        let digits = |s: &str| {
            (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i64>().ok())
                .flatten()
        };
        let ts_ms = match ts.strip_prefix('-') {
            Some(magnitude) => -digits(magnitude)?,
            None => digits(ts)?,
        };
        Some(Self {
            ts_ms,
            seq: digits(seq)?,
        })
    }
}

impl std::fmt::Display for ReadingCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.ts_ms, self.seq)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderQuery {
    pub status: Option<OrderStatus>,
    /// Only active orders (open … in_progress) when `status` is not given.
    pub active_only: bool,
    pub serial: Option<Serial>,
    pub cause: Option<Cause>,
    pub kind: Option<OrderKind>,
    pub priority: Option<Priority>,
    /// Return orders with id strictly after this one.
    pub after: Option<i64>,
    pub limit: usize,
    /// Orders of devices in this region.
    pub region: Option<String>,
    /// Orders of devices of this model.
    pub model: Option<String>,
    /// Orders changed at or after this time (`updated_at`).
    pub updated_since: Option<DateTime<Utc>>,
    /// Orders in this SLA state at `now`.
    pub sla: Option<(crate::order::SlaState, DateTime<Utc>)>,
}

/// Query of one device's alarm episodes; filters combine.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmQuery {
    pub serial: Serial,
    /// `Some(true)`: only episodes still open; `Some(false)`: only ended ones.
    pub active: Option<bool>,
    pub severity: Option<Severity>,
    pub code: Option<AlarmCode>,
    /// Episodes that started at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Episodes that started before this time.
    pub to: Option<DateTime<Utc>>,
    /// Episodes after this one in the list's order (newest first): the previous page's
    /// `next`, `<started_at in Unix ms>_<episode id>` in [`ReadingCursor`]'s form (its
    /// `seq` is the episode id).
    pub after: Option<ReadingCursor>,
    pub limit: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeadLetterQuery {
    pub reason: Option<RejectReason>,
    /// Return ids strictly after this one.
    pub after: Option<i64>,
    pub limit: usize,
}

/// Counts for health checks, tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreStats {
    pub devices: u64,
    pub readings: u64,
    pub dead_letters: u64,
    pub open_alarm_episodes: u64,
    pub active_orders: u64,
    pub orders: u64,
    /// Size of the store's write-ahead log in bytes (SQLite's `-wal` file; 0 when there
    /// is none). Stays near or under 64 MiB; more means checkpoints cannot finish
    /// (`docs/operations.md`).
    #[serde(default)]
    pub wal_bytes: u64,
}

/// One bucket of a breakdown: a key (a status, a model id, a region, …) and how many
/// things have it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

impl Count {
    /// The breakdown of `pairs` as the store answers it: counts of the same key added
    /// up, keys counted zero times left out, most frequent first and equal counts by
    /// key, so the order never depends on how the rows were read.
    pub fn ranked(pairs: impl IntoIterator<Item = (String, u64)>) -> Vec<Count> {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for (key, count) in pairs {
            *sums.entry(key).or_default() += count;
        }
        let mut out: Vec<Count> = sums
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(key, count)| Count { key, count })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        out
    }

    /// The count of `key` in a breakdown; 0 when it is not there (a breakdown leaves out
    /// the keys it counted zero times).
    pub fn of(list: &[Count], key: &str) -> u64 {
        list.iter().find(|c| c.key == key).map_or(0, |c| c.count)
    }
}

/// The key under which [`FleetOverview`] counts devices without a model or a region,
/// and alarm episodes whose code has no severity in the catalog.
pub const UNKNOWN_KEY: &str = "unknown";

/// The key of [`FleetOverview::by_connection`] for silent devices.
pub const SILENT_KEY: &str = "silent";

/// The fleet at a glance, for the overview page: every figure is a count the store makes
/// itself (in SQLite, `GROUP BY` over indexes), so the caller receives counts, never the
/// rows behind them. Each breakdown is a [`Count`] list ordered as [`Count::ranked`] orders it (most frequent
/// first, then by key) and leaves out keys counted zero times: read a key with
/// [`Count::of`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetOverview {
    /// Every device in the registry, retired ones included.
    pub devices: u64,
    /// Devices by lifecycle status (`at_customer`, `in_stock`, …).
    pub by_status: Vec<Count>,
    /// Devices by catalog model id; `unknown` for devices registered without one.
    pub by_model: Vec<Count>,
    /// Devices by region; `unknown` for devices without one.
    pub by_region: Vec<Count>,
    /// Devices by criticality (`life_supporting`, `high`, `standard`).
    pub by_criticality: Vec<Count>,
    /// Devices by connection: `online`, `offline`, `unreachable` and `unknown` as the
    /// registry holds it, and `silent`. A device is **silent** at `now` when it is
    /// `at_customer` (the one status the silent-device rule watches), has reported at
    /// least once, its last report (`last_seen_at`) is at least `silent_after` old
    /// (`last_seen_at <= now - silent_after`), and its last connection did not end
    /// gracefully at or after that report (a device switched off normally, with an MQTT
    /// DISCONNECT or its own `offline`, is not silent). These are the silent-device
    /// rule's conditions (`fleetpulse_rules::silent`) but one: the rule also waits out
    /// the device's habitual off-time (up to 7 days, from its daily history), which only
    /// a prediction run computes, so a device used on weekdays only shows here as silent
    /// over a weekend before the rule raises its inspection order. A device that never
    /// reported is not silent: it stays in its connection bucket (`unknown`, as a rule).
    /// A silent device is counted under `silent` only, not under its connection.
    pub by_connection: Vec<Count>,
    /// Open alarm episodes (not yet ended) by severity (`critical`, `warning`, `info`;
    /// `unknown` for codes the catalog gives no severity).
    pub active_alarms_by_severity: Vec<Count>,
    /// Active orders (`open`, `acknowledged`, `assigned`, `in_progress`) by status.
    pub orders_by_status: Vec<Count>,
    /// Active orders by priority (`P1` … `P4`).
    pub orders_by_priority: Vec<Count>,
    /// Active orders by SLA state at `now` (`breached`, `at_risk`, `on_track`): the
    /// states [`OrderQuery::sla`] filters on ([`crate::order::SlaState`]).
    pub orders_by_sla: Vec<Count>,
    /// Dead letters first received in `[now - 24 h, now)` (rows, as the dead-letter list
    /// shows them: a message refused again within 24 h of its first receipt counts on
    /// its row, not again).
    pub dead_letters_24h: u64,
    /// The same dead letters by reason.
    pub dead_letters_by_reason_24h: Vec<Count>,
}

/// How much active work falls due on one UTC day (the planner's calendar): the active
/// orders whose SLA completion deadline (`sla.complete_by`) is on that day.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayCount {
    /// The UTC day, e.g. `2026-03-01`.
    pub day: chrono::NaiveDate,
    /// Active orders due that day.
    pub orders: u64,
    /// The same orders by priority: always `P1` to `P4` in that order, zeros included,
    /// so every day has the same series (a stacked bar per day).
    pub by_priority: Vec<Count>,
    /// Standard labour of that work in minutes: each order's own plus that of the tasks
    /// bundled into its visit. What the day asks of the engineers, where a count of
    /// orders treats a five-minute check like a day's repair.
    pub labour_minutes: u64,
}

/// One committed batch's new readings, waiting for the time-series sink, as line
/// protocol ([`crate::line_protocol`], millisecond precision).
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolChunk {
    /// Position in the spool: chunks are delivered in id order.
    pub id: i64,
    /// When the batch carrying these readings committed.
    pub created_at: DateTime<Utc>,
    /// Points (lines) in `body`.
    pub readings: usize,
    pub body: String,
}

/// How much the sink spool holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpoolStats {
    pub chunks: u64,
    pub readings: u64,
    pub bytes: u64,
    /// Commit time of the oldest chunk still waiting.
    pub oldest: Option<DateTime<Utc>>,
}

/// Errors of a store. `retriable` says whether trying the same call again can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Everything durable the roles share.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits a batch in one transaction and returns once it is durable: readings
    /// (deduplicated on (serial, seq)), latest state, hourly rollups, alarm episodes,
    /// status updates, dead letters, and the orders the rules raise from the changes.
    /// Readings of unknown serials follow the store's [`UnknownDevicePolicy`].
    async fn commit_batch(&self, batch: IngestBatch) -> Result<CommitReport, StoreError>;

    /// [`commit_batch`](Self::commit_batch) for a caller that keeps the batch to retry
    /// it: the store reads the batch instead of taking it, so a retry does not need a
    /// copy of every reading. The default copies; stores override it to avoid that.
    async fn commit_shared(
        &self,
        batch: std::sync::Arc<IngestBatch>,
    ) -> Result<CommitReport, StoreError> {
        self.commit_batch(IngestBatch::clone(&batch)).await
    }

    /// Registers a device. `Conflict` if the serial exists (unless it is `unassigned`:
    /// then the registration completes it), `Invalid` if the model is not in the catalog.
    async fn register_device(&self, device: NewDevice) -> Result<Device, StoreError>;

    async fn device(&self, serial: &Serial) -> Result<Option<DeviceDetail>, StoreError>;

    async fn list_devices(&self, query: DeviceQuery) -> Result<Page<DeviceSummary>, StoreError>;

    /// Readings of one device in (device time, seq) order, keyset-paginated: a page as
    /// long as its limit carries the cursor of its last reading in `next`.
    async fn readings(&self, query: ReadingQuery) -> Result<Page<StoredReading>, StoreError>;

    /// Hourly rollups of one device in `[from, to)`.
    async fn rollups(
        &self,
        serial: &Serial,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError>;

    /// Hourly rollups of one field of one device in `[from, to)`. The default reads every
    /// field and keeps the one; a store that can select it reads only that.
    async fn field_rollups(
        &self,
        serial: &Serial,
        field: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Rollup>, StoreError> {
        let mut rows = self.rollups(serial, from, to).await?;
        rows.retain(|r| r.field == field);
        Ok(rows)
    }

    /// Alarm episodes of one device matching `query`, newest first (by start, then id),
    /// keyset-paginated.
    async fn alarm_episodes(&self, query: AlarmQuery) -> Result<Page<AlarmEpisode>, StoreError>;

    async fn list_orders(&self, query: OrderQuery) -> Result<Page<Order>, StoreError>;

    async fn order(&self, id: i64) -> Result<Option<Order>, StoreError>;

    async fn dead_letters(&self, query: DeadLetterQuery) -> Result<Page<DeadLetter>, StoreError>;

    /// Deletes raw readings with device time before `before` (rollups are kept).
    /// Returns how many were deleted.
    async fn delete_readings_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Marks every device `offline` (used at start: no connection survives a restart).
    async fn mark_all_offline(&self, at: DateTime<Utc>) -> Result<u64, StoreError>;

    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// The fleet at a glance at `now` (see [`FleetOverview`] for what each count is);
    /// `silent_after` is the policy's `prediction.silent_after`. Counted by the store
    /// (no row is read into the caller), in one read snapshot.
    async fn fleet_overview(
        &self,
        now: DateTime<Utc>,
        silent_after: chrono::Duration,
    ) -> Result<FleetOverview, StoreError>;

    /// Active orders whose SLA completion deadline (`sla.complete_by`) is in
    /// `[from, to)`, counted per UTC day of that deadline, oldest day first; days with
    /// no such order are left out. Pass midnights for whole days.
    async fn order_counts_by_day(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayCount>, StoreError>;

    /// The oldest chunks of the time-series sink spool, in commit order: the first chunk
    /// whatever its size, then more while the totals stay within `max_readings` and
    /// `max_bytes`. The spool is a transactional outbox: [`Store::commit_batch`] appends
    /// a batch's new readings in the same transaction that stores them, so every stored
    /// reading is spooled exactly once. Stores opened without a spool answer `Invalid`.
    async fn spool_peek(
        &self,
        max_readings: usize,
        max_bytes: usize,
    ) -> Result<Vec<SpoolChunk>, StoreError> {
        let _ = (max_readings, max_bytes);
        Err(no_spool())
    }

    /// Removes the spool chunks with id up to `through` (the sink has them). Returns
    /// how many were removed.
    async fn spool_remove(&self, through: i64) -> Result<u64, StoreError> {
        let _ = through;
        Err(no_spool())
    }

    /// The last ingest journal record whose batch is committed (`None`: none yet).
    async fn journal_applied(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// What the spool holds.
    async fn spool_stats(&self) -> Result<SpoolStats, StoreError> {
        Err(no_spool())
    }
}

fn no_spool() -> StoreError {
    StoreError::Invalid("this store keeps no time-series sink spool".into())
}

// ---------------------------------------------------------------------------------------
// Predictions: what the analytics worker reads and writes, and how predictions become
// orders (planned by a pure [`PredictionPlanner`], applied by the store in one
// transaction).

use crate::order::{OrderIntent, OrderTask};
use crate::prediction::{ModelReport, Prediction, PredictionData, PredictionKind, TrainedModel};

/// An active order of a device, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveOrder {
    pub id: i64,
    pub cause: Cause,
    pub created_at: DateTime<Utc>,
    pub due_at: Option<DateTime<Utc>>,
    /// Causes of the tasks bundled into it.
    pub task_causes: Vec<Cause>,
}

/// A device that has predictions in a run, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanDevice {
    pub serial: Serial,
    pub model: Option<String>,
    pub criticality: Criticality,
    pub status: LifecycleStatus,
    pub region: Option<String>,
    pub active: Vec<ActiveOrder>,
}

/// A predicted order held back by storm control.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldOrder {
    /// Position in the queue (release order within a priority).
    pub id: i64,
    pub serial: Serial,
    pub cause: Cause,
    pub priority: Priority,
    pub region: Option<String>,
    pub due_at: Option<DateTime<Utc>>,
    pub held_at: DateTime<Utc>,
    /// `fleet_limit` or `region_limit`: which hourly limit was full.
    pub reason: String,
    /// The order it becomes when released.
    pub intent: OrderIntent,
    /// Work bundled into it.
    #[serde(default)]
    pub tasks: Vec<OrderTask>,
}

/// Predicted orders created in the last 60 minutes (the storm-control window).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StormCounts {
    pub fleet: u32,
    /// Per region; devices without a region under `""`.
    pub by_region: BTreeMap<String, u32>,
}

/// What the planner is given: the run's predictions, the devices they are about, the
/// storm-control state and the clock.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub predictions: &'a [Prediction],
    pub devices: &'a BTreeMap<Serial, PlanDevice>,
    pub counts: &'a StormCounts,
    /// The queue, in release order (priority, then arrival).
    pub held: &'a [HeldOrder],
    pub now: DateTime<Utc>,
}

/// A predicted order with its due date.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedOrder {
    pub intent: OrderIntent,
    pub due_at: Option<DateTime<Utc>>,
    /// Further work of the same device due within the bundle window: one visit.
    pub tasks: Vec<OrderTask>,
}

/// One thing the store does with a run's result.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanAction {
    /// Create the order, or update the active one for the same (serial, cause) like a
    /// repeat trigger (its due date becomes the latest forecast's). `predictions` are
    /// the indexes in the run of the predictions it carries (empty: a held order
    /// released).
    Raise {
        order: PlannedOrder,
        predictions: Vec<usize>,
        /// The queue entry this releases.
        released: Option<i64>,
    },
    /// Add (or update) a task on an active order of the same device.
    Bundle {
        order_id: i64,
        task: OrderTask,
        prediction: usize,
    },
    /// Remove a held order no prediction of this run calls for any more (the device
    /// reported again, the forecast moved out of the horizon).
    Drop { queue_id: i64 },
    /// Hold the order in the storm queue (or update the held entry of its cause).
    Hold {
        order: PlannedOrder,
        region: Option<String>,
        reason: String,
        predictions: Vec<usize>,
    },
    /// Mark an active failure-risk order: the run's prediction of its mode fell below the
    /// model's threshold (policy `[resolution] failure_risk = "mark"`). The order stays
    /// open; a later prediction at or above the threshold clears the mark.
    RiskFell {
        order_id: i64,
        prediction: usize,
        probability: f64,
        threshold: f64,
    },
}

/// Turns predictions into order actions. Pure and deterministic.
pub trait PredictionPlanner: Send + Sync + 'static {
    fn plan(&self, input: &PlanInput<'_>) -> Vec<PlanAction>;
}

/// One run of the predictors, to be stored and turned into orders.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionRun {
    pub as_of: DateTime<Utc>,
    /// `schedule`, `api` or `cli`.
    pub trigger: String,
    /// Devices the data covered.
    pub devices: usize,
    pub predictions: Vec<Prediction>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReport {
    pub run_id: i64,
    pub as_of: Option<DateTime<Utc>>,
    pub devices: usize,
    pub predictions: usize,
    /// New orders.
    pub raised: usize,
    /// Active orders a prediction triggered again.
    pub updated: usize,
    /// Tasks added to (or updated on) an active order's visit.
    pub bundled: usize,
    /// Orders held by storm control in this run.
    pub held: usize,
    /// Held orders released in this run.
    pub released: usize,
    /// Held orders dropped: no prediction of this run calls for them any more.
    #[serde(default)]
    pub dropped: usize,
    /// Orders still waiting in the queue after the run.
    pub queued: usize,
    /// Active failure-risk orders marked in this run: their risk fell below the threshold.
    #[serde(default)]
    pub risk_cleared: usize,
    /// Order changes for the stream and the webhooks.
    pub orders: Vec<OrderChange>,
    /// Whether the run was stored and its orders applied. `false` for a run as of a time
    /// before now: a forecast of the past raises, updates, holds and releases no order
    /// and is not stored (`run_id` 0); its predictions are in `forecasts`.
    #[serde(default = "applied")]
    pub orders_applied: bool,
    /// The predictions of a run whose orders were not applied (the stored ones of an
    /// applied run are at `GET /api/v1/predictions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forecasts: Vec<crate::prediction::Prediction>,
    /// Why the orders were not applied: `orders: not applied (as_of before now)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Runs stored before `orders_applied` existed applied their orders.
const fn applied() -> bool {
    true
}

/// A stored prediction with the order it raised (or whose visit carries it as a task).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredPrediction {
    #[serde(flatten)]
    pub prediction: Prediction,
    pub order_id: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PredictionQuery {
    pub serial: Option<Serial>,
    pub kind: Option<PredictionKind>,
    pub target: Option<String>,
    /// Keyset cursor: the `next` of the previous page.
    pub after: Option<(String, String, String)>,
    pub limit: usize,
    /// Only predictions with a due date before this instant (the planner's window).
    pub due_before: Option<DateTime<Utc>>,
    /// Only predictions with a probability at or above this (devices at risk).
    pub min_probability: Option<f64>,
}

/// Predictions, their runs, trained models and the storm queue.
#[async_trait::async_trait]
pub trait PredictionStore: Send + Sync + 'static {
    /// What the predictors read as of `as_of`: every device not retired, with
    /// `history_days` of daily summaries folded from the hourly rollups, `recent_days`
    /// of hourly last values, alarm episodes, failure events, replacements,
    /// connectivity and the outcomes of orders raised by predictions. Nothing after
    /// `as_of`.
    async fn prediction_data(
        &self,
        as_of: DateTime<Utc>,
        history_days: u32,
        recent_days: u32,
    ) -> Result<PredictionData, StoreError>;

    /// Stores a run (latest prediction per serial, kind and target; the run's history
    /// row) and applies what `planner` makes of it, in one transaction. A run with no
    /// predictions still releases held orders the hourly limits now allow.
    async fn apply_predictions(
        &self,
        run: PredictionRun,
        planner: std::sync::Arc<dyn PredictionPlanner>,
    ) -> Result<RunReport, StoreError>;

    /// Stored predictions, keyset-paginated by (serial, kind, target).
    async fn predictions(
        &self,
        query: PredictionQuery,
    ) -> Result<Page<StoredPrediction>, StoreError>;

    /// Stores trained models with their as-of (`report.as_of`, else `report.trained_at`);
    /// each with `report.deployed` replaces the deployed model of its failure mode (one
    /// deployed per mode), unless that one was trained as of a later time: a model of a
    /// back-test does not displace the one that scores the fleet now.
    async fn save_models(&self, models: Vec<TrainedModel>) -> Result<usize, StoreError>;

    /// The model of each failure mode that scored the fleet as of `as_of`, as far as the
    /// store knows: the one with the latest as-of up to `as_of` whose training decided to
    /// deploy it. A model trained on data from after `as_of` is never among them.
    async fn models_as_of(&self, as_of: DateTime<Utc>) -> Result<Vec<TrainedModel>, StoreError>;

    /// Reports of every stored model, newest first.
    async fn model_reports(&self) -> Result<Vec<ModelReport>, StoreError>;

    async fn model(&self, version: &str) -> Result<Option<TrainedModel>, StoreError>;

    /// The deployed model of each failure mode.
    async fn deployed_models(&self) -> Result<Vec<TrainedModel>, StoreError>;

    /// The storm-control queue in release order (priority, then arrival), paginated by
    /// position.
    async fn held_orders(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<HeldOrder>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::{Count, ReadingCursor};

    #[test]
    fn a_breakdown_adds_up_its_keys_drops_zeros_and_ranks_by_count_then_key() {
        let ranked = Count::ranked([
            ("b".to_owned(), 2),
            ("c".to_owned(), 0),
            ("a".to_owned(), 1),
            ("d".to_owned(), 3),
            ("a".to_owned(), 1),
        ]);
        let pairs: Vec<(&str, u64)> = ranked.iter().map(|c| (c.key.as_str(), c.count)).collect();
        assert_eq!(pairs, [("d", 3), ("a", 2), ("b", 2)]);
        assert_eq!(Count::of(&ranked, "a"), 2);
        assert_eq!(Count::of(&ranked, "c"), 0);
    }

    #[test]
    fn a_reading_cursor_reads_back_what_it_writes_and_nothing_else() {
        for cursor in [
            ReadingCursor {
                ts_ms: 1_767_225_600_000,
                seq: 42,
            },
            ReadingCursor { ts_ms: -5, seq: 0 },
        ] {
            assert_eq!(ReadingCursor::parse(&cursor.to_string()), Some(cursor));
        }
        for bad in [
            "", "12", "_1", "1_", "+1_2", "1_+2", " 1_2", "1_2 ", "1_-2", "a_1", "1_2_3",
        ] {
            assert_eq!(ReadingCursor::parse(bad), None, "{bad:?}");
        }
        // 19 digits could overflow an i64: the pattern stops at 18
        assert_eq!(ReadingCursor::parse("9999999999999999999_1"), None);
        assert!(ReadingCursor::parse("999999999999999999_999999999999999999").is_some());
    }
}
