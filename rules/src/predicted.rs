//! Orders from predictions: due dates, dedupe, bundling into one visit, storm control.
//!
//! [`PredictionOrders::plan`] is pure: given a run's predictions, the devices they are
//! about (with their active orders), the storm-control counts and queue, and the clock,
//! it says what the store must do; the store applies it in one transaction.
//!
//! - **Due date**: consumable depletion and service forecasts are due at the predicted
//!   date minus the policy's lead (`lead_depletion`, `lead_service`); a failure risk at
//!   or above its threshold `risk_due_after` after the prediction; a silent device now.
//!   Only work due within `raise_horizon` is raised.
//! - **Dedupe** on (serial, cause), as the streaming rules do: a predicted
//!   `filter_depletion` and the threshold rule's `filter_depletion` are one order.
//! - **Bundling**: work due within `bundle_window` of an active order of the same device
//!   (its due date, or now when it has none) becomes a task of that order; work of one
//!   run due close together on one device becomes one new order with tasks.
//! - **Storm control**: a new order counts against `[storm] max_per_hour` (fleet) and
//!   `max_per_region_per_hour`, over the last 60 minutes of predicted orders. Beyond
//!   them it is held in the queue; held orders are released first at every run, most
//!   urgent first, then in arrival order. Retriggers and bundled tasks need no new trip
//!   and are never held. Streaming orders (critical alarms) never pass through here.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::catalog::ModelSpec;
use fleetpulse_domain::order::OrderTask;
use fleetpulse_domain::policy::WhenGone;
use fleetpulse_domain::prediction::{Prediction, PredictionKind};
use fleetpulse_domain::store::{
    PlanAction, PlanDevice, PlanInput, PlannedOrder, PredictionPlanner, StormCounts,
};
use fleetpulse_domain::{Catalog, Cause, LifecycleStatus, OrderIntent, OrderKind, Policy};
use serde_json::json;

/// The planner driven by the catalog and the order policy.
#[derive(Clone, Debug)]
pub struct PredictionOrders {
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
}

/// Skill of an order for which the catalog names none (a silent device of unknown model).
const FALLBACK_SKILL: &str = "basic_maintenance";
/// Labour of a silent-device inspection.
const SILENT_LABOUR_MINUTES: u32 = 30;

impl PredictionOrders {
    pub fn new(catalog: Arc<Catalog>, policy: Arc<Policy>) -> Self {
        Self { catalog, policy }
    }

