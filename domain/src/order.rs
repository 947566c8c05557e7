//! Work orders: cause, kind, priority, status, SLA deadlines.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmCode;
use crate::catalog::ModelId;
use crate::device::{Criticality, DeviceKind, string_enum};
use crate::serial::Serial;

string_enum!(
    /// What kind of field work an order asks for.
    OrderKind {
        Maintenance => "maintenance",
        Repair => "repair",
        Inspection => "inspection",
    }
);

string_enum!(
    /// Order priority; `P1` is the most urgent. SLA deadlines come from the policy per priority.
    Priority {
        P1 => "P1",
        P2 => "P2",
        P3 => "P3",
        P4 => "P4",
    }
);

impl Priority {
    /// One step more urgent (P1 stays P1).
    pub fn bumped(self, steps: u8) -> Priority {
        let idx = (self as usize).saturating_sub(steps as usize);
        Priority::ALL[idx]
    }

    /// The more urgent of two priorities.
    pub fn most_urgent(self, other: Priority) -> Priority {
        self.min(other)
    }
}

string_enum!(
    /// Where an order is in its lifecycle:
    /// `open → acknowledged → assigned → in_progress → completed | cancelled`.
    OrderStatus {
        Open => "open",
        Acknowledged => "acknowledged",
        Assigned => "assigned",
        InProgress => "in_progress",
        Completed => "completed",
        Cancelled => "cancelled",
    }
);

impl OrderStatus {
    /// Not yet completed or cancelled: at most one active order exists per (device, cause).
    pub fn is_active(self) -> bool {
        !matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }
}

/// Why an order exists, e.g. `filter_depletion`, `service_interval`,
/// `critical_alarm:E101`, `failure_risk:compressor`. With the serial, the dedupe key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cause(String);

// written out for the pattern: the derive cannot put one on a newtype's schema
impl utoipa::PartialSchema for Cause {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "What calls for the work, e.g. filter_depletion, critical_alarm:E101.",
            ))
            .pattern(Some("^[a-z0-9_]+(:[A-Za-z0-9_.-]+)?$"))
            .max_length(Some(80))
            .into()
    }
}

impl utoipa::ToSchema for Cause {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Cause")
    }
}

/// Why a string is not a cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cause {0:?} must be 1 to 80 characters of a-z, 0-9, '_', ':', '-', '.' or A-Z after a ':'"
)]
pub struct CauseError(pub String);

impl Cause {
    pub fn parse(s: &str) -> Result<Self, CauseError> {
        let (head, tail) = s.split_once(':').unwrap_or((s, ""));
        let head_ok = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let tail_ok = tail
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let shape_ok = !(s.contains(':') && tail.is_empty());
        if head_ok && tail_ok && shape_ok && s.len() <= 80 {
            Ok(Self(s.to_owned()))
        } else {
            Err(CauseError(s.to_owned()))
        }
    }

    /// A consumable at or below its order threshold: `filter_depletion`,
    /// `sieve_bed_depletion`, … (the consumable id from the catalog).
    pub fn consumable_depletion(consumable_id: &str) -> Self {
        Self(format!("{consumable_id}_depletion"))
    }

    /// A critical alarm: `critical_alarm:<code>`.
    pub fn critical_alarm(code: &AlarmCode) -> Self {
        Self(format!("critical_alarm:{code}"))
    }

    /// Runtime hours reached the model's service interval.
    pub fn service_interval() -> Self {
        Self("service_interval".to_owned())
    }

    /// A failure mode predicted to fail within the model's horizon:
    /// `failure_risk:<mode>`.
    pub fn failure_risk(failure_mode: &str) -> Self {
        Self(format!("failure_risk:{failure_mode}"))
    }

