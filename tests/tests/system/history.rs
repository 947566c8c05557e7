//! History of any age through the real binary: `fleetpulse import devices`, `telemetry`
//! (three years old: past the live age limit) and `failures` (with a component), while
//! `serve` runs; everything read back through the API.

use chrono::Utc;
use fleetpulse_system_tests::dispatch::Client;
use fleetpulse_system_tests::{App, fleetpulse_bin};
use serde_json::json;

async fn import(
    kind: &str,
    file: &std::path::Path,
    data: &std::path::Path,
) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(fleetpulse_bin())
        .args(["import", kind])
        .arg(file)
        .arg("--data")
        .arg(data)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "import {kind}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test]
async fn devices_old_telemetry_and_component_failures_come_in_through_the_cli() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let app = App::serve_builtin(&data).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let start = Utc::now() - chrono::Duration::days(3 * 365);
    let start = start - chrono::Duration::seconds(start.timestamp().rem_euclid(3600));
    let at = |h: i64| (start + chrono::Duration::hours(h)).to_rfc3339();

    let devices = dir.path().join("devices.csv");
    std::fs::write(
        &devices,
        format!(
            "serial,model,commissioned_at,runtime_hours_at_registration\nOC5-HI001,OC-5A,{},0\n",
            at(0)
        ),
    )?;
    let out = import("devices", &devices, &data).await?;
    assert!(out.contains("imported 1 of 1 rows"), "{out}");

    let telemetry = dir.path().join("telemetry.csv");
    let mut csv = String::from("serial,at,runtime_hours,o2_purity_pct\n");
    for h in 1..=48 {
        csv.push_str(&format!("OC5-HI001,{},{h},95\n", at(h)));
    }
    std::fs::write(&telemetry, &csv)?;
    let out = import("telemetry", &telemetry, &data).await?;
    assert!(out.contains("imported 48 of 48 rows"), "{out}");
    let again = import("telemetry", &telemetry, &data).await?;
    assert!(
        again.contains("imported 0 of 48 rows") && again.contains("(48 already imported"),
        "{again}"
    );

    let failures = dir.path().join("failures.csv");
    std::fs::write(
        &failures,
        format!(
            "serial,at,runtime_hours,component\nOC5-HI001,{},48,compressor\n",
            at(48)
        ),
    )?;
    import("failures", &failures, &data).await?;

    let device = admin.get("/api/v1/devices/OC5-HI001").await?;
    assert_eq!(
        device.body["runtime_hours_at_registration"],
        json!(0.0),
        "{}",
        device.body
    );
    let meters = admin
        .get("/api/v1/devices/OC5-HI001/meters?field=runtime_hours&limit=100")
        .await?;
    let values = meters.body.as_array().map(Vec::len);
    assert_eq!(values, Some(48), "{}", meters.body);
    assert_eq!(meters.body[47]["value"], json!(48.0));
    assert_eq!(meters.body[0]["source"], json!("backfill"));
    let failures = admin.get("/api/v1/devices/OC5-HI001/failures").await?;
    assert_eq!(
        failures.body[0]["component"],
        json!("compressor"),
        "{}",
        failures.body
    );
    Ok(())
}
