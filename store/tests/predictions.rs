//! Predictions in the SQLite store: the data the predictors read, folded from what a
//! real commit wrote; orders from predictions (due dates, dedupe, bundling, storm
//! control and its release); critical alarms never held; silent versus switched off.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use fleetpulse_domain::prediction::{Prediction, PredictionKind};
use fleetpulse_domain::store::{
    ConnectionEnd, IngestBatch, NewDevice, OrderQuery, PredictionPlanner, PredictionQuery,
    PredictionRun, PredictionStore, Store,
};
use fleetpulse_domain::telemetry::{StatusUpdate, TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{
    Catalog, Cause, ConnectionState, LifecycleStatus, ModelId, Policy, Reading, Serial,
};
use fleetpulse_rules::CatalogRules;
use fleetpulse_rules::predicted::PredictionOrders;
use fleetpulse_rules::silent;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use serde_json::json;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

struct Fixture {
    store: SqliteStore,
    planner: Arc<dyn PredictionPlanner>,
    policy: Arc<Policy>,
    _dir: tempfile::TempDir,
}

async fn fixture(max_per_hour: u32, max_per_region: u32) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let mut policy = Policy::from_toml_str(POLICY).expect("policy");
    policy.storm.max_per_hour = max_per_hour;
    policy.storm.max_per_region_per_hour = max_per_region;
    let policy = Arc::new(policy);
    let store = SqliteStore::open(
        &dir.path().join("p.db"),
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
        planner: Arc::new(PredictionOrders::new(catalog, policy.clone())),
        policy,
        _dir: dir,
    }
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("serial")
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

async fn register(store: &SqliteStore, serial: &str, region: &str) {
    store
        .register_device(NewDevice {
            serial: sn(serial),
            model: ModelId::parse("OC-5A").expect("model"),
            status: Some(LifecycleStatus::AtCustomer),
            criticality: None,
            region: Some(region.into()),
            address: Some("1 Main St".into()),
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
}

fn prediction(serial: &str, kind: PredictionKind, target: &str, due_in: Duration) -> Prediction {
    let now = Utc::now();
    Prediction {
        serial: sn(serial),
        kind,
        target: target.into(),
        as_of: now,
        due_at: Some(now + due_in),
        due_low: None,
        due_high: None,
        probability: None,
        horizon_days: None,
        threshold: None,
        model_version: "test-v1".into(),
        top_features: Vec::new(),
        evidence: json!({"from": "test"}),
    }
}

fn risk(serial: &str, mode: &str, p: f64) -> Prediction {
    Prediction {
        due_at: None,
        probability: Some(p),
        threshold: Some(0.4),
        horizon_days: Some(30.0),
        ..prediction(serial, PredictionKind::FailureRisk, mode, Duration::zero())
    }
}

impl Fixture {
    async fn run(&self, predictions: Vec<Prediction>) -> fleetpulse_domain::store::RunReport {
        self.store
            .apply_predictions(
                PredictionRun {
                    as_of: Utc::now(),
                    trigger: "test".into(),
                    devices: 0,
                    predictions,
                },
                self.planner.clone(),
            )
            .await
            .expect("apply")
    }

    async fn active(&self, serial: &str) -> Vec<fleetpulse_domain::Order> {
        self.store
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

    /// Ages every predicted order by two hours: the storm window moves on.
    fn age_orders(&self) {
        let conn = rusqlite::Connection::open(self.store.path()).expect("open");
        conn.execute(
            "UPDATE orders SET created_at = created_at - 7200000 WHERE origin = 'prediction'",
            [],
        )
        .expect("age");
    }
}

fn hour(day: u32, h: u32) -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |d| {
            Utc.from_utc_datetime(&d) - Duration::days(i64::from(day))
                + Duration::hours(i64::from(h))
        })
}

fn path_of(f: &Fixture) -> &Path {
    f.store.path()
}

#[tokio::test]
async fn prediction_data_folds_days_and_recent_hours_from_committed_rollups() {
    let f = fixture(100, 100).await;
    // in service before the readings (the data as of noon today leaves out a device
    // registered later with no earlier commissioning)
    f.store
        .register_device(NewDevice {
            serial: sn("OC5-D1"),
            model: ModelId::parse("OC-5A").expect("model"),
            status: Some(LifecycleStatus::AtCustomer),
            criticality: None,
            region: Some("north".into()),
            address: Some("1 Main St".into()),
            commissioned_at: Some(hour(30, 0)),
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
    // two days ago: 3 readings over two hours; yesterday: 1; with an alarm episode
    let readings = vec![
        reading(
            "OC5-D1",
            1,
            hour(2, 8),
            json!({"runtime_hours": 100.0, "filter_life_pct": 80.0}),
        ),
        reading(
            "OC5-D1",
            2,
            hour(2, 8) + Duration::minutes(30),
            json!({"runtime_hours": 100.5, "filter_life_pct": 79.0}),
        ),
        reading(
            "OC5-D1",
            3,
            hour(2, 9),
            json!({"runtime_hours": 101.0, "filter_life_pct": 78.0, "alarms": ["W201"]}),
        ),
        reading(
            "OC5-D1",
            4,
            hour(1, 10),
            json!({"runtime_hours": 110.0, "filter_life_pct": 70.0, "alarms": []}),
        ),
    ];
    f.store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");
    // as of noon today (not the wall clock, so the 48-hour window below does not depend
    // on the time of day the test runs at)
    let data = f
        .store
        .prediction_data(hour(0, 12), 30, 2)
        .await
        .expect("data");
    let d = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == "OC5-D1")
        .expect("device");
    let filter = &d.daily["filter_life_pct"];
    assert_eq!(filter.len(), 2, "{filter:?}");
    assert_eq!(filter[0].day, hour(2, 0));
    assert_eq!(filter[0].count, 3);
    assert!((filter[0].mean - 79.0).abs() < 1e-9);
    assert_eq!(
        (filter[0].min, filter[0].max, filter[0].last),
        (78.0, 80.0, 78.0)
    );
    assert_eq!((filter[1].count, filter[1].last), (1, 70.0));
    // recent hourly points: only the 48 hours before as_of (from noon two days ago)
    let recent = &d.recent_hourly["runtime_hours"];
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!((recent[0].hour, recent[0].last), (hour(1, 10), 110.0));
    assert_eq!(d.alarms.len(), 1);
    assert_eq!(d.alarms[0].code, "W201");
    assert_eq!(d.alarms[0].ended_at, Some(hour(1, 10)));
    assert_eq!(d.region.as_deref(), Some("north"));
    // nothing after as_of
    let earlier = f
        .store
        .prediction_data(hour(1, 0), 30, 1)
        .await
        .expect("data");
    let d = &earlier.devices[0];
    assert_eq!(d.daily["filter_life_pct"].len(), 1);
}

#[tokio::test]
async fn a_predicted_depletion_is_the_threshold_rules_order_with_a_due_date() {
    let f = fixture(100, 100).await;
    register(&f.store, "OC5-F1", "north").await;
    // the streaming rule raised filter_depletion already
    f.store
        .commit_batch(IngestBatch {
            readings: vec![reading(
                "OC5-F1",
                1,
                Utc::now(),
                json!({"filter_life_pct": 10.0}),
            )],
            ..Default::default()
        })
        .await
        .expect("commit");
    let before = f.active("OC5-F1").await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].due_at, None);
    let report = f
        .run(vec![prediction(
            "OC5-F1",
            PredictionKind::ConsumableDepletion,
            "filter",
            Duration::days(5),
        )])
        .await;
    assert_eq!((report.raised, report.updated), (0, 1), "{report:?}");
    let after = f.active("OC5-F1").await;
    assert_eq!(after.len(), 1, "one order per (serial, cause)");
    assert_eq!(after[0].id, before[0].id);
    let due = after[0].due_at.expect("due date");
    let expected = Utc::now() + Duration::days(5) - f.policy.prediction.lead_depletion.0;
    assert!(
        (due - expected).num_seconds().abs() < 60,
        "{due} vs {expected}"
    );
    // the stored prediction names its order
    let page = f
        .store
        .predictions(PredictionQuery {
            serial: Some(sn("OC5-F1")),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("predictions");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].order_id, Some(before[0].id));
    // the planner's window: due in 5 days is in a 6-day window, not in a 4-day one
    let within = |days: i64| PredictionQuery {
        serial: Some(sn("OC5-F1")),
        limit: 10,
        due_before: Some(Utc::now() + Duration::days(days)),
        ..Default::default()
    };
    let count = |q| async {
        f.store
            .predictions(q)
            .await
            .expect("predictions")
            .items
            .len()
    };
    assert_eq!(count(within(6)).await, 1);
    assert_eq!(count(within(4)).await, 0);
    // a depletion forecast has no probability: never "at risk"
    let risky = PredictionQuery {
        min_probability: Some(0.0),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(count(risky).await, 0);
}

#[tokio::test]
async fn work_due_close_together_on_one_device_is_one_visit_with_tasks() {
    let f = fixture(100, 100).await;
    register(&f.store, "OC5-B1", "north").await;
    let report = f
        .run(vec![
            prediction(
                "OC5-B1",
                PredictionKind::ConsumableDepletion,
                "filter",
                Duration::days(6),
            ),
            risk("OC5-B1", "compressor", 0.7),
        ])
        .await;
    assert_eq!((report.raised, report.bundled), (1, 1), "{report:?}");
    let orders = f.active("OC5-B1").await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].tasks.len(), 1);
    let causes = [orders[0].cause.as_str(), orders[0].tasks[0].cause.as_str()];
    assert!(causes.contains(&"failure_risk:compressor"), "{causes:?}");
    assert!(causes.contains(&"filter_depletion"), "{causes:?}");
    // the compressor task or order carries the catalog's parts for that mode
    let parts: Vec<String> = orders[0]
        .parts
        .iter()
        .chain(orders[0].tasks[0].parts.iter())
        .map(|p| p.number.clone())
        .collect();
    assert!(parts.contains(&"OC5-CMP-02".to_owned()), "{parts:?}");

    // a later run: the same forecasts update, nothing new
    let again = f
        .run(vec![
            prediction(
                "OC5-B1",
                PredictionKind::ConsumableDepletion,
                "filter",
                Duration::days(6),
            ),
            risk("OC5-B1", "compressor", 0.8),
        ])
        .await;
    assert_eq!(again.raised, 0, "{again:?}");
    assert_eq!(f.active("OC5-B1").await.len(), 1);

    // far-off work is not bundled: a second visit
    let far = f
        .run(vec![prediction(
            "OC5-B1",
            PredictionKind::ServiceInterval,
            "service",
            Duration::days(20),
        )])
        .await;
    assert_eq!((far.raised, far.bundled), (1, 0), "{far:?}");
    assert_eq!(f.active("OC5-B1").await.len(), 2);
}

