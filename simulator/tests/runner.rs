//! The runner: a small fleet against a real Mosquitto, stopped by its duration or by the
//! shutdown future.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Mosquitto, catalog};
use fleetpulse_domain::Serial;
use fleetpulse_domain::telemetry::{TELEMETRY_FILTER, TelemetryLimits, parse_telemetry};
use fleetpulse_simulator::{SimConfig, SimError, TruthEvent, run};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

fn config(url: String, ground_truth: Option<std::path::PathBuf>) -> SimConfig {
    SimConfig {
        mqtt_url: url,
        devices: 12,
        seed: 5,
        // 10 simulated hours per 100 ms tick
        speed: 360_000.0,
        publish_interval: Duration::from_millis(100),
        serial_prefix: "RUN".into(),
        password: None,
        ground_truth_path: ground_truth,
        max_duration: None,
        clock: Default::default(),
    }
}

/// Every telemetry payload the broker delivers, as (topic, payload).
async fn watch_telemetry(port: u16) -> anyhow::Result<mpsc::UnboundedReceiver<(String, Vec<u8>)>> {
    let mut opts = MqttOptions::new("runner-test-subscriber", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 100);
    client.subscribe(TELEMETRY_FILTER, QoS::AtLeastOnce).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::Publish(p))
                    if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() =>
                {
                    return;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    let _ = ready_tx.send(());
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready.recv()).await?;
    Ok(rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_runs_for_its_duration_and_every_reading_is_acked_and_valid() -> anyhow::Result<()>
{
    let broker = Mosquitto::start().await?;
    let mut delivered = watch_telemetry(broker.port).await?;
    let dir = tempfile::tempdir()?;
    let truth_path = dir.path().join("truth.jsonl");
    let cfg = SimConfig {
        max_duration: Some(Duration::from_secs(2)),
        clock: Default::default(),
        ..config(broker.url(), Some(truth_path.clone()))
    };

    let report = run(cfg, Arc::new(catalog()), std::future::pending()).await?;

    assert!(report.ticks >= 10, "{report:?}");
    assert_eq!(report.produced, report.ticks * 12);
    assert_eq!(report.skipped_store_full, 0);
    assert_eq!(
        (report.published, report.acked),
        (report.produced, report.produced)
    );
    assert_eq!(
        (report.unacked_at_shutdown, report.resent, report.reconnects),
        (0, 0, 0)
    );
    assert!((report.sim_hours - report.ticks as f64 * 10.0).abs() < 1e-6);

    let limits = TelemetryLimits::default();
    for _ in 0..report.produced {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), delivered.recv())
            .await?
            .expect("subscriber alive");
        let serial = topic.split('/').nth(3).expect("a serial in the topic");
        let serial = Serial::parse(serial)?;
        for parsed in parse_telemetry(&serial, &payload, chrono::Utc::now(), &limits) {
            parsed?;
        }
    }

    let text = std::fs::read_to_string(&truth_path)?;
    let events: Vec<TruthEvent> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(report.ground_truth_complete);
    assert_eq!(
        events.len() as u64,
        report.failures_injected + report.repairs + report.consumables_replaced
    );
    assert!(report.consumables_replaced > 0, "{report:?}");
    Ok(())
}

#[tokio::test]
async fn the_shutdown_future_stops_the_fleet() -> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let shutdown = tokio::time::sleep(Duration::from_millis(800));
    let report = tokio::time::timeout(
        Duration::from_secs(15),
        run(config(broker.url(), None), Arc::new(catalog()), shutdown),
    )
    .await??;
    assert!(report.ticks >= 3 && report.ticks <= 12, "{report:?}");
    assert_eq!(report.acked, report.produced);
    Ok(())
}

#[tokio::test]
async fn an_unreachable_endpoint_reports_what_stayed_unacknowledged() -> anyhow::Result<()> {
    let port = common::free_port();
    let cfg = SimConfig {
        max_duration: Some(Duration::from_millis(500)),
        clock: Default::default(),
        ..config(format!("mqtt://127.0.0.1:{port}"), None)
    };
    let report = run(cfg, Arc::new(catalog()), std::future::pending()).await?;
    assert!(report.produced > 0);
    assert_eq!((report.published, report.acked), (0, 0));
    assert_eq!(report.unacked_at_shutdown, report.produced);
    assert!(report.connect_failures > 0);
    Ok(())
}

#[tokio::test]
async fn a_bad_configuration_is_refused_before_anything_starts() {
    let bad =
        |cfg: SimConfig| async { run(cfg, Arc::new(catalog()), std::future::pending()).await };
    let base = config("mqtt://127.0.0.1:1".into(), None);
    assert!(matches!(
        bad(SimConfig {
            speed: 0.0,
            ..base.clone()
        })
        .await,
        Err(SimError::Config(_))
    ));
    assert!(matches!(
        bad(SimConfig {
            devices: 0,
            ..base.clone()
        })
        .await,
        Err(SimError::Config(_))
    ));
    assert!(matches!(
        bad(SimConfig {
            mqtt_url: "mqtts://h:1".into(),
            ..base.clone()
        })
        .await,
        Err(SimError::Url(_))
    ));
    assert!(matches!(
        bad(SimConfig {
            serial_prefix: "a b".into(),
            ..base.clone()
        })
        .await,
        Err(SimError::Fleet(_))
    ));
    let missing_dir = Some(std::path::PathBuf::from("/nonexistent/dir/truth.jsonl"));
    assert!(matches!(
        bad(SimConfig {
            ground_truth_path: missing_dir,
            ..base
        })
        .await,
        Err(SimError::GroundTruth { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_costs_reconnects_and_resends_but_no_reading() -> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let port = broker.port;
    let cfg = SimConfig {
        max_duration: Some(Duration::from_secs(6)),
        clock: Default::default(),
        ..config(broker.url(), None)
    };
    let fleet = tokio::spawn(run(cfg, Arc::new(catalog()), std::future::pending()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(broker);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _broker = Mosquitto::start_on(port).await?;

    let report = fleet.await??;
    assert!(
        report.reconnects >= 12,
        "every device reconnected: {report:?}"
    );
    assert_eq!(report.acked, report.produced, "{report:?}");
    assert_eq!(report.unacked_at_shutdown, 0);
    Ok(())
}
