//! Reliability data as the store hands it to the analytics crate: the population
//! (devices and their meter ages), operating hours per device and month (exposure, from
//! the runtime-hour meters), confirmed failure events, repair orders (for MTTR and
//! first-time fix) and alarm episodes (for the alarm Pareto). Plain rows, no I/O, no
//! statistics: `fleetpulse-store` produces a [`ReliabilityData`], `fleetpulse-analytics`
//! computes from it.
//!
//! Operating time is the device's runtime-hour meter, never calendar time. One incident
//! is one [`FailureRecord`]: an alarm episode that counts as a failure and the repair
//! order raised for it are linked (`alarm_episode_id`, `order_id`), not counted twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::serial::Serial;
use crate::store::StoreError;

/// A half-open calendar period `[from, to)` in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One device of the population, with its registry facts at the time of the query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PopulationDevice {
    pub serial: Serial,
    /// Catalog model id; `None` for a device registered before its model was known.
    pub model: Option<String>,
    /// `oxygen_concentrator`, `ventilator`, …
    pub kind: Option<String>,
    pub region: Option<String>,
    /// Runtime-hour meter at the start of the period (`None`: no reading before it).
    pub age_at_start: Option<f64>,
    /// Runtime-hour meter at the end of the period, or the last value known before it:
    /// the device's age for suspensions.
    pub age_at_end: Option<f64>,
}

/// Operating hours one device accumulated in one calendar month (UTC), from its
/// runtime-hour meter: the sum of non-negative increments between consecutive hourly
/// values (the first increment of a month starts from the meter's last value before
/// it). A decrease is a meter reset (counted; the step contributes the new value, at most
/// the hours elapsed, and later increments start from the new value); a silence longer
/// than the store's gap threshold is a gap (the meter's hours over it are still counted,
/// in the month where the meter speaks again, and reported). See docs/reliability-data.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExposureRow {
    pub serial: Serial,
    /// First instant of the month, UTC.
    pub month: DateTime<Utc>,
    /// Operating hours in the month.
    pub hours: f64,
    /// Meter resets seen in the month.
    pub resets: u32,
    /// Hours of the month inside silences longer than the gap threshold (a silence
    /// across a month boundary is split between the months; it is reported once, in the
    /// month where the meter speaks again).
    pub gap_hours: f64,
}

/// Where a failure event comes from, strongest evidence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureSource {
    /// A completed repair order whose outcome confirmed a failure.
    RepairOrder,
    /// Imported history (`fleetpulse import`).
    Import,
    /// An alarm episode whose catalog entry counts as a failure, not (yet) confirmed
    /// by a repair order.
    Alarm,
}

/// One confirmed failure incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureRecord {
    pub id: i64,
    pub serial: Serial,
    pub at: DateTime<Utc>,
    /// Runtime-hour meter at the failure (the device's age), when known.
    pub age_hours: Option<f64>,
    /// Fault or alarm code.
    pub code: Option<String>,
    /// Failure mode from the catalog (`compressor`, `sieve_bed`, …), when known.
    pub failure_mode: Option<String>,
    /// The component that failed (the event's own, else the catalog's owner of its
    /// failure mode), when known.
    #[serde(default)]
    pub component: Option<String>,
    pub source: FailureSource,
    pub order_id: Option<i64>,
    pub alarm_episode_id: Option<i64>,
}

/// A repair order of the period (any outcome), for MTTR and first-time fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepairRecord {
    pub order_id: i64,
    pub serial: Serial,
    pub cause: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// Completion or cancellation time; `None` while active.
    pub closed_at: Option<DateTime<Utc>>,
    /// `true` completed, `false` cancelled, `None` active.
    pub completed: Option<bool>,
    /// The completion outcome's `failure_confirmed`.
    pub failure_confirmed: Option<bool>,
    pub fault_code: Option<String>,
    pub labour_minutes: Option<u32>,
}

/// One alarm episode that started in the period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlarmRecord {
    pub serial: Serial,
    pub code: String,
    pub severity: Option<String>,
    pub started_at: DateTime<Utc>,
    pub duration_s: Option<f64>,
}

