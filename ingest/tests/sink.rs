//! The sink worker and the spool gate against the real SQLite store (spool included),
//! with a scripted time-series server that can be down, refuse points, or come back.
//! (The sink against a real server, VictoriaMetrics, is in the system tests.)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::store::{DeadLetterQuery, IngestBatch, Store, UnknownDevicePolicy};
use fleetpulse_domain::telemetry::{TelemetryLimits, parse_telemetry};
use fleetpulse_domain::{Policy, Reading, RejectReason, Serial};
use fleetpulse_ingest::decode::Decoded;
use fleetpulse_ingest::sink::SinkBatchPolicy;
use fleetpulse_ingest::{
    Inbound, Pipeline, PipelineConfig, RetryPolicy, SinkConfig, SinkError, SinkWorker,
    TelemetrySink,
};
use fleetpulse_rules::CatalogRules;
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use tokio::sync::oneshot;

async fn open_store(dir: &Path) -> Arc<SqliteStore> {
    let catalog = Arc::new(
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog"),
    );
    let policy =
        Arc::new(Policy::from_toml_str(include_str!("../../config/policy.toml")).expect("policy"));
    Arc::new(
        SqliteStore::open(
            &dir.join("fleet.db"),
            StoreOptions {
                clock: Default::default(),
                catalog,
                rules: Arc::new(CatalogRules::new(policy)),
                unknown_device: UnknownDevicePolicy::AutoRegister,
                durability: Durability::Full,
                sink_spool: true,
                cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
            },
        )
        .await
        .expect("store opens"),
    )
}

fn reading(serial: &str, seq: u64) -> Reading {
    let ts: DateTime<Utc> = Utc
        .timestamp_millis_opt(1_763_900_000_000 + seq as i64 * 1000)
        .single()
        .expect("ts");
    let payload = serde_json::json!({"seq": seq, "ts": ts.to_rfc3339(), "model": "OC-5A", "runtime_hours": seq as f64});
    parse_telemetry(
        &Serial::parse(serial).expect("serial"),
        payload.to_string().as_bytes(),
        Utc::now(),
        &TelemetryLimits::default(),
    )
    .remove(0)
    .expect("valid")
}

/// A time-series server whose behaviour the test scripts: down for the first
/// `fail_first` requests, or while `down` is set; refusing any request that contains a
/// point of serial `POISON`; otherwise accepting and recording every line.
#[derive(Default)]
struct ScriptedServer {
    fail_first: AtomicUsize,
    down: AtomicBool,
    requests: AtomicUsize,
    accepted: Mutex<Vec<String>>,
}

#[async_trait]
impl TelemetrySink for ScriptedServer {
    async fn write(&self, body: String) -> Result<(), SinkError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst)
            || self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(SinkError::Unavailable("connection refused".into()));
        }
        if body.contains("serial=POISON") {
            return Err(SinkError::Rejected {
                status: 400,
                message: "field type conflict: runtime_hours".into(),
            });
        }
        let mut accepted = self.accepted.lock().expect("lock");
        accepted.extend(body.lines().map(str::to_owned));
        Ok(())
    }

    fn target(&self) -> &str {
        "scripted"
    }
}

