//! Order policy (`config/policy.toml`): priority per cause and SLA deadlines per priority.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::device::Criticality;
use crate::order::{OrderKind, Priority, Sla};

/// Time allowed per priority.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSpec {
    /// Time to acknowledge, e.g. `"15m"`.
    pub respond: HumanDuration,
    /// Time until an engineer is on site.
    pub arrive: HumanDuration,
    /// Time until the work is done.
    pub complete: HumanDuration,
}

/// Priority per cause kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRules {
    pub critical_alarm: Priority,
    pub consumable_depletion: Priority,
    pub service_interval: Priority,
    pub failure_risk: Priority,
    pub manual: Priority,
    /// A device at a customer that went silent (inspection order).
    #[serde(default = "silent_priority")]
    pub silent_device: Priority,
    /// Steps more urgent for devices whose criticality is `life_supporting`.
    #[serde(default = "one")]
    pub life_supporting_bump: u8,
}

const fn one() -> u8 {
    1
}

const fn silent_priority() -> Priority {
    Priority::P3
}

/// How predictions become orders (`[prediction]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionPolicy {
    /// A consumable's order is due this long before its predicted depletion date.
    pub lead_depletion: HumanDuration,
    /// A service order is due this long before the predicted service date.
    pub lead_service: HumanDuration,
    /// A failure-risk order (probability at or above the model's threshold) is due this
    /// long after the prediction.
    pub risk_due_after: HumanDuration,
    /// Only work due within this horizon from now is raised; later work waits for a
    /// later run (the prediction is kept and served all the same).
    pub raise_horizon: HumanDuration,
    /// Work due on the same device within this window of an active order's due date
    /// (or of now, for an order without one) becomes a task of that order: one visit.
    pub bundle_window: HumanDuration,
    /// Kind of a failure-risk order: `inspection` (look before it fails) or `repair`.
    pub risk_order_kind: OrderKind,
    /// Threshold used when a risk prediction carries none.
    pub default_risk_threshold: f64,
    /// A device at a customer that lost its connection (no goodbye) and has not
    /// reported for this long gets an inspection order.
    pub silent_after: HumanDuration,
}

impl Default for PredictionPolicy {
    fn default() -> Self {
        Self {
            lead_depletion: HumanDuration(Duration::days(3)),
            lead_service: HumanDuration(Duration::days(7)),
            risk_due_after: HumanDuration(Duration::days(3)),
            raise_horizon: HumanDuration(Duration::days(14)),
            bundle_window: HumanDuration(Duration::days(7)),
            risk_order_kind: OrderKind::Inspection,
            default_risk_threshold: 0.5,
            silent_after: HumanDuration(Duration::hours(24)),
        }
    }
}

/// Storm control (`[storm]`): how many orders predictions may raise per hour, so a bad
/// model or a firmware bug cannot flood dispatch. Orders over the limit wait in the
/// queue (`GET /api/v1/orders/queue`) and are released, most urgent first and then in
/// arrival order, as the hour's count falls. Orders of the streaming rules (critical
/// alarms, consumables at threshold) are neither counted nor held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormPolicy {
    /// Most predicted orders created in any 60 minutes, fleet-wide.
    pub max_per_hour: u32,
    /// Most predicted orders created in any 60 minutes for the devices of one region
    /// (devices without a region count as one region).
    pub max_per_region_per_hour: u32,
}

impl Default for StormPolicy {
    fn default() -> Self {
        Self {
            max_per_hour: 60,
            max_per_region_per_hour: 20,
        }
    }
}

/// What the system does with an order when the device (or a prediction run) shows that
/// the condition behind its cause has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenGone {
    /// Close the order: cancelled with the reason `resolved by the device` (a consumable
    /// at once; an alarm that needs no visit after `cancel_cleared_alarm_after`).
    Close,
    /// Leave it open, marked with when the condition cleared and what showed it.
    Mark,
    /// Do nothing (the behaviour before `[resolution]` existed).
    Keep,
}

impl WhenGone {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenGone::Close => "close",
            WhenGone::Mark => "mark",
            WhenGone::Keep => "keep",
        }
    }
}

