//! The pipeline with its ingest journal, against the real SQLite store: acks after the
//! journal sync, the store takes records in large transactions, and records left from
//! before a restart are applied before anything new.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::policy::Policy;
use fleetpulse_domain::store::{IngestBatch, ReadingQuery, Store, UnknownDevicePolicy};
use fleetpulse_domain::telemetry::{RejectReason, TelemetryLimits, telemetry_topic};
use fleetpulse_domain::{Reading, Serial};
use fleetpulse_ingest::pipeline::{Ack, Inbound};
use fleetpulse_ingest::{Journal, JournalConfig, Pipeline, PipelineConfig, decode};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};

const WAIT: Duration = Duration::from_secs(20);

async fn open_store(path: &Path) -> Arc<SqliteStore> {
    let catalog =
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog");
    let policy = Policy::from_toml_str(include_str!("../../config/policy.toml")).expect("policy");
    Arc::new(
        SqliteStore::open(
            path,
            StoreOptions {
                clock: Default::default(),
                catalog: Arc::new(catalog),
                rules: Arc::new(CatalogRules::new(Arc::new(policy))),
                unknown_device: UnknownDevicePolicy::AutoRegister,
                durability: Durability::Full,
                sink_spool: false,
                cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
            },
        )
        .await
        .expect("store opens"),
    )
}

fn payload(seq: u64) -> Vec<u8> {
    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    format!(r#"{{"seq":{seq},"ts":"{ts}","model":"OC-5A","runtime_hours":{seq},"alarms":[]}}"#)
        .into_bytes()
}

async fn stored_seqs(store: &dyn Store, serial: &str) -> Vec<u64> {
    store
        .readings(ReadingQuery {
            serial: Serial::parse(serial).expect("serial"),
            from: None,
            to: None,
            after: None,
            limit: 1000,
        })
        .await
        .expect("readings")
        .items
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

fn small_journal() -> JournalConfig {
    JournalConfig {
        segment_mib: 1,
        apply_max_entries: 500,
        ..JournalConfig::default()
    }
}

#[tokio::test]
async fn acks_follow_the_journal_sync_and_every_reading_reaches_the_store_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(&dir.path().join("fleet.db")).await;
    let journal_dir = dir.path().join("journal");
    let journal = Journal::open(&journal_dir, None, small_journal()).expect("journal");
    let (pipeline, mut handle) = Pipeline::new(store.clone(), PipelineConfig::default());
    let pipeline = pipeline.with_journal(journal, &mut handle);
    let task = tokio::spawn(pipeline.run());

    let acked = Arc::new(AtomicUsize::new(0));
    let limits = TelemetryLimits::default();
    let devices = ["JRN1", "JRN2", "JRN3"];
    for seq in 1..=300u64 {
        for serial in devices {
            // every reading of JRN3 twice: redelivery stays harmless through the journal
            let times = if serial == "JRN3" { 2 } else { 1 };
            for _ in 0..times {
                let topic = telemetry_topic(&Serial::parse(serial).expect("serial"));
                let decoded = decode(&topic, serial, &payload(seq), Utc::now(), &limits);
                let counter = acked.clone();
                let ack = Ack::new(move || {
                    counter.fetch_add(1, Ordering::Relaxed);
                });
                handle
                    .submit(Inbound::new(decoded, Some(ack)))
                    .await
                    .expect("pipeline open");
            }
        }
    }
    handle.close();
    tokio::time::timeout(WAIT, handle.drained())
        .await
        .expect("drains");
    task.await.expect("pipeline task");

    assert_eq!(
        acked.load(Ordering::Relaxed),
        1200,
        "every message acked once"
    );
    for serial in devices {
        assert_eq!(
            stored_seqs(store.as_ref(), serial).await,
            (1..=300).collect::<Vec<_>>(),
            "{serial}: every seq stored once, in order"
        );
    }
    let stats = handle.stats().snapshot();
    assert_eq!((stats.readings_stored, stats.duplicates), (900, 300));
    assert!(stats.journal_records >= 1);
    assert_eq!(stats.journal_unapplied_records, 0);
    let applied = store.journal_applied().await.expect("position");
    assert_eq!(
        applied,
        Some(stats.journal_records),
        "the store knows the last record"
    );
    assert!(
        stats.batches < stats.journal_records || stats.journal_records == 1,
        "the store took several records per transaction: {} batches for {} records",
        stats.batches,
        stats.journal_records
    );
}

#[tokio::test]
async fn records_acknowledged_before_a_restart_are_applied_before_new_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let journal_dir = dir.path().join("journal");
    let serial = Serial::parse("JRN9").expect("serial");
    let reading = |seq: u64| -> Reading {
        let decoded = decode(
            &telemetry_topic(&serial),
            serial.as_str(),
            &payload(seq),
            Utc::now(),
            &TelemetryLimits::default(),
        );
        decoded.readings.into_iter().next().expect("valid reading")
    };

    // A process that synced three records (and acked them) and died before applying
    // them: the journal holds them, the store has nothing.
    {
        let store = open_store(&db).await;
        assert_eq!(store.journal_applied().await.expect("position"), None);
        let mut journal = Journal::open(&journal_dir, None, small_journal()).expect("journal");
        for seqs in [1..=40u64, 41..=80, 81..=120] {
            journal
                .append(&IngestBatch {
                    readings: seqs.map(reading).collect(),
                    ..IngestBatch::default()
                })
                .expect("append");
        }
        assert!(stored_seqs(store.as_ref(), "JRN9").await.is_empty());
    }

    // The restart: the store says nothing is applied, the journal replays all three.
    let store = open_store(&db).await;
    let applied = store.journal_applied().await.expect("position");
    let journal = Journal::open(&journal_dir, applied, small_journal()).expect("journal");
    let (pipeline, mut handle) = Pipeline::new(store.clone(), PipelineConfig::default());
    let pipeline = pipeline.with_journal(journal, &mut handle);
    let task = tokio::spawn(pipeline.run());
    tokio::time::timeout(WAIT, handle.recovered())
        .await
        .expect("recovers");
    assert_eq!(
        stored_seqs(store.as_ref(), "JRN9").await,
        (1..=120).collect::<Vec<_>>(),
        "everything acknowledged before the restart is in the store before sources start"
    );
    assert_eq!(store.journal_applied().await.expect("position"), Some(3));

    // New records are numbered after the old ones.
    let decoded = decode(
        &telemetry_topic(&serial),
        serial.as_str(),
        &payload(121),
        Utc::now(),
        &TelemetryLimits::default(),
    );
    handle
        .submit(Inbound::new(decoded, None))
        .await
        .expect("open");
    handle.close();
    tokio::time::timeout(WAIT, handle.drained())
        .await
        .expect("drains");
    task.await.expect("pipeline task");
    assert_eq!(stored_seqs(store.as_ref(), "JRN9").await.len(), 121);
    assert_eq!(store.journal_applied().await.expect("position"), Some(4));

    // A third start finds nothing to do: applied segments are gone or fully applied.
    let applied = store.journal_applied().await.expect("position");
    let journal = Journal::open(&journal_dir, applied, small_journal()).expect("journal");
    assert_eq!(journal.unapplied_bytes(), 0);
}