fn config() -> SinkConfig {
    let mut c = SinkConfig::new("http://unused");
    c.batch = SinkBatchPolicy {
        max_readings: 7,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(10),
    };
    c.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    c.shutdown_flush = Duration::from_millis(200);
    c
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn outages_are_retried_refused_points_are_isolated_and_dead_lettered_the_rest_arrive_once_in_order()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let mut expected = Vec::new();
    for seq in 1..=10 {
        let mut readings = vec![reading("OC-1", seq), reading("OC-2", seq)];
        if seq == 4 {
            readings.push(reading("POISON", 1));
        }
        let report = store
            .commit_batch(IngestBatch {
                readings,
                ..IngestBatch::default()
            })
            .await
            .expect("commit");
        assert_eq!(report.spooled, if seq == 4 { 3 } else { 2 });
        expected.push(format!("OC-1 {seq}"));
        expected.push(format!("OC-2 {seq}"));
    }
    let server = Arc::new(ScriptedServer {
        fail_first: AtomicUsize::new(3),
        ..ScriptedServer::default()
    });
    let worker = SinkWorker::new(store.clone(), server.clone(), config())
        .await
        .expect("worker");
    let gate = worker.gate();
    assert!(
        gate.bytes() > 0,
        "the gate starts from what the spool holds"
    );
    let stats = worker.stats();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));

    eventually("every good reading written", || {
        stats.snapshot().written_readings == 20
    })
    .await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("task");

    // In commit order, each once (serial and seq read back from the lines).
    let accepted: Vec<String> = server
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|l| {
            let serial = l.split(",serial=").nth(1).and_then(|r| r.split(',').next());
            let seq = l.split(" seq=").nth(1).and_then(|r| r.split('i').next());
            format!("{} {}", serial.unwrap_or("?"), seq.unwrap_or("?"))
        })
        .collect();
    assert_eq!(accepted, expected);

    let snap = stats.snapshot();
    assert_eq!(snap.rejected_readings, 1);
    assert_eq!(snap.errors_unavailable, 3);
    assert!(snap.errors_rejected >= 2, "split at least once: {snap:?}");
    assert_eq!((snap.spool_readings, snap.spool_bytes), (0, 0));
    assert!(snap.healthy);
    assert_eq!(gate.bytes(), 0);
    assert_eq!(store.spool_stats().await.expect("stats").chunks, 0);

    let dead = store
        .dead_letters(DeadLetterQuery {
            reason: Some(RejectReason::SinkRejected),
            after: None,
            limit: 10,
        })
        .await
        .expect("dead letters");
    assert_eq!(dead.items.len(), 1);
    let d = &dead.items[0];
    assert_eq!(d.client_id, "POISON");
    assert!(d.detail.contains("field type conflict"), "{}", d.detail);
    assert!(
        d.payload.starts_with("telemetry,serial=POISON"),
        "{}",
        d.payload
    );
}

#[tokio::test]
async fn a_full_spool_holds_the_pipeline_back_and_it_resumes_when_the_server_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path()).await;
    let server = Arc::new(ScriptedServer::default());
    server.down.store(true, Ordering::SeqCst);
    let mut cfg = config();
    cfg.spool_max_bytes = 2_000; // a few dozen lines
    let worker = SinkWorker::new(store.clone(), server.clone(), cfg)
        .await
        .expect("worker");
    let (gate, stats) = (worker.gate(), worker.stats());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let sink_task = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));

    let mut pipeline_config = PipelineConfig {
        queue_capacity: 4,
        ..PipelineConfig::default()
    };
    pipeline_config.batch.max_readings = 5;
    pipeline_config.batch.linger = Duration::from_millis(5);
    let (pipeline, handle) = Pipeline::new(store.clone(), pipeline_config);
    let pipeline_task = tokio::spawn(pipeline.with_spool_gate(gate.clone()).run());

    // A producer that keeps submitting: it must end up blocked, not buffering.
    let acked = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn({
        let (handle, acked) = (handle.clone(), acked.clone());
        async move {
            for seq in 1..=200u64 {
                let acked = acked.clone();
                let decoded = Decoded {
                    readings: vec![reading("OC-9", seq)],
                    payload_bytes: 100,
                    ..Decoded::default()
                };
                let ack = fleetpulse_ingest::Ack::new(move || {
                    acked.fetch_add(1, Ordering::SeqCst);
                });
                if handle
                    .submit(Inbound::new(decoded, Some(ack)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });

    eventually("the spool to fill up", || gate.is_full()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled_at = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        acked.load(Ordering::SeqCst),
        stalled_at,
        "nothing is committed (or acked) while the spool is full"
    );
    assert!(stalled_at < 200, "the producer is held back");
    assert!(!producer.is_finished(), "the producer waits, not buffers");
    assert!(stats.snapshot().spool_full_waits >= 1);

    server.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(20), producer)
        .await
        .expect("the producer finishes once the server is back")
        .expect("producer");
    handle.close();
    handle.drained().await;
    pipeline_task.await.expect("pipeline");
    eventually("every reading written", || {
        stats.snapshot().written_readings == 200
    })
    .await;
    assert_eq!(acked.load(Ordering::SeqCst), 200);
    let _ = stop_tx.send(());
    sink_task.await.expect("sink");
    let seqs: BTreeMap<u64, usize> = server
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|l| l.split(" seq=").nth(1)?.split('i').next()?.parse().ok())
        .fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s).or_default() += 1;
            m
        });
    assert_eq!(seqs.len(), 200);
    assert!(seqs.values().all(|n| *n == 1), "each reading once");
}