/// What happens to an order when its device shows the condition has gone
/// (`[resolution]`). Only orders the system raised are closed: an order a person created
/// (`origin = manual`) and one whose work has started (`in_progress`) are marked instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolutionPolicy {
    /// A consumable order (`<consumable>_depletion`) whose device reports the consumable
    /// at or above `fresh_at_pct` (a new filter): `close`, `mark` or `keep`.
    pub consumable: WhenGone,
    /// The level (percent of life left) that shows a fresh consumable. A level must also
    /// be above the consumable's `order_at_pct` in the catalog to count.
    pub fresh_at_pct: f64,
    /// An alarm order (`critical_alarm:<code>`) whose alarm cleared, when the catalog says
    /// the alarm needs a visit (`needs_visit`; by default critical alarms and every alarm
    /// of a life-supporting device): `mark` or `keep` (never closed).
    pub alarm_needs_visit: WhenGone,
    /// The same for an alarm that needs no visit: `close` (cancelled once the alarm has
    /// stayed clear for `cancel_cleared_alarm_after`), `mark` or `keep`.
    pub alarm_no_visit: WhenGone,
    /// How long an alarm that needs no visit must stay clear before its order is
    /// cancelled; the alarm coming back within it cancels nothing.
    pub cancel_cleared_alarm_after: HumanDuration,
    /// A failure-risk order (`failure_risk:<mode>`) whose latest prediction fell below the
    /// model's threshold: `mark` or `keep` (never closed: a lower score is no repair).
    pub failure_risk: WhenGone,
}

impl Default for ResolutionPolicy {
    fn default() -> Self {
        Self {
            consumable: WhenGone::Close,
            fresh_at_pct: 80.0,
            alarm_needs_visit: WhenGone::Mark,
            alarm_no_visit: WhenGone::Close,
            cancel_cleared_alarm_after: HumanDuration(Duration::hours(2)),
            failure_risk: WhenGone::Mark,
        }
    }
}

impl ResolutionPolicy {
    fn validate(&self) -> Result<(), PolicyError> {
        if !(self.fresh_at_pct > 0.0 && self.fresh_at_pct <= 100.0) {
            return Err(PolicyError::Invalid(format!(
                "[resolution] fresh_at_pct must be in (0, 100], not {}",
                self.fresh_at_pct
            )));
        }
        for (key, when) in [
            ("alarm_needs_visit", self.alarm_needs_visit),
            ("failure_risk", self.failure_risk),
        ] {
            if when == WhenGone::Close {
                return Err(PolicyError::Invalid(format!(
                    "[resolution] {key} = \"close\" is not allowed: such an order stays open \
                     (use \"mark\" or \"keep\")"
                )));
            }
        }
        if self.cancel_cleared_alarm_after.0 < Duration::zero() {
            return Err(PolicyError::Invalid(
                "[resolution] cancel_cleared_alarm_after must not be negative".into(),
            ));
        }
        Ok(())
    }
}

/// The order policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub priority: PriorityRules,
    pub sla: BTreeMap<Priority, SlaSpec>,
    #[serde(default)]
    pub prediction: PredictionPolicy,
    #[serde(default)]
    pub storm: StormPolicy,
    #[serde(default)]
    pub resolution: ResolutionPolicy,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML for the expected shape: {0}")]
    Syntax(String),
    #[error("policy: {0}")]
    Invalid(String),
}

impl Policy {
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        for pr in Priority::ALL {
            let Some(s) = p.sla.get(pr) else {
                return Err(PolicyError::Invalid(format!("[sla.{pr}] is missing")));
            };
            if !(s.respond.0 <= s.arrive.0 && s.arrive.0 <= s.complete.0) {
                return Err(PolicyError::Invalid(format!(
                    "[sla.{pr}] must satisfy respond <= arrive <= complete"
                )));
            }
        }
        let pr = &p.prediction;
        for (key, d) in [
            ("lead_depletion", pr.lead_depletion),
            ("lead_service", pr.lead_service),
            ("risk_due_after", pr.risk_due_after),
            ("raise_horizon", pr.raise_horizon),
            ("bundle_window", pr.bundle_window),
            ("silent_after", pr.silent_after),
        ] {
            if d.0 < Duration::zero() {
                return Err(PolicyError::Invalid(format!(
                    "[prediction] {key} must not be negative"
                )));
            }
        }
        if !(pr.default_risk_threshold > 0.0 && pr.default_risk_threshold <= 1.0) {
            return Err(PolicyError::Invalid(
                "[prediction] default_risk_threshold must be in (0, 1]".into(),
            ));
        }
        if pr.risk_order_kind == OrderKind::Maintenance {
            return Err(PolicyError::Invalid(
                "[prediction] risk_order_kind must be inspection or repair".into(),
            ));
        }
        p.resolution.validate()?;
        Ok(p)
    }

    /// Applies the life-supporting bump to a base priority.
    pub fn priority_for(&self, base: Priority, criticality: Criticality) -> Priority {
        if criticality == Criticality::LifeSupporting {
            base.bumped(self.priority.life_supporting_bump)
        } else {
            base
        }
    }

    /// Deadlines for an order of `priority` triggered at `at`.
    pub fn sla_for(&self, priority: Priority, at: DateTime<Utc>) -> Sla {
        // Policy::from_toml_str guarantees every priority has an entry.
        let s = &self.sla[&priority];
        Sla {
            respond_by: at + s.respond.0,
            arrive_by: at + s.arrive.0,
            complete_by: at + s.complete.0,
        }
    }
}

