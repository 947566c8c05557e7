//! Reliability data against the real binary: a device publishes its runtime-hour meter
//! over several hours, a failure alarm raises a repair order, the order is completed with
//! the failure confirmed → exactly one failure event, and the reliability API counts the
//! operating hours and that failure; CSV export; history import (API and CLI) reports bad
//! rows by line while the good rows land.

use std::time::Duration;

use chrono::Utc;
use fleetpulse_system_tests::dispatch::{Client, create_token};
use fleetpulse_system_tests::{App, eventually, fleetpulse_bin, mosquitto_pub, telemetry_topic};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn register(admin: &Client, serial: &str) -> anyhow::Result<()> {
    let a = admin
        .post(
            "/api/v1/devices",
            &json!({"serial": serial, "model": "OC-5A", "status": "at_customer", "region": "north", "address": "1 Main St"}),
        )
        .await?;
    anyhow::ensure!(
        a.status == 201,
        "register {serial}: {} {}",
        a.status,
        a.body
    );
    Ok(())
}

/// A reading `hours_ago` hours before now (a device's backlog of the last hours).
fn reading_at(seq: u64, hours_ago: f64, fields: Value) -> String {
    let ts = Utc::now() - chrono::Duration::milliseconds((hours_ago * 3_600_000.0) as i64);
    let mut v = json!({"seq": seq, "ts": ts.to_rfc3339(), "model": "OC-5A"});
    if let (Some(o), Value::Object(extra)) = (v.as_object_mut(), fields) {
        o.extend(extra);
    }
    v.to_string()
}

fn version(order: &Value) -> u64 {
    order["version"].as_u64().expect("order has a version")
}

/// Publishes six hours of meter (0.8 h of running per hour, from 2000 h), then E101 with
/// the meter at 2004.0; returns the repair order the rules raised.
async fn six_hours_then_a_compressor_failure(app: &App, serial: &str) -> anyhow::Result<Value> {
    let mqtt = app.mqtt.expect("built-in endpoint");
    for i in 0..5u64 {
        let payload = reading_at(
            i + 1,
            5.0 - i as f64,
            json!({"runtime_hours": 2000.0 + 0.8 * i as f64, "alarms": []}),
        );
        mosquitto_pub(mqtt, serial, &telemetry_topic(serial), &payload).await?;
    }
    let payload = reading_at(6, 0.0, json!({"runtime_hours": 2004.0, "alarms": ["E101"]}));
    mosquitto_pub(mqtt, serial, &telemetry_topic(serial), &payload).await?;
    eventually(WAIT, "the repair order", || async {
        let o = app
            .orders(&format!("serial={serial}&status=active"))
            .await?;
        Ok(o.into_iter()
            .find(|o| o["cause"] == json!("critical_alarm:E101")))
    })
    .await
}

async fn complete(disp: &Client, order: &Value, outcome: &Value) -> anyhow::Result<()> {
    let id = order["id"].as_i64().expect("id");
    let mut v = version(order);
    for (step, body) in [
        ("acknowledge", json!({})),
        ("assign", json!({"engineer": "E-1"})),
        ("start", json!({})),
        ("complete", outcome.clone()),
    ] {
        let a = disp
            .post_if_match(&format!("/api/v1/orders/{id}/{step}"), Some(v), &body)
            .await?;
        anyhow::ensure!(a.status == 200, "{step}: {} {}", a.status, a.body);
        v = version(&a.body);
    }
    Ok(())
}

