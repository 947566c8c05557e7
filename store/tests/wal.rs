//! The SQLite write-ahead log stays bounded under repeated prediction runs (issue 21:
//! 2.2 GB of `-wal` after 2 209 `fleetpulse predict` runs, each slower than the last).
//!
//! Two patterns: a process per run (the CLI: open, read the prediction data, store a run
//! of 500 predictions, close) and one store open for every run (`serve`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use fleetpulse_domain::prediction::{Prediction, PredictionKind};
use fleetpulse_domain::store::{
    IngestBatch, NewDevice, PredictionPlanner, PredictionRun, PredictionStore, Store,
    UnknownDevicePolicy,
};
use fleetpulse_domain::{Catalog, LifecycleStatus, ModelId, Policy, Reading, Serial};
use fleetpulse_rules::CatalogRules;
use fleetpulse_rules::predicted::PredictionOrders;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use serde_json::json;

const CATALOG: &str = include_str!("../../config/catalog.toml");
const POLICY: &str = include_str!("../../config/policy.toml");

/// The WAL's bound: `journal_size_limit` and the autocheckpoint are both 64 MiB.
const WAL_BOUND: u64 = 64 * 1024 * 1024;
const DEVICES: usize = 100;
const PREDICTIONS: usize = 500;

struct Setup {
    catalog: Arc<Catalog>,
    policy: Arc<Policy>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    Setup {
        catalog: Arc::new(Catalog::from_toml_str(CATALOG).expect("catalog")),
        policy: Arc::new(Policy::from_toml_str(POLICY).expect("policy")),
        path: dir.path().join("fleetpulse.db"),
        _dir: dir,
    }
}

impl Setup {
    async fn open(&self) -> SqliteStore {
        SqliteStore::open(
            &self.path,
            StoreOptions {
                clock: Default::default(),
                catalog: self.catalog.clone(),
                rules: Arc::new(CatalogRules::new(self.policy.clone())),
                unknown_device: UnknownDevicePolicy::AutoRegister,
                durability: Durability::Normal,
                sink_spool: false,
                cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
            },
        )
        .await
        .expect("open")
    }

    fn planner(&self) -> Arc<dyn PredictionPlanner> {
        Arc::new(PredictionOrders::new(
            self.catalog.clone(),
            self.policy.clone(),
        ))
    }

    fn wal_bytes(&self) -> Option<u64> {
        wal_of(&self.path)
    }
}

/// Size of the database's `-wal` file; `None` when there is none.
fn wal_of(db: &Path) -> Option<u64> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).ok().map(|m| m.len())
}

fn serial(i: usize) -> Serial {
    Serial::parse(&format!("OC5-W{i:04}")).expect("serial")
}

/// A fleet of [`DEVICES`] with six hours of readings.
async fn fleet(store: &SqliteStore) {
    for i in 0..DEVICES {
        store
            .register_device(NewDevice {
                serial: serial(i),
                model: ModelId::parse("OC-5A").expect("model"),
                status: Some(LifecycleStatus::AtCustomer),
                criticality: None,
                region: Some("north".into()),
                address: Some("1 Wal Street".into()),
                commissioned_at: None,
                runtime_hours_at_registration: None,
                observed_from: None,
            })
            .await
            .expect("register");
    }
    let start = Utc::now() - Duration::hours(6);
    let readings = (0..DEVICES)
        .flat_map(|i| {
            (0..6u64).map(move |h| Reading {
                serial: serial(i),
                seq: h + 1,
                ts: start + Duration::hours(h as i64),
                received_at: Utc::now(),
                model: Some("OC-5A".into()),
                firmware: None,
                alarms: Some(Vec::new()),
                values: BTreeMap::from([
                    ("runtime_hours".to_owned(), 1000.0 + 0.8 * h as f64),
                    ("o2_purity_pct".to_owned(), 94.0),
                    ("filter_life_pct".to_owned(), 80.0 - 0.1 * h as f64),
                ]),
            })
        })
        .collect();
    store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");
}

/// A run's predictions: low failure risks (no orders), five targets per device.
fn predictions(run: usize) -> Vec<Prediction> {
    let now = Utc::now();
    (0..PREDICTIONS)
        .map(|i| Prediction {
            serial: serial(i % DEVICES),
            kind: PredictionKind::FailureRisk,
            target: format!("mode_{}", i / DEVICES),
            as_of: now,
            due_at: None,
            due_low: None,
            due_high: None,
            probability: Some(0.001 * (run % 10) as f64),
            horizon_days: Some(30.0),
            threshold: Some(0.9),
            model_version: format!("risk-test-{run}"),
            top_features: Vec::new(),
            evidence: json!({"run": run, "note": "x".repeat(200)}),
        })
        .collect()
}