/// A data-quality finding the statistics must report rather than silently absorb.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataQualityIssue {
    pub serial: Serial,
    /// `meter_reset`, `gap` (also a device silent at the end of the period),
    /// `meter_jump` (an increment larger than the hours elapsed: capped at them),
    /// `no_meter` (a device with no runtime-hour reading in the period),
    /// `failure_without_age`.
    pub kind: String,
    pub at: Option<DateTime<Utc>>,
    pub detail: String,
}

/// One life of one installed component inside the period (docs/reliability.md,
/// "Component lives and delayed entry"): from its installation (commissioning or a
/// renewal) to its failure, or a suspension at a renewal without failure or at the end
/// of the period. Ages are hours on the component's axis (`ages_on`) since it was fitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentLifeRecord {
    pub serial: Serial,
    /// Component id of the device's model.
    pub component: String,
    /// What its age is measured on: `runtime_hours`, `calendar`, `meter:<field>`.
    pub ages_on: String,
    /// When this part was fitted (`None`: the original part, fitted at an unknown time).
    pub installed_at: Option<DateTime<Utc>>,
    /// Age when observation began: 0 for a part fitted in the period, more for one that
    /// was already running (delayed entry, left truncation).
    pub entry: f64,
    /// Age at its failure or suspension.
    pub exit: f64,
    /// The failure mode it failed in; `None`: a suspension.
    pub failure_mode: Option<String>,
}

/// What to read for the reliability statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataRequest {
    pub period: Period,
    /// Nothing recorded at or after this instant is read: the period ends here when it
    /// is earlier, events and their later corrections (a retraction, a repair order's
    /// confirmation, an order's closure) are as they were known then. `None`: now.
    pub as_of: Option<DateTime<Utc>>,
    /// Whether to build the component lives (Weibull per component and failure mode).
    pub component_lives: bool,
}

impl DataRequest {
    /// The period as it is, read as of now, without component lives.
    pub fn period(period: Period) -> Self {
        Self {
            period,
            as_of: None,
            component_lives: false,
        }
    }
}

/// Everything the reliability statistics of one period read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityData {
    pub period: Option<Period>,
    /// The as-of time of the read (`None`: read as of now).
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    /// Lives of the installed components, when requested.
    #[serde(default)]
    pub component_lives: Vec<ComponentLifeRecord>,
    pub devices: Vec<PopulationDevice>,
    pub exposure: Vec<ExposureRow>,
    pub failures: Vec<FailureRecord>,
    pub repairs: Vec<RepairRecord>,
    pub alarms: Vec<AlarmRecord>,
    pub quality: Vec<DataQualityIssue>,
}

/// What one consolidation pass did: the (month, serial) pairs whose operating hours were
/// refolded from the hourly rollups, and how many rollup rows it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsolidationReport {
    /// (month, serial) pairs refolded.
    pub pairs: usize,
    /// Hourly `runtime_hours` rollup rows read.
    pub rollup_rows: usize,
    /// Pairs still marked dirty when the pass stopped (its bound was reached).
    pub remaining: usize,
}

/// What a history import loads (`fleetpulse import <kind>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// Devices with their commissioning: `serial, model, status, criticality, region,
    /// address, commissioned_at, runtime_hours_at_registration, observed_from`.
    Devices,
    /// Past failures: `serial, at, runtime_hours, fault_code, failure_mode, component,
    /// notes`.
    Failures,
    /// Meter history: `serial, at, runtime_hours, <hour meter>…` (wide).
    Meters,
    /// Telemetry backfill of registered devices, of any age: `serial, at, <field>…`
    /// (wide), written as hourly rollups.
    Telemetry,
    /// Past maintenance of a catalog kind (service, consumable, replacement, inspection,
    /// declared kinds): `serial, at, runtime_hours, kind, component, consumable, notes`.
    Maintenance,
    /// Past alarm (error) events as ended alarm episodes: `serial, started_at, ended_at,
    /// code, severity, runtime_hours`. They raise no failure event and no order.
    Alarms,
}