#[tokio::test]
async fn a_confirmed_repair_of_a_failure_alarm_is_one_failure_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = App::serve_builtin(dir.path()).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let disp = Client::new(
        &app,
        Some(&create_token(dir.path(), "dispatcher", "d").await?),
    )?;
    let serial = "OC5-RL001";
    register(&admin, serial).await?;
    let order = six_hours_then_a_compressor_failure(&app, serial).await?;

    // the alarm is a failure event as soon as it opens
    let failures = admin
        .get(&format!("/api/v1/devices/{serial}/failures"))
        .await?;
    let f = failures.body.as_array().expect("failures");
    assert_eq!(f.len(), 1, "{}", failures.body);
    assert_eq!(f[0]["source"], json!("alarm"));
    assert_eq!(f[0]["runtime_hours"], json!(2004.0));

    complete(
        &disp,
        &order,
        &json!({"failure_confirmed": true, "fault_code": "E101", "labour_minutes": 120}),
    )
    .await?;
    let failures = admin
        .get(&format!("/api/v1/devices/{serial}/failures"))
        .await?;
    let f = failures.body.as_array().expect("failures");
    assert_eq!(f.len(), 1, "one incident, one event: {}", failures.body);
    assert_eq!(f[0]["source"], json!("repair_order"));
    assert_eq!(f[0]["order_id"], order["id"]);
    assert_eq!(f[0]["runtime_hours"], json!(2004.0), "age at the alarm");

    // the statistics see 4.0 operating hours (the meter's increments) and one failure
    let from = (Utc::now() - chrono::Duration::days(30)).format("%Y-%m-%dT%H:%M:%SZ");
    let to = (Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let period = format!("from={from}&to={to}");
    let quality = Client::new(&app, Some(&create_token(dir.path(), "quality", "q").await?))?;
    let mtbf = quality
        .get(&format!("/api/v1/reliability/mtbf?{period}"))
        .await?;
    assert_eq!(mtbf.status, 200, "{}", mtbf.body);
    let row = &mtbf.body["rows"][0];
    assert_eq!(row["group_label"], json!("fleet"), "{}", mtbf.body);
    assert_eq!(row["failures"], json!(1), "{}", mtbf.body);
    let hours = row["operating_hours"].as_f64().expect("hours");
    assert!((hours - 4.0).abs() < 1e-6, "{}", mtbf.body);
    assert!((row["mtbf_hours"].as_f64().expect("mtbf") - 4.0).abs() < 1e-6);
    assert_eq!(mtbf.body["query"]["confidence"], json!(0.9));
    assert!(row["method"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(mtbf.body["sample"]["failures"], json!(1));
    assert!(mtbf.body["warnings"].is_array());

    // the same table as CSV, by parameter and by Accept
    let http = fleetpulse_system_tests::dispatch::client_with_token(&app.admin_token)?;
    for req in [
        http.get(app.url(&format!("/api/v1/reliability/mtbf?{period}&format=csv"))),
        http.get(app.url(&format!("/api/v1/reliability/mtbf?{period}")))
            .header("accept", "text/csv"),
    ] {
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()?
                .starts_with("text/csv")
        );
        let text = resp.text().await?;
        let table = parse_csv(&text);
        assert_eq!(table.len(), 2, "{text}");
        let col = |name: &str| table[0].iter().position(|h| h == name).expect(name);
        assert_eq!(table[1][col("failures")], "1", "{text}");
        let h: f64 = table[1][col("operating_hours")].parse()?;
        assert!((h - 4.0).abs() < 1e-6, "{text}");
    }
    // every statistic answers, bad parameters are 400 in the error shape, roles hold
    for stat in ["weibull", "pareto", "trend", "mttr"] {
        let a = quality
            .get(&format!(
                "/api/v1/reliability/{stat}?{period}&group_by=model,code"
            ))
            .await?;
        assert_eq!(a.status, 200, "{stat}: {}", a.body);
    }
    let mttr = quality
        .get(&format!("/api/v1/reliability/mttr?{period}"))
        .await?;
    assert_eq!(mttr.body["rows"][0]["completed"], json!(1), "{}", mttr.body);
    for bad in [
        "confidence=1.5",
        "group_by=colour",
        "sides=both",
        "from=yesterday",
        "age_hours=10",
    ] {
        let a = quality
            .get(&format!("/api/v1/reliability/mtbf?{bad}"))
            .await?;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(
            a.body["code"],
            json!("invalid_parameter"),
            "{bad}: {}",
            a.body
        );
    }
    let denied = disp
        .get(&format!("/api/v1/reliability/mtbf?{period}"))
        .await?;
    assert_eq!(denied.status, 403);
    let planner = Client::new(&app, Some(&create_token(dir.path(), "planner", "p").await?))?;
    assert_eq!(planner.get("/api/v1/reliability/trend").await?.status, 200);

    // the report command writes the same tables
    let out = dir.path().join("report");
    let run = tokio::process::Command::new(fleetpulse_bin())
        .args([
            "report",
            "reliability",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ])
        .arg("--out")
        .arg(&out)
        .arg("--data")
        .arg(dir.path())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("mtbf.csv"), "{stdout}");
    let table = parse_csv(&std::fs::read_to_string(out.join("mtbf.csv"))?);
    let col = table[0]
        .iter()
        .position(|h| h == "failures")
        .expect("failures column");
    assert_eq!(table[1][col], "1");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reliability.json"))?)?;
    assert_eq!(json["mtbf"][0]["failures"], json!(1));
    Ok(())
}

