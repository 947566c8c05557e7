//! Guarantees 5 and 6 on the built-in endpoint (a PUBACK there means committed, so every
//! check follows the publish directly): a device back from hours offline uploads its
//! backlog with old timestamps and all of it is kept in order with the past hours'
//! rollups updated; out-of-order and duplicate delivery change nothing that matters.

use chrono::{DateTime, Duration as TimeDelta, DurationRound, Utc};
use fleetpulse_system_tests::load::publish_acked;
use fleetpulse_system_tests::{App, telemetry_topic};
use serde_json::{Value, json};

fn reading(seq: u64, ts: DateTime<Utc>, extra: Value) -> Value {
    let mut v = json!({ "seq": seq, "ts": ts.to_rfc3339(), "model": "OC-5A" });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
    }
    v
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .replace('+', "%2B")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_back_from_six_hours_offline_keeps_its_whole_backlog_in_order()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.expect("built-in endpoint");
    let serial = "BL-000001";
    let topic = telemetry_topic(serial);
    let now = Utc::now();
    let hour0 = now.duration_trunc(TimeDelta::hours(1))? - TimeDelta::hours(6);

    // Before going offline: three live readings an hour before the gap.
    let before: Vec<String> = (0..3u64)
        .map(|k| {
            let ts = hour0 - TimeDelta::hours(1) + TimeDelta::minutes(10 * k as i64);
            reading(k + 1, ts, json!({ "o2_purity_pct": 95.0 })).to_string()
        })
        .collect();
    publish_acked(addr, serial, &topic, &before).await?;

    // Back online: one reading a minute for the six hours it was away, uploaded as four
    // backlog arrays of 90, then a live reading.
    let o2 = |k: u64| 90.0 + (k % 60) as f64 * 0.05;
    let buffered: Vec<Value> = (0..360u64)
        .map(|k| {
            let ts = hour0 + TimeDelta::minutes(k as i64);
            reading(
                4 + k,
                ts,
                json!({ "o2_purity_pct": o2(k), "runtime_hours": 100.0 + k as f64 / 60.0 }),
            )
        })
        .collect();
    let backlog: Vec<String> = buffered
        .chunks(90)
        .map(|c| Value::Array(c.to_vec()).to_string())
        .collect();
    publish_acked(addr, serial, &topic, &backlog).await?;
    let live = reading(364, Utc::now(), json!({ "o2_purity_pct": 94.0 })).to_string();
    publish_acked(addr, serial, &topic, &[live]).await?;
    app.applied().await?;

    // Every reading kept, in device-time order, which is seq order.
    let from = hour0 - TimeDelta::hours(2);
    let to = Utc::now() + TimeDelta::minutes(1);
    let rows = app
        .readings(serial, &format!("from={}&to={}", q(from), q(to)))
        .await?;
    let seqs: Vec<u64> = rows
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=364).collect::<Vec<_>>());

    // The six past hours got their rollups from the backlog: 60 readings each.
    let rollups = app
        .get_ok(&format!(
            "/api/v1/devices/{serial}/rollups?from={}&to={}",
            q(hour0),
            q(hour0 + TimeDelta::hours(6))
        ))
        .await?;
    let o2_hours: Vec<&Value> = rollups
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["field"] == "o2_purity_pct")
        .collect();
    assert_eq!(o2_hours.len(), 6, "one rollup per past hour: {rollups}");
    for (h, r) in o2_hours.iter().enumerate() {
        let hour: DateTime<Utc> = r["hour"].as_str().expect("hour").parse()?;
        assert_eq!(hour, hour0 + TimeDelta::hours(h as i64));
        assert_eq!(r["count"], json!(60), "{r}");
        assert_eq!(r["min"].as_f64(), Some(90.0), "{r}");
        assert!(
            (r["max"].as_f64().expect("max") - o2(59)).abs() < 1e-9,
            "{r}"
        );
        assert!(
            (r["last"].as_f64().expect("last") - o2(59)).abs() < 1e-9,
            "{r}"
        );
    }

    // The latest state is the live reading, not the last of the backlog.
    let device = app.get_ok(&format!("/api/v1/devices/{serial}")).await?;
    assert_eq!(device["latest"]["seq"], json!(364));
    assert_eq!(device["latest"]["values"]["o2_purity_pct"], json!(94.0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicate_delivery_is_harmless() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.expect("built-in endpoint");
    let serial = "OO-000001";
    let topic = telemetry_topic(serial);
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1))? - TimeDelta::hours(2);
    let r = |seq: u64| {
        reading(
            seq,
            hour + TimeDelta::minutes(seq as i64),
            json!({ "filter_life_pct": 100.0 - 10.0 * seq as f64 }),
        )
    };

    // Seqs arrive shuffled; later, a redelivery repeats some of them (alone and inside a
    // backlog array) while an older reading arrives after the newest.
    let first: Vec<String> = [5, 3, 9].map(|s| r(s).to_string()).to_vec();
    publish_acked(addr, serial, &topic, &first).await?;
    let second: Vec<String> = vec![
        r(1).to_string(),
        r(9).to_string(),
        r(3).to_string(),
        Value::Array(vec![r(7), r(5)]).to_string(),
    ];
    publish_acked(addr, serial, &topic, &second).await?;
    app.applied().await?;

    let rows = app.readings(serial, "").await?;
    let seqs: Vec<u64> = rows
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![1, 3, 5, 7, 9], "each reading once, in order");

    let device = app.get_ok(&format!("/api/v1/devices/{serial}")).await?;
    assert_eq!(
        device["latest"]["seq"],
        json!(9),
        "latest follows the highest seq"
    );
    assert_eq!(device["latest"]["values"]["filter_life_pct"], json!(10.0));

    let health = app.get_ok("/health").await?;
    assert_eq!(health["ingest"]["duplicates"], json!(3), "{health}");
    assert_eq!(health["ingest"]["readings_stored"], json!(5), "{health}");

    let rollups = app
        .get_ok(&format!(
            "/api/v1/devices/{serial}/rollups?from={}&to={}",
            q(hour),
            q(hour + TimeDelta::hours(1))
        ))
        .await?;
    let filter = rollups
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["field"] == "filter_life_pct")
        .cloned()
        .expect("a filter rollup");
    assert_eq!(
        filter["count"],
        json!(5),
        "duplicates are not rolled up: {filter}"
    );
    assert_eq!(filter["min"], json!(10.0));
    assert_eq!(filter["max"], json!(90.0));
    assert_eq!(filter["last"], json!(10.0), "last = highest seq's value");
    Ok(())
}
