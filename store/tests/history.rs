//! History of any age into the SQLite store and back: failures keyed by component and
//! mode, maintenance kinds and components from the catalog, devices with their
//! commissioning, meter history, telemetry backfill and alarm episodes; every kind
//! re-imported gives only duplicates.

use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use fleetpulse_domain::dispatch::Dispatch;
use fleetpulse_domain::reliability::{ImportKind, ImportReport, ReliabilitySource};
use fleetpulse_domain::store::{AlarmQuery, NewDevice, Store, UnknownDevicePolicy};
use fleetpulse_domain::{Catalog, ModelId, Policy, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use rusqlite::Connection;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

/// A machine with four replaceable components (digits in their ids), modes without any
/// alarm, and a declared maintenance kind.
const PM1: &str = r#"
[[maintenance_kind]]
id = "calibration"

[[model]]
id = "PM-1"
name = "Press machine"
kind = "other"
default_criticality = "standard"
service_interval_hours = 0
service_skill = ""
service_labour_minutes = 0

[[model.component]]
id = "comp1"
[[model.component.failure_mode]]
id = "comp1_wear"
codes = ["ERROR1"]

[[model.component]]
id = "comp2"

[[model.component]]
id = "comp3"
[[model.component.failure_mode]]
id = "comp3_crack"
[[model.component.failure_mode]]
id = "comp3_wear"

[[model.component]]
id = "comp4"
ages_on = "calendar"
"#;

fn catalog() -> Catalog {
    Catalog::from_toml_str(&format!("{CATALOG}\n{PM1}")).expect("catalog")
}

async fn open(path: &Path) -> SqliteStore {
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    SqliteStore::open(
        path,
        StoreOptions {
            clock: Default::default(),
            catalog: Arc::new(catalog()),
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::AutoRegister,
            durability: Durability::Normal,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("open")
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).expect("serial")
}

async fn register(store: &SqliteStore, serial: &str, model: &str) {
    store
        .register_device(NewDevice {
            serial: sn(serial),
            model: ModelId::parse(model).expect("model"),
            status: None,
            criticality: None,
            region: None,
            address: None,
            commissioned_at: None,
            runtime_hours_at_registration: None,
            observed_from: None,
        })
        .await
        .expect("register");
}

async fn import(store: &SqliteStore, kind: ImportKind, csv: &str) -> ImportReport {
    store
        .import_history(kind, csv.to_owned())
        .await
        .expect("import")
}

fn lines(r: &ImportReport) -> Vec<usize> {
    r.errors.iter().map(|e| e.line).collect()
}

#[tokio::test]
async fn two_components_failing_at_the_same_instant_are_two_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    register(&store, "PM-0001", "PM-1").await;
    let csv = "serial,at,runtime_hours,component,failure_mode\n\
               PM-0001,2023-05-01T06:00:00Z,8000,comp1,\n\
               PM-0001,2023-05-01T06:00:00Z,8000,comp2,\n\
               PM-0001,2023-05-01T06:00:00Z,8000,comp3,comp3_crack\n\
               PM-0001,2023-05-01T06:00:00Z,8000,comp3,comp3_wear\n";
    let r = import(&store, ImportKind::Failures, csv).await;
    assert_eq!((r.imported, r.duplicates), (4, 0), "{:?}", r.errors);
    let again = import(&store, ImportKind::Failures, csv).await;
    assert_eq!((again.imported, again.duplicates), (0, 4));

    let events = store.failure_events(&sn("PM-0001")).await.expect("events");
    let got: Vec<(Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| (e.component.as_deref(), e.failure_mode.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("comp1"), Some("comp1_wear")),
            (Some("comp2"), Some("comp2")),
            (Some("comp3"), Some("comp3_crack")),
            (Some("comp3"), Some("comp3_wear")),
        ]
    );
}

