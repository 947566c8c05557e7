//! `fleetpulse demo` delivers what the README promises: within a minute, devices with live
//! state, an auto-raised maintenance order and a repair order; Ctrl-C stops it cleanly.

use std::time::Duration;

use fleetpulse_system_tests::{App, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_live_devices_and_both_kinds_of_order_within_a_minute() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut app = App::spawn(
        data.path(),
        &["demo", "--devices", "300", "--mqtt-listen", "127.0.0.1:0"],
    )
    .await?;

    let devices = eventually(
        Duration::from_secs(30),
        "devices with live state",
        || async {
            let d = app.get_ok("/api/v1/devices?limit=1000").await?;
            let live = d["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["latest"]["seq"].as_u64() > Some(0))
                .count();
            Ok((live >= 250).then_some(live))
        },
    )
    .await?;
    assert!(devices >= 250, "{devices}");

    eventually(
        Duration::from_secs(60),
        "a maintenance and a repair order",
        || async {
            let orders = app.orders("status=open").await?;
            let has = |kind: &str| orders.iter().any(|o| o["kind"] == json!(kind));
            Ok((has("maintenance") && has("repair")).then_some(()))
        },
    )
    .await?;

    let status = app.interrupt().await?;
    assert!(
        status.success(),
        "Ctrl-C must stop the demo cleanly, got {status}"
    );
    Ok(())
}