/// A small RFC 4180 reader for the answers (quotes, doubled quotes; no line breaks in fields).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (mut out, mut field, mut quoted) = (Vec::new(), String::new(), false);
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (quoted, c) {
                    (true, '"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    (true, '"') => quoted = false,
                    (false, '"') => quoted = true,
                    (false, ',') => out.push(std::mem::take(&mut field)),
                    (_, c) => field.push(c),
                }
            }
            out.push(field);
            out
        })
        .collect()
}

#[tokio::test]
async fn no_fault_found_leaves_no_failure_event() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = App::serve_builtin(dir.path()).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let serial = "OC5-RL002";
    register(&admin, serial).await?;
    let order = six_hours_then_a_compressor_failure(&app, serial).await?;
    complete(&admin, &order, &json!({"failure_confirmed": false})).await?;
    let failures = admin
        .get(&format!("/api/v1/devices/{serial}/failures"))
        .await?;
    assert_eq!(failures.body, json!([]), "retracted");
    Ok(())
}

const FAILURE_CSV: &str = "serial,at,runtime_hours,fault_code,notes\n\
    OC5-RL010,2025-02-01T10:00:00Z,1500,E101,compressor\n\
    OC5-RL010,2025-02-30T10:00:00Z,1600,E101,\n\
    OC5-NOPE,2025-03-01T10:00:00Z,10,E101,\n\
    OC5-RL010,2025-04-01T10:00:00Z,1700,E103,\"fan, replaced\"\n";

#[tokio::test]
async fn history_import_reports_bad_rows_by_line_and_loads_the_good_ones() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = App::serve_builtin(dir.path()).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    register(&admin, "OC5-RL010").await?;
    let http = fleetpulse_system_tests::dispatch::client_with_token(&app.admin_token)?;
    let post = |body: &'static str| {
        http.post(app.url("/api/v1/reliability/import/failures"))
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let resp = post(FAILURE_CSV).await?;
    assert_eq!(resp.status().as_u16(), 200);
    let report: Value = resp.json().await?;
    assert_eq!(report["rows"], json!(4));
    assert_eq!(report["imported"], json!(2));
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![3, 4], "{report}");
    assert!(
        report["errors"][1]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not registered")
    );
    // again: duplicates, nothing new
    let again: Value = post(FAILURE_CSV).await?.json().await?;
    assert_eq!(
        (again["imported"].clone(), again["duplicates"].clone()),
        (json!(0), json!(2))
    );
    // a dispatcher may not import
    let disp = fleetpulse_system_tests::dispatch::client_with_token(
        &create_token(dir.path(), "dispatcher", "d").await?,
    )?;
    let denied = disp
        .post(app.url("/api/v1/reliability/import/failures"))
        .header("content-type", "text/csv")
        .body(FAILURE_CSV)
        .send()
        .await?;
    assert_eq!(denied.status().as_u16(), 403);
    let failures = admin.get("/api/v1/devices/OC5-RL010/failures").await?;
    assert_eq!(
        failures.body.as_array().map(Vec::len),
        Some(2),
        "{}",
        failures.body
    );
    Ok(())
}

#[tokio::test]
async fn the_import_command_names_each_bad_line_and_exits_nonzero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let app = App::serve_builtin(&data).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    register(&admin, "OC5-RL010").await?;
    let file = dir.path().join("failures.csv");
    std::fs::write(&file, FAILURE_CSV)?;
    // while serve runs: SQLite serialises the two writers
    let out = tokio::process::Command::new(fleetpulse_bin())
        .args(["import", "failures"])
        .arg(&file)
        .arg("--data")
        .arg(&data)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("failures.csv:3: refused"), "{stdout}");
    assert!(stdout.contains("failures.csv:4: refused"), "{stdout}");
    assert!(stdout.contains("imported 2 of 4 rows"), "{stdout}");
    let failures = admin.get("/api/v1/devices/OC5-RL010/failures").await?;
    assert_eq!(
        failures.body.as_array().map(Vec::len),
        Some(2),
        "{}",
        failures.body
    );
    Ok(())
}
