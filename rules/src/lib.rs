//! Streaming rules: what a committed batch's state change calls for.
//!
//! The store calls [`CatalogRules::evaluate`] inside the commit transaction, once for
//! each new reading that moves a device's latest state forward. The rules are pure and deterministic: same device, same
//! change, same clock → same intents. The store turns each intent into a new order or
//! updates the active order with the same (serial, cause), so a trigger that fires on
//! every reading still yields one order.
//!
//! Rules in force:
//! - **Consumable depletion**: a catalog consumable whose percentage field is at or below
//!   its `order_at_pct` → maintenance order, cause `<consumable>_depletion`.
//! - **Critical alarm**: a catalog alarm of severity `critical` whose episode opened in
//!   this reading → repair order, cause `critical_alarm:<code>`, with the catalog's skill,
//!   parts, labour and solution.
//!
//! Orders from predictions (due dates, bundling, storm control) are planned in
//! [`predicted`]; silent devices are detected in [`silent`].
//!
//! What a step shows about conditions that went away ([`CatalogRules::resolve`], policy
//! `[resolution]`): a consumable reported at or above `fresh_at_pct` (and above its
//! `order_at_pct`) after it was not; an alarm that cleared (an order that needs a visit,
//! catalog `needs_visit`, is only marked; one that needs none is cancelled after
//! `cancel_cleared_alarm_after`); an alarm that came back. The store applies these to the
//! device's active order of the cause, when there is one.
//!
//! Priority comes from the policy per cause, one step more urgent (by default) for
//! life-supporting devices; SLA deadlines from the policy per priority. Devices that are
//! `retired` or `in_repair` raise nothing (they are not at a patient's home).

pub mod predicted;
pub mod silent;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::{AlarmSpec, ConsumableSpec, ModelSpec};
use fleetpulse_domain::policy::WhenGone;
use fleetpulse_domain::rules::{
    ConditionChange, DeviceContext, OrderRules, ResolveAction, StateChange,
};
use fleetpulse_domain::{Cause, LifecycleStatus, OrderIntent, OrderKind, Policy, Severity};
use serde_json::json;

/// The rules driven by the catalog and the order policy.
#[derive(Clone, Debug)]
pub struct CatalogRules {
    policy: Arc<Policy>,
}

impl CatalogRules {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }

    fn consumable_intent(
        &self,
        device: &DeviceContext<'_>,
        model: &ModelSpec,
        consumable: &ConsumableSpec,
        level: f64,
        change: &StateChange<'_>,
        now: DateTime<Utc>,
    ) -> OrderIntent {
        let priority = self.policy.priority_for(
            self.policy.priority.consumable_depletion,
            device.criticality,
        );
        OrderIntent {
            serial: device.serial.clone(),
            cause: Cause::consumable_depletion(&consumable.id),
            kind: OrderKind::Maintenance,
            priority,
            title: format!("Replace {} ({level:.0} % left)", consumable.name),
            solution: format!(
                "Replace the {} of this {}; the device reports {} = {level:.1} %, at or below the order threshold of {} %.",
                consumable.name, model.name, consumable.field, consumable.order_at_pct
            ),
            skills: vec![consumable.skill.clone()],
            parts: consumable.parts.clone(),
            labour_minutes: consumable.labour_minutes,
            evidence: json!({
                "rule": "consumable_at_threshold",
                "consumable": consumable.id,
                "field": consumable.field,
                "value": level,
                "threshold_pct": consumable.order_at_pct,
                "seq": change.after.seq,
                "device_ts": change.after.ts,
                "runtime_hours": change.after.values.get("runtime_hours"),
                "model": model.id,
            }),
            triggered_at: now,
            sla: self.policy.sla_for(priority, now),
            new_episode: starts_depletion_episode(consumable, change),
        }
    }

    fn alarm_intent(
        &self,
        device: &DeviceContext<'_>,
        model: &ModelSpec,
        alarm: &AlarmSpec,
        change: &StateChange<'_>,
        now: DateTime<Utc>,
    ) -> OrderIntent {
        let priority = self
            .policy
            .priority_for(self.policy.priority.critical_alarm, device.criticality);
        OrderIntent {
            serial: device.serial.clone(),
            cause: Cause::critical_alarm(&alarm.code),
            kind: OrderKind::Repair,
            priority,
            title: format!("{} ({})", alarm.title, alarm.code),
            solution: alarm.solution.clone(),
            skills: vec![alarm.skill.clone()],
            parts: alarm.parts.clone(),
            labour_minutes: alarm.labour_minutes,
            evidence: json!({
                "rule": "critical_alarm_raised",
                "alarm": alarm.code,
                "category": alarm.category,
                "failure_mode": alarm.failure_mode,
                "counts_as_failure": alarm.counts_as_failure,
                "active_alarms": change.after.alarms,
                "seq": change.after.seq,
                "device_ts": change.after.ts,
                "values": change.after.values,
                "model": model.id,
            }),
            triggered_at: now,
            sla: self.policy.sla_for(priority, now),
            // the alarm's episode opened with this reading
            new_episode: true,
        }
    }
}

