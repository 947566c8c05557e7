//! Orders follow the device (policy `[resolution]`), on a real SQLite store with the
//! shipped rules: a fresh consumable closes its order with the reading as evidence; a
//! cleared alarm that needs a visit leaves its order open with `condition_cleared_at`;
//! one that needs none is cancelled after the policy's delay, not before, and not when
//! the alarm returns; a risk that fell below its threshold marks its order.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fleetpulse_domain::dispatch::Dispatch;
use fleetpulse_domain::prediction::{Prediction, PredictionKind};
use fleetpulse_domain::store::{
    IngestBatch, NewDevice, OrderQuery, PredictionRun, PredictionStore, Store, UnknownDevicePolicy,
};
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{
    Catalog, Cause, LifecycleStatus, ModelId, Order, OrderStatus, Policy, Reading, Serial,
};
use fleetpulse_rules::CatalogRules;
use fleetpulse_rules::predicted::PredictionOrders;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use serde_json::json;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

struct Fixture {
    store: SqliteStore,
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
    _dir: tempfile::TempDir,
}

async fn fixture_with(catalog: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(Catalog::from_toml_str(catalog).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    let store = SqliteStore::open(
        &dir.path().join("resolution.db"),
        StoreOptions {
            clock: Default::default(),
            catalog: catalog.clone(),
            rules: Arc::new(CatalogRules::new(policy.clone())),
            unknown_device: UnknownDevicePolicy::Reject,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open");
    Fixture {
        store,
        catalog,
        policy,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(CATALOG).await
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("serial")
}

impl Fixture {
    async fn register(&self, serial: &str, model: &str) {
        self.store
            .register_device(NewDevice {
                serial: sn(serial),
                model: ModelId::parse(model).expect("model"),
                status: Some(LifecycleStatus::AtCustomer),
                criticality: None,
                region: Some("north".into()),
                address: Some("1 Main St".into()),
                commissioned_at: None,
                runtime_hours_at_registration: None,
                observed_from: None,
            })
            .await
            .expect("register");
    }

    /// Commits one reading of `serial` with these fields.
    async fn report(&self, serial: &str, seq: u64, fields: serde_json::Value) {
        let ts = Utc::now() - Duration::minutes(10) + Duration::seconds(seq as i64);
        let mut v = json!({"seq": seq, "ts": ts.to_rfc3339()});
        if let (Some(o), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
            o.extend(extra);
        }
        let reading: Reading = parse_telemetry(
            &sn(serial),
            v.to_string().as_bytes(),
            Utc::now(),
            &TelemetryLimits::default(),
        )
        .remove(0)
        .expect("valid reading");
        self.store
            .commit_batch(IngestBatch {
                readings: vec![reading],
                ..Default::default()
            })
            .await
            .expect("commit");
    }

    /// The one order of `serial` with `cause`, whatever its status.
    async fn order(&self, serial: &str, cause: &str) -> Order {
        let mut orders = self
            .store
            .list_orders(OrderQuery {
                serial: Some(sn(serial)),
                cause: Some(Cause::parse(cause).expect("cause")),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("orders")
            .items;
        assert_eq!(orders.len(), 1, "one {cause} order of {serial}: {orders:?}");
        orders.remove(0)
    }

    async fn kinds(&self, id: i64) -> Vec<(String, String)> {
        self.store
            .order_history(id)
            .await
            .expect("history")
            .into_iter()
            .map(|e| (e.kind, e.actor))
            .collect()
    }
}

fn kind_actor(kind: &str, actor: &str) -> (String, String) {
    (kind.to_owned(), actor.to_owned())
}

#[tokio::test]
async fn a_fresh_filter_closes_its_order_with_the_reading_as_evidence() {
    let f = fixture().await;
    f.register("OC5-R0001", "OC-5A").await;
    f.report("OC5-R0001", 1, json!({"filter_life_pct": 12.0}))
        .await;
    let raised = f.order("OC5-R0001", "filter_depletion").await;
    assert_eq!(raised.status, OrderStatus::Open);

    // a level above the order threshold but below fresh_at_pct (80) closes nothing
    f.report("OC5-R0001", 2, json!({"filter_life_pct": 50.0}))
        .await;
    let still = f.order("OC5-R0001", "filter_depletion").await;
    assert_eq!(
        (still.status, still.version, still.condition_cleared_at),
        (OrderStatus::Open, raised.version, None)
    );

    // a new filter: the order is closed, resolved by the device
    f.report("OC5-R0001", 3, json!({"filter_life_pct": 100.0}))
        .await;
    let closed = f.order("OC5-R0001", "filter_depletion").await;
    assert_eq!(closed.status, OrderStatus::Cancelled);
    assert!(closed.closed_at.is_some() && closed.condition_cleared_at.is_some());
    let reason = closed.cancel_reason.clone().expect("a reason");
    assert!(
        reason.starts_with("resolved by the device: filter_life_pct = 100"),
        "{reason}"
    );
    let evidence = closed.condition_evidence.clone().expect("evidence");
    assert_eq!(
        (
            &evidence["serial"],
            &evidence["seq"],
            &evidence["field"],
            &evidence["value"]
        ),
        (
            &json!("OC5-R0001"),
            &json!(3),
            &json!("filter_life_pct"),
            &json!(100.0)
        )
    );
    assert!(evidence["ts"].is_string(), "{evidence}");
    assert_eq!(closed.version, raised.version + 1);

    let history = f.store.order_history(closed.id).await.expect("history");
    let last = history.last().expect("events");
    assert_eq!(
        (last.kind.as_str(), last.actor.as_str(), last.to_status),
        ("cancelled", "system", OrderStatus::Cancelled)
    );
    assert_eq!(last.data["resolved_by_device"], json!(true));
    assert_eq!(last.data["evidence"], evidence);
    assert_eq!(last.version, closed.version);
    // the same event is on the feed the stream and the webhooks read
    let feed = f
        .store
        .order_events_after(last.id - 1, 10)
        .await
        .expect("feed");
    assert_eq!(feed.first().map(|e| e.id), Some(last.id));

    // a later low filter is a new order, not the closed one reopened
    f.report("OC5-R0001", 4, json!({"filter_life_pct": 10.0}))
        .await;
    let active = f
        .store
        .list_orders(OrderQuery {
            serial: Some(sn("OC5-R0001")),
            active_only: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("orders")
        .items;
    assert_eq!(active.len(), 1);
    assert_ne!(active[0].id, closed.id);
}

#[tokio::test]
async fn a_cleared_ventilator_alarm_keeps_its_order_open_and_shows_since_when() {
    let f = fixture().await;
    f.register("HV2-R0001", "HV-200").await;
    f.report("HV2-R0001", 1, json!({"alarms": ["V101"]})).await;
    let raised = f.order("HV2-R0001", "critical_alarm:V101").await;
    assert_eq!(raised.condition_cleared_at, None);

    let before = Utc::now();
    f.report("HV2-R0001", 2, json!({"alarms": []})).await;
    let cleared = f.order("HV2-R0001", "critical_alarm:V101").await;
    assert_eq!(
        cleared.status,
        OrderStatus::Open,
        "a ventilator's critical alarm needs a visit"
    );
    let at = cleared.condition_cleared_at.expect("cleared at");
    assert!(at >= before - Duration::seconds(1) && at <= Utc::now());
    assert_eq!(cleared.cancel_at, None, "nothing will cancel it");
    let evidence = cleared.condition_evidence.clone().expect("evidence");
    assert_eq!(
        (
            &evidence["alarm"],
            &evidence["seq"],
            &evidence["field"],
            &evidence["needs_visit"]
        ),
        (&json!("V101"), &json!(2), &json!("alarms"), &json!(true))
    );
    assert_eq!(cleared.version, raised.version + 1);
    assert_eq!(
        f.kinds(cleared.id).await.last(),
        Some(&kind_actor("condition_cleared", "system"))
    );
    // the periodic cancel, however late, leaves it open
    assert_eq!(
        f.store
            .cancel_cleared_orders(Utc::now() + Duration::days(30))
            .await
            .expect("cancel"),
        0
    );
    assert_eq!(
        f.order("HV2-R0001", "critical_alarm:V101").await.status,
        OrderStatus::Open
    );

    // the alarm comes back: the mark goes, with its event after the trigger's own
    f.report("HV2-R0001", 3, json!({"alarms": ["V101"]})).await;
    let back = f.order("HV2-R0001", "critical_alarm:V101").await;
    assert_eq!(
        (back.condition_cleared_at, back.condition_evidence),
        (None, None)
    );
    let kinds = f.kinds(back.id).await;
    assert_eq!(
        kinds[kinds.len() - 2..],
        [
            kind_actor("updated", "rules"),
            kind_actor("condition_returned", "system")
        ]
    );
}

/// The shipped catalog with OC-5A's E103 declared `needs_visit = false`: the shipped
/// rules raise orders for critical alarms only, and every critical alarm needs a visit by
/// default, so an alarm that needs none is one the catalog declares so.
fn catalog_with_e103_without_visit() -> String {
    let from = "code = \"E103\"\n";
    assert!(CATALOG.contains(from));
    CATALOG.replacen(from, "code = \"E103\"\nneeds_visit = false\n", 1)
}

#[tokio::test]
async fn a_cleared_alarm_that_needs_no_visit_is_cancelled_after_the_delay_unless_it_returns() {
    let f = fixture_with(&catalog_with_e103_without_visit()).await;
    let delay = f.policy.resolution.cancel_cleared_alarm_after.0;
    assert_eq!(delay, Duration::hours(2), "the shipped delay");
    f.register("OC5-R0002", "OC-5A").await;
    f.register("OC5-R0003", "OC-5A").await;
    for serial in ["OC5-R0002", "OC5-R0003"] {
        f.report(serial, 1, json!({"alarms": ["E103"]})).await;
        f.report(serial, 2, json!({"alarms": []})).await;
    }
    let pending = f.order("OC5-R0002", "critical_alarm:E103").await;
    let cleared_at = pending.condition_cleared_at.expect("cleared");
    assert_eq!(pending.cancel_at, Some(cleared_at + delay));
    assert_eq!(
        pending
            .condition_evidence
            .as_ref()
            .map(|e| e["needs_visit"].clone()),
        Some(json!(false))
    );

    // OC5-R0003's alarm comes back within the delay: its cancel is off
    f.report("OC5-R0003", 3, json!({"alarms": ["E103"]})).await;
    let returned = f.order("OC5-R0003", "critical_alarm:E103").await;
    assert_eq!(
        (returned.condition_cleared_at, returned.cancel_at),
        (None, None)
    );

    // not before the delay
    let just_before = cleared_at + delay - Duration::seconds(1);
    assert_eq!(
        f.store
            .cancel_cleared_orders(just_before)
            .await
            .expect("cancel"),
        0
    );
    assert_eq!(
        f.order("OC5-R0002", "critical_alarm:E103").await.status,
        OrderStatus::Open
    );

    // at the delay: cancelled by the system, with the reading that cleared it
    let due = pending.cancel_at.expect("cancel pending");
    assert_eq!(f.store.cancel_cleared_orders(due).await.expect("cancel"), 1);
    let cancelled = f.order("OC5-R0002", "critical_alarm:E103").await;
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(cancelled.closed_at, Some(due));
    assert_eq!(cancelled.condition_cleared_at, Some(cleared_at));
    assert_eq!(cancelled.cancel_at, None);
    let reason = cancelled.cancel_reason.clone().expect("reason");
    assert!(
        reason.contains("alarm E103 cleared at") && reason.ends_with("stayed clear for 2h"),
        "{reason}"
    );
    let history = f.store.order_history(cancelled.id).await.expect("history");
    let last = history.last().expect("events");
    assert_eq!(
        (last.kind.as_str(), last.actor.as_str()),
        ("cancelled", "system")
    );
    assert_eq!(last.data["evidence"]["seq"], json!(2));
    assert_eq!(last.at, due);

    // once only; the returned one stays open however late it is
    assert_eq!(
        f.store
            .cancel_cleared_orders(due + Duration::days(1))
            .await
            .expect("cancel"),
        0
    );
    assert_eq!(
        f.order("OC5-R0003", "critical_alarm:E103").await.status,
        OrderStatus::Open
    );
}

fn risk(serial: &str, mode: &str, probability: f64, threshold: f64) -> Prediction {
    Prediction {
        serial: sn(serial),
        kind: PredictionKind::FailureRisk,
        target: mode.into(),
        as_of: Utc::now(),
        due_at: None,
        due_low: None,
        due_high: None,
        probability: Some(probability),
        horizon_days: Some(30.0),
        threshold: Some(threshold),
        model_version: "risk-test-v1".into(),
        top_features: Vec::new(),
        evidence: json!({"from": "test"}),
    }
}

async fn run(
    f: &Fixture,
    predictions: Vec<Prediction>,
    at: DateTime<Utc>,
) -> fleetpulse_domain::store::RunReport {
    f.store
        .apply_predictions(
            PredictionRun {
                as_of: at,
                trigger: "test".into(),
                devices: 1,
                predictions,
            },
            Arc::new(PredictionOrders::new(f.catalog.clone(), f.policy.clone())),
        )
        .await
        .expect("run")
}

#[tokio::test]
async fn a_risk_that_fell_below_its_threshold_marks_its_order_and_a_rise_clears_the_mark() {
    let f = fixture().await;
    f.register("OC5-R0004", "OC-5A").await;
    let raised = run(
        &f,
        vec![risk("OC5-R0004", "compressor", 0.8, 0.5)],
        Utc::now(),
    )
    .await;
    assert_eq!(raised.raised, 1);
    let order = f.order("OC5-R0004", "failure_risk:compressor").await;
    assert_eq!(order.condition_cleared_at, None);

    let fell = run(
        &f,
        vec![risk("OC5-R0004", "compressor", 0.2, 0.5)],
        Utc::now(),
    )
    .await;
    assert_eq!(fell.risk_cleared, 1);
    assert_eq!(
        fell.orders.iter().map(|c| c.order_id).collect::<Vec<_>>(),
        [order.id]
    );
    let marked = f.order("OC5-R0004", "failure_risk:compressor").await;
    assert_eq!(marked.status, OrderStatus::Open, "marked, not closed");
    assert!(marked.condition_cleared_at.is_some());
    let evidence = marked.condition_evidence.clone().expect("evidence");
    assert_eq!(
        (
            &evidence["run_id"],
            &evidence["probability"],
            &evidence["threshold"]
        ),
        (&json!(fell.run_id), &json!(0.2), &json!(0.5))
    );
    assert_eq!(
        f.kinds(marked.id).await.last(),
        Some(&kind_actor("condition_cleared", "system"))
    );

    // a second low run marks nothing again (one event per change)
    let again = run(
        &f,
        vec![risk("OC5-R0004", "compressor", 0.1, 0.5)],
        Utc::now(),
    )
    .await;
    assert_eq!(again.risk_cleared, 0);
    assert_eq!(
        f.order("OC5-R0004", "failure_risk:compressor")
            .await
            .version,
        marked.version
    );

    // the risk rises again: the mark goes
    run(
        &f,
        vec![risk("OC5-R0004", "compressor", 0.9, 0.5)],
        Utc::now(),
    )
    .await;
    let back = f.order("OC5-R0004", "failure_risk:compressor").await;
    assert_eq!(
        (back.condition_cleared_at, back.condition_evidence),
        (None, None)
    );
    assert_eq!(
        f.kinds(back.id).await.last(),
        Some(&kind_actor("condition_returned", "system"))
    );
}
