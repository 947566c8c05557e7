//! Schema upgrades on a database with rows: a version 10 store (built from the released
//! migration files) opens at the current version with its rows carried over.

use std::path::Path;
use std::sync::Arc;

use fleetpulse_domain::store::UnknownDevicePolicy;
use fleetpulse_domain::{Catalog, Policy};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SCHEMA_VERSION, SqliteStore, StoreOptions};
use rusqlite::Connection;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

/// The migrations of schema version 10, as released.
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

/// 2025-03-01T00:00:00Z and 2025-04-01T00:00:00Z, in ms.
const MARCH: i64 = 1_740_787_200_000;
const APRIL: i64 = 1_743_465_600_000;

fn v10_database_with_rows(path: &Path) {
    let mut conn = Connection::open(path).expect("open");
    for sql in UP_TO_V10 {
        let tx = conn.transaction().expect("tx");
        tx.execute_batch(sql).expect("a released migration");
        tx.commit().expect("commit");
    }
    conn.pragma_update(None, "user_version", 10)
        .expect("version");
    conn.execute_batch(&format!(
        "INSERT INTO devices (serial, model, kind, status, criticality, registered_at)
             VALUES ('OC1', 'OC-5A', 'oxygen_concentrator', 'in_service', 'high', {MARCH}),
                    ('OC2', 'OC-5A', 'oxygen_concentrator', 'in_service', 'high', {MARCH});
         INSERT INTO failure_events (serial, at, runtime_hours, source, fault_code, failure_mode,
                                     model, kind, import_key, updated_at)
             VALUES ('OC1', {MARCH} + 3600000, 1200.5, 'import', 'E101', 'compressor',
                     'OC-5A', 'oxygen_concentrator', 'failure|OC1|{t}|E101', {MARCH});
         INSERT INTO maintenance_records (serial, at, runtime_hours, kind, consumable, source, import_key)
             VALUES ('OC1', {MARCH} + 7200000, 1201.0, 'consumable', 'filter', 'import', 'm1'),
                    ('OC1', {MARCH} + 10800000, 1202.0, 'service', NULL, 'import', 'm2');
         INSERT INTO alarm_episodes (serial, code, severity, started_at, started_seq)
             VALUES ('OC2', 'E102', 'critical', {MARCH}, 1);
         INSERT INTO exposure_months (month, serial, hours, resets, gaps, gap_hours, samples,
                                      baseline_hour, baseline_value, first_hour, first_value,
                                      last_hour, last_value, folded_at)
             VALUES ({MARCH}, 'OC1', 700, 0, 0, 0, 700, NULL, NULL, {MARCH}, 500, {MARCH}, 1200, {MARCH}),
                    ({APRIL}, 'OC1', 10, 0, 0, 0, 10, {MARCH}, 1200, {APRIL}, 1200, {APRIL}, 1210, {APRIL}),
                    ({MARCH}, 'OC2', 20, 0, 0, 0, 20, NULL, NULL, {MARCH}, 0, {MARCH}, 20, {MARCH});
         INSERT INTO models (version, failure_mode, trained_at, deployed, report, parameters)
             VALUES ('compressor-1', 'compressor', {MARCH}, 1, '{{}}', '{{}}');",
        t = MARCH + 3_600_000
    ))
    .expect("v10 rows");
}

async fn open(path: &Path) -> SqliteStore {
    let catalog = Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog"));
    let policy = Arc::new(Policy::from_toml_str(POLICY).expect("policy"));
    SqliteStore::open(
        path,
        StoreOptions {
            clock: Default::default(),
            catalog,
            rules: Arc::new(CatalogRules::new(policy)),
            unknown_device: UnknownDevicePolicy::Reject,
            durability: Durability::Full,
            sink_spool: false,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        },
    )
    .await
    .expect("a version 10 store opens")
}

#[tokio::test]
async fn a_version_10_store_with_rows_opens_at_the_current_version() {
    assert_eq!(SCHEMA_VERSION, 13);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fleetpulse.db");
    v10_database_with_rows(&path);

    let store = open(&path).await;
    drop(store);

    let conn = Connection::open(&path).expect("side connection");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);

    let components: Vec<(String, Option<String>)> = conn
        .prepare("SELECT kind, component FROM maintenance_records ORDER BY at")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        components,
        [
            ("consumable".to_owned(), Some("filter".to_owned())),
            ("service".to_owned(), None),
        ],
        "a consumable record names its consumable as its component"
    );

    let dirty: Vec<(i64, String)> = conn
        .prepare("SELECT month, serial FROM exposure_dirty ORDER BY month, serial")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        dirty,
        [
            (MARCH, "OC1".to_owned()),
            (MARCH, "OC2".to_owned()),
            (APRIL, "OC1".to_owned()),
        ],
        "every folded device-month is queued for a refold"
    );

    // the rows are carried over, the new columns empty
    let failure: (String, Option<String>, Option<i64>, Option<String>) = conn
        .query_row(
            "SELECT failure_mode, component, confirmed_at, alarm_fault_code FROM failure_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("failure");
    assert_eq!(failure, ("compressor".to_owned(), None, None, None));
    let device: (Option<i64>, Option<f64>, Option<i64>) = conn
        .query_row(
            "SELECT commissioned_at, runtime_hours_at_registration, observed_from
             FROM devices WHERE serial = 'OC1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("device");
    assert_eq!(device, (None, None, None));
    let model: (i64, Option<i64>) = conn
        .query_row("SELECT deployed, as_of FROM models", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("model");
    assert_eq!(model, (1, None));
    let episode_key: Option<String> = conn
        .query_row("SELECT import_key FROM alarm_episodes", [], |r| r.get(0))
        .expect("episode");
    assert_eq!(episode_key, None);
    // version 13: the overview's index of dead letters by reason and receipt time
    let index: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'dead_letters_by_reason_received'",
            [],
            |r| r.get(0),
        )
        .expect("index");
    assert_eq!(index, 1);
    for table in ["meter_history", "backfill_hours"] {
        let n: i64 = conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("new table");
        assert_eq!(n, 0, "{table}");
    }
    drop(conn);

    // and it opens again without migrating twice
    let store = open(&path).await;
    drop(store);
}
