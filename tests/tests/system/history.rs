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

/// The session cookie of a sign-in through the page form (the token as a person pastes it).
async fn sign_in(app: &App, token: &str) -> anyhow::Result<String> {
    let http = fleetpulse_system_tests::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = http.get(app.url("/sign-in")).send().await?;
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                c.strip_prefix(&format!("{name}="))
                    .map(|v| v.split(';').next().unwrap_or("").to_owned())
            })
    };
    let nonce = cookie(&form, "fp_signin").ok_or_else(|| anyhow::anyhow!("no sign-in nonce"))?;
    let done = http
        .post(app.url("/sign-in"))
        .header(reqwest::header::COOKIE, format!("fp_signin={nonce}"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("token={token}&nonce={nonce}&next=%2F"))
        .send()
        .await?;
    anyhow::ensure!(done.status() == 303, "sign-in answered {}", done.status());
    cookie(&done, "fp_session").ok_or_else(|| anyhow::anyhow!("no session cookie"))
}

/// The pages of `serve` (authentication on) over a history brought in through the CLI:
/// a quality engineer signs in and reads the component's Weibull fit, a device's charts
/// and failures, and the fleet; a dispatcher's token is refused nothing it may read.
#[tokio::test]
async fn the_pages_show_imported_history_to_a_signed_in_quality_engineer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let app = App::serve_builtin(&data).await?;
    let start = Utc::now() - chrono::Duration::days(2 * 365);
    let start = start - chrono::Duration::seconds(start.timestamp().rem_euclid(3600));
    let at = |h: i64| (start + chrono::Duration::hours(h)).to_rfc3339();
    // six concentrators, each running from hour 0, whose compressors fail at 300 to 800 h
    let lives = [300, 420, 510, 600, 690, 800];
    let mut devices =
        String::from("serial,model,commissioned_at,runtime_hours_at_registration,region\n");
    let mut meters = String::from("serial,at,runtime_hours\n");
    let mut failures = String::from("serial,at,runtime_hours,component\n");
    for (i, life) in lives.iter().enumerate() {
        let serial = format!("OC5-PG{i:03}");
        devices.push_str(&format!("{serial},OC-5A,{},0,north\n", at(0)));
        for h in (0..=900).step_by(100) {
            meters.push_str(&format!("{serial},{},{h}\n", at(h)));
        }
        failures.push_str(&format!("{serial},{},{life},compressor\n", at(*life)));
    }
    for (kind, body) in [
        ("devices", devices),
        ("meters", meters),
        ("failures", failures),
    ] {
        let file = dir.path().join(format!("{kind}.csv"));
        std::fs::write(&file, body)?;
        import(kind, &file, &data).await?;
    }
    let token = fleetpulse_system_tests::dispatch::create_token(&data, "quality", "qe").await?;
    let session = sign_in(&app, &token).await?;
    let http = fleetpulse_system_tests::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = |path: &str| {
        let req = http
            .get(app.url(path))
            .header(reqwest::header::COOKIE, format!("fp_session={session}"));
        async move {
            let r = req.send().await?;
            let status = r.status().as_u16();
            Ok::<_, anyhow::Error>((status, r.text().await?))
        }
    };
    let (status, quality) = page("/quality?period=1825d&group_by=component").await?;
    assert_eq!(status, 200, "{quality}");
    assert!(
        quality.contains("component=compressor"),
        "the component's group"
    );
    assert_eq!(
        quality.matches("class=\"point failure\"").count(),
        lives.len(),
        "a point per failure"
    );
    assert!(quality.contains("β = "), "a fit with its legend");
    let (status, device) = page("/devices/OC5-PG000?range=365d").await?;
    assert_eq!(status, 200);
    assert!(
        device.contains("compressor") && device.contains("Failures"),
        "the failure is listed"
    );
    for path in ["/", "/planner", "/dispatch", "/operations"] {
        let (status, body) = page(path).await?;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("data-page="), "{path}");
    }
    // without the session, the same page sends to the sign-in
    let anonymous = http.get(app.url("/quality")).send().await?;
    assert_eq!(anonymous.status().as_u16(), 303);
    Ok(())
}