/// Readings the store cannot hold, written straight into the journal (past the edge's
/// validation, as an older version or a damaged edge would have let them through):
/// seq 2^63, and vendor values whose hourly sums overflow.
#[tokio::test]
async fn a_record_the_store_refuses_is_dead_lettered_and_the_rest_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fleet.db");
    let journal_dir = dir.path().join("journal");
    let good = Serial::parse("JRG1").expect("serial");
    let poison = Serial::parse("JRP1").expect("serial");
    let reading = |serial: &Serial, seq: u64| -> Reading {
        let decoded = decode(
            &telemetry_topic(serial),
            serial.as_str(),
            &payload(seq),
            Utc::now(),
            &TelemetryLimits::default(),
        );
        decoded.readings.into_iter().next().expect("valid reading")
    };
    let huge = |seq: u64, value: f64| -> Reading {
        let mut r = reading(&poison, seq);
        r.values.insert("vendor_x".into(), value);
        r
    };
    {
        let mut journal = Journal::open(&journal_dir, None, small_journal()).expect("journal");
        let mut too_large_seq = reading(&poison, 1);
        too_large_seq.seq = 1 << 63;
        // One record: good readings around the refused one.
        journal
            .append(&IngestBatch {
                readings: (1..=20)
                    .map(|s| reading(&good, s))
                    .chain([too_large_seq])
                    .chain((21..=40).map(|s| reading(&good, s)))
                    .collect(),
                ..IngestBatch::default()
            })
            .expect("append");
        // Two values that overflow the hour's sum together, then the record behind.
        journal
            .append(&IngestBatch {
                readings: vec![huge(2, 1.7e308), huge(3, 1.7e308)],
                ..IngestBatch::default()
            })
            .expect("append");
        journal
            .append(&IngestBatch {
                readings: (41..=60).map(|s| reading(&good, s)).collect(),
                ..IngestBatch::default()
            })
            .expect("append");
    }

    let store = open_store(&db).await;
    let journal = Journal::open(&journal_dir, None, small_journal()).expect("journal");
    let (pipeline, mut handle) = Pipeline::new(store.clone(), PipelineConfig::default());
    let pipeline = pipeline.with_journal(journal, &mut handle);
    let task = tokio::spawn(pipeline.run());
    tokio::time::timeout(WAIT, handle.recovered())
        .await
        .expect("the records behind the refused ones are applied");

    assert_eq!(
        stored_seqs(store.as_ref(), "JRG1").await,
        (1..=60).collect::<Vec<_>>(),
        "every good reading is stored"
    );
    assert_eq!(
        stored_seqs(store.as_ref(), "JRP1").await,
        vec![2],
        "of the two huge values one fits the hour"
    );
    assert_eq!(store.journal_applied().await.expect("position"), Some(3));
    let dead = store
        .dead_letters(fleetpulse_domain::store::DeadLetterQuery {
            reason: Some(RejectReason::StoreRejected),
            after: None,
            limit: 100,
        })
        .await
        .expect("dead letters");
    let details: Vec<&str> = dead.items.iter().map(|d| d.detail.as_str()).collect();
    assert_eq!(dead.items.len(), 2, "{details:?}");
    assert!(
        details
            .iter()
            .any(|d| d.contains("seq 9223372036854775808") && d.contains("is too large")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("seq 3") && d.contains("not be finite")),
        "{details:?}"
    );
    let rollups = store
        .rollups(
            &poison,
            Utc::now() - chrono::Duration::days(1),
            Utc::now() + chrono::Duration::days(1),
        )
        .await
        .expect("rollups");
    assert!(
        rollups.iter().all(|r| r.sum.is_finite()),
        "rollups stay finite: {rollups:?}"
    );

    let stats = handle.stats();
    assert_eq!(stats.snapshot().store_refused, 2);
    let health = stats.health();
    assert!(health.held.is_empty(), "nothing is held: {health:?}");
    let refused = health.refused.expect("health says entries were refused");
    assert!(refused.contains("refused 2 journal entries"), "{refused}");

    handle.close();
    tokio::time::timeout(WAIT, handle.drained())
        .await
        .expect("drains");
    task.await.expect("pipeline task");
}