#[tokio::test]
async fn an_unknown_component_or_mode_is_refused_on_its_line_and_the_good_rows_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    register(&store, "PM-0002", "PM-1").await;
    register(&store, "OC5-0002", "OC-5A").await;
    let csv = "serial,at,fault_code,component,failure_mode\n\
               PM-0002,2023-01-01T00:00:00Z,,comp9,\n\
               PM-0002,2023-01-02T00:00:00Z,,,no_such_mode\n\
               PM-0002,2023-01-03T00:00:00Z,,comp1,comp3_wear\n\
               PM-0002,2023-01-04T00:00:00Z,,comp3,\n\
               PM-0002,2023-01-05T00:00:00Z,ERROR1,,\n\
               PM-0002,2023-01-06T00:00:00Z,,,\n\
               OC5-0002,2023-01-07T00:00:00Z,,,compressor\n\
               OC5-0002,2023-01-08T00:00:00Z,,comp1,\n";
    let r = import(&store, ImportKind::Failures, csv).await;
    assert_eq!(lines(&r), vec![2, 3, 4, 5, 9], "{:?}", r.errors);
    assert!(r.errors[0].reason.contains("\"comp9\""), "{:?}", r.errors);
    assert!(r.errors[1].reason.contains("no_such_mode"));
    assert!(r.errors[2].reason.contains("comp3_wear"));
    assert!(r.errors[3].reason.contains("several failure modes"));
    assert!(r.errors[4].reason.contains("model OC-5A"));
    assert_eq!(r.imported, 3);
    let events = store.failure_events(&sn("PM-0002")).await.expect("events");
    assert_eq!(
        events[0].component.as_deref(),
        Some("comp1"),
        "the code ERROR1 indicates comp1_wear"
    );
    assert_eq!(events[1].component, None, "a device-level failure");
    let oc = store.failure_events(&sn("OC5-0002")).await.expect("events");
    assert_eq!(
        oc[0].component.as_deref(),
        Some("compressor"),
        "the implicit component of a failure alarm's mode"
    );
}

/// The migrations of schema version 10, as released (before components).
const UP_TO_V10: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_sink_spool.sql"),
    include_str!("../migrations/0003_device_credentials.sql"),
    include_str!("../migrations/0004_dispatch.sql"),
    include_str!("../migrations/0005_webhooks.sql"),
    include_str!("../migrations/0006_dispatch_indexes.sql"),
    include_str!("../migrations/0007_reliability.sql"),
    include_str!("../migrations/0008_ingest_journal.sql"),
    include_str!("../migrations/0009_predictions.sql"),
    include_str!("../migrations/0010_dead_letter_repeats.sql"),
];

#[tokio::test]
async fn failures_imported_before_the_upgrade_are_recognised_as_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fp.db");
    // 2025-03-01T10:00:00Z and 11:00, as the import of schema 10 keyed them
    let (t1, t2) = (1_740_823_200_000_i64, 1_740_826_800_000_i64);
    {
        let mut conn = Connection::open(&path).expect("open");
        for sql in UP_TO_V10 {
            let tx = conn.transaction().expect("tx");
            tx.execute_batch(sql).expect("a released migration");
            tx.commit().expect("commit");
        }
        conn.pragma_update(None, "user_version", 10)
            .expect("version");
        conn.execute_batch(&format!(
            "INSERT INTO devices (serial, model, kind, status, criticality, registered_at)
                 VALUES ('OC5-OLD', 'OC-5A', 'oxygen_concentrator', 'in_service', 'high', {t1});
             INSERT INTO failure_events (serial, at, runtime_hours, source, fault_code, failure_mode,
                                         model, kind, import_key, updated_at)
                 VALUES ('OC5-OLD', {t1}, 1200, 'import', 'E101', 'compressor', 'OC-5A',
                         'oxygen_concentrator', 'failure|OC5-OLD|{t1}|E101', {t1}),
                        ('OC5-OLD', {t2}, 1201, 'import', NULL, 'sieve_bed', 'OC-5A',
                         'oxygen_concentrator', 'failure|OC5-OLD|{t2}|', {t1});"
        ))
        .expect("rows of schema 10");
    }
    let store = open(&path).await;
    let csv = "serial,at,runtime_hours,fault_code,failure_mode,component\n\
               OC5-OLD,2025-03-01T10:00:00Z,1200,E101,,\n\
               OC5-OLD,2025-03-01T10:00:00Z,1200,E101,compressor,compressor\n\
               OC5-OLD,2025-03-01T11:00:00Z,1201,,sieve_bed,\n\
               OC5-OLD,2025-03-01T11:00:00Z,1201,,compressor,\n";
    let r = import(&store, ImportKind::Failures, csv).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        (r.duplicates, r.imported),
        (3, 1),
        "the same identity under the old key is a duplicate; another component at the same time is not"
    );
}