#[tokio::test]
async fn storm_control_holds_orders_over_the_limit_and_releases_them_as_the_hour_passes() {
    let f = fixture(2, 100).await;
    for i in 1..=4 {
        register(&f.store, &format!("OC5-S{i}"), "north").await;
    }
    let preds: Vec<Prediction> = (1..=4)
        .map(|i| risk(&format!("OC5-S{i}"), "compressor", 0.9))
        .collect();
    let report = f.run(preds.clone()).await;
    assert_eq!(
        (report.raised, report.held, report.queued),
        (2, 2, 2),
        "{report:?}"
    );
    let queue = f.store.held_orders(None, 100).await.expect("queue");
    assert_eq!(queue.items.len(), 2);
    assert!(queue.items.iter().all(|h| h.reason == "fleet_limit"));
    // the next run within the hour: still held, not duplicated
    let report = f.run(preds.clone()).await;
    assert_eq!(
        (report.raised, report.held, report.queued),
        (0, 2, 2),
        "{report:?}"
    );
    // an hour later the queue drains first, in order
    f.age_orders();
    let report = f.run(preds.clone()).await;
    assert_eq!((report.released, report.queued), (2, 0), "{report:?}");
    for i in 1..=4 {
        assert_eq!(f.active(&format!("OC5-S{i}")).await.len(), 1, "OC5-S{i}");
    }
    // a held order no forecast calls for any more is dropped, not raised later
    register(&f.store, "OC5-S5", "north").await;
    register(&f.store, "OC5-S6", "north").await;
    let report = f
        .run(vec![
            risk("OC5-S5", "compressor", 0.9),
            risk("OC5-S6", "compressor", 0.9),
        ])
        .await;
    assert_eq!((report.raised, report.held), (0, 2), "{report:?}");
    let report = f.run(vec![risk("OC5-S5", "compressor", 0.9)]).await;
    assert_eq!((report.dropped, report.queued), (1, 1), "{report:?}");
    let _ = path_of(&f);
}

