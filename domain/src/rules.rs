//! The seam between committed state changes and orders.
//!
//! The store applies a batch reading by reading; for each reading that moves a device's
//! latest state forward it asks an [`OrderRules`] implementation which orders that step
//! calls for (so what the rules count does not depend on how readings were batched). The intents are
//! written in the same transaction as the readings, so a crash can never keep a
//! critical alarm and lose its repair order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmCode;
use crate::catalog::ModelSpec;
use crate::device::{Criticality, LifecycleStatus};
use crate::order::OrderIntent;
use crate::serial::Serial;
use crate::telemetry::Reading;

/// The newest known state of a device (from the reading with the highest `seq`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LatestState {
    pub seq: u64,
    pub ts: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    /// Last reported value of every field.
    pub values: BTreeMap<String, f64>,
    /// Alarm codes active now.
    pub alarms: Vec<AlarmCode>,
    pub firmware: Option<String>,
}

/// What the rules know about the device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceContext<'a> {
    pub serial: &'a Serial,
    /// The catalog entry of its model (`None`: model unknown or not in the catalog).
    pub model: Option<&'a ModelSpec>,
    pub criticality: Criticality,
    pub status: LifecycleStatus,
}

/// One step of a device's latest state: what one new reading changed.
#[derive(Clone, Copy, Debug)]
pub struct StateChange<'a> {
    pub before: Option<&'a LatestState>,
    pub after: &'a LatestState,
    /// The reading that made this step (fields it did not report keep their earlier
    /// values in `after`).
    pub reading: &'a Reading,
    /// Codes whose episode this reading opened (raised, not already active).
    pub opened_alarms: &'a [AlarmCode],
}

/// Streaming rules: pure, fast, deterministic. Called inside the commit transaction.
pub trait OrderRules: Send + Sync + 'static {
    fn evaluate(
        &self,
        device: &DeviceContext<'_>,
        change: &StateChange<'_>,
        now: DateTime<Utc>,
    ) -> Vec<OrderIntent>;
}
