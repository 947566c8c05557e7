//! SIGKILL in the middle of a stream, restart on the same data directory: every reading a
//! firmware-like publisher sent is stored exactly once, in both modes.

use std::collections::BTreeSet;
use std::time::Duration;

use fleetpulse_simulator::FirmwarePublisher;
use fleetpulse_system_tests::{App, Mosquitto, eventually, free_port, telemetry_topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

const DEVICES: usize = 8;
const PER_DEVICE: u64 = 250;
const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;

fn serial(i: usize, prefix: &str) -> String {
    format!("{prefix}-{i:04}")
}

fn payload(seq: u64) -> serde_json::Value {
    json!({
        "ts": chrono::Utc::now().to_rfc3339(),
        "model": "HV-200",
        "runtime_hours": 1000.0 + seq as f64 * 0.1,
        "filter_life_pct": 90.0,
        "leak_lpm": 12.5,
        "alarms": [],
    })
}

/// Every device has seqs 1..=PER_DEVICE stored exactly once (the store's key makes a
/// second copy impossible; the count proves none is missing and nothing else crept in).
async fn assert_all_stored_once(app: &App, prefix: &str) -> anyhow::Result<()> {
    let stored = eventually(Duration::from_secs(60), "every reading stored", || async {
        let n = app.stored_readings().await?;
        Ok((n >= TOTAL).then_some(n))
    })
    .await?;
    assert_eq!(stored, TOTAL, "stored count");
    for i in 0..DEVICES {
        let s = serial(i, prefix);
        let seqs: Vec<u64> = app
            .readings(&s, "")
            .await?
            .iter()
            .filter_map(|x| x["seq"].as_u64())
            .collect();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(seqs.len(), unique.len(), "{s}: duplicates in {seqs:?}");
        assert_eq!(
            unique,
            (1..=PER_DEVICE).collect::<BTreeSet<_>>(),
            "{s}: missing seqs"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_sigkill_loses_nothing_and_stores_nothing_twice() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["serve", "--mqtt-listen", listen.as_str()];
    let mut app = App::spawn(data.path(), &args).await?;
    let url = format!("mqtt://{listen}");

    let mut publishers = Vec::new();
    for i in 0..DEVICES {
        let p = FirmwarePublisher::connect(&url, &serial(i, "RB"), None).await?;
        for _ in 0..PER_DEVICE {
            p.publish_reading(payload(0)).await?;
        }
        publishers.push(p);
    }
    // kill it while the stream is in flight
    eventually(Duration::from_secs(30), "some readings stored", || async {
        Ok((app.stored_readings().await? >= TOTAL / 5).then_some(()))
    })
    .await?;
    app.kill().await;
    let acked_before_kill: u64 = publishers.iter().map(|p| p.acked_count()).sum();
    assert!(
        acked_before_kill < TOTAL,
        "the kill came too late to test anything ({acked_before_kill} acked)"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let app = App::spawn(data.path(), &args).await?;
    for p in &publishers {
        p.wait_all_acked(Duration::from_secs(60)).await?;
    }
    assert_all_stored_once(&app, "RB").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_sigkill_loses_nothing_and_stores_nothing_twice() -> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let data = tempfile::tempdir()?;
    let mut app = App::serve_external(data.path(), broker.addr, "fleetpulse-restart").await?;
    eventually(
        Duration::from_secs(20),
        "ingest connected to the broker",
        || async {
            Ok((app.get_ok("/health").await?["ingest"]["connected"] == json!(true)).then_some(()))
        },
    )
    .await?;

    // Devices publish to the broker (which holds messages for fleetpulse's persistent
    // session); the broker acks them, so the publishers need no resend logic here.
    let mut opts = MqttOptions::new(
        "restart-test-publisher",
        broker.addr.ip().to_string(),
        broker.addr.port(),
    );
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_inflight(200);
    let (client, mut events) = AsyncClient::new(opts, 1000);
    let pump = tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < TOTAL {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("publisher connection: {e}")),
            }
        }
        Ok(acked)
    });
    let publish_all = tokio::spawn({
        let client = client.clone();
        async move {
            for seq in 1..=PER_DEVICE {
                for i in 0..DEVICES {
                    let mut p = payload(seq);
                    p["seq"] = json!(seq);
                    client
                        .publish(
                            telemetry_topic(&serial(i, "RX")),
                            QoS::AtLeastOnce,
                            false,
                            p.to_string(),
                        )
                        .await?;
                }
            }
            anyhow::Ok(())
        }
    });

    eventually(Duration::from_secs(30), "some readings stored", || async {
        Ok((app.stored_readings().await? >= TOTAL / 5).then_some(()))
    })
    .await?;
    app.kill().await;
    publish_all.await??;
    let acked = tokio::time::timeout(Duration::from_secs(60), pump).await???;
    assert_eq!(acked, TOTAL, "the broker holds every message");

    let app = App::serve_external(data.path(), broker.addr, "fleetpulse-restart").await?;
    assert_all_stored_once(&app, "RX").await?;
    Ok(())
}