    /// The order a prediction calls for now, if any.
    pub fn order_for(
        &self,
        p: &Prediction,
        device: &PlanDevice,
        now: DateTime<Utc>,
    ) -> Option<PlannedOrder> {
        if matches!(
            device.status,
            LifecycleStatus::Retired | LifecycleStatus::InRepair
        ) {
            return None;
        }
        let pol = &self.policy.prediction;
        let spec = device.model.as_deref().and_then(|m| self.catalog.model(m));
        let prio = &self.policy.priority;
        let evidence = prediction_evidence(p);
        let (cause, kind, base, title, solution, skill, parts, labour, due) = match p.kind {
            PredictionKind::ConsumableDepletion => {
                let spec = spec?;
                let c = spec.consumables.iter().find(|c| c.id == p.target)?;
                let due = p.due_at? - pol.lead_depletion.0;
                (
                    Cause::consumable_depletion(&c.id),
                    OrderKind::Maintenance,
                    prio.consumable_depletion,
                    format!(
                        "Replace {} (forecast to reach its order level {})",
                        c.name,
                        day(p.due_at?)
                    ),
                    format!(
                        "Replace the {} of this {}: its {} is forecast to reach the order level of {} % on {} (model {}).",
                        c.name,
                        spec.name,
                        c.field,
                        c.order_at_pct,
                        day(p.due_at?),
                        p.model_version
                    ),
                    c.skill.clone(),
                    c.parts.clone(),
                    c.labour_minutes,
                    due,
                )
            }
            PredictionKind::ServiceInterval => {
                let spec = spec?;
                let due = p.due_at? - pol.lead_service.0;
                (
                    Cause::service_interval(),
                    OrderKind::Maintenance,
                    prio.service_interval,
                    format!("Preventive service (due {})", day(p.due_at?)),
                    format!(
                        "Preventive service of this {}: runtime hours are forecast to reach the {} h interval on {}.",
                        spec.name,
                        spec.service_interval_hours,
                        day(p.due_at?)
                    ),
                    spec.service_skill.clone(),
                    spec.service_parts.clone(),
                    spec.service_labour_minutes,
                    due,
                )
            }
            PredictionKind::FailureRisk => {
                let spec = spec?;
                let probability = p.probability?;
                let threshold = p.threshold.unwrap_or(pol.default_risk_threshold);
                if probability < threshold {
                    return None;
                }
                let cause = Cause::parse(&format!("failure_risk:{}", p.target)).ok()?;
                let alarm = spec
                    .alarms
                    .iter()
                    .find(|a| a.failure_mode.as_deref() == Some(p.target.as_str()));
                let horizon = p
                    .horizon_days
                    .map_or(String::new(), |h| format!(" within {h:.0} days"));
                let (skill, parts, labour, solution) = match alarm {
                    Some(a) => (
                        a.skill.clone(),
                        a.parts.clone(),
                        a.labour_minutes,
                        a.solution.clone(),
                    ),
                    None => (
                        spec.service_skill.clone(),
                        Vec::new(),
                        spec.service_labour_minutes,
                        format!("Inspect the {} of this {}.", p.target, spec.name),
                    ),
                };
                (
                    cause,
                    pol.risk_order_kind,
                    prio.failure_risk,
                    format!(
                        "Failure risk: {} ({:.0} %{horizon})",
                        p.target,
                        probability * 100.0
                    ),
                    solution,
                    skill,
                    parts,
                    labour,
                    p.as_of + pol.risk_due_after.0,
                )
            }
            PredictionKind::Silent => {
                if device.status != LifecycleStatus::AtCustomer {
                    return None;
                }
                let since = p
                    .due_at
                    .map_or_else(|| "an unknown time".to_owned(), |t| t.to_rfc3339());
                (
                    Cause::silent_device(),
                    OrderKind::Inspection,
                    prio.silent_device,
                    format!("Device silent since {since}"),
                    "The device stopped reporting without switching off normally (its connection was lost, no goodbye). Call the patient, then check power, network and the device on site.".to_owned(),
                    spec.map_or_else(|| FALLBACK_SKILL.to_owned(), |s: &ModelSpec| s.service_skill.clone()),
                    Vec::new(),
                    SILENT_LABOUR_MINUTES,
                    p.as_of,
                )
            }
        };
        if due - now > pol.raise_horizon.0 {
            return None;
        }
        let priority = self.policy.priority_for(base, device.criticality);
        Some(PlannedOrder {
            intent: OrderIntent {
                serial: device.serial.clone(),
                cause,
                kind,
                priority,
                title,
                solution,
                skills: vec![skill],
                parts,
                labour_minutes: labour,
                evidence,
                triggered_at: now,
                sla: self.policy.sla_for(priority, now),
                // Each run restates the forecast: the same episode while the order is
                // active (only its due date may move earlier, see the store).
                new_episode: false,
            },
            due_at: Some(due),
            tasks: Vec::new(),
        })
    }
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The evidence of a predicted order: the forecast, its model, the values and alarms
/// behind it and the top contributing features.
fn prediction_evidence(p: &Prediction) -> serde_json::Value {
    json!({
        "rule": "prediction",
        "prediction": {
            "kind": p.kind,
            "target": p.target,
            "as_of": p.as_of,
            "due_at": p.due_at,
            "due_low": p.due_low,
            "due_high": p.due_high,
            "probability": p.probability,
            "horizon_days": p.horizon_days,
            "threshold": p.threshold,
        },
        "model_version": p.model_version,
        "top_features": p.top_features,
        "evidence": p.evidence,
    })
}

fn task_of(order: &PlannedOrder, now: DateTime<Utc>) -> OrderTask {
    OrderTask {
        cause: order.intent.cause.clone(),
        title: order.intent.title.clone(),
        skills: order.intent.skills.clone(),
        parts: order.intent.parts.clone(),
        labour_minutes: order.intent.labour_minutes,
        due_at: order.due_at,
        evidence: order.intent.evidence.clone(),
        added_at: now,
    }
}

/// The storm-control budget of this run.
struct Budget {
    counts: StormCounts,
    max_fleet: u32,
    max_region: u32,
}

impl Budget {
    /// `None` when a new order of `region` fits; else the limit that is full.
    fn full(&self, region: Option<&str>) -> Option<&'static str> {
        if self.counts.fleet >= self.max_fleet {
            return Some("fleet_limit");
        }
        let used = self
            .counts
            .by_region
            .get(region.unwrap_or(""))
            .copied()
            .unwrap_or(0);
        (used >= self.max_region).then_some("region_limit")
    }