#[tokio::test]
async fn critical_alarms_are_raised_at_commit_even_when_the_storm_limit_is_full() {
    let f = fixture(1, 1).await;
    register(&f.store, "OC5-C1", "north").await;
    register(&f.store, "OC5-C2", "north").await;
    let report = f
        .run(vec![
            risk("OC5-C1", "compressor", 0.9),
            risk("OC5-C2", "compressor", 0.9),
        ])
        .await;
    assert_eq!((report.raised, report.held), (1, 1), "{report:?}");
    let commit = f
        .store
        .commit_batch(IngestBatch {
            readings: vec![reading(
                "OC5-C2",
                1,
                Utc::now(),
                json!({"alarms": ["E101"]}),
            )],
            ..Default::default()
        })
        .await
        .expect("commit");
    assert!(
        commit
            .orders
            .iter()
            .any(|o| o.created && o.cause.as_str() == "critical_alarm:E101"),
        "{commit:?}"
    );
    let active = f.active("OC5-C2").await;
    assert!(
        active
            .iter()
            .any(|o| o.cause.as_str() == "critical_alarm:E101")
    );
}

#[tokio::test]
async fn a_lost_connection_goes_silent_and_a_graceful_goodbye_does_not() {
    let f = fixture(100, 100).await;
    register(&f.store, "OC5-L1", "north").await;
    register(&f.store, "OC5-G1", "north").await;
    let seen = Utc::now() - Duration::hours(30);
    f.store
        .commit_batch(IngestBatch {
            readings: ["OC5-L1", "OC5-G1"]
                .map(|s| Reading {
                    received_at: seen,
                    ..reading(s, 1, seen, json!({"runtime_hours": 5.0}))
                })
                .to_vec(),
            ..Default::default()
        })
        .await
        .expect("commit");
    // the will of L1 (a bare offline), the goodbye of G1
    f.store
        .commit_batch(IngestBatch {
            statuses: vec![StatusUpdate {
                serial: sn("OC5-L1"),
                state: ConnectionState::Offline,
                at: seen,
                firmware: None,
                model: None,
            }],
            connection_ends: vec![ConnectionEnd {
                serial: sn("OC5-G1"),
                at: seen + Duration::seconds(1),
                graceful: true,
            }],
            ..Default::default()
        })
        .await
        .expect("commit");
    let data = f
        .store
        .prediction_data(Utc::now(), 7, 1)
        .await
        .expect("data");
    let by = |s: &str| {
        data.devices
            .iter()
            .find(|d| d.serial.as_str() == s)
            .expect("device")
    };
    assert_eq!(
        by("OC5-L1").last_disconnect.map(|d| d.graceful),
        Some(false)
    );
    assert_eq!(by("OC5-G1").last_disconnect.map(|d| d.graceful), Some(true));
    assert_eq!(by("OC5-G1").connection, ConnectionState::Offline);

    let silent = silent::detect(&data, f.policy.prediction.silent_after.0);
    let serials: Vec<&str> = silent.iter().map(|p| p.serial.as_str()).collect();
    assert_eq!(serials, vec!["OC5-L1"]);
    let report = f.run(silent).await;
    assert_eq!(report.raised, 1);
    let orders = f.active("OC5-L1").await;
    assert_eq!(orders[0].cause, Cause::silent_device());
    assert_eq!(orders[0].kind, fleetpulse_domain::OrderKind::Inspection);
    assert!(f.active("OC5-G1").await.is_empty());
}

