//! The SQLite store against its contract, on real database files, with the shipped
//! catalog, policy and rules.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use fleetpulse_domain::clock::Clock;
use fleetpulse_domain::dispatch::{Dispatch, OrderAction};
use fleetpulse_domain::order::{Cause, OrderIntent, OrderKind, Sla, SlaState};
use fleetpulse_domain::store::{
    AlarmQuery, ConnectionEnd, Count, DayCount, DeadLetterQuery, DeviceQuery, FleetOverview,
    IngestBatch, NewDeadLetter, NewDevice, OrderQuery, ReadingQuery, SpoolStats, Store, StoreError,
    UnknownDevicePolicy,
};
use fleetpulse_domain::telemetry::{RejectReason, StatusUpdate, TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{Catalog, LifecycleStatus, OrderStatus, Policy, Priority, Reading, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SCHEMA_VERSION, SqliteStore, StoreOptions};
use serde_json::json;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

async fn open(path: &Path, unknown: UnknownDevicePolicy) -> SqliteStore {
    open_with_spool(path, unknown, false).await
}

async fn open_with_spool(path: &Path, unknown: UnknownDevicePolicy, spool: bool) -> SqliteStore {
    open_with_clock(path, unknown, spool, Clock::Wall).await
}

/// [`open_with_spool`] on `clock`: a fixed clock stamps every order it creates (and their
/// SLA's start) at one known instant.
async fn open_with_clock(
    path: &Path,
    unknown: UnknownDevicePolicy,
    spool: bool,
    clock: Clock,
) -> SqliteStore {
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    SqliteStore::open(
        path,
        StoreOptions {
            clock,
            catalog,
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: unknown,
            durability: Durability::Full,
            sink_spool: spool,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open store")
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("serial")
}

/// A query of a device's alarm episodes without filters: the first 100.
fn every_alarm_of(serial: &str) -> AlarmQuery {
    AlarmQuery {
        serial: sn(serial),
        active: None,
        severity: None,
        code: None,
        from: None,
        to: None,
        after: None,
        limit: 100,
    }
}

fn t0() -> DateTime<Utc> {
    Utc::now() - Duration::days(2)
}

/// A reading built through the contract parser, as ingest would.
fn reading(serial: &str, seq: u64, ts: DateTime<Utc>, fields: serde_json::Value) -> Reading {
    let mut v = json!({"seq": seq, "ts": ts.to_rfc3339(), "model": "OC-5A"});
    if let (Some(o), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
        o.extend(extra);
    }
    let mut parsed = parse_telemetry(
        &sn(serial),
        v.to_string().as_bytes(),
        Utc::now(),
        &TelemetryLimits::default(),
    );
    parsed.remove(0).expect("valid reading")
}

fn batch(readings: Vec<Reading>) -> IngestBatch {
    IngestBatch {
        readings,
        ..Default::default()
    }
}

async fn seqs(store: &SqliteStore, serial: &str) -> Vec<u64> {
    store
        .readings(ReadingQuery {
            serial: sn(serial),
            from: None,
            to: None,
            after: None,
            limit: 1000,
        })
        .await
        .expect("readings")
        .items
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test]
async fn redelivered_readings_are_stored_once_and_counted_as_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let first = store
        .commit_batch(batch(vec![
            reading("OC1", 1, t0(), json!({"filter_life_pct": 80})),
            reading("OC1", 2, t0(), json!({})),
        ]))
        .await
        .expect("commit");
    assert_eq!(
        (first.stored, first.duplicates, first.registered),
        (2, 0, 1)
    );
    let again = store
        .commit_batch(batch(vec![
            reading("OC1", 2, t0(), json!({})),
            reading("OC1", 3, t0(), json!({})),
        ]))
        .await
        .expect("commit");
    assert_eq!((again.stored, again.duplicates), (1, 1));
    assert_eq!(seqs(&store, "OC1").await, [1, 2, 3]);
    assert_eq!(store.stats().await.expect("stats").readings, 3);
}

#[tokio::test]
async fn a_late_reading_is_kept_and_rolled_up_but_never_moves_latest_state_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let hour = Utc
        .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .single()
        .expect("time")
        .max(t0() - Duration::hours(3));
    let hour = DateTime::from_timestamp(hour.timestamp() / 3600 * 3600, 0).expect("hour");
    store
        .commit_batch(batch(vec![reading(
            "OC2",
            10,
            hour + Duration::minutes(50),
            json!({"o2_purity_pct": 93.0}),
        )]))
        .await
        .expect("commit");
    // a backlog from earlier in the same hour arrives later, out of order
    store
        .commit_batch(batch(vec![
            reading(
                "OC2",
                5,
                hour + Duration::minutes(5),
                json!({"o2_purity_pct": 91.0}),
            ),
            reading(
                "OC2",
                3,
                hour + Duration::minutes(1),
                json!({"o2_purity_pct": 95.0}),
            ),
        ]))
        .await
        .expect("commit");
    let detail = store
        .device(&sn("OC2"))
        .await
        .expect("device")
        .expect("exists");
    let latest = detail.latest.expect("latest");
    assert_eq!(latest.seq, 10);
    assert_eq!(latest.values["o2_purity_pct"], 93.0);
    let roll = store
        .rollups(&sn("OC2"), hour, hour + Duration::hours(1))
        .await
        .expect("rollups");
    let o2 = roll
        .iter()
        .find(|r| r.field == "o2_purity_pct")
        .expect("o2 rollup");
    assert_eq!(
        (o2.count, o2.sum, o2.min, o2.max, o2.last),
        (3, 279.0, 91.0, 95.0, 93.0)
    );
    assert_eq!(seqs(&store, "OC2").await, [3, 5, 10], "device-time order");
}

#[tokio::test]
async fn alarm_episodes_open_and_close_with_their_duration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let t = t0();
    store
        .commit_batch(batch(vec![
            reading(
                "OC3",
                1,
                t,
                json!({"alarms": ["W202"], "runtime_hours": 500}),
            ),
            reading(
                "OC3",
                2,
                t + Duration::seconds(90),
                json!({"alarms": ["W202", "P301"]}),
            ),
            reading("OC3", 3, t + Duration::seconds(150), json!({})),
            reading(
                "OC3",
                4,
                t + Duration::seconds(300),
                json!({"alarms": ["P301"]}),
            ),
        ]))
        .await
        .expect("commit");
    let eps = store
        .alarm_episodes(every_alarm_of("OC3"))
        .await
        .expect("episodes")
        .items;
    assert_eq!(eps.len(), 2);
    let w = eps
        .iter()
        .find(|e| e.code.as_str() == "W202")
        .expect("W202");
    assert_eq!(w.duration_s, Some(300.0));
    assert_eq!(w.ended_seq, Some(4));
    assert_eq!(w.runtime_hours_at_start, Some(500.0));
    assert_eq!(w.severity.map(|s| s.as_str()), Some("warning"));
    let p = eps
        .iter()
        .find(|e| e.code.as_str() == "P301")
        .expect("P301");
    assert_eq!((p.ended_at, p.started_seq), (None, 2));
    let detail = store
        .device(&sn("OC3"))
        .await
        .expect("device")
        .expect("exists");
    assert_eq!(detail.open_alarms.len(), 1);
}

