//! The API's contract against the real binary: a device's readings read back completely
//! through the page cursor, none twice, and `limit` over its documented maximum refused.

use chrono::{Duration as TimeDelta, Utc};
use fleetpulse_system_tests::load::publish_acked;
use fleetpulse_system_tests::{App, telemetry_topic};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_hundred_readings_read_back_through_the_cursor_none_lost_none_twice()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.expect("built-in endpoint");
    let serial = "PG-000001";
    let topic = telemetry_topic(serial);
    // two readings to each second of device time: the cursor must order ties by seq
    let t0 = Utc::now() - TimeDelta::hours(1);
    let readings: Vec<Value> = (0..1500u64)
        .map(|i| {
            let ts = t0 + TimeDelta::seconds(i64::try_from(i / 2)?);
            Ok(json!({ "seq": i + 1, "ts": ts.to_rfc3339(), "model": "OC-5A", "runtime_hours": i }))
        })
        .collect::<anyhow::Result<_>>()?;
    let backlog: Vec<String> = readings
        .chunks(100)
        .map(|c| Value::Array(c.to_vec()).to_string())
        .collect();
    publish_acked(addr, serial, &topic, &backlog).await?;
    app.applied().await?;

    let path = format!("/api/v1/devices/{serial}/readings?limit=1000");
    let first = app.get_ok(&path).await?;
    let next = first["next"]
        .as_str()
        .expect("a full page names the next one");
    let second = app.get_ok(&format!("{path}&after={next}")).await?;
    let (over, body) = app
        .get(&format!("/api/v1/devices/{serial}/readings?limit=10001"))
        .await?;
    let by_150 = app.readings(serial, "limit=150").await?;

    let seqs = |items: &Value| -> Vec<u64> {
        items
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["seq"].as_u64())
            .collect()
    };
    let mut read = seqs(&first["items"]);
    read.extend(seqs(&second["items"]));
    assert_eq!(
        read,
        (1..=1500).collect::<Vec<_>>(),
        "1000 + 500, in order, none twice"
    );
    assert_eq!(second["next"], Value::Null, "the last page says so");
    assert_eq!(seqs(&Value::Array(by_150)), (1..=1500).collect::<Vec<_>>());
    assert_eq!(over, 400, "{body}");
    assert_eq!(body["details"]["parameter"], json!("limit"));
    Ok(())
}