#[tokio::test]
async fn one_model_is_deployed_per_failure_mode_and_outcomes_feed_back() {
    use fleetpulse_domain::prediction::{ModelReport, TrainedModel, ValidationMetrics};
    let f = fixture(100, 100).await;
    let metrics = ValidationMetrics {
        pr_auc: 0.5,
        threshold: 0.4,
        precision: Some(0.5),
        recall: 0.5,
        positives: 3,
        negatives: 30,
        calibration: Vec::new(),
        brier: Some(0.1),
        warnings: None,
    };
    let model = |version: &str, deployed: bool| TrainedModel {
        report: ModelReport {
            version: version.into(),
            failure_mode: "compressor".into(),
            algorithm: "logistic_regression".into(),
            trained_at: Utc::now(),
            as_of: None,
            horizon_days: 30.0,
            train_from: Utc::now(),
            train_to: Utc::now(),
            validate_from: Utc::now(),
            validate_to: Utc::now(),
            features: vec!["age".into()],
            metrics: metrics.clone(),
            baselines: Default::default(),
            deployed,
            serving: deployed.then(|| "model".into()),
            decision: "test".into(),
            field: Vec::new(),
        },
        parameters: json!({"w": [1.0]}),
    };
    f.store
        .save_models(vec![model("risk-a", true)])
        .await
        .expect("save");
    f.store
        .save_models(vec![model("risk-b", true), model("risk-c", false)])
        .await
        .expect("save");
    let deployed = f.store.deployed_models().await.expect("deployed");
    assert_eq!(deployed.len(), 1);
    assert_eq!(deployed[0].report.version, "risk-b");
    let a = f
        .store
        .model("risk-a")
        .await
        .expect("read")
        .expect("stored");
    assert!(!a.report.deployed, "replaced");
    assert_eq!(f.store.model_reports().await.expect("reports").len(), 3);

    // a predicted order closed "no fault found" comes back as an outcome
    register(&f.store, "OC5-O1", "north").await;
    f.run(vec![risk("OC5-O1", "compressor", 0.9)]).await;
    let order = f.active("OC5-O1").await.remove(0);
    let dispatch: &dyn fleetpulse_domain::dispatch::Dispatch = &f.store;
    let mut version = order.version;
    let done = Utc::now();
    for action in [
        fleetpulse_domain::dispatch::OrderAction::Acknowledge,
        fleetpulse_domain::dispatch::OrderAction::Assign {
            engineer: "E-1".into(),
            planned_visit_at: None,
        },
        fleetpulse_domain::dispatch::OrderAction::Start,
        fleetpulse_domain::dispatch::OrderAction::Complete(
            serde_json::from_value(json!({"failure_confirmed": false})).expect("outcome"),
        ),
    ] {
        version = dispatch
            .transition(
                order.id,
                version,
                action,
                fleetpulse_domain::dispatch::Actor("test".into()),
                done,
            )
            .await
            .expect("step")
            .version;
    }
    // read as of a second after the completion: nothing recorded at or after the as-of
    // time is read, and two clock readings can fall in the same stored millisecond
    let data = f
        .store
        .prediction_data(done + Duration::seconds(1), 7, 1)
        .await
        .expect("data");
    let d = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == "OC5-O1")
        .expect("device");
    assert_eq!(d.outcomes.len(), 1);
    assert_eq!(d.outcomes[0].failure_confirmed, Some(false));
    assert_eq!(d.outcomes[0].model_version.as_deref(), Some("test-v1"));
    assert_eq!(d.outcomes[0].cause, "failure_risk:compressor");
}