/// What `fleetpulse predict` does with the store: read the data, store the run.
async fn one_run(store: &SqliteStore, planner: &Arc<dyn PredictionPlanner>, run: usize) {
    let data = store
        .prediction_data(Utc::now(), 90, 2)
        .await
        .expect("prediction data");
    assert_eq!(data.devices.len(), DEVICES);
    store
        .apply_predictions(
            PredictionRun {
                as_of: Utc::now(),
                trigger: "test".into(),
                devices: data.devices.len(),
                predictions: predictions(run),
            },
            planner.clone(),
        )
        .await
        .expect("apply");
}

/// The CLI pattern. Before the fix the WAL grew by each run's 360 kB and was never
/// removed: the writer closed before the read-only pooled readers, and a read-only
/// connection closing last neither checkpoints nor removes the WAL; the next process
/// recovered the whole file, appended to it, and its autocheckpoint copied it all again
/// (the WAL only restarts at a later write, which a one-write process never makes). The
/// test failed at run 0 (362 592 bytes left) and passed 64 MiB at run 184.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_per_run_leaves_no_wal_behind() {
    let s = setup();
    let planner = s.planner();
    let store = s.open().await;
    fleet(&store).await;
    drop(store);
    for run in 0..300 {
        let store = s.open().await;
        one_run(&store, &planner, run).await;
        if run % 2 == 0 {
            // dropping the last handle closes the readers, then the writer
            drop(store);
        } else {
            let cp = store.close().await.expect("close");
            assert!(!cp.busy, "run {run}: {cp:?}");
            assert_eq!(cp.log_frames, cp.checkpointed_frames, "run {run}: {cp:?}");
        }
        let wal = s.wal_bytes().unwrap_or(0);
        assert_eq!(
            wal, 0,
            "run {run}: the WAL is {wal} bytes after the store closed"
        );
    }
}

/// Stores a reading per device (what ingest adds between two runs in `serve`).
async fn ingest(store: &SqliteStore, run: usize) {
    let readings = (0..DEVICES)
        .map(|i| Reading {
            serial: serial(i),
            seq: 1000 + run as u64,
            ts: Utc::now(),
            received_at: Utc::now(),
            model: Some("OC-5A".into()),
            firmware: None,
            alarms: Some(Vec::new()),
            values: BTreeMap::from([("o2_purity_pct".to_owned(), 94.0)]),
        })
        .collect();
    store
        .commit_batch(IngestBatch {
            readings,
            ..Default::default()
        })
        .await
        .expect("commit");
}

/// The `serve` pattern: one store for every run, ingest in between, and after each run
/// the checkpoint `serve` asks for when the WAL is over its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_open_store_keeps_its_wal_bounded() {
    let s = setup();
    let planner = s.planner();
    let store = s.open().await;
    fleet(&store).await;
    let mut largest_step = 0;
    let mut largest = 0;
    for run in 0..300 {
        let before = s.wal_bytes().unwrap_or(0);
        ingest(&store, run).await;
        one_run(&store, &planner, run).await;
        let after = s.wal_bytes().unwrap_or(0);
        largest_step = largest_step.max(after.saturating_sub(before));
        largest = largest.max(after);
        assert!(
            after <= WAL_BOUND + 2 * largest_step,
            "run {run}: the WAL is {after} bytes"
        );
        store
            .checkpoint_if_over(fleetpulse_store::WAL_LIMIT_BYTES)
            .await
            .expect("checkpoint");
        let stats = store.stats().await.expect("stats");
        assert_eq!(stats.wal_bytes, s.wal_bytes().unwrap_or(0));
    }
    // the runs wrote more than the limit in all: the WAL was checkpointed and reused
    assert!(
        300 * largest_step > WAL_BOUND,
        "{largest_step} bytes per run"
    );
    assert!(largest > WAL_BOUND / 2, "largest WAL {largest} bytes");
    let cp = store.close().await.expect("close");
    assert_eq!((cp.busy, cp.wal_bytes), (false, 0), "{cp:?}");
    assert_eq!(s.wal_bytes(), None, "removed at close");
}

/// A reader holding a snapshot (a long report in another process) keeps a checkpoint
/// from finishing; once it leaves, the next one empties the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_copies_what_readers_allow_and_truncates_once_they_leave() {
    let s = setup();
    let planner = s.planner();
    let store = s.open().await;
    fleet(&store).await;
    let reader = rusqlite::Connection::open(&s.path).expect("reader");
    reader.execute_batch("BEGIN").expect("begin");
    let devices: i64 = reader
        .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0))
        .expect("read");
    assert_eq!(devices, DEVICES as i64);
    for run in 0..3 {
        one_run(&store, &planner, run).await;
    }
    let held = store.checkpoint().await.expect("checkpoint");
    assert!(held.busy, "{held:?}");
    assert!(held.checkpointed_frames < held.log_frames, "{held:?}");
    assert!(held.wal_bytes > 0, "{held:?}");
    reader.execute_batch("COMMIT").expect("end");
    let free = store.checkpoint().await.expect("checkpoint");
    assert!(!free.busy, "{free:?}");
    assert_eq!(free.wal_bytes, 0, "{free:?}");
    assert_eq!(store.stats().await.expect("stats").wal_bytes, 0);
}
