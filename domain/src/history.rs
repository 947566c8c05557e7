//! A device's imported and recorded history as it is read back: maintenance (imported
//! records and the consumable replacements of completed orders) and meter readings
//! (imported meter history and the hourly values of live or back-filled telemetry).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One maintenance record of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MaintenanceEntry {
    pub at: DateTime<Utc>,
    /// The maintenance kind (`service`, `consumable`, `replacement`, `inspection` or a
    /// kind the catalog declares).
    pub kind: String,
    /// The component it concerns (catalog id), if any.
    pub component: Option<String>,
    /// The device's runtime-hour meter then, when known.
    pub runtime_hours: Option<f64>,
    /// `import` (a maintenance import) or `order` (a consumable replaced when a
    /// maintenance order was completed).
    pub source: String,
    /// With source `order`: the order.
    pub order_id: Option<i64>,
    pub notes: Option<String>,
}

/// One hourly value of a cumulative meter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeterValue {
    /// The meter field (`runtime_hours`, or another cumulative meter in hours).
    pub field: String,
    /// The start of the hour (live and back-filled telemetry) or the time of the
    /// imported reading.
    pub at: DateTime<Utc>,
    /// The meter: the last value of the hour for telemetry.
    pub value: f64,
    /// `import` (meter history), `backfill` (telemetry backfill) or `live`.
    pub source: String,
}

/// Which meter values to read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterQuery {
    /// One field; `None`: every meter field the device has values of.
    pub field: Option<String>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Before this time.
    pub to: Option<DateTime<Utc>>,
    /// At most this many values, oldest first.
    pub limit: usize,
}

/// One catalog component of a device: the part fitted now and its age, and its lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceComponent {
    /// Component id of the device's model.
    pub component: String,
    /// Its name.
    pub name: String,
    /// What its age is measured on: `runtime_hours`, `calendar`, `meter:<field>`.
    pub ages_on: String,
    /// Its failure modes.
    pub failure_modes: Vec<String>,
    /// When the part fitted now was fitted (commissioning or its last renewal); `None`:
    /// the original part, fitted at an unknown time.
    pub installed_at: Option<DateTime<Utc>>,
    /// The fitted part's age at the as-of time (hours on its axis), from the last
    /// reading before it; `None` when unknown.
    pub age_hours: Option<f64>,
    /// Its lives since the device was observed, oldest first; the last one, a
    /// suspension, is the part fitted now.
    pub lives: Vec<crate::reliability::ComponentLifeRecord>,
}