    fn take(&mut self, region: Option<&str>) {
        self.counts.fleet += 1;
        *self
            .counts
            .by_region
            .entry(region.unwrap_or("").to_owned())
            .or_default() += 1;
    }
}

/// A new order being planned in this run, before it is raised or held.
struct Pending {
    order: PlannedOrder,
    predictions: Vec<usize>,
}

impl PredictionPlanner for PredictionOrders {
    fn plan(&self, input: &PlanInput<'_>) -> Vec<PlanAction> {
        let now = input.now;
        let window = self.policy.prediction.bundle_window.0;
        let mut budget = Budget {
            counts: input.counts.clone(),
            max_fleet: self.policy.storm.max_per_hour,
            max_region: self.policy.storm.max_per_region_per_hour,
        };
        let mut actions = Vec::new();

        // The orders the predictions call for, most urgent and soonest due first.
        let mut wanted: Vec<(usize, PlannedOrder)> = input
            .predictions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let device = input.devices.get(&p.serial)?;
                self.order_for(p, device, now).map(|o| (i, o))
            })
            .collect();
        wanted.sort_by(|(ia, a), (ib, b)| {
            (a.intent.priority, a.due_at, &a.intent.serial, ia).cmp(&(
                b.intent.priority,
                b.due_at,
                &b.intent.serial,
                ib,
            ))
        });

        // Held orders first: they waited longest (the queue is in release order). One no
        // prediction of this run calls for any more is dropped.
        let wanted_keys: std::collections::BTreeSet<(fleetpulse_domain::Serial, Cause)> = wanted
            .iter()
            .map(|(_, o)| (o.intent.serial.clone(), o.intent.cause.clone()))
            .collect();
        let mut still_held = std::collections::BTreeSet::new();
        let mut released = std::collections::BTreeSet::new();
        for h in input.held {
            let key = (h.serial.clone(), h.cause.clone());
            if !wanted_keys.contains(&key) {
                actions.push(PlanAction::Drop { queue_id: h.id });
                continue;
            }
            if budget.full(h.region.as_deref()).is_some() {
                still_held.insert(key);
                continue;
            }
            budget.take(h.region.as_deref());
            // the released order carries its tasks: this run's forecasts of them wait
            // for the next run, which finds the order active
            released.insert(key);
            released.extend(h.tasks.iter().map(|t| (h.serial.clone(), t.cause.clone())));
            actions.push(PlanAction::Raise {
                order: PlannedOrder {
                    intent: h.intent.clone(),
                    due_at: h.due_at,
                    tasks: h.tasks.clone(),
                },
                predictions: Vec::new(),
                released: Some(h.id),
            });
        }

        // New orders of this run per device, to bundle later work of the same run into.
        let mut pending: BTreeMap<fleetpulse_domain::Serial, Vec<Pending>> = BTreeMap::new();
        let within = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| -> Option<Duration> {
            let d = (a.unwrap_or(now) - b.unwrap_or(now)).abs();
            (d <= window).then_some(d)
        };
        for (i, order) in wanted {
            let Some(device) = input.devices.get(&order.intent.serial) else {
                continue;
            };
            let cause = &order.intent.cause;
            if released.contains(&(device.serial.clone(), cause.clone())) {
                continue;
            }
            // 1. the same cause is an active order: a repeat trigger
            if device.active.iter().any(|a| &a.cause == cause) {
                actions.push(PlanAction::Raise {
                    order,
                    predictions: vec![i],
                    released: None,
                });
                continue;
            }
            // 2. the same cause rides on an active order already: update that task
            if let Some(a) = device.active.iter().find(|a| a.task_causes.contains(cause)) {
                actions.push(PlanAction::Bundle {
                    order_id: a.id,
                    task: task_of(&order, now),
                    prediction: i,
                });
                continue;
            }
            // 3. an active order of the device is due close by: one visit
            let closest = device
                .active
                .iter()
                .filter_map(|a| within(a.due_at, order.due_at).map(|d| (d, a.id)))
                .min();
            if let Some((_, order_id)) = closest {
                actions.push(PlanAction::Bundle {
                    order_id,
                    task: task_of(&order, now),
                    prediction: i,
                });
                continue;
            }
            // 4. a new order of this run is due close by: a task of it
            let mine = pending.entry(device.serial.clone()).or_default();
            if let Some(host) = mine.iter_mut().find(|h| {
                within(h.order.due_at, order.due_at).is_some()
                    && !h.order.tasks.iter().any(|t| &t.cause == cause)
            }) {
                host.order.tasks.push(task_of(&order, now));
                host.predictions.push(i);
                continue;
            }
            mine.push(Pending {
                order,
                predictions: vec![i],
            });
        }

        // New orders in urgency order (the order they were first planned in).
        let mut news: Vec<Pending> = pending.into_values().flatten().collect();
        news.sort_by(|a, b| {
            (
                a.order.intent.priority,
                a.order.due_at,
                &a.order.intent.serial,
            )
                .cmp(&(
                    b.order.intent.priority,
                    b.order.due_at,
                    &b.order.intent.serial,
                ))
        });
        for n in news {
            let device = input.devices.get(&n.order.intent.serial);
            let region = device.and_then(|d| d.region.clone());
            let key = (n.order.intent.serial.clone(), n.order.intent.cause.clone());
            // an order still held waits its turn; it is refreshed, not raised ahead of it
            let reason = budget
                .full(region.as_deref())
                .or_else(|| still_held.contains(&key).then_some("fleet_limit"));
            match reason {
                Some(reason) => actions.push(PlanAction::Hold {
                    order: n.order,
                    region,
                    reason: reason.to_owned(),
                    predictions: n.predictions,
                }),
                None => {
                    budget.take(region.as_deref());
                    actions.push(PlanAction::Raise {
                        order: n.order,
                        predictions: n.predictions,
                        released: None,
                    });
                }
            }
        }
        self.risks_fallen(input, &mut actions);
        actions
    }
}