/// A depletion episode starts when the level reaches the threshold from above (or from
/// no level known): the state before this step did not trigger the cause. Later readings
/// still at or below it are the same episode, so they count no new trigger.
fn starts_depletion_episode(consumable: &ConsumableSpec, change: &StateChange<'_>) -> bool {
    change
        .before
        .and_then(|b| b.values.get(&consumable.field))
        .is_none_or(|&prev| prev > consumable.order_at_pct)
}

/// The reading behind a step, as the evidence of a resolution.
fn reading_evidence(
    device: &DeviceContext<'_>,
    change: &StateChange<'_>,
    field: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    json!({
        "serial": device.serial,
        "seq": change.reading.seq,
        "ts": change.reading.ts,
        "received_at": change.reading.received_at,
        "field": field,
        "value": value,
    })
}

impl CatalogRules {
    /// A level that shows a fresh consumable: at or above the policy's `fresh_at_pct`
    /// and above the consumable's own order threshold.
    fn is_fresh(&self, consumable: &ConsumableSpec, level: f64) -> bool {
        level >= self.policy.resolution.fresh_at_pct && level > consumable.order_at_pct
    }

    /// Consumables this step showed fresh after they were not (or were not known).
    fn fresh_consumables(
        &self,
        device: &DeviceContext<'_>,
        model: &ModelSpec,
        change: &StateChange<'_>,
        out: &mut Vec<ConditionChange>,
    ) {
        let action = match self.policy.resolution.consumable {
            WhenGone::Keep => return,
            WhenGone::Close => ResolveAction::Close,
            WhenGone::Mark => ResolveAction::Mark,
        };
        for c in &model.consumables {
            let Some(&level) = change.reading.values.get(&c.field) else {
                continue;
            };
            let was_fresh = change
                .before
                .and_then(|b| b.values.get(&c.field))
                .is_some_and(|&prev| self.is_fresh(c, prev));
            if self.is_fresh(c, level) && !was_fresh {
                let mut evidence = reading_evidence(device, change, &c.field, json!(level));
                evidence["rule"] = json!("consumable_fresh");
                evidence["fresh_at_pct"] = json!(self.policy.resolution.fresh_at_pct);
                out.push(ConditionChange::Gone {
                    cause: Cause::consumable_depletion(&c.id),
                    action,
                    evidence,
                });
            }
        }
    }

    /// Alarms this step cleared (active before, not after) and alarms it opened.
    fn alarm_changes(
        &self,
        device: &DeviceContext<'_>,
        model: &ModelSpec,
        change: &StateChange<'_>,
        out: &mut Vec<ConditionChange>,
    ) {
        let pol = &self.policy.resolution;
        let before: &[fleetpulse_domain::AlarmCode] = change.before.map_or(&[], |b| &b.alarms);
        for code in before.iter().filter(|c| !change.after.alarms.contains(c)) {
            // a code the catalog does not know needs a visit: nothing is left to chance
            let needs_visit = model
                .alarm(code)
                .is_none_or(|a| a.needs_visit(device.criticality));
            let when = if needs_visit {
                pol.alarm_needs_visit
            } else {
                pol.alarm_no_visit
            };
            let action = match when {
                WhenGone::Keep => continue,
                WhenGone::Mark => ResolveAction::Mark,
                WhenGone::Close => ResolveAction::CancelAfter(pol.cancel_cleared_alarm_after.0),
            };
            let mut evidence =
                reading_evidence(device, change, "alarms", json!(change.after.alarms));
            evidence["rule"] = json!("alarm_cleared");
            evidence["alarm"] = json!(code);
            evidence["needs_visit"] = json!(needs_visit);
            out.push(ConditionChange::Gone {
                cause: Cause::critical_alarm(code),
                action,
                evidence,
            });
        }
        for code in change.opened_alarms {
            let mut evidence =
                reading_evidence(device, change, "alarms", json!(change.after.alarms));
            evidence["rule"] = json!("alarm_returned");
            evidence["alarm"] = json!(code);
            out.push(ConditionChange::Returned {
                cause: Cause::critical_alarm(code),
                evidence,
            });
        }
    }
}