    /// A device at a customer that stopped reporting: inspection.
    pub fn silent_device() -> Self {
        Self("silent_device".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Cause {
    type Error = CauseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Cause::parse(&s)
    }
}

impl From<Cause> for String {
    fn from(c: Cause) -> Self {
        c.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A part suggested for (or used in) an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartRef {
    /// Part number as the spare-parts system knows it.
    pub number: String,
    /// What the part is, for a person.
    pub name: String,
    /// How many.
    #[serde(default = "one")]
    pub qty: u32,
}

const fn one() -> u32 {
    1
}

/// Deadlines an order must meet, from the SLA policy for its priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sla {
    pub respond_by: DateTime<Utc>,
    pub arrive_by: DateTime<Utc>,
    pub complete_by: DateTime<Utc>,
}

impl Sla {
    /// The deadline that counts next for an order in `status` (`respond_by` while open,
    /// `arrive_by` until in progress, `complete_by` until closed), with its name; `None`
    /// for a closed order.
    pub fn next_deadline(&self, status: OrderStatus) -> Option<(&'static str, DateTime<Utc>)> {
        match status {
            OrderStatus::Open => Some(("respond_by", self.respond_by)),
            OrderStatus::Acknowledged | OrderStatus::Assigned => {
                Some(("arrive_by", self.arrive_by))
            }
            OrderStatus::InProgress => Some(("complete_by", self.complete_by)),
            OrderStatus::Completed | OrderStatus::Cancelled => None,
        }
    }

    /// Where an order in `status`, created at `created_at`, stands at `now`: the same
    /// definition as the store's `sla` filter (store/src/sla.rs): breached when a counting
    /// deadline passed, at risk when less than a fifth of a counting deadline's time
    /// (from creation) is left; `None` for a closed order.
    pub fn state(
        &self,
        status: OrderStatus,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<SlaState> {
        let counting: &[DateTime<Utc>] = match status {
            OrderStatus::Open => &[self.respond_by, self.arrive_by, self.complete_by],
            OrderStatus::Acknowledged | OrderStatus::Assigned => {
                &[self.arrive_by, self.complete_by]
            }
            OrderStatus::InProgress => &[self.complete_by],
            OrderStatus::Completed | OrderStatus::Cancelled => return None,
        };
        if counting.iter().any(|d| *d < now) {
            return Some(SlaState::Breached);
        }
        // the store compares milliseconds; so does this
        let ms = |t: DateTime<Utc>| t.timestamp_millis();
        let at_risk = counting
            .iter()
            .any(|d| 5 * (ms(*d) - ms(now)) < ms(*d) - ms(created_at));
        Some(if at_risk {
            SlaState::AtRisk
        } else {
            SlaState::OnTrack
        })
    }
}

string_enum!(
    /// Where an active order stands against its SLA deadlines. The deadlines that count
    /// depend on the status: `respond_by` while `open`, `arrive_by` until `in_progress`,
    /// `complete_by` until closed.
    SlaState {
        /// A deadline that still counts has passed.
        Breached => "breached",
        /// Not breached, but less than a fifth of a counting deadline's time is left.
        AtRisk => "at_risk",
        /// Neither breached nor at risk.
        OnTrack => "on_track",
    }
);

/// What a rule (or a person) asks for: the store turns it into a new order, or updates
/// the active order with the same (serial, cause).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderIntent {
    pub serial: Serial,
    pub cause: Cause,
    pub kind: OrderKind,
    pub priority: Priority,
    /// One line for a dispatcher's list.
    pub title: String,
    /// What to do (the catalog's solution text).
    pub solution: String,
    pub skills: Vec<String>,
    pub parts: Vec<PartRef>,
    /// Standard labour from the catalog.
    pub labour_minutes: u32,
    /// Why: the values, alarms and thresholds behind the trigger.
    pub evidence: serde_json::Value,
    /// When the trigger fired (server time); SLA deadlines count from here.
    pub triggered_at: DateTime<Utc>,
    pub sla: Sla,
    /// `true` when this trigger starts an episode: the condition behind the cause became
    /// true with it after it was not (a filter level that crossed its threshold, an alarm
    /// that opened, a person reporting again). A repeat trigger of an active order counts
    /// only then (`trigger_count`) and only then refreshes its title, solution, evidence and
    /// `last_triggered_at`; within an episode it may only make the order more urgent or
    /// change the work (skills, parts, labour). Absent in older stored intents: `false`.
    #[serde(default)]
    pub new_episode: bool,
}

/// A stored order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: i64,
    pub serial: Serial,
    pub cause: Cause,
    pub kind: OrderKind,
    pub priority: Priority,
    pub status: OrderStatus,
    pub title: String,
    pub solution: String,
    pub skills: Vec<String>,
    pub parts: Vec<PartRef>,
    pub labour_minutes: u32,
    pub evidence: serde_json::Value,
    pub sla: Sla,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many trigger episodes this order has seen (1 on creation): the condition
    /// becoming true again after it was not, not every reading that still shows it.
    pub trigger_count: u32,
    /// When the latest episode started (not the latest reading that still triggers).
    pub last_triggered_at: DateTime<Utc>,
    /// Incremented on every change a dispatcher acts on, each with its event in the
    /// order's history (optimistic concurrency: the `ETag`).
    pub version: u32,
    /// `rule` (raised by the rules) or `manual` (created through the API).
    #[serde(default = "rule_origin")]
    pub origin: String,
    /// Engineer id once assigned.
    #[serde(default)]
    pub engineer: Option<String>,
    #[serde(default)]
    pub planned_visit_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it was completed or cancelled.
    #[serde(default)]
    pub closed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// What the engineer reported at completion.
    #[serde(default)]
    pub outcome: Option<crate::dispatch::CompletionOutcome>,
    /// When the work is due: the predicted date minus the policy's lead time (orders a
    /// prediction raised); `None` for orders without a forecast (alarms, manual orders).
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// Further work bundled into the same visit (predicted work on this device due
    /// within the policy's `bundle_window`); the order's own cause is not repeated here.
    #[serde(default)]
    pub tasks: Vec<OrderTask>,
    /// When the device (or a prediction run, for a failure risk) last showed the
    /// condition behind the cause gone: a fresh consumable, the alarm cleared, the risk
    /// below the model's threshold (policy `[resolution]`); `null` while the condition
    /// holds, and again once it returns. How long it has been clear is now minus this.
    #[serde(default)]
    pub condition_cleared_at: Option<DateTime<Utc>>,
    /// What showed it: the reading (`serial`, `seq`, `ts`, `field`, `value`) or the
    /// prediction (`run_id`, `probability`, `threshold`, …); `null` with
    /// `condition_cleared_at`.
    #[serde(default)]
    pub condition_evidence: Option<serde_json::Value>,
    /// When the system cancels the order unless the condition returns first (an alarm
    /// that needs no visit, after the policy's `cancel_cleared_alarm_after`); `null` when
    /// no such cancel is pending.
    #[serde(default)]
    pub cancel_at: Option<DateTime<Utc>>,
    /// The device the order is for, as the registry has it when the order is read (not
    /// copied at creation: a device moved or updated shows its new region, address or
    /// firmware here), so a dispatcher needs no second call. `None` only in orders
    /// serialised before it existed.
    #[serde(default)]
    pub device: Option<OrderDevice>,
}

/// What a dispatcher needs to know of an order's device: what it is, where, how
/// critical, on which firmware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderDevice {
    /// Catalog model id; `None` for an auto-registered device of unknown model.
    pub model: Option<ModelId>,
    pub kind: Option<DeviceKind>,
    pub region: Option<String>,
    pub address: Option<String>,
    pub criticality: Criticality,
    pub firmware: Option<String>,
}

/// Work bundled into an order's visit: one more thing to do on the same device, so the
/// engineer makes one trip instead of several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderTask {
    /// The cause the task would have had as an order of its own (`filter_depletion`,
    /// `failure_risk:compressor`, …); one task per cause on an order.
    pub cause: Cause,
    pub title: String,
    pub skills: Vec<String>,
    pub parts: Vec<PartRef>,
    pub labour_minutes: u32,
    pub due_at: Option<DateTime<Utc>>,
    /// The prediction behind it.
    pub evidence: serde_json::Value,
    pub added_at: DateTime<Utc>,
}