/// A duration written as a number and a unit: `90s`, `15m`, `4h`, `2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: i64 = num.parse().map_err(|_| {
            format!("duration {s:?} must be a whole number with a unit (s, m, h, d)")
        })?;
        let d = match unit {
            "s" => Duration::seconds(n),
            "m" => Duration::minutes(n),
            "h" => Duration::hours(n),
            "d" => Duration::days(n),
            _ => {
                return Err(format!(
                    "duration {s:?} has unit {unit:?}; use s, m, h or d"
                ));
            }
        };
        Ok(Self(d))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", self.0.num_seconds()))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const POLICY: &str = r#"
[priority]
critical_alarm = "P2"
consumable_depletion = "P3"
service_interval = "P4"
failure_risk = "P3"
manual = "P3"
life_supporting_bump = 1

[sla.P1]
respond = "15m"
arrive = "4h"
complete = "8h"
[sla.P2]
respond = "1h"
arrive = "1d"
complete = "2d"
[sla.P3]
respond = "4h"
arrive = "3d"
complete = "5d"
[sla.P4]
respond = "1d"
arrive = "10d"
complete = "14d"
"#;

    #[test]
    fn policy_gives_deadlines_and_bumps_life_supporting() {
        let p = Policy::from_toml_str(POLICY).expect("valid policy");
        assert_eq!(
            p.priority_for(Priority::P2, Criticality::LifeSupporting),
            Priority::P1
        );
        assert_eq!(
            p.priority_for(Priority::P2, Criticality::High),
            Priority::P2
        );
        let t = DateTime::<Utc>::UNIX_EPOCH;
        let sla = p.sla_for(Priority::P1, t);
        assert_eq!(sla.respond_by - t, Duration::minutes(15));
        assert_eq!(sla.complete_by - t, Duration::hours(8));
    }

    #[test]
    fn resolution_defaults_apply_when_the_section_is_absent() {
        let p = Policy::from_toml_str(POLICY).expect("valid policy");
        let r = &p.resolution;
        assert_eq!(r.consumable, WhenGone::Close);
        assert_eq!(r.fresh_at_pct, 80.0);
        assert_eq!(r.alarm_needs_visit, WhenGone::Mark);
        assert_eq!(r.alarm_no_visit, WhenGone::Close);
        assert_eq!(r.cancel_cleared_alarm_after.0, Duration::hours(2));
        assert_eq!(r.failure_risk, WhenGone::Mark);
        let partial = format!("{POLICY}\n[resolution]\nconsumable = \"mark\"\n");
        let p = Policy::from_toml_str(&partial).expect("valid policy");
        assert_eq!(p.resolution.consumable, WhenGone::Mark);
        assert_eq!(
            p.resolution.fresh_at_pct, 80.0,
            "the other keys keep their default"
        );
        let shipped = Policy::from_toml_str(include_str!("../../config/policy.toml"))
            .expect("shipped policy is valid");
        assert_eq!(shipped.resolution, ResolutionPolicy::default());
    }

    #[test]
    fn bad_resolution_values_are_refused_with_the_key() {
        for (section, wanted) in [
            ("fresh_at_pct = 120", "fresh_at_pct must be in (0, 100]"),
            ("fresh_at_pct = 0", "fresh_at_pct must be in (0, 100]"),
            (
                "failure_risk = \"close\"",
                "failure_risk = \"close\" is not allowed",
            ),
            (
                "alarm_needs_visit = \"close\"",
                "alarm_needs_visit = \"close\"",
            ),
            ("consumable = \"delete\"", "unknown variant `delete`"),
            ("cancel_cleared_alarm_after = \"2 hours\"", "2 hours"),
            ("cancel_after = \"2h\"", "unknown field `cancel_after`"),
        ] {
            let text = format!("{POLICY}\n[resolution]\n{section}\n");
            let err = Policy::from_toml_str(&text).expect_err(section).to_string();
            assert!(err.contains(wanted), "{section}: {err}");
        }
    }

    #[test]
    fn bad_policies_are_refused() {
        let missing = POLICY.replace("[sla.P4]", "[sla.P9]");
        assert!(Policy::from_toml_str(&missing).is_err());
        let bad = POLICY.replace("respond = \"15m\"", "respond = \"15 minutes\"");
        let err = Policy::from_toml_str(&bad)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("15 minutes"), "{err}");
        let order = POLICY.replace("respond = \"15m\"", "respond = \"9h\"");
        assert!(
            Policy::from_toml_str(&order)
                .expect_err("refused")
                .to_string()
                .contains("respond <= arrive")
        );
    }
}
