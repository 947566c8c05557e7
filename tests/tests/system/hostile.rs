//! The process holds under clients and operators that do the wrong thing: a second server
//! on the same data directory, and (below) HTTP clients that open connections and never
//! finish a request.

use std::time::Duration;

use fleetpulse_simulator::FirmwarePublisher;
use fleetpulse_system_tests::{App, eventually, fleetpulse_bin};
use serde_json::json;

fn payload() -> serde_json::Value {
    json!({
        "ts": chrono::Utc::now().to_rfc3339(),
        "model": "HV-200",
        "runtime_hours": 1000.0,
        "filter_life_pct": 90.0,
        "leak_lpm": 12.5,
        "alarms": [],
    })
}

async fn connection_of(app: &App, serial: &str) -> anyhow::Result<serde_json::Value> {
    Ok(app.get_ok(&format!("/api/v1/devices/{serial}")).await?["connection"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_stops_at_once_and_names_the_first()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut first = App::serve_builtin(data.path()).await?;
    let mqtt = first.mqtt.expect("built-in endpoint");
    let device = FirmwarePublisher::connect(&format!("mqtt://{mqtt}"), "LK-0001", None).await?;
    device.publish_reading(payload()).await?;
    device.wait_all_acked(Duration::from_secs(20)).await?;
    first.applied().await?;
    eventually(Duration::from_secs(20), "the device online", || async {
        Ok((connection_of(&first, "LK-0001").await? == "online").then_some(()))
    })
    .await?;

    let second = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(fleetpulse_bin())
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the second serve did not stop within 20 s"))??;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second serve: {stderr}");
    let first_pid = first.child.id().expect("first still runs");
    assert!(
        stderr.contains("is in use by another fleetpulse process")
            && stderr.contains(&format!("pid {first_pid}"))
            && stderr.contains("serve"),
        "{stderr}"
    );

    // the first server's live state is untouched and it still takes readings
    assert_eq!(connection_of(&first, "LK-0001").await?, "online");
    device.publish_reading(payload()).await?;
    device.wait_all_acked(Duration::from_secs(20)).await?;
    first.applied().await?;
    let readings = first
        .get_ok("/api/v1/devices/LK-0001/readings?limit=10")
        .await?;
    assert_eq!(readings.as_array().map(Vec::len), Some(2), "{readings}");

    // a lock left by a killed holder never blocks the next start
    first.kill().await;
    let _ = first.child.wait().await;
    let mut again = App::serve_builtin(data.path()).await?;
    again.interrupt().await?;
    Ok(())
}

