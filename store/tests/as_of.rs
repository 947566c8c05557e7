//! The as-of leakage test (issue 21): two stores with the same history up to a time `T`,
//! the second with more after it — readings in `T`'s own hour and later, a repair order
//! that confirms an alarm event, a retraction, a prediction order closed, an alarm
//! episode ended, replacements, a status change and a device registered, all after `T`.
//! What the predictors read as of `T` is the same from both, and so are the features
//! and forecasts computed from it: nothing at or after `T` is read.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use fleetpulse_analytics::predict::{CatalogForecaster, PredictOptions, failure_modes, risk};
use fleetpulse_domain::dispatch::{Actor, Dispatch, OrderAction, StatusChange};
use fleetpulse_domain::prediction::{
    Forecaster, Prediction, PredictionData, PredictionKind, TrainedModel,
};
use fleetpulse_domain::reliability::{ImportKind, ReliabilitySource};
use fleetpulse_domain::store::{
    IngestBatch, NewDevice, OrderQuery, PredictionPlanner, PredictionRun, PredictionStore, Store,
};
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{Catalog, LifecycleStatus, ModelId, Order, Policy, Reading, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_rules::predicted::PredictionOrders;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use serde_json::json;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

struct Fixture {
    store: SqliteStore,
    catalog: Arc<Catalog>,
    planner: Arc<dyn PredictionPlanner>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    let store = SqliteStore::open(
        &dir.path().join("as_of.db"),
        StoreOptions {
            clock: Default::default(),
            catalog: catalog.clone(),
            rules: Arc::new(CatalogRules::new(policy.clone())),
            unknown_device: fleetpulse_domain::store::UnknownDevicePolicy::AutoRegister,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open");
    Fixture {
        store,
        planner: Arc::new(PredictionOrders::new(catalog.clone(), policy)),
        catalog,
        _dir: dir,
    }
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("serial")
}

/// `T`: twenty days ago, 20 minutes into an hour (the hour's bucket straddles it).
fn t() -> DateTime<Utc> {
    (Utc::now() - Duration::days(20))
        .duration_trunc(Duration::hours(1))
        .expect("hour")
        + Duration::minutes(20)
}

fn reading(serial: &str, seq: u64, ts: DateTime<Utc>, fields: serde_json::Value) -> Reading {
    let mut v = json!({"seq": seq, "ts": ts.to_rfc3339(), "model": "OC-5A"});
    if let (Some(o), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        o.extend(extra);
    }
    parse_telemetry(
        &sn(serial),
        v.to_string().as_bytes(),
        Utc::now(),
        &TelemetryLimits::default(),
    )
    .remove(0)
    .expect("valid reading")
}

/// A reading of a device `hours` after the start of its history (runtime grows 16 h a
/// day, the filter wears, the purity wanders), with `alarms` when it says them.
fn at_hour(serial: &str, start: DateTime<Utc>, hours: i64, alarms: Option<&[&str]>) -> Reading {
    let h = hours as f64;
    let mut fields = json!({
        "runtime_hours": 1000.0 + h * 16.0 / 24.0,
        "filter_life_pct": 95.0 - h * 0.05,
        "o2_purity_pct": 93.0 + (h * 0.7).sin(),
    });
    if let Some(codes) = alarms {
        fields["alarms"] = json!(codes);
    }
    let seq = u64::try_from(hours + 1).expect("positive");
    reading(serial, seq, start + Duration::hours(hours), fields)
}

async fn commit(store: &SqliteStore, readings: Vec<Reading>) {
    store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");
}

async fn register(store: &SqliteStore, serial: &str, commissioned: Option<DateTime<Utc>>) {
    store
        .register_device(NewDevice {
            serial: sn(serial),
            model: ModelId::parse("OC-5A").expect("model"),
            status: Some(LifecycleStatus::AtCustomer),
            criticality: None,
            region: Some("north".into()),
            address: Some("1 Main St".into()),
            commissioned_at: commissioned,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
}

async fn import(store: &SqliteStore, kind: ImportKind, csv: String) {
    let report = store.import_history(kind, csv).await.expect("import");
    assert!(report.errors.is_empty(), "{report:?}");
}

const DEVICES: [&str; 3] = ["OC5-T1", "OC5-T2", "OC5-T3"];

/// Where the readings start: 30 days before `t`'s hour, 5 minutes into an hour.
fn start_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::hours(1)).expect("hour") - Duration::days(30) + Duration::minutes(5)
}

/// The history up to `t`, the same in both stores: three devices commissioned long
/// before (registered now), 30 days of readings every 2 hours up to one in `t`'s own
/// hour (15 minutes before `t`), a compressor alarm on T1 and a purity alarm on T2 (failure events with critical
/// orders), a purity warning on T3 still active at `t`, a compressor replacement, and a
/// prediction order raised before `t`.
async fn history_until(f: &Fixture, t: DateTime<Utc>) {
    let start = start_of(t);
    for s in DEVICES {
        register(&f.store, s, Some(t - Duration::days(200))).await;
    }
    let last = (t - start).num_hours();
    for s in DEVICES {
        let readings = (0..=last)
            .filter(|h| (last - h) % 2 == 0)
            .map(|h| {
                let alarms: Option<&[&str]> = match (s, last - h) {
                    ("OC5-T1", 120) => Some(&["E101"]),
                    ("OC5-T1", 118) => Some(&[]),
                    ("OC5-T2", 96) => Some(&["E102"]),
                    ("OC5-T2", 94) => Some(&[]),
                    ("OC5-T3", 24) => Some(&["W201"]),
                    _ => None,
                };
                at_hour(s, start, h, alarms)
            })
            .collect();
        commit(&f.store, readings).await;
    }
    import(
        &f.store,
        ImportKind::Maintenance,
        format!(
            "serial,at,runtime_hours,kind,component\nOC5-T1,{},1100,replacement,compressor\n",
            (t - Duration::days(25)).to_rfc3339()
        ),
    )
    .await;
    // a prediction order raised two days before t (the run itself is stored now: its
    // order is moved back)
    let risk = Prediction {
        serial: sn("OC5-T3"),
        kind: PredictionKind::FailureRisk,
        target: "compressor".into(),
        as_of: t,
        due_at: None,
        due_low: None,
        due_high: None,
        probability: Some(0.9),
        horizon_days: Some(30.0),
        threshold: Some(0.4),
        model_version: "test-v1".into(),
        top_features: Vec::new(),
        evidence: json!({"from": "test"}),
    };
    let report = f
        .store
        .apply_predictions(
            PredictionRun {
                as_of: t,
                trigger: "test".into(),
                devices: 1,
                predictions: vec![risk],
            },
            f.planner.clone(),
        )
        .await
        .expect("apply");
    assert_eq!(report.raised, 1, "{report:?}");
    let conn = rusqlite::Connection::open(f.store.path()).expect("open");
    conn.execute(
        "UPDATE orders SET created_at = ?1 WHERE origin = 'prediction'",
        [(t - Duration::days(2)).timestamp_millis()],
    )
    .expect("move back");
}

async fn active(store: &SqliteStore, serial: &str) -> Vec<Order> {
    store
        .list_orders(OrderQuery {
            serial: Some(sn(serial)),
            active_only: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("orders")
        .items
}

/// Acknowledges, assigns, starts and completes `order` now with `outcome`.
async fn complete(store: &SqliteStore, order: &Order, outcome: serde_json::Value) {
    let mut version = order.version;
    for action in [
        OrderAction::Acknowledge,
        OrderAction::Assign {
            engineer: "E-1".into(),
            planned_visit_at: None,
        },
        OrderAction::Start,
        OrderAction::Complete(serde_json::from_value(outcome).expect("outcome")),
    ] {
        version = store
            .transition(order.id, version, action, Actor("test".into()), Utc::now())
            .await
            .expect("step")
            .version;
    }
}

fn order_of<'a>(orders: &'a [Order], cause: &str) -> &'a Order {
    orders
        .iter()
        .find(|o| o.cause.as_str() == cause)
        .unwrap_or_else(|| panic!("no {cause} order in {orders:?}"))
}

/// What happens after `t` in the second store only.
async fn history_after(f: &Fixture, t: DateTime<Utc>) {
    let start = start_of(t);
    let from = (t - start).num_hours();
    for s in DEVICES {
        // readings in t's own hour (15 minutes after t) and for two days on; T3's
        // warning clears
        let readings = (from..from + 48)
            .map(|h| {
                let alarms: Option<&[&str]> = (s == "OC5-T3" && h == from).then_some(&[]);
                let mut r = at_hour(s, start, h, alarms);
                r.ts = start + Duration::hours(h) + Duration::minutes(30);
                r.seq += 10_000;
                r
            })
            .collect();
        commit(&f.store, readings).await;
    }
    // the compressor alarm of T1 confirmed by its repair order, with a filter change; the
    // purity alarm of T2 closed as no fault found (its event retracted)
    let t1 = active(&f.store, "OC5-T1").await;
    complete(
        &f.store,
        order_of(&t1, "critical_alarm:E101"),
        json!({"failure_confirmed": true, "fault_code": "E101", "consumables_replaced": ["filter"]}),
    )
    .await;
    let t2 = active(&f.store, "OC5-T2").await;
    complete(
        &f.store,
        order_of(&t2, "critical_alarm:E102"),
        json!({"failure_confirmed": false}),
    )
    .await;
    // the prediction order of T3 closed: the failure was confirmed
    let t3 = active(&f.store, "OC5-T3").await;
    complete(
        &f.store,
        order_of(&t3, "failure_risk:compressor"),
        json!({"failure_confirmed": true, "fault_code": "E101"}),
    )
    .await;
    // T2 leaves its customer for the workshop
    f.store
        .change_device_status(
            &sn("OC5-T2"),
            StatusChange {
                status: LifecycleStatus::InRepair,
                criticality: None,
                region: None,
                address: None,
                reason: Some("workshop".into()),
            },
            Actor("test".into()),
        )
        .await
        .expect("status");
    // maintenance after t, and a device registered after it
    import(
        &f.store,
        ImportKind::Maintenance,
        format!(
            "serial,at,runtime_hours,kind,component\nOC5-T3,{},1500,service,\nOC5-T2,{},1500,replacement,sieve_bed\n",
            (t + Duration::hours(3)).to_rfc3339(),
            (t + Duration::days(1)).to_rfc3339()
        ),
    )
    .await;
    register(&f.store, "OC5-T9", None).await;
    commit(
        &f.store,
        (0..5).map(|h| at_hour("OC5-T9", t, h, None)).collect(),
    )
    .await;
}

fn device<'a>(
    data: &'a PredictionData,
    serial: &str,
) -> &'a fleetpulse_domain::prediction::DeviceHistory {
    data.devices
        .iter()
        .find(|d| d.serial.as_str() == serial)
        .unwrap_or_else(|| panic!("{serial} not in the data"))
}

/// Where two JSON values first differ, with both sides there.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let none = Value::Null;
                let (p, q) = (x.get(k).unwrap_or(&none), y.get(k).unwrap_or(&none));
                first_difference(p, q, &format!("{at}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} against {b}")),
    }
}