#[tokio::test]
async fn a_repeat_forecast_moves_an_order_only_to_an_earlier_due_date_with_its_event() {
    use fleetpulse_domain::dispatch::Dispatch;
    let f = fixture(100, 100).await;
    register(&f.store, "OC5-DUE", "north").await;
    let in_days = |d| {
        prediction(
            "OC5-DUE",
            PredictionKind::ConsumableDepletion,
            "filter",
            Duration::days(d),
        )
    };
    f.run(vec![in_days(6)]).await;
    let first = f.active("OC5-DUE").await.remove(0);
    // the same forecast restated by the next runs, then a later one: nothing to act on
    f.run(vec![in_days(6)]).await;
    f.run(vec![in_days(8)]).await;
    let same = f.active("OC5-DUE").await.remove(0);
    assert_eq!(
        (same.version, same.due_at, same.trigger_count),
        (first.version, first.due_at, 1),
        "{same:?}"
    );
    // an earlier date is: a new version with its event
    f.run(vec![in_days(5)]).await;
    let earlier = f.active("OC5-DUE").await.remove(0);
    assert_eq!(earlier.version, first.version + 1);
    assert!(earlier.due_at < first.due_at, "{earlier:?}");
    let history = f.store.order_history(first.id).await.expect("history");
    let last = history.last().expect("events");
    assert_eq!(
        (last.kind.as_str(), last.version),
        ("escalated", earlier.version)
    );
    assert_eq!(
        last.data["changes"]["due_at"]["after"],
        json!(earlier.due_at),
        "{:?}",
        last.data
    );
}