impl OrderRules for CatalogRules {
    fn resolve(
        &self,
        device: &DeviceContext<'_>,
        change: &StateChange<'_>,
    ) -> Vec<ConditionChange> {
        if matches!(
            device.status,
            LifecycleStatus::Retired | LifecycleStatus::InRepair
        ) {
            return Vec::new();
        }
        let Some(model) = device.model else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.fresh_consumables(device, model, change, &mut out);
        self.alarm_changes(device, model, change, &mut out);
        out
    }

    fn evaluate(
        &self,
        device: &DeviceContext<'_>,
        change: &StateChange<'_>,
        now: DateTime<Utc>,
    ) -> Vec<OrderIntent> {
        if matches!(
            device.status,
            LifecycleStatus::Retired | LifecycleStatus::InRepair
        ) {
            return Vec::new();
        }
        let Some(model) = device.model else {
            return Vec::new();
        };
        let mut intents = Vec::new();
        // Only a reading that reports the level triggers: a reading without the field
        // is no new evidence of depletion.
        for consumable in &model.consumables {
            if let Some(&level) = change.reading.values.get(&consumable.field)
                && level <= consumable.order_at_pct
            {
                intents.push(self.consumable_intent(device, model, consumable, level, change, now));
            }
        }
        for code in change.opened_alarms {
            if let Some(alarm) = model.alarm(code)
                && alarm.severity == Severity::Critical
            {
                intents.push(self.alarm_intent(device, model, alarm, change, now));
            }
        }
        intents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_domain::rules::LatestState;
    use fleetpulse_domain::{AlarmCode, Catalog, Criticality, Priority, Reading, Serial};

    const CATALOG: &str = include_str!("../../config/catalog.toml");
    const POLICY: &str = include_str!("../../config/policy.toml");

    struct Fixture {
        catalog: Catalog,
        rules: CatalogRules,
        serial: Serial,
    }

    fn fixture() -> Fixture {
        let policy = Policy::from_toml_str(POLICY).expect("shipped policy is valid");
        Fixture {
            catalog: Catalog::from_toml_str(CATALOG).expect("shipped catalog is valid"),
            rules: CatalogRules::new(Arc::new(policy)),
            serial: Serial::parse("OC5-000001").expect("serial"),
        }
    }

    fn state(values: &[(&str, f64)], alarms: &[&str]) -> LatestState {
        LatestState {
            seq: 10,
            values: values.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            alarms: alarms
                .iter()
                .map(|c| AlarmCode::parse(c).expect("code"))
                .collect(),
            ..Default::default()
        }
    }

    fn eval(
        f: &Fixture,
        model: &str,
        criticality: Criticality,
        status: LifecycleStatus,
        after: &LatestState,
        opened: &[&str],
    ) -> Vec<OrderIntent> {
        let opened: Vec<AlarmCode> = opened
            .iter()
            .map(|c| AlarmCode::parse(c).expect("code"))
            .collect();
        let device = DeviceContext {
            serial: &f.serial,
            model: f.catalog.model(model),
            criticality,
            status,
        };
        // The reading that made the step reported everything the state holds.
        let reading = Reading {
            serial: f.serial.clone(),
            seq: after.seq,
            ts: DateTime::<Utc>::UNIX_EPOCH,
            received_at: DateTime::<Utc>::UNIX_EPOCH,
            model: None,
            firmware: None,
            alarms: Some(after.alarms.clone()),
            values: after.values.clone(),
        };
        let change = StateChange {
            before: None,
            after,
            reading: &reading,
            opened_alarms: &opened,
        };
        f.rules
            .evaluate(&device, &change, DateTime::<Utc>::UNIX_EPOCH)
    }

    fn first_critical(f: &Fixture, model: &str) -> (String, String) {
        let m = f.catalog.model(model).expect("model in catalog");
        let a = m
            .alarms
            .iter()
            .find(|a| a.severity == Severity::Critical)
            .expect("a critical alarm");
        let w = m
            .alarms
            .iter()
            .find(|a| a.severity != Severity::Critical)
            .expect("a non-critical alarm");
        (a.code.to_string(), w.code.to_string())
    }

    #[test]
    fn filter_at_threshold_raises_a_maintenance_order_with_catalog_parts() {
        let f = fixture();
        let model = f
            .catalog
            .models()
            .find(|m| !m.consumables.is_empty())
            .expect("model with consumable");
        let c = &model.consumables[0];
        let at = state(&[(c.field.as_str(), c.order_at_pct)], &[]);
        let above = state(&[(c.field.as_str(), c.order_at_pct + 0.5)], &[]);
        let intents = eval(
            &f,
            model.id.as_str(),
            Criticality::Standard,
            LifecycleStatus::AtCustomer,
            &at,
            &[],
        );
        assert_eq!(intents.len(), 1);
        let o = &intents[0];
        assert_eq!(o.cause, Cause::consumable_depletion(&c.id));
        assert_eq!(o.kind, OrderKind::Maintenance);
        assert_eq!(o.parts, c.parts);
        assert_eq!(o.skills, vec![c.skill.clone()]);
        assert_eq!(o.evidence["value"], json!(c.order_at_pct));
        assert!(o.sla.respond_by < o.sla.complete_by);
        assert!(
            eval(
                &f,
                model.id.as_str(),
                Criticality::Standard,
                LifecycleStatus::AtCustomer,
                &above,
                &[]
            )
            .is_empty()
        );
    }

    /// What [`CatalogRules::resolve`] says of the step from `before` to `after` (the
    /// reading reported everything `after` holds).
    fn resolved(
        f: &Fixture,
        model: &str,
        criticality: Criticality,
        before: &LatestState,
        after: &LatestState,
    ) -> Vec<ConditionChange> {
        let opened: Vec<AlarmCode> = after
            .alarms
            .iter()
            .filter(|c| !before.alarms.contains(c))
            .cloned()
            .collect();
        let device = DeviceContext {
            serial: &f.serial,
            model: f.catalog.model(model),
            criticality,
            status: LifecycleStatus::AtCustomer,
        };
        let reading = Reading {
            serial: f.serial.clone(),
            seq: after.seq,
            ts: DateTime::<Utc>::UNIX_EPOCH,
            received_at: DateTime::<Utc>::UNIX_EPOCH,
            model: None,
            firmware: None,
            alarms: Some(after.alarms.clone()),
            values: after.values.clone(),
        };
        let change = StateChange {
            before: Some(before),
            after,
            reading: &reading,
            opened_alarms: &opened,
        };
        f.rules.resolve(&device, &change)
    }

    fn action_of(changes: &[ConditionChange]) -> Vec<(String, Option<ResolveAction>)> {
        changes
            .iter()
            .map(|c| match c {
                ConditionChange::Gone { cause, action, .. } => (cause.to_string(), Some(*action)),
                ConditionChange::Returned { cause, .. } => (cause.to_string(), None),
            })
            .collect()
    }

    #[test]
    fn a_filter_is_fresh_once_when_it_crosses_fresh_at_pct() {
        let f = fixture();
        let low = state(&[("filter_life_pct", 12.0)], &[]);
        let half = state(&[("filter_life_pct", 50.0)], &[]);
        let new = state(&[("filter_life_pct", 100.0)], &[]);
        let std = Criticality::Standard;
        assert!(
            resolved(&f, "OC-5A", std, &low, &half).is_empty(),
            "50 % is not fresh"
        );
        let gone = resolved(&f, "OC-5A", std, &half, &new);
        assert_eq!(
            action_of(&gone),
            [("filter_depletion".to_owned(), Some(ResolveAction::Close))]
        );
        let ConditionChange::Gone { evidence, .. } = &gone[0] else {
            unreachable!("checked above")
        };
        assert_eq!(
            (&evidence["field"], &evidence["value"], &evidence["seq"]),
            (&json!("filter_life_pct"), &json!(100.0), &json!(10))
        );
        assert!(
            resolved(&f, "OC-5A", std, &new, &new).is_empty(),
            "still fresh is no new news"
        );
    }

    #[test]
    fn a_cleared_alarm_is_marked_when_it_needs_a_visit_and_cancelled_later_when_not() {
        let f = fixture();
        let (critical, warning) = first_critical(&f, "OC-5A");
        let two_hours = ResolveAction::CancelAfter(chrono::Duration::hours(2));
        let quiet = state(&[], &[]);
        for (code, criticality, wanted) in [
            (&critical, Criticality::High, ResolveAction::Mark),
            (&warning, Criticality::High, two_hours),
            // every alarm of a life-supporting device needs a visit by default
            (&warning, Criticality::LifeSupporting, ResolveAction::Mark),
        ] {
            let active = state(&[], &[code.as_str()]);
            assert_eq!(
                action_of(&resolved(&f, "OC-5A", criticality, &active, &quiet)),
                [(format!("critical_alarm:{code}"), Some(wanted))],
                "{code} on a {criticality} device"
            );
            assert_eq!(
                action_of(&resolved(&f, "OC-5A", criticality, &quiet, &active)),
                [(format!("critical_alarm:{code}"), None)],
                "{code} opening again is news for a marked order"
            );
        }
    }

    #[test]
    fn keep_in_the_policy_resolves_nothing() {
        let mut policy = Policy::from_toml_str(POLICY).expect("policy");
        policy.resolution.consumable = fleetpulse_domain::policy::WhenGone::Keep;
        policy.resolution.alarm_needs_visit = fleetpulse_domain::policy::WhenGone::Keep;
        let f = Fixture {
            rules: CatalogRules::new(Arc::new(policy)),
            ..fixture()
        };
        let (critical, _) = first_critical(&f, "OC-5A");
        let before = state(&[("filter_life_pct", 10.0)], &[critical.as_str()]);
        let after = state(&[("filter_life_pct", 100.0)], &[]);
        assert!(resolved(&f, "OC-5A", Criticality::High, &before, &after).is_empty());
    }

    /// The catalog example of docs/reliability-data.md ("Catalog: components, …").
    fn docs_example_catalog() -> Catalog {
        let doc = include_str!("../../docs/reliability-data.md");
        let section = &doc[doc
            .find("## Catalog: components, failure modes, maintenance kinds")
            .expect("the catalog section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + section[start..].find("```").expect("its end");
        Catalog::from_toml_str(&section[start..end]).expect("the docs example loads")
    }

    #[test]
    fn a_component_with_a_life_field_raises_its_depletion_order() {
        let f = Fixture {
            catalog: docs_example_catalog(),
            ..fixture()
        };
        let at = state(&[("comp1_life_pct", 15.0)], &[]);
        let intents = eval(
            &f,
            "PM-1",
            Criticality::Standard,
            LifecycleStatus::AtCustomer,
            &at,
            &[],
        );
        assert_eq!(intents.len(), 1, "{intents:?}");
        assert_eq!(intents[0].cause, Cause::consumable_depletion("comp1"));
        assert_eq!(intents[0].skills, ["basic_maintenance"]);
        assert_eq!(intents[0].parts[0].number, "C1");
        let above = state(&[("comp1_life_pct", 16.0)], &[]);
        assert!(
            eval(
                &f,
                "PM-1",
                Criticality::Standard,
                LifecycleStatus::AtCustomer,
                &above,
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn a_reading_that_does_not_report_the_level_is_no_new_trigger() {
        let f = fixture();
        let model = f
            .catalog
            .models()
            .find(|m| !m.consumables.is_empty())
            .expect("model with consumable");
        let c = &model.consumables[0];
        let low = state(&[(c.field.as_str(), c.order_at_pct - 1.0)], &[]);
        let device = DeviceContext {
            serial: &f.serial,
            model: Some(model),
            criticality: Criticality::Standard,
            status: LifecycleStatus::AtCustomer,
        };
        // The merged state still shows the low level, but this reading only reported hours.
        let reading = Reading {
            serial: f.serial.clone(),
            seq: 2,
            ts: DateTime::<Utc>::UNIX_EPOCH,
            received_at: DateTime::<Utc>::UNIX_EPOCH,
            model: None,
            firmware: None,
            alarms: None,
            values: [("runtime_hours".to_owned(), 10.0)].into_iter().collect(),
        };
        let change = StateChange {
            before: Some(&low),
            after: &low,
            reading: &reading,
            opened_alarms: &[],
        };
        assert!(
            f.rules
                .evaluate(&device, &change, DateTime::<Utc>::UNIX_EPOCH)
                .is_empty()
        );
    }

    #[test]
    fn a_level_that_stays_below_the_threshold_starts_no_new_episode() {
        let f = fixture();
        let model = f
            .catalog
            .models()
            .find(|m| !m.consumables.is_empty())
            .expect("model with consumable");
        let c = &model.consumables[0];
        let device = DeviceContext {
            serial: &f.serial,
            model: Some(model),
            criticality: Criticality::Standard,
            status: LifecycleStatus::AtCustomer,
        };
        let above = state(&[(c.field.as_str(), c.order_at_pct + 1.0)], &[]);
        let low = state(&[(c.field.as_str(), c.order_at_pct - 1.0)], &[]);
        let lower = state(&[(c.field.as_str(), c.order_at_pct - 2.0)], &[]);
        let step = |before: Option<&LatestState>, after: &LatestState| {
            let reading = Reading {
                serial: f.serial.clone(),
                seq: after.seq,
                ts: DateTime::<Utc>::UNIX_EPOCH,
                received_at: DateTime::<Utc>::UNIX_EPOCH,
                model: None,
                firmware: None,
                alarms: None,
                values: after.values.clone(),
            };
            let change = StateChange {
                before,
                after,
                reading: &reading,
                opened_alarms: &[],
            };
            let intents = f
                .rules
                .evaluate(&device, &change, DateTime::<Utc>::UNIX_EPOCH);
            assert_eq!(intents.len(), 1, "{intents:?}");
            intents[0].new_episode
        };
        assert!(step(None, &low), "first level known");
        assert!(step(Some(&above), &low), "crossed the threshold");
        assert!(!step(Some(&low), &lower), "still below: the same episode");
    }

    #[test]
    fn only_opened_critical_alarms_raise_repair_orders() {
        let f = fixture();
        let model = f.catalog.models().next().expect("a model").id.to_string();
        let (critical, warning) = first_critical(&f, &model);
        let s = state(&[], &[&critical, &warning]);
        let intents = eval(
            &f,
            &model,
            Criticality::High,
            LifecycleStatus::AtCustomer,
            &s,
            &[&critical, &warning],
        );
        assert_eq!(intents.len(), 1, "{intents:?}");
        assert_eq!(
            intents[0].cause.as_str(),
            format!("critical_alarm:{critical}")
        );
        assert_eq!(intents[0].kind, OrderKind::Repair);
        // still active, but not newly opened: nothing new to raise
        assert!(
            eval(
                &f,
                &model,
                Criticality::High,
                LifecycleStatus::AtCustomer,
                &s,
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn life_supporting_devices_get_a_more_urgent_priority() {
        let f = fixture();
        let vent = f
            .catalog
            .models()
            .find(|m| m.kind == fleetpulse_domain::DeviceKind::Ventilator)
            .expect("ventilator");
        let (critical, _) = first_critical(&f, vent.id.as_str());
        let s = state(&[], &[&critical]);
        let normal = eval(
            &f,
            vent.id.as_str(),
            Criticality::High,
            LifecycleStatus::AtCustomer,
            &s,
            &[&critical],
        );
        let life = eval(
            &f,
            vent.id.as_str(),
            Criticality::LifeSupporting,
            LifecycleStatus::AtCustomer,
            &s,
            &[&critical],
        );
        assert!(
            life[0].priority < normal[0].priority,
            "{:?} vs {:?}",
            life[0].priority,
            normal[0].priority
        );
        assert_eq!(life[0].priority, Priority::P1);
    }

    #[test]
    fn retired_devices_and_unknown_models_raise_nothing() {
        let f = fixture();
        let model = f.catalog.models().next().expect("a model").id.to_string();
        let (critical, _) = first_critical(&f, &model);
        let s = state(&[("filter_life_pct", 0.0)], &[&critical]);
        assert!(
            eval(
                &f,
                &model,
                Criticality::High,
                LifecycleStatus::Retired,
                &s,
                &[&critical]
            )
            .is_empty()
        );
        assert!(
            eval(
                &f,
                "NO-SUCH-MODEL",
                Criticality::High,
                LifecycleStatus::AtCustomer,
                &s,
                &[&critical]
            )
            .is_empty()
        );
    }
}