#[tokio::test]
async fn a_repeated_trigger_updates_the_one_active_order_and_a_closed_order_allows_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.db");
    let store = open(&path, UnknownDevicePolicy::AutoRegister).await;
    store
        .register_device(NewDevice {
            serial: sn("HV1"),
            model: fleetpulse_domain::catalog::ModelId::parse("HV-150").expect("model"),
            status: Some(LifecycleStatus::AtCustomer),
            criticality: None,
            region: Some("north".into()),
            address: None,
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
    let r = |seq, alarms: serde_json::Value| {
        let mut x = reading(
            "HV1",
            seq,
            t0() + Duration::seconds(seq as i64),
            json!({"alarms": alarms}),
        );
        x.model = Some("HV-150".into());
        x
    };
    let c1 = store
        .commit_batch(batch(vec![r(1, json!(["V101"]))]))
        .await
        .expect("commit");
    assert_eq!(c1.orders.len(), 1);
    assert!(c1.orders[0].created);
    let c2 = store
        .commit_batch(batch(vec![
            r(2, json!([])),
            r(3, json!(["V101"])),
            r(4, json!(["V101"])),
        ]))
        .await
        .expect("commit");
    // seq 2 clears the alarm (the order is marked: policy [resolution]), seq 3 raises it
    // again (a new episode, and the mark goes): two changes of the one order
    assert_eq!(c2.orders.len(), 2);
    assert!(
        c2.orders
            .iter()
            .all(|c| !c.created && c.order_id == c1.orders[0].order_id)
    );
    let orders = store
        .list_orders(OrderQuery {
            active_only: true,
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("orders");
    assert_eq!(orders.items.len(), 1);
    let o = &orders.items[0];
    assert_eq!(
        (o.cause.as_str(), o.trigger_count, o.version, o.status),
        // versions: created, condition_cleared, updated, condition_returned
        ("critical_alarm:V101", 2, 4, OrderStatus::Open)
    );
    assert_eq!(
        o.priority,
        Priority::P2,
        "HV-150 is not life-supporting by default"
    );
    assert_eq!(o.parts[0].number, "HV1-BLW-01");

    // the dispatch side completes it (lifecycle endpoints land with the dispatch API issue)
    let side = rusqlite::Connection::open(&path).expect("second connection");
    side.execute(
        "UPDATE orders SET status = 'completed' WHERE id = ?1",
        [o.id],
    )
    .expect("complete");
    let c3 = store
        .commit_batch(batch(vec![r(5, json!([])), r(6, json!(["V101"]))]))
        .await
        .expect("commit");
    assert!(
        c3.orders[0].created,
        "a new incident after completion is a new order"
    );
    let all = store
        .list_orders(OrderQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("orders");
    assert_eq!(all.items.len(), 2);
}

#[tokio::test]
async fn order_triggers_do_not_depend_on_how_readings_were_batched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    // OC-5A orders its filter at 15 %; E101 is one of its critical alarms.
    let steps = |serial: &'static str| {
        vec![
            reading(
                serial,
                1,
                t0(),
                json!({"filter_life_pct": 14.0, "alarms": ["E101"]}),
            ),
            reading(
                serial,
                2,
                t0() + Duration::seconds(1),
                json!({"runtime_hours": 10.0, "alarms": []}),
            ),
            reading(
                serial,
                3,
                t0() + Duration::seconds(2),
                json!({"filter_life_pct": 40.0, "alarms": ["E101"]}),
            ),
            reading(
                serial,
                4,
                t0() + Duration::seconds(3),
                json!({"filter_life_pct": 12.0, "alarms": ["E101"]}),
            ),
        ]
    };
    store
        .commit_batch(batch(steps("OC5-ONEBATCH")))
        .await
        .expect("one batch");
    for r in steps("OC5-FOURBATCHES") {
        store
            .commit_batch(batch(vec![r]))
            .await
            .expect("a batch each");
    }
    for serial in ["OC5-ONEBATCH", "OC5-FOURBATCHES"] {
        let orders = store
            .list_orders(OrderQuery {
                serial: Some(sn(serial)),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("orders");
        let mut counts: Vec<(String, u32)> = orders
            .items
            .iter()
            .map(|o| (o.cause.as_str().to_owned(), o.trigger_count))
            .collect();
        counts.sort();
        // the filter went low (seq 1), was not reported (seq 2), recovered (seq 3) and
        // went low again (seq 4): two episodes; E101 opened twice
        assert_eq!(
            counts,
            [
                ("critical_alarm:E101".to_owned(), 2),
                ("filter_depletion".to_owned(), 2)
            ],
            "{serial}"
        );
    }
}

#[tokio::test]
async fn unknown_and_retired_devices_follow_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rejecting = open(&dir.path().join("reject.db"), UnknownDevicePolicy::Reject).await;
    let report = rejecting
        .commit_batch(batch(vec![reading("NEW1", 1, t0(), json!({}))]))
        .await
        .expect("commit");
    assert_eq!((report.stored, report.dead_lettered), (0, 1));
    let dl = rejecting
        .dead_letters(Default::default())
        .await
        .expect("dead letters");
    assert_eq!(dl.items[0].reason, RejectReason::UnknownDevice);
    assert!(
        dl.items[0].payload.contains("\"seq\":1"),
        "{}",
        dl.items[0].payload
    );

    let auto = open(
        &dir.path().join("auto.db"),
        UnknownDevicePolicy::AutoRegister,
    )
    .await;
    auto.commit_batch(batch(vec![reading("NEW2", 1, t0(), json!({}))]))
        .await
        .expect("commit");
    let d = auto
        .device(&sn("NEW2"))
        .await
        .expect("device")
        .expect("registered");
    assert_eq!(
        (d.device.status, d.device.model.map(|m| m.to_string())),
        (LifecycleStatus::Unassigned, Some("OC-5A".into()))
    );
    // registering an auto-registered device completes it instead of conflicting
    let done = auto
        .register_device(NewDevice {
            serial: sn("NEW2"),
            model: fleetpulse_domain::catalog::ModelId::parse("OC-10").expect("model"),
            status: Some(LifecycleStatus::Retired),
            criticality: None,
            region: None,
            address: None,
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("complete registration");
    assert_eq!(done.status, LifecycleStatus::Retired);
    let again = auto.register_device(NewDevice {
        serial: sn("NEW2"),
        model: fleetpulse_domain::catalog::ModelId::parse("OC-10").expect("model"),
        status: None,
        criticality: None,
        region: None,
        address: None,
        commissioned_at: None,
        runtime_hours_at_registration: None,
        observed_from: None,
    });
    assert!(matches!(again.await, Err(StoreError::Conflict(_))));
    let report = auto
        .commit_batch(batch(vec![reading("NEW2", 2, t0(), json!({}))]))
        .await
        .expect("commit");
    assert_eq!((report.stored, report.dead_lettered), (0, 1));
    let unknown_model = auto.register_device(NewDevice {
        serial: sn("X1"),
        model: fleetpulse_domain::catalog::ModelId::parse("TOASTER").expect("model id"),
        status: None,
        criticality: None,
        region: None,
        address: None,
        commissioned_at: None,
        runtime_hours_at_registration: None,
        observed_from: None,
    });
    assert!(matches!(unknown_model.await, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn data_survives_reopening_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("a.db");
    {
        let store = open(&path, UnknownDevicePolicy::AutoRegister).await;
        store
            .commit_batch(batch(vec![reading("OC9", 1, t0(), json!({}))]))
            .await
            .expect("commit");
    }
    let store = open(&path, UnknownDevicePolicy::AutoRegister).await;
    assert_eq!(seqs(&store, "OC9").await, [1]);
    assert_eq!(
        store.stats().await.expect("stats").readings,
        1,
        "the running count starts from what the file holds"
    );
    drop(store);
    let side = rusqlite::Connection::open(&path).expect("connection");
    side.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    drop(side);
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    let err = SqliteStore::open(
        &path,
        StoreOptions {
            clock: Default::default(),
            catalog,
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Full,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .err()
    .expect("refused");
    assert!(
        err.to_string()
            .contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{err}"
    );
}

#[tokio::test]
async fn pages_follow_their_cursor_to_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let readings: Vec<Reading> = (0..25)
        .map(|i| reading(&format!("P{i:03}"), 1, t0(), json!({})))
        .collect();
    store.commit_batch(batch(readings)).await.expect("commit");
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_devices(DeviceQuery {
                after: after.clone(),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|d| d.device.serial.to_string()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn devices_are_listed_by_region_and_criticality() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    for (serial, region, criticality) in [
        ("RG1", "north", Some(fleetpulse_domain::Criticality::High)),
        (
            "RG2",
            "north",
            Some(fleetpulse_domain::Criticality::Standard),
        ),
        ("RG3", "south", Some(fleetpulse_domain::Criticality::High)),
    ] {
        store
            .register_device(NewDevice {
                serial: sn(serial),
                model: fleetpulse_domain::catalog::ModelId::parse("OC-10").expect("model"),
                status: Some(LifecycleStatus::AtCustomer),
                criticality,
                region: Some(region.into()),
                address: Some("1 Mill Lane, Leeds".into()),
                commissioned_at: None,
                runtime_hours_at_registration: None,
                observed_from: None,
            })
            .await
            .expect("register");
    }
    let list = |region: Option<&str>, criticality| {
        let store = store.clone();
        let region = region.map(str::to_owned);
        async move {
            store
                .list_devices(DeviceQuery {
                    limit: 100,
                    region,
                    criticality,
                    ..Default::default()
                })
                .await
                .expect("list")
                .items
                .into_iter()
                .map(|d| d.device.serial.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some("north"), None).await, ["RG1", "RG2"]);
    assert_eq!(
        list(None, Some(fleetpulse_domain::Criticality::High)).await,
        ["RG1", "RG3"]
    );
    assert_eq!(
        list(Some("south"), Some(fleetpulse_domain::Criticality::High)).await,
        ["RG3"]
    );
    assert!(list(Some("west"), None).await.is_empty());
}

#[tokio::test]
async fn retention_deletes_old_raw_readings_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let old = Utc::now() - Duration::days(100);
    store
        .commit_batch(batch(vec![
            reading("R1", 1, old, json!({"flow_lpm": 2})),
            reading("R1", 2, Utc::now(), json!({"flow_lpm": 3})),
        ]))
        .await
        .expect("commit");
    assert_eq!(
        store
            .delete_readings_before(Utc::now() - Duration::days(90))
            .await
            .expect("retention"),
        1
    );
    assert_eq!(seqs(&store, "R1").await, [2]);
    assert_eq!(
        store.stats().await.expect("stats").readings,
        1,
        "the running count follows retention"
    );
    let roll = store
        .rollups(
            &sn("R1"),
            old - Duration::hours(1),
            Utc::now() + Duration::hours(1),
        )
        .await
        .expect("rollups");
    assert_eq!(
        roll.iter().filter(|r| r.field == "flow_lpm").count(),
        2,
        "rollups are kept"
    );
}

#[tokio::test]
async fn a_large_batch_commits_in_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let readings: Vec<Reading> = (0..5000u64)
        .map(|i| {
            reading(
                &format!("L{:03}", i % 100),
                i / 100 + 1,
                t0(),
                json!({"filter_life_pct": 50, "o2_purity_pct": 93}),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let report = store.commit_batch(batch(readings)).await.expect("commit");
    eprintln!(
        "5000 readings of 100 devices committed in {:?}",
        started.elapsed()
    );
    assert_eq!(report.stored, 5000);
    assert_eq!(store.stats().await.expect("stats").devices, 100);
}

#[tokio::test]
async fn the_sink_spool_gets_each_new_reading_once_in_commit_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with_spool(
        &dir.path().join("s.db"),
        UnknownDevicePolicy::AutoRegister,
        true,
    )
    .await;
    let ts = Utc
        .timestamp_millis_opt(1_763_900_000_000)
        .single()
        .expect("ts");
    let first = store
        .commit_batch(batch(vec![
            reading("OC1", 1, ts, json!({"filter_life_pct": 80})),
            reading("OC1", 2, ts + Duration::seconds(1), json!({})),
        ]))
        .await
        .expect("commit");
    assert_eq!((first.spooled, first.spooled_bytes > 0), (2, true));
    // A redelivery adds nothing; a batch of only duplicates adds no chunk at all.
    let again = store
        .commit_batch(batch(vec![
            reading("OC1", 2, ts + Duration::seconds(1), json!({})),
            reading("OC2", 1, ts, json!({"o2_purity_pct": 93.5})),
        ]))
        .await
        .expect("commit");
    assert_eq!((again.stored, again.spooled), (1, 1));
    let dup = store
        .commit_batch(batch(vec![reading("OC2", 1, ts, json!({}))]))
        .await
        .expect("commit");
    assert_eq!(dup.spooled, 0);

    let stats = store.spool_stats().await.expect("stats");
    assert_eq!((stats.chunks, stats.readings), (2, 3));
    assert_eq!(
        stats.bytes as usize,
        first.spooled_bytes + again.spooled_bytes
    );
    assert!(stats.oldest.is_some());

    let all = store.spool_peek(100, 1 << 20).await.expect("peek");
    assert_eq!(all.len(), 2);
    assert!(all[0].id < all[1].id);
    let lines: Vec<&str> = all.iter().flat_map(|c| c.body.lines()).collect();
    assert_eq!(
        lines,
        [
            "telemetry,serial=OC1,model=OC-5A,kind=oxygen_concentrator seq=1i,filter_life_pct=80.0 1763900000000",
            "telemetry,serial=OC1,model=OC-5A,kind=oxygen_concentrator seq=2i 1763900001000",
            "telemetry,serial=OC2,model=OC-5A,kind=oxygen_concentrator seq=1i,o2_purity_pct=93.5 1763900000000",
        ]
    );
    // Limits: the first chunk always, more only while they fit.
    assert_eq!(store.spool_peek(1, 1).await.expect("peek").len(), 1);
    assert_eq!(store.spool_peek(2, 1 << 20).await.expect("peek").len(), 1);

    assert_eq!(store.spool_remove(all[0].id).await.expect("remove"), 1);
    let rest = store.spool_peek(100, 1 << 20).await.expect("peek");
    assert_eq!(rest, all[1..]);
    store.spool_remove(all[1].id).await.expect("remove");
    assert_eq!(
        store.spool_stats().await.expect("stats"),
        SpoolStats::default()
    );
}

#[tokio::test]
async fn a_store_without_spool_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("n.db"), UnknownDevicePolicy::AutoRegister).await;
    let report = store
        .commit_batch(batch(vec![reading("OC1", 1, t0(), json!({}))]))
        .await
        .expect("commit");
    assert_eq!(report.spooled, 0);
    assert_eq!(store.spool_stats().await.expect("stats").chunks, 0);
}

#[tokio::test]
async fn a_device_first_seen_without_a_model_learns_it_from_its_telemetry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("m.db"), UnknownDevicePolicy::AutoRegister).await;
    let birth = fleetpulse_domain::telemetry::StatusUpdate {
        serial: sn("OC7"),
        state: fleetpulse_domain::ConnectionState::Online,
        at: Utc::now(),
        firmware: None,
        model: None,
    };
    store
        .commit_batch(IngestBatch {
            statuses: vec![birth],
            ..Default::default()
        })
        .await
        .expect("commit");
    let before = store
        .device(&sn("OC7"))
        .await
        .expect("read")
        .expect("registered");
    assert_eq!(before.device.model, None);
    store
        .commit_batch(batch(vec![reading("OC7", 1, t0(), json!({}))]))
        .await
        .expect("commit");
    let after = store
        .device(&sn("OC7"))
        .await
        .expect("read")
        .expect("registered");
    assert_eq!(
        after.device.model.map(|m| m.to_string()).as_deref(),
        Some("OC-5A")
    );
    assert_eq!(
        after.device.kind.map(|k| k.as_str()),
        Some("oxygen_concentrator")
    );
}

#[tokio::test]
async fn a_change_committed_by_another_connection_is_seen_by_the_next_batch() {
    // The writer caches device rows and latest states between batches; a write by
    // another process (e.g. `fleetpulse device …` beside `serve`) must not be missed.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleet.db");
    let store = open(&path, UnknownDevicePolicy::AutoRegister).await;
    let first = store
        .commit_batch(batch(vec![reading(
            "EXT1",
            1,
            t0(),
            json!({"runtime_hours": 10.0}),
        )]))
        .await
        .expect("commit");
    assert_eq!(first.stored, 1);

    let other = rusqlite::Connection::open(&path).expect("second connection");
    other
        .execute(
            "UPDATE devices SET status = 'retired' WHERE serial = 'EXT1'",
            [],
        )
        .expect("retire from outside");
    drop(other);

    let second = store
        .commit_batch(batch(vec![reading(
            "EXT1",
            2,
            t0(),
            json!({"runtime_hours": 11.0}),
        )]))
        .await
        .expect("commit");
    assert_eq!(
        (second.stored, second.dead_lettered),
        (0, 1),
        "the retirement committed elsewhere applies to the next batch"
    );
    let dl = store
        .dead_letters(Default::default())
        .await
        .expect("dead letters");
    assert_eq!(dl.items[0].reason, RejectReason::RetiredDevice);
}

#[tokio::test]
async fn latest_state_follows_every_batch_and_last_seen_moves_in_steps_of_a_minute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(
        &dir.path().join("fleet.db"),
        UnknownDevicePolicy::AutoRegister,
    )
    .await;
    // whole milliseconds: what the store keeps
    let base =
        DateTime::from_timestamp_millis((Utc::now() - Duration::minutes(10)).timestamp_millis())
            .expect("a valid time");
    let at = |seq: u64, secs: i64, hours: f64| {
        let mut r = reading(
            "SEEN1",
            seq,
            base + Duration::seconds(secs),
            json!({"runtime_hours": hours}),
        );
        r.received_at = base + Duration::seconds(secs);
        r
    };
    for (seq, secs) in [(1, 0), (2, 20), (3, 40)] {
        store
            .commit_batch(batch(vec![at(seq, secs, seq as f64)]))
            .await
            .expect("commit");
    }
    let d = store
        .device(&sn("SEEN1"))
        .await
        .expect("device")
        .expect("known");
    let latest = d.latest.expect("latest state");
    assert_eq!(
        latest.seq, 3,
        "the cached latest state advanced with every batch"
    );
    assert_eq!(latest.values.get("runtime_hours"), Some(&3.0));
    assert_eq!(
        d.device.last_seen_at,
        Some(base),
        "within a minute the devices row is not rewritten"
    );
    store
        .commit_batch(batch(vec![at(4, 61, 4.0)]))
        .await
        .expect("commit");
    let d = store
        .device(&sn("SEEN1"))
        .await
        .expect("device")
        .expect("known");
    assert_eq!(d.device.last_seen_at, Some(base + Duration::seconds(61)));
    assert_eq!(d.latest.expect("latest").seq, 4);
}

/// The OC-5A order's filter rule (order at 15 %) fed `levels` in one batch each.
async fn feed_filter(store: &SqliteStore, serial: &str, first_seq: u64, levels: &[f64]) {
    for (i, level) in levels.iter().enumerate() {
        let seq = first_seq + i as u64;
        store
            .commit_batch(batch(vec![reading(
                serial,
                seq,
                t0() + Duration::seconds(seq as i64),
                json!({"filter_life_pct": level}),
            )]))
            .await
            .expect("commit");
    }
}

async fn only_order(store: &SqliteStore, serial: &str) -> fleetpulse_domain::Order {
    let mut orders = store
        .list_orders(OrderQuery {
            serial: Some(sn(serial)),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("orders")
        .items;
    assert_eq!(orders.len(), 1, "{orders:?}");
    orders.remove(0)
}

async fn event_kinds(store: &SqliteStore, id: i64) -> Vec<(String, u32)> {
    store
        .order_history(id)
        .await
        .expect("history")
        .into_iter()
        .map(|e| (e.kind, e.version))
        .collect()
}

#[tokio::test]
async fn repeat_triggers_within_an_episode_leave_the_version_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    feed_filter(&store, "OC5-REPEAT", 1, &[14.0; 20]).await;
    let o = only_order(&store, "OC5-REPEAT").await;
    assert_eq!((o.version, o.trigger_count), (1, 1), "{o:?}");
    assert_eq!(
        o.evidence["seq"],
        json!(1),
        "the evidence of the episode's trigger"
    );
    assert_eq!(event_kinds(&store, o.id).await, [("created".to_owned(), 1)]);
}

#[tokio::test]
async fn a_reading_that_escalates_priority_is_a_new_version_with_its_event() {
    use fleetpulse_domain::dispatch::{Actor, StatusChange};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    feed_filter(&store, "OC5-ESC", 1, &[14.0, 14.0]).await;
    let before = only_order(&store, "OC5-ESC").await;
    assert_eq!(before.version, 1);
    store
        .change_device_status(
            &sn("OC5-ESC"),
            StatusChange {
                status: LifecycleStatus::AtCustomer,
                criticality: Some(fleetpulse_domain::Criticality::LifeSupporting),
                region: None,
                address: Some("1 Test Street".into()),
                reason: None,
            },
            Actor("test".into()),
        )
        .await
        .expect("status");
    feed_filter(&store, "OC5-ESC", 3, &[14.0, 14.0, 14.0]).await;
    let after = only_order(&store, "OC5-ESC").await;
    assert!(after.priority < before.priority, "{after:?}");
    assert_eq!((after.version, after.trigger_count), (2, 1));
    let history = store.order_history(after.id).await.expect("history");
    assert_eq!(history.len(), 2, "{history:?}");
    let escalated = &history[1];
    assert_eq!(
        (escalated.kind.as_str(), escalated.version),
        ("escalated", 2)
    );
    assert_eq!(
        escalated.data["changes"]["priority"],
        json!({"before": before.priority, "after": after.priority}),
        "{:?}",
        escalated.data
    );
}

#[tokio::test]
async fn an_order_carries_its_device_as_the_registry_has_it_when_read() {
    use fleetpulse_domain::dispatch::{Actor, StatusChange};
    use fleetpulse_domain::order::OrderDevice;
    use fleetpulse_domain::{Criticality, DeviceKind};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    let low = reading(
        "OC5-CTX",
        1,
        t0(),
        json!({"filter_life_pct": 14.0, "fw": "2.4.1"}),
    );
    store.commit_batch(batch(vec![low])).await.expect("commit");
    let raised = only_order(&store, "OC5-CTX").await;
    let device = |region: Option<&str>, address: Option<&str>, criticality| {
        Some(OrderDevice {
            model: Some(fleetpulse_domain::ModelId::parse("OC-5A").expect("model")),
            kind: Some(DeviceKind::OxygenConcentrator),
            region: region.map(str::to_owned),
            address: address.map(str::to_owned),
            criticality,
            firmware: Some("2.4.1".to_owned()),
        })
    };
    assert_eq!(
        raised.device,
        device(None, None, Criticality::High),
        "{raised:?}"
    );

    // the device moves after the order was raised: the order shows where it is now
    store
        .change_device_status(
            &sn("OC5-CTX"),
            StatusChange {
                status: LifecycleStatus::AtCustomer,
                criticality: Some(Criticality::LifeSupporting),
                region: Some("north".into()),
                address: Some("2 Dock Road".into()),
                reason: None,
            },
            Actor("test".into()),
        )
        .await
        .expect("status");
    let moved = device(
        Some("north"),
        Some("2 Dock Road"),
        Criticality::LifeSupporting,
    );
    let listed = only_order(&store, "OC5-CTX").await;
    let one = store.order(raised.id).await.expect("read").expect("order");
    for o in [&listed, &one] {
        assert_eq!(o.device, moved, "{o:?}");
        // read with the order, not written to it: the order itself did not change
        assert_eq!(o.version, raised.version, "{o:?}");
    }
}

#[tokio::test]
async fn a_condition_that_clears_and_returns_is_a_second_episode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::AutoRegister).await;
    // low, low, back above the threshold (a reading glitch or a swapped filter not yet
    // reported through the order), low again
    feed_filter(&store, "OC5-AGAIN", 1, &[14.0, 13.0, 40.0, 12.0, 12.0]).await;
    let o = only_order(&store, "OC5-AGAIN").await;
    assert_eq!((o.trigger_count, o.version), (2, 2), "{o:?}");
    assert_eq!(o.evidence["seq"], json!(4), "the new episode's evidence");
    let history = store.order_history(o.id).await.expect("history");
    let last = history.last().expect("events");
    assert_eq!((last.kind.as_str(), last.version), ("updated", 2));
    assert_eq!(
        last.data["changes"]["trigger_count"],
        json!({"before": 1, "after": 2})
    );
}

fn letter(client: &str, topic: &str, payload: &[u8], at: DateTime<Utc>) -> NewDeadLetter {
    NewDeadLetter {
        received_at: at,
        topic: topic.to_owned(),
        client_id: client.to_owned(),
        reason: RejectReason::MalformedJson,
        detail: "not JSON".to_owned(),
        payload: payload.to_vec(),
    }
}

fn letters(dead_letters: Vec<NewDeadLetter>) -> IngestBatch {
    IngestBatch {
        dead_letters,
        ..Default::default()
    }
}

/// A refused message received again (a resend after a lost PUBACK, a broker's
/// redelivery, twice in one batch) counts on its dead letter; a different message, or
/// the same one a day after its first receipt, gets its own row.
#[tokio::test]
async fn the_same_refused_message_counts_on_its_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::Reject).await;
    let topic = "fleetpulse/v1/devices/DL1/telemetry";
    let first_at = Utc::now() - Duration::hours(30);
    let bad = letter("DL1", topic, b"{not json", first_at);
    let resent = |minutes: i64| {
        letter(
            "DL1",
            topic,
            b"{not json",
            first_at + Duration::minutes(minutes),
        )
    };

    let first = store
        .commit_batch(letters(vec![bad.clone()]))
        .await
        .expect("commit");
    let again = store
        .commit_batch(letters(vec![resent(1), resent(2)]))
        .await
        .expect("commit");
    let others = store
        .commit_batch(letters(vec![
            letter("DL1", topic, b"{not json either", first_at),
            letter("DL2", &topic.replace("DL1", "DL2"), b"{not json", first_at),
            NewDeadLetter {
                reason: RejectReason::NotAnObject,
                ..bad.clone()
            },
        ]))
        .await
        .expect("commit");
    let next_day = store
        .commit_batch(letters(vec![resent(24 * 60 + 1)]))
        .await
        .expect("commit");

    assert_eq!((first.dead_lettered, first.dead_letter_repeats), (1, 0));
    assert_eq!((again.dead_lettered, again.dead_letter_repeats), (2, 2));
    assert_eq!((others.dead_lettered, others.dead_letter_repeats), (3, 0));
    assert_eq!(
        (next_day.dead_lettered, next_day.dead_letter_repeats),
        (1, 0)
    );
    let rows = store
        .dead_letters(DeadLetterQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("dead letters")
        .items;
    let summary: Vec<(&str, &str, RejectReason, u64)> = rows
        .iter()
        .map(|d| {
            (
                d.client_id.as_str(),
                d.payload.as_str(),
                d.reason,
                d.repeats,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("DL1", "{not json", RejectReason::MalformedJson, 3),
            ("DL1", "{not json either", RejectReason::MalformedJson, 1),
            ("DL2", "{not json", RejectReason::MalformedJson, 1),
            ("DL1", "{not json", RejectReason::NotAnObject, 1),
            ("DL1", "{not json", RejectReason::MalformedJson, 1),
        ]
    );
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    assert_eq!(
        ms(rows[0].received_at),
        ms(first_at),
        "the first receipt stays"
    );
    assert_eq!(ms(rows[0].last_seen_at), ms(resent(2).received_at));
    assert_eq!(ms(rows[1].last_seen_at), ms(rows[1].received_at));
    assert_eq!(store.stats().await.expect("stats").dead_letters, 5);
}

/// An oversized payload's dead letter keeps only its first bytes: two different big
/// messages with the same start stay two rows (their sizes differ in the detail).
#[tokio::test]
async fn oversized_messages_with_the_same_start_are_not_taken_for_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::Reject).await;
    let at = Utc::now();
    let big = |size: usize| NewDeadLetter {
        reason: RejectReason::PayloadTooLarge,
        detail: format!("payload of {size} bytes; at most 262144"),
        ..letter(
            "DL3",
            "fleetpulse/v1/devices/DL3/telemetry",
            &[b'['; 1024],
            at,
        )
    };
    store
        .commit_batch(letters(vec![big(300_000), big(300_000), big(400_000)]))
        .await
        .expect("commit");
    let rows = store
        .dead_letters(DeadLetterQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("dead letters")
        .items;
    let repeats: Vec<u64> = rows.iter().map(|d| d.repeats).collect();
    assert_eq!(repeats, [2, 1]);
}

/// A reading the store refuses (here: an unknown device under `reject`) resent after a
/// lost PUBACK is the same message: one dead letter, whose payload leaves out the time
/// it was received (that is the dead letter's own `received_at`).
#[tokio::test]
async fn a_refused_reading_received_again_is_one_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("a.db"), UnknownDevicePolicy::Reject).await;
    let first = reading("NEW9", 1, t0(), json!({"filter_life_pct": 50}));
    let resent = Reading {
        received_at: first.received_at + Duration::seconds(7),
        ..first.clone()
    };
    store
        .commit_batch(batch(vec![first]))
        .await
        .expect("commit");
    let report = store
        .commit_batch(batch(vec![resent]))
        .await
        .expect("commit");
    let rows = store
        .dead_letters(DeadLetterQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("dead letters")
        .items;
    assert_eq!((report.dead_lettered, report.dead_letter_repeats), (1, 1));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].reason, rows[0].repeats),
        (RejectReason::UnknownDevice, 2)
    );
    assert!(
        !rows[0].payload.contains("received_at"),
        "{}",
        rows[0].payload
    );
}