#[tokio::test]
async fn maintenance_kinds_and_components_come_from_the_catalog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    register(&store, "PM-0003", "PM-1").await;
    register(&store, "OC5-0003", "OC-5A").await;
    let csv = "serial,at,runtime_hours,kind,component,consumable,notes\n\
               PM-0003,2023-02-01T00:00:00Z,100,replacement,comp1,,\n\
               PM-0003,2023-02-01T00:00:00Z,100,replacement,comp2,,same time other part\n\
               PM-0003,2023-02-02T00:00:00Z,110,calibration,,,\n\
               PM-0003,2023-02-03T00:00:00Z,120,inspection,comp4,,\n\
               PM-0003,2023-02-04T00:00:00Z,130,replacement,,,\n\
               PM-0003,2023-02-05T00:00:00Z,140,replacement,comp7,,\n\
               PM-0003,2023-02-06T00:00:00Z,150,overhaul,comp1,,\n\
               PM-0003,2023-02-07T00:00:00Z,160,consumable,comp1,,\n\
               OC5-0003,2023-02-08T00:00:00Z,170,consumable,,filter,\n\
               OC5-0003,2023-02-09T00:00:00Z,180,replacement,compressor,,\n\
               OC5-0003,2023-02-10T00:00:00Z,190,replacement,filter,sieve,\n";
    let r = import(&store, ImportKind::Maintenance, csv).await;
    assert_eq!(lines(&r), vec![6, 7, 8, 9, 12], "{:?}", r.errors);
    assert!(r.errors[0].reason.contains("renews a component"));
    assert!(r.errors[1].reason.contains("comp7"));
    assert!(
        r.errors[2].reason.contains("calibration"),
        "lists the kinds"
    );
    assert!(
        r.errors[3]
            .reason
            .contains("not a consumable of model PM-1")
    );
    assert!(r.errors[4].reason.contains("differ"));
    assert_eq!(r.imported, 6);
    let again = import(&store, ImportKind::Maintenance, csv).await;
    assert_eq!((again.imported, again.duplicates), (0, 6));
}

#[tokio::test]
async fn devices_import_with_their_commissioning_and_never_update_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    let csv = "serial,model,status,region,commissioned_at,runtime_hours_at_registration,observed_from\n\
               PM-0100,PM-1,in_stock,north,2019-04-01T00:00:00Z,12000.5,2021-01-01T00:00:00Z\n\
               PM-0101,PM-1,,,2020-04-01T00:00:00Z,,\n\
               PM-0102,XX-9,,,,,\n\
               PM-0103,PM-1,,,2021-01-01T00:00:00Z,,2020-01-01T00:00:00Z\n\
               PM-0104,PM-1,,,2999-01-01T00:00:00Z,,\n\
               PM-0105,PM-1,,,,-3,\n\
               PM-0106,PM-1,at_customer,,,,\n";
    let r = import(&store, ImportKind::Devices, csv).await;
    assert_eq!(lines(&r), vec![4, 5, 6, 7, 8], "{:?}", r.errors);
    assert!(r.errors[0].reason.contains("XX-9"));
    assert!(r.errors[1].reason.contains("before commissioned_at"));
    assert!(r.errors[2].reason.contains("future"));
    assert!(r.errors[3].reason.contains("runtime_hours_at_registration"));
    assert!(r.errors[4].reason.contains("address"));
    assert_eq!(r.imported, 2);

    let d = store
        .device(&sn("PM-0100"))
        .await
        .expect("read")
        .expect("registered")
        .device;
    assert_eq!(
        d.commissioned_at,
        Some(Utc.with_ymd_and_hms(2019, 4, 1, 0, 0, 0).unwrap())
    );
    assert_eq!(d.runtime_hours_at_registration, Some(12000.5));
    assert_eq!(
        d.observed_from,
        Some(Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap())
    );

    let again = import(&store, ImportKind::Devices, csv).await;
    assert_eq!((again.imported, again.duplicates), (0, 2));
    let changed = import(
        &store,
        ImportKind::Devices,
        "serial,model,commissioned_at\nPM-0101,PM-1,2020-05-01T00:00:00Z\n",
    )
    .await;
    assert_eq!(lines(&changed), vec![2]);
    assert!(
        changed.errors[0]
            .reason
            .contains("commissioned_at (registered: 2020-04-01"),
        "{:?}",
        changed.errors
    );
}