/// NaN-aware: two feature vectors are equal when each value is the same or both NaN.
fn same_features(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[tokio::test]
async fn what_is_read_as_of_t_is_the_same_whatever_happened_after_it() {
    let t = t();
    let before = fixture().await;
    history_until(&before, t).await;
    let after = fixture().await;
    history_until(&after, t).await;
    history_after(&after, t).await;

    let a = before.store.prediction_data(t, 60, 3).await.expect("data");
    let b = after.store.prediction_data(t, 60, 3).await.expect("data");

    // the history is there (so equality below is not that of two empty reads)
    assert_eq!(a.devices.len(), 3, "{:?}", a.devices);
    let t1 = device(&a, "OC5-T1");
    assert!(t1.daily["runtime_hours"].len() >= 30);
    let compressor = t1
        .failures
        .iter()
        .find(|f| f.code.as_deref() == Some("E101"))
        .expect("the compressor alarm's event");
    assert_eq!(compressor.source, "alarm");
    assert_eq!(compressor.failure_mode.as_deref(), Some("compressor"));
    let replaced = &t1.replacements;
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].component.as_deref(), Some("compressor"));
    assert!(!device(&a, "OC5-T2").failures[0].retracted);
    let t3 = device(&a, "OC5-T3");
    assert_eq!(t3.alarms.last().map(|a| a.ended_at), Some(None));
    assert_eq!(t3.outcomes.len(), 1);
    assert_eq!(t3.outcomes[0].closed_at, None);
    // the hour of t is left out: its bucket holds readings from after t
    let last_hour = t3.recent_hourly["runtime_hours"]
        .last()
        .expect("hours")
        .hour;
    assert_eq!(last_hour + Duration::hours(2), t - Duration::minutes(20));
    // and the second store really has more after t
    let now = after
        .store
        .prediction_data(Utc::now(), 60, 3)
        .await
        .expect("data");
    assert_eq!(
        now.devices.len(),
        4,
        "T9 registered, T2 in repair still in the fleet"
    );
    assert_eq!(device(&now, "OC5-T1").failures[0].source, "repair_order");
    assert!(device(&now, "OC5-T2").failures[0].retracted);
    assert!(device(&now, "OC5-T3").outcomes[0].closed_at.is_some());

    // what the predictors read as of t is the same
    let (ja, jb) = (
        serde_json::to_value(&a).expect("json"),
        serde_json::to_value(&b).expect("json"),
    );
    assert_eq!(first_difference(&ja, &jb, "data"), None);
    assert_eq!(a, b);

    // and so is what they compute from it: every failure mode's features, part ages and
    // the forecasts
    for mode in failure_modes(&before.catalog) {
        let spec = risk::feature_spec(&before.catalog, &a, &mode);
        assert_eq!(spec, risk::feature_spec(&after.catalog, &b, &mode));
        for (da, db) in a.devices.iter().zip(&b.devices) {
            assert!(
                same_features(&spec.compute(da, t), &spec.compute(db, t)),
                "{mode} {}",
                da.serial
            );
            let age = |d| format!("{:?}", spec.part_age(d, t));
            assert_eq!(age(da), age(db));
        }
    }
    let forecaster = CatalogForecaster::new(before.catalog.clone(), PredictOptions::default());
    let none: [TrainedModel; 0] = [];
    let fa = forecaster.forecast(&a, &none);
    assert!(!fa.is_empty(), "depletion and service forecasts");
    assert_eq!(fa, forecaster.forecast(&b, &none));
}
