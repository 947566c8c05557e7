//! Issue 20, "nothing stops the line", against the real binary: a full disk never loses an
//! acknowledged reading (the data directory on a real 3 MB tmpfs that fills up and is
//! grown again, then a SIGKILL), and values the store cannot hold are dead-lettered once
//! instead of stopping the store for every device (then SIGTERM exits and a restart comes
//! up).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fleetpulse_simulator::{Swarm, SwarmConfig};
use fleetpulse_system_tests::load::{assert_exactly_once, db_path, publish_acked, signal};
use fleetpulse_system_tests::{App, eventually, free_port, telemetry_topic};
use serde_json::{Value, json};

/// A tmpfs mounted on a temporary directory, unmounted on drop (lazily: the process
/// under test may still hold files there for a moment).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not allowed (not root).
    fn mount(size: &str) -> anyhow::Result<Option<Tmpfs>> {
        let dir = tempfile::tempdir()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs for the data directory (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return Ok(None);
        }
        Ok(Some(Tmpfs { dir }))
    }

    fn resize(&self, size: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "mount -o remount,size={size} failed");
        Ok(())
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn health(app: &App) -> anyhow::Result<(u16, Value)> {
    app.get("/health").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_acks_and_loses_no_acknowledged_reading() -> anyhow::Result<()> {
    const DEVICES: usize = 50;
    const PER_DEVICE: u64 = 400;
    const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;
    let Some(fs) = Tmpfs::mount("3m")? else {
        return Ok(());
    };
    let data = fs.path().join("data");
    std::fs::create_dir(&data)?;
    let env = [("FLEETPULSE_INGEST__RETRY__MAX_BACKOFF_MS", "500")];
    let args = ["serve", "--mqtt-listen", "127.0.0.1:0"];
    let mut app = App::spawn_with_env(&data, &args, &env).await?;
    let addr = app.mqtt.expect("built-in endpoint");

    // Devices that forget a reading once it is acknowledged: anything acked and lost
    // shows up as missing at the end. ~20 000 readings are several times what 3 MB hold.
    let config = SwarmConfig::new(addr, "DF", DEVICES, PER_DEVICE);
    let serials = config.serials.clone();
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(30)).await?;
    swarm.go();
    let counters = swarm.counters().clone();

    // The disk fills: appends (or store commits) fail, /health says why, acks stop.
    let (code, body) = eventually(Duration::from_secs(60), "ingest to be held", || async {
        let (code, body) = health(&app).await?;
        Ok((body["ingest"]["held"] == json!(true)).then_some((code, body)))
    })
    .await?;
    eprintln!("held: {code} {}", body["reasons"]);
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("No space left on device") || reasons.contains("disk is full"),
        "health names the full disk: {reasons}"
    );
    assert_eq!(body["status"], json!("degraded"));
    // Failed attempts go on for a while (each one used to leave a partial record).
    let errors_then = body["ingest"]["commit_errors"].as_u64().unwrap_or(0);
    eventually(
        Duration::from_secs(30),
        "appends to keep failing",
        || async {
            let (_, body) = health(&app).await?;
            let errors = body["ingest"]["commit_errors"].as_u64().unwrap_or(0);
            Ok((errors >= errors_then + 3).then_some(()))
        },
    )
    .await?;
    let acked_while_full = counters.acked.load(Ordering::Relaxed);
    eprintln!(
        "disk full: {acked_while_full} of {TOTAL} acknowledged, {} published",
        counters.published.load(Ordering::Relaxed)
    );
    assert!(acked_while_full < TOTAL, "the disk filled before the end");

    // Room again: everything goes through, nothing acknowledged is lost.
    fs.resize("256m")?;
    let report = swarm.finish(Duration::from_secs(120)).await?;
    assert_eq!(report.counters.acked, TOTAL, "every reading acknowledged");
    app.applied().await?;
    assert_eq!(app.stored_readings().await?, TOTAL, "all stored");
    let (code, body) = health(&app).await?;
    assert_eq!(
        (code, &body["status"]),
        (200, &json!("ok")),
        "healthy again: {body}"
    );

    // And after a SIGKILL and a restart (the journal is read again from disk).
    app.kill().await;
    let mut app = App::spawn_with_env(&data, &args, &env).await?;
    app.applied().await?;
    assert_eq!(
        app.stored_readings().await?,
        TOTAL,
        "all stored after restart"
    );
    app.interrupt().await?;
    assert_exactly_once(&db_path(&data), "DF-", &serials, PER_DEVICE)
}