#[tokio::test]
async fn telemetry_three_years_old_is_refused_live_and_back_filled_into_hourly_rollups() {
    use fleetpulse_domain::history::MeterQuery;
    use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    register(&store, "OC5-0200", "OC-5A").await;
    let old = Utc::now() - chrono::Duration::days(3 * 365);
    let hour = old.timestamp() - old.timestamp().rem_euclid(3600);
    let t = |s: i64| {
        chrono::DateTime::from_timestamp(hour + s, 0)
            .expect("time")
            .to_rfc3339()
    };

    // the live path refuses it for its age
    let live = parse_telemetry(
        &sn("OC5-0200"),
        format!(r#"{{"seq":1,"ts":"{}","runtime_hours":100}}"#, t(0)).as_bytes(),
        Utc::now(),
        &TelemetryLimits::default(),
    );
    assert!(
        live[0]
            .as_ref()
            .is_err_and(|r| r.detail.contains("days old")),
        "{live:?}"
    );

    let csv = format!(
        "serial,at,runtime_hours,o2_purity_pct,vendor_temp\n\
         OC5-0200,{},100,95,20\n\
         OC5-0200,{},100.5,93,21\n\
         OC5-0200,{},101,94,\n\
         OC5-0200,{},102,250,\n\
         OC5-0200,{},103,Bad,\n",
        t(0),
        t(1800),
        t(3600),
        t(7200),
        t(10800)
    );
    let r = import(&store, ImportKind::Telemetry, &csv).await;
    assert_eq!(lines(&r), vec![5, 6], "{:?}", r.errors);
    assert!(
        r.errors[0].reason.contains("o2_purity_pct"),
        "{:?}",
        r.errors
    );
    assert_eq!(r.imported, 3);
    let rollups = store
        .rollups(
            &sn("OC5-0200"),
            old - chrono::Duration::hours(1),
            old + chrono::Duration::hours(5),
        )
        .await
        .expect("rollups");
    let runtime: Vec<(u64, f64, f64)> = rollups
        .iter()
        .filter(|r| r.field == "runtime_hours")
        .map(|r| (r.count, r.sum, r.last))
        .collect();
    assert_eq!(runtime, vec![(2, 200.5, 100.5), (1, 101.0, 101.0)]);
    assert!(
        rollups
            .iter()
            .any(|r| r.field == "vendor_temp" && r.count == 2)
    );

    let again = import(&store, ImportKind::Telemetry, &csv).await;
    assert_eq!((again.imported, again.duplicates), (0, 3), "{:?}", again);
    let changed = import(
        &store,
        ImportKind::Telemetry,
        &format!("serial,at,runtime_hours\nOC5-0200,{},100\n", t(0)),
    )
    .await;
    assert!(
        changed.errors[0].reason.contains("back-filled before"),
        "{:?}",
        changed.errors
    );

    let meters = store
        .device_meters(
            &sn("OC5-0200"),
            MeterQuery {
                field: Some("runtime_hours".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("meters");
    let got: Vec<(f64, &str)> = meters
        .iter()
        .map(|m| (m.value, m.source.as_str()))
        .collect();
    assert_eq!(got, vec![(100.5, "backfill"), (101.0, "backfill")]);
}

#[tokio::test]
async fn a_backfill_overlapping_a_live_hour_is_refused_on_its_lines() {
    use fleetpulse_domain::store::IngestBatch;
    use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    register(&store, "OC5-0300", "OC-5A").await;
    let now = Utc::now();
    let hour = now.timestamp() - now.timestamp().rem_euclid(3600) - 5 * 3600;
    let t = |s: i64| chrono::DateTime::from_timestamp(hour + s, 0).expect("time");
    let readings = parse_telemetry(
        &sn("OC5-0300"),
        format!(
            r#"{{"seq":1,"ts":"{}","runtime_hours":500}}"#,
            t(600).to_rfc3339()
        )
        .as_bytes(),
        now,
        &TelemetryLimits::default(),
    )
    .into_iter()
    .map(|r| r.expect("valid"))
    .collect();
    store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");
    let csv = format!(
        "serial,at,runtime_hours\nOC5-0300,{},499.5\nOC5-0300,{},499.9\nOC5-0300,{},501\n",
        t(0).to_rfc3339(),
        t(1200).to_rfc3339(),
        t(3600).to_rfc3339()
    );
    let r = import(&store, ImportKind::Telemetry, &csv).await;
    assert_eq!(lines(&r), vec![2, 3], "{:?}", r.errors);
    assert!(r.errors[0].reason.contains("overlaps live telemetry"));
    assert_eq!(r.imported, 1);
    let live_hour = store
        .rollups(&sn("OC5-0300"), t(0), t(3600))
        .await
        .expect("rollups");
    assert_eq!(
        live_hour
            .iter()
            .map(|r| (r.count, r.last))
            .collect::<Vec<_>>(),
        vec![(1, 500.0)],
        "the live hour is untouched"
    );
}

#[tokio::test]
async fn meter_history_is_kept_per_reading_merged_where_no_live_hour_and_read_back() {
    use fleetpulse_domain::history::MeterQuery;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    register(&store, "HV2-0400", "HV-200").await;
    let csv = "serial,at,runtime_hours,blower_hours\n\
               HV2-0400,2022-01-01T08:00:00Z,1000,900\n\
               HV2-0400,2022-01-01T08:30:00Z,1000.5,\n\
               HV2-0400,2022-02-01T08:00:00Z,1700,1500\n\
               HV2-0400,2022-03-01T08:00:00Z,-1,\n\
               HV2-0400,2022-03-02T08:00:00Z,,\n\
               NOPE-9,2022-03-03T08:00:00Z,5,\n";
    let r = import(&store, ImportKind::Meters, csv).await;
    assert_eq!(lines(&r), vec![5, 6, 7], "{:?}", r.errors);
    assert_eq!(r.imported, 3);
    let again = import(&store, ImportKind::Meters, csv).await;
    assert_eq!((again.imported, again.duplicates), (0, 3));
    let conflict = import(
        &store,
        ImportKind::Meters,
        "serial,at,runtime_hours\nHV2-0400,2022-01-01T08:00:00Z,1001\n",
    )
    .await;
    assert!(
        conflict.errors[0]
            .reason
            .contains("imported before as 1000")
    );
    let err = store
        .import_history(ImportKind::Meters, "serial,at,o2_purity_pct\n".into())
        .await
        .expect_err("not a meter");
    assert!(err.to_string().contains("o2_purity_pct"), "{err}");

    let all = store
        .device_meters(
            &sn("HV2-0400"),
            MeterQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("meters");
    let got: Vec<(&str, f64, &str)> = all
        .iter()
        .map(|m| (m.field.as_str(), m.value, m.source.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("blower_hours", 900.0, "import"),
            ("runtime_hours", 1000.0, "import"),
            ("runtime_hours", 1000.5, "import"),
            ("blower_hours", 1500.0, "import"),
            ("runtime_hours", 1700.0, "import"),
        ]
    );
    let rollups = store
        .rollups(
            &sn("HV2-0400"),
            Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2022, 1, 2, 0, 0, 0).unwrap(),
        )
        .await
        .expect("rollups");
    let runtime: Vec<(u64, f64)> = rollups
        .iter()
        .filter(|r| r.field == "runtime_hours")
        .map(|r| (r.count, r.last))
        .collect();
    assert_eq!(runtime, vec![(2, 1000.5)], "merged into the hour");
}

#[tokio::test]
async fn past_alarm_events_load_as_ended_episodes_the_predictors_read_and_raise_nothing() {
    use fleetpulse_domain::prediction::AlarmSpan;
    use fleetpulse_domain::store::{IngestBatch, OrderQuery, PredictionStore};
    use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};

    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("fp.db")).await;
    let devices = import(
        &store,
        ImportKind::Devices,
        "serial,model,commissioned_at\n\
         PM-0500,PM-1,2019-01-01T00:00:00Z\n\
         OC5-0500,OC-5A,2019-06-01T00:00:00Z\n",
    )
    .await;
    assert_eq!(devices.imported, 2, "{:?}", devices.errors);
    // live: W202 from 5 h to 4 h ago, W201 open since 2 h ago
    let now = Utc::now();
    let t = |minutes_ago: i64| {
        chrono::DateTime::from_timestamp(
            now.timestamp() - now.timestamp() % 60 - minutes_ago * 60,
            0,
        )
        .expect("time")
    };
    let live = |seq: u64, at: chrono::DateTime<Utc>, alarms: &str| {
        parse_telemetry(
            &sn("OC5-0500"),
            format!(
                r#"{{"seq":{seq},"ts":"{}","runtime_hours":{},"alarms":{alarms}}}"#,
                at.to_rfc3339(),
                100 + seq
            )
            .as_bytes(),
            now,
            &TelemetryLimits::default(),
        )
        .into_iter()
        .map(|r| r.expect("valid"))
        .collect::<Vec<_>>()
    };
    let mut readings = live(1, t(300), r#"["W202"]"#);
    readings.extend(live(2, t(240), "[]"));
    readings.extend(live(3, t(120), r#"["W201"]"#));
    store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");

    let csv = format!(
        "serial,started_at,ended_at,code,severity,runtime_hours\n\
         PM-0500,2021-05-01T10:00:00Z,2021-05-01T10:30:00Z,ERROR1,,12000\n\
         PM-0500,2021-05-02T10:00:00+02:00,,error2,warning,\n\
         OC5-0500,2020-01-01T00:00:00Z,,E101,,500\n\
         NOPE-9,2021-05-01T10:00:00Z,,ERROR1,,\n\
         PM-0500,yesterday,,ERROR1,,\n\
         PM-0500,2021-05-03T10:00:00Z,2021-05-03T09:00:00Z,ERROR1,,\n\
         OC5-0500,{},{},W201,,\n\
         OC5-0500,{},,W202,,\n\
         PM-0500,2021-05-01T10:00:00Z,2021-05-01T10:30:00Z,ERROR1,,12000\n\
         PM-0500,2021-05-04T10:00:00Z,,BAD CODE,,\n\
         OC5-0500,{},{},W201,,\n",
        t(180).to_rfc3339(),
        t(60).to_rfc3339(),
        t(290).to_rfc3339(),
        t(180).to_rfc3339(),
        t(150).to_rfc3339(),
    );
    let r = import(&store, ImportKind::Alarms, &csv).await;
    assert_eq!(lines(&r), vec![5, 6, 7, 8, 11], "{:?}", r.errors);
    assert!(
        r.errors[0].reason.contains("not registered"),
        "{:?}",
        r.errors
    );
    assert!(r.errors[1].reason.contains("started_at \"yesterday\""));
    assert!(r.errors[2].reason.contains("before started_at"));
    assert!(
        r.errors[3].reason.contains("open live episode"),
        "{:?}",
        r.errors
    );
    assert!(r.errors[4].reason.starts_with("code:"));
    assert_eq!(
        r.same_incident.iter().map(|i| i.line).collect::<Vec<_>>(),
        vec![9],
        "overlaps the ended live W202: {:?}",
        r.same_incident
    );
    assert_eq!(
        (r.imported, r.duplicates),
        (4, 1),
        "the same row twice in one file"
    );
    let again = import(&store, ImportKind::Alarms, &csv).await;
    assert_eq!((again.imported, again.duplicates), (0, 5), "{again:?}");
    assert_eq!(lines(&again), lines(&r));
    let other_end = import(
        &store,
        ImportKind::Alarms,
        "serial,started_at,ended_at,code\nPM-0500,2021-05-01T10:00:00Z,2021-05-01T11:00:00Z,ERROR1\n",
    )
    .await;
    assert!(
        other_end.errors[0]
            .reason
            .contains("imported before ending at"),
        "{:?}",
        other_end.errors
    );

    // read back, newest first by start
    let pm = store
        .alarm_episodes(AlarmQuery {
            serial: sn("PM-0500"),
            active: None,
            severity: None,
            code: None,
            from: None,
            to: None,
            after: None,
            limit: 10,
        })
        .await
        .expect("episodes")
        .items;
    type Seen<'a> = (&'a str, Option<&'a str>, Option<f64>, Option<f64>, bool);
    let got: Vec<Seen<'_>> = pm
        .iter()
        .map(|e| {
            (
                e.code.as_str(),
                e.severity.map(|s| s.as_str()),
                e.duration_s,
                e.runtime_hours_at_start,
                e.imported,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ERROR2", Some("warning"), Some(0.0), None, true),
            ("ERROR1", None, Some(1800.0), Some(12000.0), true),
        ]
    );
    assert_eq!(pm[0].ended_at, Some(pm[0].started_at), "an instant event");
    assert_eq!((pm[0].started_seq, pm[0].ended_seq), (0, None));

    // live tracking goes on: the live W201 closes, the imported one keeps its end
    store
        .commit_batch(IngestBatch {
            readings: live(4, t(30), "[]"),
            ..Default::default()
        })
        .await
        .expect("commit");
    let oc = store
        .alarm_episodes(AlarmQuery {
            serial: sn("OC5-0500"),
            active: None,
            severity: None,
            code: None,
            from: None,
            to: None,
            after: None,
            limit: 10,
        })
        .await
        .expect("episodes")
        .items;
    let got: Vec<(&str, bool, Option<chrono::DateTime<Utc>>)> = oc
        .iter()
        .map(|e| (e.code.as_str(), e.imported, e.ended_at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("W201", false, Some(t(30))),
            ("W201", true, Some(t(150))),
            ("W202", false, Some(t(240))),
            (
                "E101",
                true,
                Some(Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap())
            ),
        ]
    );
    assert_eq!(oc[3].severity.map(|s| s.as_str()), Some("critical"));

    // E101 counts as a failure on OC-5A live; imported, it raises no event and no order
    let events = store.failure_events(&sn("OC5-0500")).await.expect("events");
    assert!(events.is_empty(), "{events:?}");
    let orders = store
        .list_orders(OrderQuery {
            serial: Some(sn("OC5-0500")),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("orders");
    assert!(
        orders
            .items
            .iter()
            .all(|o| o.cause.as_str() != "critical_alarm:E101"),
        "{:?}",
        orders.items
    );

    // the predictors read them as alarm spans
    let data = store
        .prediction_data(Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap(), 60, 3)
        .await
        .expect("data");
    let pm = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == "PM-0500")
        .expect("PM-0500 in service then");
    let at = |h: u32, m: u32, d: u32| Utc.with_ymd_and_hms(2021, 5, d, h, m, 0).unwrap();
    assert_eq!(
        pm.alarms,
        vec![
            AlarmSpan {
                code: "ERROR1".into(),
                started_at: at(10, 0, 1),
                ended_at: Some(at(10, 30, 1)),
                runtime_hours_at_start: Some(12000.0),
            },
            AlarmSpan {
                code: "ERROR2".into(),
                started_at: at(8, 0, 2),
                ended_at: Some(at(8, 0, 2)),
                runtime_hours_at_start: None,
            },
        ]
    );
    let data = store
        .prediction_data(Utc::now(), 3000, 3)
        .await
        .expect("data");
    let oc = data
        .devices
        .iter()
        .find(|d| d.serial.as_str() == "OC5-0500")
        .expect("OC5-0500");
    assert_eq!(
        oc.alarms
            .iter()
            .map(|a| a.code.as_str())
            .collect::<Vec<_>>(),
        vec!["E101", "W202", "W201", "W201"],
        "oldest first, imported and live"
    );
}