fn rule_origin() -> String {
    "rule".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_state_follows_the_counting_deadlines() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let h = chrono::Duration::hours;
        let sla = Sla {
            respond_by: t0 + h(10),
            arrive_by: t0 + h(20),
            complete_by: t0 + h(100),
        };
        let at = |hours: i64, status| sla.state(status, t0, t0 + h(hours));
        assert_eq!(at(1, OrderStatus::Open), Some(SlaState::OnTrack));
        // 1 h of respond_by's 10 h left: less than a fifth
        assert_eq!(at(9, OrderStatus::Open), Some(SlaState::AtRisk));
        assert_eq!(at(11, OrderStatus::Open), Some(SlaState::Breached));
        // respond_by no longer counts once acknowledged
        assert_eq!(at(11, OrderStatus::Acknowledged), Some(SlaState::OnTrack));
        assert_eq!(at(17, OrderStatus::Assigned), Some(SlaState::AtRisk));
        assert_eq!(at(50, OrderStatus::InProgress), Some(SlaState::OnTrack));
        assert_eq!(at(101, OrderStatus::InProgress), Some(SlaState::Breached));
        assert_eq!(at(101, OrderStatus::Completed), None);
        assert_eq!(
            sla.next_deadline(OrderStatus::Assigned),
            Some(("arrive_by", t0 + h(20)))
        );
    }

    #[test]
    fn causes_have_stable_forms() {
        let code = AlarmCode::parse("E101").expect("valid");
        assert_eq!(Cause::critical_alarm(&code).as_str(), "critical_alarm:E101");
        assert_eq!(
            Cause::consumable_depletion("filter").as_str(),
            "filter_depletion"
        );
        for ok in [
            "filter_depletion",
            "critical_alarm:E101",
            "failure_risk:compressor",
        ] {
            assert!(Cause::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Filter", "a:", "a b", ":x"] {
            assert!(Cause::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn priorities_bump_towards_p1() {
        assert_eq!(Priority::P3.bumped(1), Priority::P2);
        assert_eq!(Priority::P1.bumped(2), Priority::P1);
        assert_eq!(Priority::P2.most_urgent(Priority::P4), Priority::P2);
        assert!(OrderStatus::Assigned.is_active() && !OrderStatus::Cancelled.is_active());
    }
}