// ---- the overview page's counts ---------------------------------------------------------

/// Registers a device of `model` (`OC-5A` or `OC-10`) with its status, region and
/// criticality (at a customer: with an address, as the registry requires).
async fn register(
    store: &SqliteStore,
    serial: &str,
    model: &str,
    status: LifecycleStatus,
    region: Option<&str>,
    criticality: fleetpulse_domain::Criticality,
) {
    store
        .register_device(NewDevice {
            serial: sn(serial),
            model: fleetpulse_domain::catalog::ModelId::parse(model).expect("model"),
            status: Some(status),
            criticality: Some(criticality),
            region: region.map(str::to_owned),
            address: (status == LifecycleStatus::AtCustomer).then(|| "1 Mill Lane, Leeds".into()),
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
}

fn status(
    serial: &str,
    state: fleetpulse_domain::ConnectionState,
    at: DateTime<Utc>,
) -> StatusUpdate {
    StatusUpdate {
        serial: sn(serial),
        state,
        at,
        firmware: None,
        model: None,
    }
}

/// A manual order with its SLA deadlines `hours` after `t` (respond, arrive, complete).
fn manual(
    serial: &str,
    cause: &str,
    priority: Priority,
    t: DateTime<Utc>,
    hours: [f64; 3],
    labour_minutes: u32,
) -> OrderIntent {
    let at = |h: f64| t + Duration::seconds((h * 3600.0) as i64);
    OrderIntent {
        serial: sn(serial),
        cause: Cause::parse(cause).expect("cause"),
        kind: OrderKind::Repair,
        priority,
        title: cause.to_owned(),
        solution: String::new(),
        skills: vec![],
        parts: vec![],
        labour_minutes,
        evidence: json!({}),
        triggered_at: t,
        sla: Sla {
            respond_by: at(hours[0]),
            arrive_by: at(hours[1]),
            complete_by: at(hours[2]),
        },
        new_episode: true,
    }
}

fn counts(pairs: &[(&str, u64)]) -> Vec<Count> {
    pairs
        .iter()
        .map(|(key, count)| Count {
            key: (*key).to_owned(),
            count: *count,
        })
        .collect()
}

/// Every count of the overview and of the calendar, on a fleet built for it through the
/// store's own calls (registry, statuses, readings with alarms, orders and their
/// transitions, dead letters), with the boundaries of each window on both sides.
#[tokio::test]
async fn the_overview_counts_the_fleet_orders_alarms_and_dead_letters() {
    use LifecycleStatus::{AtCustomer, InRepair, InStock, Retired};
    use fleetpulse_domain::ConnectionState::{Offline, Online, Unreachable};
    use fleetpulse_domain::Criticality::{High, LifeSupporting, Standard};

    // t: 08:00 UTC today, the fixed clock's time (every order is created then). The
    // counts are taken at now = t + 10 h (18:00), with the policy's silent_after of 24 h.
    let day = Utc::now().duration_trunc(Duration::days(1)).expect("day");
    let t = day + Duration::hours(8);
    let now = t + Duration::hours(10);
    let silent_after = Duration::hours(24);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with_clock(
        &dir.path().join("a.db"),
        UnknownDevicePolicy::AutoRegister,
        false,
        Clock::Fixed(t),
    )
    .await;

    // an empty store counts nothing
    assert_eq!(
        store
            .fleet_overview(now, silent_after)
            .await
            .expect("overview"),
        FleetOverview::default()
    );
    assert_eq!(
        store
            .order_counts_by_day(day, day + Duration::days(9))
            .await
            .expect("days"),
        []
    );

    // -- devices: A* at a customer (the status the silent-device rule watches)
    register(&store, "A1", "OC-5A", AtCustomer, Some("north"), High).await; // reports now
    register(&store, "A2", "OC-5A", AtCustomer, Some("north"), High).await; // online, quiet 30 h: silent
    register(
        &store,
        "A3",
        "OC-10",
        AtCustomer,
        Some("south"),
        LifeSupporting,
    )
    .await; // lost 48 h ago: silent
    register(&store, "A4", "OC-10", AtCustomer, Some("south"), High).await; // said goodbye: offline
    register(&store, "A5", "OC-5A", AtCustomer, None, Standard).await; // never seen: unknown
    register(&store, "A6", "OC-5A", AtCustomer, Some("north"), High).await; // unreachable 25 h: silent
    register(&store, "A7", "OC-5A", AtCustomer, Some("north"), High).await; // quiet exactly 24 h: silent
    register(&store, "A8", "OC-10", AtCustomer, Some("south"), High).await; // goodbye, then reported: silent
    register(&store, "A9", "OC-5A", AtCustomer, Some("north"), High).await; // quiet 24 h less 1 ms: online
    register(&store, "S1", "OC-5A", InStock, Some("north"), Standard).await; // reports now
    register(&store, "R1", "OC-10", InRepair, None, High).await; // unreachable 2 h ago
    register(&store, "RT", "OC-5A", Retired, Some("north"), High).await; // never seen: unknown
    let hours = |h: i64| now - Duration::hours(h);
    store
        .commit_batch(IngestBatch {
            statuses: vec![
                status("A2", Online, hours(30)),
                status("A3", Offline, hours(48)),
                status("A4", Online, hours(48)),
                status("A6", Unreachable, hours(25)),
                status("A7", Online, now - silent_after),
                status("A9", Online, now - silent_after + Duration::milliseconds(1)),
                status("R1", Unreachable, hours(2)),
                // auto-registered: unassigned, no model, no region, standard
                status("U1", Online, hours(1)),
            ],
            connection_ends: vec![
                ConnectionEnd {
                    serial: sn("A4"),
                    at: hours(47),
                    graceful: true,
                },
                ConnectionEnd {
                    serial: sn("A8"),
                    at: hours(50),
                    graceful: true,
                },
            ],
            ..Default::default()
        })
        .await
        .expect("statuses");
    store
        .commit_batch(IngestBatch {
            statuses: vec![status("A8", Online, hours(40))],
            ..Default::default()
        })
        .await
        .expect("A8 back");

    // -- alarms (readings dated two days ago, received now): on A1 W201 opens and
    // closes, E101 (critical: raises a P2 repair order at t), W203 (info) and X999 (a
    // code the catalog does not know) stay open; on S1 two warnings stay open
    store
        .commit_batch(batch(vec![
            reading(
                "A1",
                1,
                t0(),
                json!({"alarms": ["E101", "W201", "W203", "X999"]}),
            ),
            reading(
                "A1",
                2,
                t0() + Duration::minutes(1),
                json!({"alarms": ["E101", "W203", "X999"]}),
            ),
            reading("S1", 1, t0(), json!({"alarms": ["W201", "W202"]})),
        ]))
        .await
        .expect("alarms");

    // -- orders, all created at t, SLA states at now = t + 10 h
    let actor = fleetpulse_domain::dispatch::Actor("test".into());
    let mut ids = std::collections::BTreeMap::new();
    for (name, intent) in [
        // open, respond_by passed: breached (complete t + 30 h: tomorrow)
        (
            "o1",
            manual("A2", "ov_one", Priority::P1, t, [9.0, 20.0, 30.0], 10),
        ),
        // open, 1 h of 11 left to respond: at risk
        (
            "o2",
            manual("A3", "ov_two", Priority::P2, t, [11.0, 20.0, 30.0], 20),
        ),
        // acknowledged: its passed respond_by no longer counts: on track
        (
            "o3",
            manual("A4", "ov_three", Priority::P3, t, [1.0, 100.0, 200.0], 30),
        ),
        // assigned, arrive_by passed: breached
        (
            "o4",
            manual("A5", "ov_four", Priority::P3, t, [1.0, 9.5, 200.0], 40),
        ),
        // in progress: only complete_by counts, 2 h of 12 left: at risk (due 20:00 today)
        (
            "o5",
            manual("A6", "ov_five", Priority::P4, t, [1.0, 1.0, 12.0], 50),
        ),
        // in progress, 90 h of 100 left: on track
        (
            "o6",
            manual("A7", "ov_six", Priority::P4, t, [1.0, 1.0, 100.0], 60),
        ),
        // open, exactly a fifth of 12.5 h left to respond: not yet at risk; complete_by
        // is the calendar's end (t + 208 h = midnight in 9 days)
        (
            "o9",
            manual("A9", "ov_nine", Priority::P3, t, [12.5, 100.0, 208.0], 90),
        ),
        // closed: counted nowhere
        (
            "o7",
            manual("S1", "ov_seven", Priority::P2, t, [1.0, 2.0, 12.0], 70),
        ),
        (
            "o8",
            manual("R1", "ov_eight", Priority::P1, t, [1.0, 2.0, 20.0], 80),
        ),
    ] {
        let (order, created) = store
            .create_manual_order(intent, actor.clone())
            .await
            .expect("order");
        assert!(created, "{name}");
        ids.insert(name, order.id);
    }
    let advance = |name: &'static str, actions: Vec<OrderAction>| {
        let store = store.clone();
        let actor = actor.clone();
        let id = ids[name];
        async move {
            for action in actions {
                let order = store.order(id).await.expect("read").expect("order");
                store
                    .transition(id, order.version, action, actor.clone(), t)
                    .await
                    .expect("transition");
            }
        }
    };
    let assign = || OrderAction::Assign {
        engineer: "eng-1".into(),
        planned_visit_at: None,
    };
    use OrderAction::{Acknowledge, Start};
    advance("o3", vec![Acknowledge]).await;
    advance("o4", vec![Acknowledge, assign()]).await;
    advance("o5", vec![Acknowledge, assign(), Start]).await;
    advance("o6", vec![Acknowledge, assign(), Start]).await;
    advance(
        "o7",
        vec![
            Acknowledge,
            assign(),
            Start,
            OrderAction::Complete(Default::default()),
        ],
    )
    .await;
    advance(
        "o8",
        vec![OrderAction::Cancel {
            reason: "duplicate".into(),
        }],
    )
    .await;
    // work bundled into o6's visit (bundles come from prediction runs; written here
    // directly): its labour counts on o6's day
    let side = rusqlite::Connection::open(dir.path().join("a.db")).expect("side connection");
    side.execute(
        "INSERT INTO order_tasks (order_id, cause, title, skills, parts, labour_minutes, evidence, added_at, updated_at) \
         VALUES (?1, 'filter_depletion', 'filter', '[]', '[]', 25, '{}', 0, 0)",
        [ids["o6"]],
    )
    .expect("task");
    drop(side);

    // -- dead letters: the window is [now - 24 h, now) = [t - 14 h, t + 10 h)
    let start = now - Duration::hours(24);
    let with = |reason: RejectReason, l: NewDeadLetter| NewDeadLetter { reason, ..l };
    store
        .commit_batch(letters(vec![
            letter("c1", "fleet/a", b"a", start), // first instant: in
            letter("c1", "fleet/a", b"b", t),
            letter("c1", "fleet/a", b"b", t + Duration::hours(1)), // received again: same row
            with(
                RejectReason::UnknownDevice,
                letter("c2", "fleet/b", b"c", t + Duration::hours(9)),
            ),
            with(
                RejectReason::TimestampSkew,
                letter("c1", "fleet/a", b"d", now),
            ), // now: out
            letter("c1", "fleet/a", b"e", start - Duration::milliseconds(1)), // out
            with(
                RejectReason::BadAlarmCode,
                letter("c3", "fleet/c", b"f", t - Duration::days(3)),
            ),
        ]))
        .await
        .expect("dead letters");

    let overview = store
        .fleet_overview(now, silent_after)
        .await
        .expect("overview");
    assert_eq!(
        overview,
        FleetOverview {
            devices: 13,
            by_status: counts(&[
                ("at_customer", 9),
                ("in_repair", 1),
                ("in_stock", 1),
                ("retired", 1),
                ("unassigned", 1),
            ]),
            by_model: counts(&[("OC-5A", 8), ("OC-10", 4), ("unknown", 1)]),
            by_region: counts(&[("north", 7), ("south", 3), ("unknown", 3)]),
            by_criticality: counts(&[("high", 9), ("standard", 3), ("life_supporting", 1)]),
            // silent: A2, A3, A6, A7, A8; online: A1, A9, S1, U1; unknown: A5, RT
            by_connection: counts(&[
                ("silent", 5),
                ("online", 4),
                ("unknown", 2),
                ("offline", 1),
                ("unreachable", 1),
            ]),
            active_alarms_by_severity: counts(&[
                ("warning", 2),
                ("critical", 1),
                ("info", 1),
                ("unknown", 1),
            ]),
            // o1, o2, o9 and E101's repair order (P2, respond within 1 h of t: breached)
            orders_by_status: counts(&[
                ("open", 4),
                ("in_progress", 2),
                ("acknowledged", 1),
                ("assigned", 1),
            ]),
            orders_by_priority: counts(&[("P3", 3), ("P2", 2), ("P4", 2), ("P1", 1)]),
            orders_by_sla: counts(&[("breached", 3), ("on_track", 3), ("at_risk", 2)]),
            dead_letters_24h: 3,
            dead_letters_by_reason_24h: counts(&[("malformed_json", 2), ("unknown_device", 1)]),
        }
    );
    assert_eq!(Count::of(&overview.by_connection, "silent"), 5);
    assert_eq!(Count::of(&overview.orders_by_sla, "nothing"), 0);

    // the SLA states are those the order list filters on, at the same instant
    for state in SlaState::ALL {
        let listed = store
            .list_orders(OrderQuery {
                active_only: true,
                sla: Some((*state, now)),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("list")
            .items
            .len() as u64;
        assert_eq!(
            Count::of(&overview.orders_by_sla, state.as_str()),
            listed,
            "{state:?}"
        );
    }

    // -- the calendar from 20:00 today (o5's completion deadline: included) to midnight
    // in 9 days (o9's: left out); closed orders are not work due
    let date = |days: i64| (day + Duration::days(days)).date_naive();
    let day_count = |days: i64, p: [u64; 4], labour_minutes: u64| DayCount {
        day: date(days),
        orders: p.iter().sum(),
        by_priority: counts(&[("P1", p[0]), ("P2", p[1]), ("P3", p[2]), ("P4", p[3])]),
        labour_minutes,
    };
    assert_eq!(
        store
            .order_counts_by_day(t + Duration::hours(12), day + Duration::days(9))
            .await
            .expect("days"),
        [
            day_count(0, [0, 0, 0, 1], 50),  // o5
            day_count(1, [1, 1, 0, 0], 30),  // o1, o2
            day_count(2, [0, 1, 0, 0], 120), // E101's repair order (catalog labour 120 min)
            day_count(4, [0, 0, 0, 1], 85),  // o6 with its bundled task
            day_count(8, [0, 0, 2, 0], 70),  // o3, o4
        ]
    );
    // and from 20:00 plus a millisecond, o5 is out
    let later = store
        .order_counts_by_day(
            t + Duration::hours(12) + Duration::milliseconds(1),
            day + Duration::days(2),
        )
        .await
        .expect("days");
    assert_eq!(later.iter().map(|d| d.day).collect::<Vec<_>>(), [date(1)]);
}
