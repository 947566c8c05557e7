//! `fleetpulse backtest` through the real binary on a history brought in with the
//! imports: it trains as of `--train-until`, replays to `--until`, prints the table and
//! writes backtest.csv and backtest.json, and writes nothing to the store.

use std::path::Path;

use chrono::{Duration, Utc};
use fleetpulse_system_tests::dispatch::Client;
use fleetpulse_system_tests::load::db_path;
use fleetpulse_system_tests::{App, fleetpulse_bin};

async fn fleetpulse(args: &[&str], data: &Path) -> anyhow::Result<(bool, String, String)> {
    let out = tokio::process::Command::new(fleetpulse_bin())
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn count(db: &Path, table: &str) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open(db)?;
    Ok(conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
}

#[tokio::test]
async fn a_backtest_scores_the_replay_and_stores_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let now = Utc::now();
    let start = now - Duration::days(200);
    let start = start - Duration::seconds(start.timestamp().rem_euclid(86_400));
    let at = |h: i64| (start + Duration::hours(h)).to_rfc3339();

    // 30 concentrators reporting every 6 hours for 170 days; one in three has its
    // compressor fail once, its oxygen purity sagging over the 5 days before
    let mut devices = String::from("serial,model,commissioned_at\n");
    let mut telemetry = String::from("serial,at,runtime_hours,o2_purity_pct\n");
    let mut failures = String::from("serial,at,runtime_hours,component,failure_mode\n");
    for i in 0..30_i64 {
        let serial = format!("OC5-BT{i:03}");
        devices.push_str(&format!("{serial},OC-5A,{}\n", at(0)));
        let fails_at = (i % 3 == 0).then(|| 24 * (40 + 4 * i));
        for h in (6..=170 * 24).step_by(6) {
            let hours_to_failure = fails_at.map(|f| f - h);
            let purity = match hours_to_failure {
                Some(d) if (0..120).contains(&d) => 93.5 - (120 - d) as f64 * 0.03,
                _ => 94.0 + ((h / 6 + i) % 5) as f64 * 0.1,
            };
            telemetry.push_str(&format!(
                "{serial},{},{},{purity:.2}\n",
                at(h),
                h as f64 * 0.8
            ));
        }
        if let Some(f) = fails_at {
            failures.push_str(&format!(
                "{serial},{},{},compressor,compressor\n",
                at(f),
                f as f64 * 0.8
            ));
        }
    }
    for (kind, text) in [
        ("devices", &devices),
        ("telemetry", &telemetry),
        ("failures", &failures),
    ] {
        let file = dir.path().join(format!("{kind}.csv"));
        std::fs::write(&file, text)?;
        let (ok, out, err) =
            fleetpulse(&["import", kind, file.to_str().unwrap_or_default()], &data).await?;
        assert!(ok, "import {kind}: {out} {err}");
    }

    let out_dir = dir.path().join("bt");
    let (t1, t2) = (at(110 * 24), at(170 * 24));
    let (ok, table, err) = fleetpulse(
        &[
            "backtest",
            "--train-until",
            &t1,
            "--until",
            &t2,
            "--step-hours",
            "24",
            "--out",
            out_dir.to_str().unwrap_or_default(),
        ],
        &data,
    )
    .await?;
    assert!(ok, "backtest: {table} {err}");
    assert!(err.contains("training every failure mode as of"), "{err}");
    assert!(table.starts_with("backtest: trained as of"), "{table}");
    assert!(table.contains("compressor"), "{table}");
    assert!(table.contains("(all modes)"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("backtest.json"))?)?;
    assert_eq!(json["step_hours"], serde_json::json!(24.0));
    let modes = json["modes"].as_array().expect("modes");
    let compressor = modes
        .iter()
        .find(|m| m["failure_mode"] == "compressor")
        .expect("compressor mode");
    let validated = compressor["validated_until"].as_str().expect("time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(validated)?
            <= chrono::DateTime::parse_from_rfc3339(&t1)?,
        "{compressor}"
    );
    let csv = std::fs::read_to_string(out_dir.join("backtest.csv"))?;
    let mut lines = csv.lines();
    assert!(
        lines.next().is_some_and(
            |h| h.starts_with("failure_mode,scorer,deployed,served_by,threshold,warnings")
        ),
        "{csv}"
    );
    // the failures after T1 (devices 18, 21, 24, 27 fail on days 112..148) are what the
    // replay counts for every scorer that scored them
    if let Some(scorers) = compressor["scorers"].as_array()
        && !scorers.is_empty()
    {
        for s in scorers {
            let failures = s["failures"].as_u64().expect("failures");
            assert!(failures <= 4, "{s}");
        }
        assert!(
            csv.lines().any(|l| l.starts_with("compressor,serving,")),
            "{csv}"
        );
    }

    // read only: no model, no prediction run, no order
    let db = db_path(&data);
    assert_eq!(count(&db, "models")?, 0);
    assert_eq!(count(&db, "prediction_runs")?, 0);
    assert_eq!(count(&db, "orders")?, 0);

    // the route answers the same backtest, and stores nothing either
    let mut app = App::serve_builtin(&data).await?;
    let admin = Client::new(&app, Some(&app.admin_token))?;
    let query = |t1: &str, t2: &str| {
        format!(
            "/api/v1/models/backtest?train_until={}&until={}&step_hours=24",
            t1.replace('+', "%2B"),
            t2.replace('+', "%2B")
        )
    };
    let answer = admin.post(&query(&t1, &t2), &serde_json::json!({})).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["modes"], json["modes"], "route and CLI differ");
    assert_eq!(answer.body["overall"], json["overall"]);
    let refused = admin.post(&query(&t2, &t1), &serde_json::json!({})).await?;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let missing = admin
        .post("/api/v1/models/backtest", &serde_json::json!({}))
        .await?;
    assert_eq!(missing.status, 400, "{}", missing.body);
    let models = admin.get("/api/v1/models").await?;
    assert_eq!(models.body, serde_json::json!([]), "{}", models.body);
    app.interrupt().await?;

    // refusals name the flag
    let (ok, _, err) = fleetpulse(
        &[
            "backtest",
            "--train-until",
            &t2,
            "--until",
            &t1,
            "--out",
            out_dir.to_str().unwrap_or_default(),
        ],
        &data,
    )
    .await?;
    assert!(!ok && err.contains("--train-until"), "{err}");
    let future = (now + Duration::days(2)).to_rfc3339();
    let (ok, _, err) = fleetpulse(
        &[
            "backtest",
            "--train-until",
            &t1,
            "--until",
            &future,
            "--out",
            out_dir.to_str().unwrap_or_default(),
        ],
        &data,
    )
    .await?;
    assert!(!ok && err.contains("--until"), "{err}");
    Ok(())
}