/// A SIGTERM while the disk is full used to wait until the held batch went through, that
/// is, for as long as the disk stayed full. Now the drain waits `ingest.drain_timeout_s`
/// and the process exits; what was acknowledged is in the journal and what was not is
/// sent again after the restart: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_the_disk_is_full_stops_within_the_drain_bound_and_loses_nothing()
-> anyhow::Result<()> {
    const DEVICES: usize = 20;
    const PER_DEVICE: u64 = 600;
    const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;
    let Some(fs) = Tmpfs::mount("3m")? else {
        return Ok(());
    };
    let data = fs.path().join("data");
    std::fs::create_dir(&data)?;
    // the same device port after the restart, so the devices find it again
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["serve", "--mqtt-listen", listen.as_str()];
    let env = [
        ("FLEETPULSE_INGEST__RETRY__MAX_BACKOFF_MS", "500"),
        ("FLEETPULSE_INGEST__DRAIN_TIMEOUT_S", "2"),
    ];
    let mut app = App::spawn_with_env(&data, &args, &env).await?;
    let addr = app.mqtt.expect("built-in endpoint");
    let config = SwarmConfig::new(addr, "DT", DEVICES, PER_DEVICE);
    let serials = config.serials.clone();
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(30)).await?;
    swarm.go();
    eventually(Duration::from_secs(60), "ingest to be held", || async {
        let (_, body) = health(&app).await?;
        Ok((body["ingest"]["held"] == json!(true)).then_some(()))
    })
    .await?;

    let asked = Instant::now();
    signal(&app.child, "TERM")?;
    let status = tokio::time::timeout(Duration::from_secs(30), app.child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("SIGTERM while the disk is full: no exit within 30 s"))??;
    let took = asked.elapsed();
    eprintln!("SIGTERM while held: exit {status} after {took:?}");
    assert!(status.success(), "a clean exit: {status}");
    assert!(
        took < Duration::from_secs(15),
        "the drain is bounded (2 s here): {took:?}"
    );

    fs.resize("256m")?;
    let mut app = App::spawn_with_env(&data, &args, &env).await?;
    let report = swarm.finish(Duration::from_secs(120)).await?;
    assert_eq!(report.counters.acked, TOTAL, "every reading acknowledged");
    app.applied().await?;
    assert_eq!(app.stored_readings().await?, TOTAL, "all stored");
    app.interrupt().await?;
    assert_exactly_once(&db_path(&data), "DT-", &serials, PER_DEVICE)
}

