//! The time-series sink against a real VictoriaMetrics: every reading arrives exactly
//! once, in spite of the server going away mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use fleetpulse_simulator::FirmwarePublisher;
use fleetpulse_system_tests::{App, VictoriaMetrics, eventually};
use serde_json::{Value, json};

const DEVICES: usize = 6;
const PER_DEVICE: u64 = 300;
const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;

fn serial(i: usize) -> String {
    format!("TS-{i:04}")
}

/// Device time: one reading a second from a fixed point an hour ago, so every point of
/// a series has its own timestamp and a duplicate would show as a repeated one.
fn payload(base_ms: i64, k: u64) -> Value {
    let ts = Utc
        .timestamp_millis_opt(base_ms + k as i64 * 1_000)
        .single()
        .expect("valid time");
    json!({
        "ts": ts.to_rfc3339(),
        "model": "OC-5A",
        "runtime_hours": 1000.0 + k as f64 * 0.01,
        "filter_life_pct": 90.0,
        "alarms": [],
    })
}

async fn sink_field(app: &App, key: &str) -> anyhow::Result<u64> {
    Ok(app.get_ok("/health").await?["ingest"]["sink"][key]
        .as_u64()
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_reaches_victoria_metrics_exactly_once_across_a_server_outage()
-> anyhow::Result<()> {
    let mut vm = VictoriaMetrics::start().await?;
    let data = tempfile::tempdir()?;
    let vm_url = vm.url();
    let app = App::spawn_with_env(
        data.path(),
        &[
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--sink-url",
            &vm_url,
        ],
        &[
            ("FLEETPULSE_SINK__BATCH__LINGER_MS", "50"),
            ("FLEETPULSE_SINK__RETRY__MAX_BACKOFF_MS", "300"),
            ("FLEETPULSE_SINK__TIMEOUT_MS", "2000"),
        ],
    )
    .await?;
    let url = format!("mqtt://{}", app.mqtt.expect("built-in endpoint"));
    let base_ms = Utc::now().timestamp_millis() - 3_600_000;

    let mut publishers = Vec::new();
    for i in 0..DEVICES {
        publishers.push(FirmwarePublisher::connect(&url, &serial(i), None).await?);
    }
    let publish = |from: u64, to: u64| {
        let publishers = &publishers;
        async move {
            for k in from..=to {
                for p in publishers {
                    let seq = p.publish_reading(payload(base_ms, k)).await?;
                    assert_eq!(seq, k, "the publisher numbers readings from 1");
                }
            }
            for p in publishers {
                p.wait_all_acked(Duration::from_secs(60)).await?;
            }
            anyhow::Ok(())
        }
    };

    // First third with the server up: written through.
    publish(1, PER_DEVICE / 3).await?;
    eventually(
        Duration::from_secs(30),
        "the first third written",
        || async { Ok((sink_field(&app, "written_readings").await? >= TOTAL / 3).then_some(())) },
    )
    .await?;

    // Second third with the server down: devices are still acked (the readings are
    // stored and spooled), the spool grows, errors are counted.
    vm.stop().await?;
    publish(PER_DEVICE / 3 + 1, 2 * PER_DEVICE / 3).await?;
    let spooled = eventually(
        Duration::from_secs(30),
        "readings held in the spool",
        || async {
            let n = sink_field(&app, "spool_readings").await?;
            Ok((n >= TOTAL / 3).then_some(n))
        },
    )
    .await?;
    assert!(spooled >= TOTAL / 3, "{spooled} spooled");
    let health = app.get_ok("/health").await?;
    assert_eq!(
        health["ingest"]["sink"]["healthy"],
        json!(false),
        "{health}"
    );
    assert!(sink_field(&app, "errors_unavailable").await? > 0);
    let metrics = app.get_text("/metrics").await?;
    assert!(
        metrics.contains("fleetpulse_ingest_sink_up 0"),
        "metrics show the sink down"
    );

    // Server back; the last third streams while the spool drains.
    vm.resume().await?;
    publish(2 * PER_DEVICE / 3 + 1, PER_DEVICE).await?;
    eventually(Duration::from_secs(60), "the spool drained", || async {
        let spool = sink_field(&app, "spool_readings").await?;
        let written = sink_field(&app, "written_readings").await?;
        Ok((spool == 0 && written >= TOTAL).then_some(()))
    })
    .await?;
    assert_eq!(sink_field(&app, "written_readings").await?, TOTAL);
    assert_eq!(app.stored_readings().await?, TOTAL);

    // What the server holds: per device, seq 1..=PER_DEVICE, each once, at its own
    // device timestamp, with the registry's tags.
    let series = vm.export("telemetry_seq").await?;
    let mut by_serial: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for s in &series {
        assert_eq!(
            s.metric.get("model").map(String::as_str),
            Some("OC-5A"),
            "{:?}",
            s.metric
        );
        assert_eq!(
            s.metric.get("kind").map(String::as_str),
            Some("oxygen_concentrator")
        );
        let points = by_serial
            .entry(s.metric.get("serial").cloned().unwrap_or_default())
            .or_default();
        points.extend(s.timestamps.iter().copied().zip(s.values.iter().copied()));
    }
    assert_eq!(by_serial.len(), DEVICES, "{:?}", by_serial.keys());
    for (serial, mut points) in by_serial {
        points.sort_by_key(|p| p.0);
        let seqs: Vec<u64> = points.iter().map(|p| p.1 as u64).collect();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            seqs.len() as u64,
            PER_DEVICE,
            "{serial}: duplicates or gaps"
        );
        assert_eq!(unique, (1..=PER_DEVICE).collect(), "{serial}");
        for (k, (ts, seq)) in (1..=PER_DEVICE).zip(&points) {
            assert_eq!(*ts, base_ms + k as i64 * 1_000, "{serial} seq {seq}");
        }
    }
    let runtime = vm.export("telemetry_runtime_hours").await?;
    let points: usize = runtime.iter().map(|s| s.values.len()).sum();
    assert_eq!(points as u64, TOTAL, "one runtime_hours point per reading");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_spooled_while_the_server_is_down_survive_a_restart_of_fleetpulse()
-> anyhow::Result<()> {
    let mut vm = VictoriaMetrics::start().await?;
    vm.stop().await?;
    let data = tempfile::tempdir()?;
    let vm_url = vm.url();
    let args = [
        "serve",
        "--mqtt-listen",
        "127.0.0.1:0",
        "--sink-url",
        &vm_url,
    ];
    let env = [
        ("FLEETPULSE_SINK__BATCH__LINGER_MS", "50"),
        ("FLEETPULSE_SINK__RETRY__MAX_BACKOFF_MS", "300"),
        ("FLEETPULSE_SINK__SHUTDOWN_FLUSH_MS", "500"),
    ];
    let mut app = App::spawn_with_env(data.path(), &args, &env).await?;
    let url = format!("mqtt://{}", app.mqtt.expect("built-in endpoint"));
    let base_ms = Utc::now().timestamp_millis() - 3_600_000;
    let p = FirmwarePublisher::connect(&url, "TS-RESTART", None).await?;
    for k in 1..=100 {
        p.publish_reading(payload(base_ms, k)).await?;
    }
    p.wait_all_acked(Duration::from_secs(30)).await?;
    p.close(Duration::from_secs(5)).await;
    assert_eq!(sink_field(&app, "written_readings").await?, 0);
    // A clean stop cannot flush to a server that is down: the spool keeps them.
    let status = app.interrupt().await?;
    assert!(status.success(), "{status}");

    vm.resume().await?;
    let app = App::spawn_with_env(data.path(), &args, &env).await?;
    eventually(Duration::from_secs(30), "the old spool sent", || async {
        Ok((sink_field(&app, "written_readings").await? >= 100).then_some(()))
    })
    .await?;
    let series = vm.export("telemetry_seq").await?;
    let mut seqs: Vec<u64> = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| *v as u64))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    Ok(())
}