impl PredictionOrders {
    /// Active failure-risk orders whose mode this run scores below its threshold: marked
    /// (`[resolution] failure_risk = "mark"`), never closed.
    fn risks_fallen(&self, input: &PlanInput<'_>, actions: &mut Vec<PlanAction>) {
        if self.policy.resolution.failure_risk != WhenGone::Mark {
            return;
        }
        for (i, p) in input.predictions.iter().enumerate() {
            if p.kind != PredictionKind::FailureRisk {
                continue;
            }
            let Some(probability) = p.probability else {
                continue;
            };
            let threshold = p
                .threshold
                .unwrap_or(self.policy.prediction.default_risk_threshold);
            if probability >= threshold {
                continue;
            }
            let Some(device) = input.devices.get(&p.serial) else {
                continue;
            };
            let Ok(cause) = Cause::parse(&format!("failure_risk:{}", p.target)) else {
                continue;
            };
            if let Some(active) = device.active.iter().find(|a| a.cause == cause) {
                actions.push(PlanAction::RiskFell {
                    order_id: active.id,
                    prediction: i,
                    probability,
                    threshold,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_domain::store::{ActiveOrder, HeldOrder};
    use fleetpulse_domain::{Criticality, Priority, Serial};

    const CATALOG: &str = include_str!("../../config/catalog.toml");
    const POLICY: &str = include_str!("../../config/policy.toml");

    fn planner(max_fleet: u32, max_region: u32) -> (PredictionOrders, Arc<Catalog>) {
        let mut policy = Policy::from_toml_str(POLICY).expect("shipped policy");
        policy.storm.max_per_hour = max_fleet;
        policy.storm.max_per_region_per_hour = max_region;
        let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("shipped catalog"));
        (
            PredictionOrders::new(catalog.clone(), Arc::new(policy)),
            catalog,
        )
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-03-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn model_with_consumable(c: &Catalog) -> (String, String) {
        let m = c
            .models()
            .find(|m| {
                !m.consumables.is_empty() && m.alarms.iter().any(|a| a.failure_mode.is_some())
            })
            .expect("a model with a consumable and a failure mode");
        (m.id.to_string(), m.consumables[0].id.clone())
    }

    fn device(serial: &str, model: &str, region: &str) -> PlanDevice {
        PlanDevice {
            serial: Serial::parse(serial).expect("serial"),
            model: Some(model.to_owned()),
            criticality: Criticality::Standard,
            status: LifecycleStatus::AtCustomer,
            region: Some(region.to_owned()),
            active: Vec::new(),
        }
    }

    fn depletion(serial: &str, target: &str, in_days: i64) -> Prediction {
        Prediction {
            serial: Serial::parse(serial).expect("serial"),
            kind: PredictionKind::ConsumableDepletion,
            target: target.to_owned(),
            as_of: now(),
            due_at: Some(now() + Duration::days(in_days)),
            due_low: None,
            due_high: None,
            probability: None,
            horizon_days: None,
            threshold: None,
            model_version: "depletion-v1".into(),
            top_features: Vec::new(),
            evidence: json!({"slope_pct_per_day": -1.2}),
        }
    }

    fn risk(serial: &str, mode: &str, p: f64) -> Prediction {
        Prediction {
            kind: PredictionKind::FailureRisk,
            target: mode.to_owned(),
            due_at: None,
            probability: Some(p),
            horizon_days: Some(30.0),
            threshold: Some(0.3),
            model_version: format!("risk-{mode}-1"),
            ..depletion(serial, mode, 0)
        }
    }

    fn plan(
        pl: &PredictionOrders,
        preds: &[Prediction],
        devices: Vec<PlanDevice>,
        counts: StormCounts,
        held: &[HeldOrder],
    ) -> Vec<PlanAction> {
        let devices = devices.into_iter().map(|d| (d.serial.clone(), d)).collect();
        pl.plan(&PlanInput {
            predictions: preds,
            devices: &devices,
            counts: &counts,
            held,
            now: now(),
        })
    }

    fn failure_mode(c: &Catalog, model: &str) -> String {
        c.model(model)
            .and_then(|m| m.alarms.iter().find_map(|a| a.failure_mode.clone()))
            .expect("mode")
    }

    #[test]
    fn a_depletion_forecast_is_due_the_lead_before_the_date_and_only_within_the_horizon() {
        let (pl, c) = planner(100, 100);
        let (model, filter) = model_with_consumable(&c);
        let d = device("OC5-1", &model, "north");
        let soon = depletion("OC5-1", &filter, 5);
        let o = pl
            .order_for(&soon, &d, now())
            .expect("due within the horizon");
        assert_eq!(
            o.due_at,
            Some(now() + Duration::days(2)),
            "5 d minus the 3 d lead"
        );
        assert_eq!(o.intent.cause, Cause::consumable_depletion(&filter));
        assert_eq!(o.intent.evidence["model_version"], json!("depletion-v1"));
        assert!(
            pl.order_for(&depletion("OC5-1", &filter, 40), &d, now())
                .is_none()
        );
    }

    #[test]
    fn a_risk_order_carries_the_catalog_parts_and_skill_of_its_failure_mode() {
        let (pl, c) = planner(100, 100);
        let (model, _) = model_with_consumable(&c);
        let mode = failure_mode(&c, &model);
        let spec = c.model(&model).expect("model");
        let alarm = spec
            .alarms
            .iter()
            .find(|a| a.failure_mode.as_deref() == Some(mode.as_str()))
            .expect("alarm");
        let d = device("OC5-1", &model, "north");
        let o = pl
            .order_for(&risk("OC5-1", &mode, 0.8), &d, now())
            .expect("over threshold");
        assert_eq!(o.intent.cause.as_str(), format!("failure_risk:{mode}"));
        assert_eq!(o.intent.parts, alarm.parts);
        assert_eq!(o.intent.skills, vec![alarm.skill.clone()]);
        assert_eq!(o.intent.kind, OrderKind::Inspection);
        assert!(
            pl.order_for(&risk("OC5-1", &mode, 0.1), &d, now())
                .is_none()
        );
    }

    #[test]
    fn work_due_close_together_on_one_device_is_one_visit() {
        let (pl, c) = planner(100, 100);
        let (model, filter) = model_with_consumable(&c);
        let mode = failure_mode(&c, &model);
        let preds = [depletion("OC5-1", &filter, 5), risk("OC5-1", &mode, 0.9)];
        let actions = plan(
            &pl,
            &preds,
            vec![device("OC5-1", &model, "n")],
            StormCounts::default(),
            &[],
        );
        assert_eq!(actions.len(), 1, "{actions:?}");
        let PlanAction::Raise {
            order, predictions, ..
        } = &actions[0]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(order.tasks.len(), 1);
        assert_eq!(predictions.len(), 2);

        // with an active order due close by, the forecast rides on it
        let mut d = device("OC5-1", &model, "n");
        d.active.push(ActiveOrder {
            id: 7,
            cause: Cause::parse("critical_alarm:E101").expect("cause"),
            created_at: now(),
            due_at: None,
            task_causes: Vec::new(),
        });
        let actions = plan(&pl, &preds[..1], vec![d], StormCounts::default(), &[]);
        assert!(
            matches!(actions[..], [PlanAction::Bundle { order_id: 7, .. }]),
            "{actions:?}"
        );
    }

    #[test]
    fn the_same_cause_as_an_active_order_is_a_repeat_trigger_not_held() {
        let (pl, c) = planner(0, 0);
        let (model, filter) = model_with_consumable(&c);
        let mut d = device("OC5-1", &model, "n");
        d.active.push(ActiveOrder {
            id: 3,
            cause: Cause::consumable_depletion(&filter),
            created_at: now(),
            due_at: None,
            task_causes: Vec::new(),
        });
        let actions = plan(
            &pl,
            &[depletion("OC5-1", &filter, 1)],
            vec![d],
            StormCounts::default(),
            &[],
        );
        assert!(
            matches!(actions[..], [PlanAction::Raise { released: None, .. }]),
            "{actions:?}"
        );
    }

    #[test]
    fn storm_control_holds_beyond_the_limits_and_releases_most_urgent_first() {
        let (pl, c) = planner(2, 100);
        let (model, filter) = model_with_consumable(&c);
        let preds: Vec<Prediction> = (1..=4)
            .map(|i| depletion(&format!("OC5-{i}"), &filter, 4))
            .collect();
        let devices = (1..=4)
            .map(|i| device(&format!("OC5-{i}"), &model, "n"))
            .collect();
        let counts = StormCounts {
            fleet: 1,
            ..Default::default()
        };
        let actions = plan(&pl, &preds, devices, counts, &[]);
        let raised = actions
            .iter()
            .filter(|a| matches!(a, PlanAction::Raise { .. }))
            .count();
        let held = actions
            .iter()
            .filter(|a| matches!(a, PlanAction::Hold { .. }))
            .count();
        assert_eq!((raised, held), (1, 3), "{actions:?}");

        // region limit
        let (pl, _) = planner(100, 1);
        let devices = vec![
            device("OC5-1", &model, "n"),
            device("OC5-2", &model, "n"),
            device("OC5-3", &model, "s"),
        ];
        let actions = plan(&pl, &preds[..3], devices, StormCounts::default(), &[]);
        let held: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                PlanAction::Hold { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(held, vec!["region_limit"]);

        // release: the P2 entry before the older P3 one
        let (pl, _) = planner(1, 100);
        let o = pl
            .order_for(&preds[0], &device("OC5-1", &model, "n"), now())
            .expect("order");
        let entry = |id: i64, serial: &str, priority: Priority| HeldOrder {
            id,
            serial: Serial::parse(serial).expect("serial"),
            cause: o.intent.cause.clone(),
            priority,
            region: Some("n".into()),
            due_at: o.due_at,
            held_at: now(),
            reason: "fleet_limit".into(),
            intent: OrderIntent {
                serial: Serial::parse(serial).expect("serial"),
                priority,
                ..o.intent.clone()
            },
            tasks: Vec::new(),
        };
        // the store lists the queue in release order
        let queue = [
            entry(2, "OC5-2", Priority::P2),
            entry(1, "OC5-1", Priority::P3),
        ];
        let devices = vec![device("OC5-1", &model, "n"), device("OC5-2", &model, "n")];
        let actions = plan(
            &pl,
            &preds[..2],
            devices.clone(),
            StormCounts::default(),
            &queue,
        );
        assert!(
            matches!(
                actions[..],
                [
                    PlanAction::Raise {
                        released: Some(2),
                        ..
                    },
                    PlanAction::Hold { .. }
                ]
            ),
            "{actions:?}"
        );
        // a held order no prediction calls for any more is dropped
        let actions = plan(&pl, &preds[1..2], devices, StormCounts::default(), &queue);
        assert!(
            matches!(
                actions[..],
                [
                    PlanAction::Raise {
                        released: Some(2),
                        ..
                    },
                    PlanAction::Drop { queue_id: 1 }
                ]
            ),
            "{actions:?}"
        );
    }
}
