//! The pages in a real headless Chromium (issue 24): `fleetpulse demo` runs, and
//! tests/browser/pages.mjs (playwright-core driving Debian's `chromium`; scripts/test
//! installs both) loads every page with no console error, watches a critical alarm
//! published over MQTT appear on the dispatch page without a reload, acknowledges and
//! completes its order from the page, and changes the Weibull plot with a quality
//! filter. Screenshots go to `$FLEETPULSE_SCREENSHOTS` (the committed ones in
//! docs/screenshots/ come from `FLEETPULSE_SCREENSHOTS=$PWD/docs/screenshots`), else to
//! a temporary directory.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use fleetpulse_system_tests::{App, eventually};

/// A smaller fleet than the demo's default, so that a debug build starts it quickly,
/// with a year of history so the quality page has failures of every model to plot.
const DEVICES: &str = "60";
const HISTORY_DAYS: &str = "365";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_work_in_a_real_browser() -> anyhow::Result<()> {
    let dir = browser_dir();
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in {} (scripts/test does)",
        dir.display()
    );
    let data = tempfile::tempdir()?;
    let mut app = App::spawn(
        data.path(),
        &[
            "demo",
            "--devices",
            DEVICES,
            "--history-days",
            HISTORY_DAYS,
            "--mqtt-listen",
            "127.0.0.1:0",
        ],
    )
    .await?;
    let mqtt = app.mqtt.context("the demo announces its device endpoint")?;
    // the first prediction run and training have stored something for the planner
    eventually(
        Duration::from_secs(300),
        "the demo's first models",
        || async {
            let (status, body) = app.get("/api/v1/models").await?;
            let trained = status == 200 && body.as_array().is_some_and(|m| !m.is_empty());
            Ok(trained.then_some(()))
        },
    )
    .await?;
    let shots = match std::env::var_os("FLEETPULSE_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => data.path().join("screenshots"),
    };
    let out = tokio::process::Command::new("node")
        .arg(dir.join("pages.mjs"))
        .current_dir(&dir)
        .env("FLEETPULSE_URL", app.url(""))
        .env("FLEETPULSE_MQTT", mqtt.to_string())
        .env("SCREENSHOTS", &shots)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .context("the browser checks took more than 10 minutes")?
        .context("running node (scripts/test installs nodejs)")?;
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(
        out.status.success(),
        "the browser checks failed ({}); screenshots in {}",
        out.status,
        shots.display()
    );
    for page in [
        "fleet",
        "device",
        "planner",
        "quality",
        "quality-by-model",
        "dispatch",
        "dispatch-live",
        "operations",
        "order-completed",
    ] {
        let png = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&png)
            .with_context(|| format!("{}", png.display()))?
            .len();
        anyhow::ensure!(
            size > 10_000,
            "{} is {size} bytes: not a page",
            png.display()
        );
    }
    app.interrupt().await?;
    Ok(())
}