impl ImportKind {
    /// The kind's name, as in `fleetpulse import <kind>` and the import routes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Devices => "devices",
            Self::Failures => "failures",
            Self::Maintenance => "maintenance",
            Self::Meters => "meters",
            Self::Telemetry => "telemetry",
            Self::Alarms => "alarms",
        }
    }
}

/// One row of an import that was not loaded, by its line in the file (the header is
/// line 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportRowIssue {
    pub line: usize,
    pub reason: String,
}

/// What an import did. Bad rows do not stop the good ones; a row already imported
/// (same import key) is counted as a duplicate, not loaded twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Data rows read (blank lines excluded).
    pub rows: usize,
    /// Rows loaded by this import.
    pub imported: usize,
    /// Rows an earlier import of the same records already loaded.
    pub duplicates: usize,
    /// Rows left out because the store holds the same incident: a failure row with a
    /// recorded event (alarm or repair order) of the same device and code within 24
    /// hours; an alarm row overlapping an episode of the same code the device reported
    /// live.
    pub same_incident: Vec<ImportRowIssue>,
    /// Rows refused, with the reason.
    pub errors: Vec<ImportRowIssue>,
}

/// Reads the reliability data of a period.
#[async_trait::async_trait]
pub trait ReliabilitySource: Send + Sync + 'static {
    /// Devices, exposure, failures, repairs and alarm episodes of `period`, with the
    /// data-quality findings. Exposure is read from the consolidated device-month table,
    /// which the store keeps current from the hourly rollups (it refolds what changed
    /// before it reads).
    async fn reliability_data(&self, period: Period) -> Result<ReliabilityData, StoreError> {
        self.reliability_data_for(DataRequest::period(period)).await
    }

    /// The reliability data of `request.period` as of `request.as_of` (see
    /// [`DataRequest`]), with the component lives when requested. The period ends at the
    /// as-of time when that is earlier; operating hours, ages and findings stop there.
    async fn reliability_data_for(
        &self,
        request: DataRequest,
    ) -> Result<ReliabilityData, StoreError>;

    /// Refolds the operating hours of every (month, serial) whose rollups changed since
    /// the last pass, at most `max_pairs` of them. A source without a consolidated
    /// table has nothing to do.
    async fn consolidate_exposure(
        &self,
        max_pairs: usize,
    ) -> Result<ConsolidationReport, StoreError> {
        let _ = max_pairs;
        Ok(ConsolidationReport::default())
    }

    /// Loads history from CSV text (columns in docs/reliability-data.md). `Err` only for
    /// a file that cannot be read at all (no header, unknown or missing columns) or a
    /// store fault; bad rows are in the report.
    async fn import_history(
        &self,
        kind: ImportKind,
        csv: String,
    ) -> Result<ImportReport, StoreError> {
        let _ = (kind, csv);
        Err(StoreError::Invalid(
            "this store does not import history".into(),
        ))
    }

    /// The device's maintenance, oldest first: imported records and the consumables
    /// replaced by completed orders.
    async fn device_maintenance(
        &self,
        serial: &Serial,
    ) -> Result<Vec<crate::history::MaintenanceEntry>, StoreError> {
        let _ = serial;
        Ok(Vec::new())
    }

    /// The device's catalog components as of `as_of` (`None`: now): the part fitted then,
    /// its age and its lives (docs/reliability.md, "Component lives and delayed entry").
    async fn device_components(
        &self,
        serial: &Serial,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Vec<crate::history::DeviceComponent>, StoreError> {
        let _ = (serial, as_of);
        Ok(Vec::new())
    }

    /// The device's meter values, oldest first: imported meter history, and the hourly
    /// last values of live and back-filled telemetry.
    async fn device_meters(
        &self,
        serial: &Serial,
        query: crate::history::MeterQuery,
    ) -> Result<Vec<crate::history::MeterValue>, StoreError> {
        let _ = (serial, query);
        Ok(Vec::new())
    }
}