fn payload(seq: &str, extra: &str) -> String {
    let ts = chrono::Utc::now().to_rfc3339();
    format!(r#"{{"seq":{seq},"ts":"{ts}","model":"OC-5A"{extra}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_store_cannot_hold_are_dead_lettered_once_and_stop_nothing() -> anyhow::Result<()>
{
    let data = tempfile::tempdir()?;
    let mut app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.expect("built-in endpoint");

    let poison = "PZ-000001";
    let bad = [
        payload("9223372036854775808", ""),
        payload("1", r#","vendor_x":1.7e308"#),
        payload("2", r#","vendor_x":1.7e308"#),
        payload("3", r#","vendor_x":-1.7e308"#),
    ];
    let good = payload("4", r#","vendor_x":5.0"#);
    let mut messages = bad.to_vec();
    messages.push(good);
    publish_acked(addr, poison, &telemetry_topic(poison), &messages).await?;
    for d in 2..=4 {
        let serial = format!("PZ-00000{d}");
        let readings: Vec<String> = (1..=20)
            .map(|s| payload(&s.to_string(), r#","runtime_hours":10"#))
            .collect();
        publish_acked(addr, &serial, &telemetry_topic(&serial), &readings).await?;
    }
    app.applied().await?;
    assert_eq!(
        app.stored_readings().await?,
        61,
        "every good reading stored"
    );

    let dead = app
        .get_ok("/api/v1/dead-letters?reason=out_of_range&limit=100")
        .await?;
    let mine: Vec<&Value> = dead["items"]
        .as_array()
        .map(|items| items.iter().filter(|d| d["client_id"] == poison).collect())
        .unwrap_or_default();
    assert_eq!(mine.len(), bad.len(), "each refused once: {mine:#?}");
    assert!(
        mine.iter().any(|d| d["detail"]
            .as_str()
            .is_some_and(|t| t.contains("seq 9223372036854775808"))),
        "{mine:#?}"
    );
    let rollups = app
        .get_ok(&format!("/api/v1/devices/{poison}/rollups"))
        .await?;
    let rows = rollups.as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty(), "the good reading is rolled up");
    for row in &rows {
        assert!(row["sum"].is_f64(), "a finite sum: {row}");
    }
    let (code, body) = health(&app).await?;
    assert_eq!((code, &body["status"]), (200, &json!("ok")), "{body}");

    // SIGTERM finishes, and a restart comes up with nothing to replay twice.
    signal(&app.child, "TERM")?;
    let status = tokio::time::timeout(Duration::from_secs(30), app.child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("fleetpulse did not exit within 30 s of SIGTERM"))??;
    assert!(status.success(), "exit status {status}");
    let mut app = App::serve_builtin(data.path()).await?;
    app.applied().await?;
    assert_eq!(app.stored_readings().await?, 61);
    let dead = app.get_ok("/health").await?["store"]["dead_letters"].clone();
    assert_eq!(dead, json!(bad.len()), "no dead letter twice");
    app.interrupt().await?;
    Ok(())
}

/// The soak found it (docs/soak.md): with fleetpulse's log on a disk that filled up,
/// tracing reported the failed write with `eprint!`, which panicked inside the ingest
/// pipeline and the device source; the process stayed up with the line stopped. Logs that
/// cannot be written are now dropped. Here stderr is `/dev/full` (every write fails with
/// ENOSPC) and the log level is `debug`, so nearly every message logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_stops_nothing() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let args = ["serve", "--mqtt-listen", "127.0.0.1:0"];
    let env = [("RUST_LOG", "debug")];
    // The shell redirects its own stderr, then execs fleetpulse with it.
    let mut app =
        App::spawn_limited(data.path(), &args, &env, Some("-c 0 && exec 2>/dev/full")).await?;
    let addr = app.mqtt.expect("built-in endpoint");
    for d in 0..4 {
        let serial = format!("LF-{d:06}");
        let readings: Vec<String> = (1..=50)
            .map(|seq| fleetpulse_system_tests::reading(seq, json!({"flow_lpm": 2.0})))
            .collect();
        publish_acked(addr, &serial, &telemetry_topic(&serial), &readings).await?;
        // a refused message logs a WARN too
        publish_acked(
            addr,
            &serial,
            &telemetry_topic(&serial),
            &["not json".to_owned()],
        )
        .await?;
    }
    app.applied().await?;
    let health = app.get_ok("/health").await?;
    assert_eq!(health["store"]["readings"], json!(200), "{health}");
    assert_eq!(health["status"], json!("ok"), "{health}");
    let status = app.interrupt().await?;
    assert!(status.success(), "a clean stop: {status}");
    Ok(())
}
