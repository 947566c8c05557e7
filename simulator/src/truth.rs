//! Ground truth: what the simulated fleet really did, to check fleetpulse's conclusions
//! against. One JSON object per event (`{"event":"failure",…}`), written as JSON lines.
//!
//! Times: `ts` is the wall-clock timestamp of the reading that first shows the event
//! (device timestamps are wall-clock, see the crate documentation); `sim_hours` is the
//! simulated clock since the fleet started, `runtime_hours` the device's meter.

use chrono::{DateTime, Utc};
use fleetpulse_domain::{AlarmCode, Serial};
use serde::{Deserialize, Serialize};

/// Where and when a precursor signal began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrecursorStart {
    pub ts: DateTime<Utc>,
    pub sim_hours: f64,
    pub runtime_hours: f64,
    /// The fields that drift.
    pub fields: Vec<String>,
}

/// One ground-truth event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TruthEvent {
    /// A component failed: its failure mode's critical alarm is raised in the reading at
    /// `ts` and stays active until the repair.
    Failure {
        serial: Serial,
        model: String,
        failure_mode: String,
        alarm_code: AlarmCode,
        ts: DateTime<Utc>,
        sim_hours: f64,
        /// Device runtime meter at the failure.
        runtime_hours: f64,
        /// Runtime hours of the failed component since it was new (its drawn lifetime).
        component_hours: f64,
        /// `true` when the component was fitted new during the simulation (a repair), so
        /// its lifetime is an unconditional Weibull draw; `false` for an original part of
        /// a device that entered the simulation used (a draw conditional on its age).
        component_fitted_in_sim: bool,
        /// `None` when the mode has no precursor the device reports, or this failure
        /// came without one.
        precursor_start: Option<PrecursorStart>,
        /// Strength of the precursor: 1 full shift, 1/3 weak, 0 none.
        #[serde(default)]
        precursor_strength: f64,
    },
    /// The failed component was replaced: the alarm clears, the component's age resets.
    Repair {
        serial: Serial,
        model: String,
        failure_mode: String,
        alarm_code: AlarmCode,
        ts: DateTime<Utc>,
        sim_hours: f64,
        runtime_hours: f64,
        /// Simulated hours the device was down.
        downtime_hours: f64,
    },
    /// A consumable was replaced (its field jumps back to 100).
    ConsumableReplaced {
        serial: Serial,
        model: String,
        consumable: String,
        field: String,
        ts: DateTime<Utc>,
        sim_hours: f64,
        runtime_hours: f64,
        /// The level just before the replacement.
        level_before_pct: f64,
        /// When the level first reached the catalog's `order_at_pct`.
        crossed_threshold_ts: DateTime<Utc>,
    },
    /// A working part was replaced preventively on its schedule (untidy profile only):
    /// its age and life start again, and no failure came first.
    ScheduledReplacement {
        serial: Serial,
        model: String,
        /// The failure mode whose part was replaced.
        failure_mode: String,
        ts: DateTime<Utc>,
        sim_hours: f64,
        runtime_hours: f64,
        /// Runtime hours of the part when it was replaced.
        component_hours: f64,
    },
}

impl TruthEvent {
    pub fn serial(&self) -> &Serial {
        match self {
            TruthEvent::Failure { serial, .. }
            | TruthEvent::Repair { serial, .. }
            | TruthEvent::ConsumableReplaced { serial, .. }
            | TruthEvent::ScheduledReplacement { serial, .. } => serial,
        }
    }

    pub fn ts(&self) -> DateTime<Utc> {
        match self {
            TruthEvent::Failure { ts, .. }
            | TruthEvent::Repair { ts, .. }
            | TruthEvent::ConsumableReplaced { ts, .. }
            | TruthEvent::ScheduledReplacement { ts, .. } => *ts,
        }
    }

    /// The event as one JSON line (with its trailing newline).
    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::to_string(self)
            .expect("a truth event has only strings, numbers and times: it always serializes");
        line.push('\n');
        line
    }
}
