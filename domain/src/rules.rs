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
use crate::order::{Cause, OrderIntent};
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

/// What the system does with the active order of a cause whose condition has gone
/// (from the policy's `[resolution]`, already decided for the device and cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveAction {
    /// Cancel the order now as resolved by the device.
    Close,
    /// Mark it cleared, and cancel it after this long unless the condition returns.
    CancelAfter(chrono::Duration),
    /// Mark it cleared; it stays open.
    Mark,
}

/// One step's news about the condition behind an order cause: it went, or it came back.
/// The store applies it to the device's active order of that cause, if there is one.
#[derive(Clone, Debug, PartialEq)]
pub enum ConditionChange {
    Gone {
        cause: Cause,
        action: ResolveAction,
        /// What showed it: the reading's `serial`, `seq`, `ts`, `field`, `value`.
        evidence: serde_json::Value,
    },
    Returned {
        cause: Cause,
        evidence: serde_json::Value,
    },
}

impl ConditionChange {
    pub fn cause(&self) -> &Cause {
        match self {
            ConditionChange::Gone { cause, .. } | ConditionChange::Returned { cause, .. } => cause,
        }
    }
}

/// Streaming rules: pure, fast, deterministic. Called inside the commit transaction.
pub trait OrderRules: Send + Sync + 'static {
    fn evaluate(
        &self,
        device: &DeviceContext<'_>,
        change: &StateChange<'_>,
        now: DateTime<Utc>,
    ) -> Vec<OrderIntent>;

    /// The causes whose condition this step showed gone or back (policy `[resolution]`).
    /// Called after [`Self::evaluate`] for the same step. None by default.
    fn resolve(
        &self,
        _device: &DeviceContext<'_>,
        _change: &StateChange<'_>,
    ) -> Vec<ConditionChange> {
        Vec::new()
    }
}
