//! Guarantees 3 and 4: the broker restarts mid-stream (external mode), and the storage
//! stops committing while devices keep sending (built-in endpoint). Nothing is lost,
//! nothing is stored twice, memory stays bounded, and ingest recovers by itself.

use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use fleetpulse_simulator::{Swarm, SwarmConfig};
use fleetpulse_system_tests::load::{PersistentMosquitto, assert_exactly_once, db_path, rss_mib};
use fleetpulse_system_tests::{App, eventually, free_port};
use serde_json::{Value, json};

async fn ingest(app: &App) -> anyhow::Result<Value> {
    Ok(app.get_ok("/health").await?["ingest"].clone())
}

async fn ingest_counter(app: &App, name: &str) -> anyhow::Result<u64> {
    ingest(app).await?[name]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("/health has no ingest.{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_resumes_the_session_without_loss_or_duplicates()
-> anyhow::Result<()> {
    const DEVICES: usize = 200;
    const PER_DEVICE: u64 = 100;
    const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;
    let mut broker = PersistentMosquitto::start(free_port()).await?;
    let data = tempfile::tempdir()?;
    let app = App::spawn_with_env(
        data.path(),
        &["serve", "--mqtt-url", &format!("mqtt://{}", broker.addr)],
        &[
            ("FLEETPULSE_BROKER__CLIENT_ID", "fleetpulse-brk"),
            ("FLEETPULSE_BROKER__MAX_RECONNECT_BACKOFF_MS", "1000"),
        ],
    )
    .await?;
    eventually(Duration::from_secs(20), "ingest subscribed", || async {
        Ok((ingest(&app).await?["connected"] == json!(true)).then_some(()))
    })
    .await?;

    let config = SwarmConfig::new(broker.addr, "BR", DEVICES, PER_DEVICE);
    let serials = config.serials.clone();
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(30)).await?;
    swarm.go();
    eventually(Duration::from_secs(30), "a quarter stored", || async {
        Ok((app.stored_readings().await? >= TOTAL / 4).then_some(()))
    })
    .await?;

    broker.stop_gracefully().await?;
    eventually(Duration::from_secs(20), "ingest to notice", || async {
        Ok((ingest(&app).await?["connected"] == json!(false)).then_some(()))
    })
    .await?;
    let stored_during_outage = app.stored_readings().await?;
    assert!(
        stored_during_outage < TOTAL,
        "the outage came after the stream ended"
    );
    broker.restart().await?;

    let report = swarm.finish(Duration::from_secs(90)).await?;
    assert_eq!(report.counters.acked, TOTAL);
    eventually(Duration::from_secs(60), "every reading stored", || async {
        Ok((app.stored_readings().await? >= TOTAL).then_some(()))
    })
    .await?;
    // `connected` turns true again once the resumed session's subscriptions are granted,
    // which may come after the queued messages were already delivered and stored.
    let health = eventually(
        Duration::from_secs(20),
        "ingest subscribed again",
        || async {
            let health = ingest(&app).await?;
            Ok((health["connected"] == json!(true)).then_some(health))
        },
    )
    .await?;
    assert!(
        health["broker_reconnects"].as_u64() >= Some(1),
        "ingest reconnected: {health}"
    );
    let mut app = app;
    app.interrupt().await?;
    assert_exactly_once(&db_path(data.path()), "BR-", &serials, PER_DEVICE)
}

/// Holds SQLite's write lock on the data file from another connection (this test
/// process, not fleetpulse) until told to let go.
fn hold_write_lock(db: std::path::PathBuf) -> anyhow::Result<std_mpsc::Sender<()>> {
    let (locked_tx, locked_rx) = std_mpsc::channel::<anyhow::Result<()>>();
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    std::thread::spawn(move || {
        let result = (|| {
            let conn = rusqlite::Connection::open(&db)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.execute_batch("BEGIN EXCLUSIVE")?;
            Ok::<_, rusqlite::Error>(conn)
        })();
        match result {
            Ok(conn) => {
                let _ = locked_tx.send(Ok(()));
                let _ = release_rx.recv();
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e) => {
                let _ = locked_tx.send(Err(e.into()));
            }
        }
    });
    locked_rx.recv_timeout(Duration::from_secs(40))??;
    Ok(release_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_storage_bounds_memory_stops_reading_and_recovers() -> anyhow::Result<()> {
    // Few connections with a deep window: unbounded buffering in fleetpulse would show as
    // tens of thousands of messages received while nothing commits. The ingest journal
    // goes on acknowledging while the store is stalled, up to its bound (1 MiB here,
    // about 6 000 readings of these devices), and then the same backpressure applies.
    const DEVICES: usize = 100;
    const PER_DEVICE: u64 = 1_000;
    const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;
    const RSS_LIMIT_MIB: f64 = 200.0;
    const JOURNAL_MIB: u64 = 1;
    let data = tempfile::tempdir()?;
    let mut app = App::spawn_with_env(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[("FLEETPULSE_INGEST__JOURNAL__MAX_UNAPPLIED_MIB", "1")],
    )
    .await?;
    let addr = app.mqtt.expect("built-in endpoint");

    let mut config = SwarmConfig::new(addr, "ST", DEVICES, PER_DEVICE);
    config.window = 500;
    let serials = config.serials.clone();
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(30)).await?;
    swarm.go();
    eventually(Duration::from_secs(30), "some readings stored", || async {
        Ok((ingest_counter(&app, "readings_stored").await? >= 2_000).then_some(()))
    })
    .await?;

    let release = hold_write_lock(db_path(data.path()))?;
    eventually(Duration::from_secs(30), "a commit to fail", || async {
        Ok((ingest_counter(&app, "commit_errors").await? >= 1).then_some(()))
    })
    .await?;
    // The pipeline is full and the connections stop being read: `received` stops.
    // Sampled once a second; the stall has to last a whole interval to count.
    let mut last = ingest_counter(&app, "received_messages").await?;
    let mut peak_rss: f64 = 0.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let plateau = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(rss_mib(&app.child)?);
        let now = ingest_counter(&app, "received_messages").await?;
        if now == last {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "received_messages kept growing ({now}) while nothing commits"
        );
        last = now;
    };
    let stored_at_stall = ingest_counter(&app, "readings_stored").await?;
    let published = swarm.counters().published.load(Ordering::Relaxed);
    let acked = swarm.counters().acked.load(Ordering::Relaxed);
    eprintln!(
        "stalled: {published} published, {plateau} received, {stored_at_stall} stored, \
         {acked} acked, peak RSS {peak_rss:.1} MiB"
    );
    // Bounded: the pipeline holds at most three batches (one being journaled, one
    // waiting, one gathering; `ingest.batch.max_readings` = 8 000 each) besides its
    // queue, and the journal its bound (one record of up to 8 000 past it, since the
    // bound is checked before an append; a reading here is over 100 bytes of JSON) — far
    // below what the devices have put on the wire.
    let held = plateau - stored_at_stall;
    let journal_bound = JOURNAL_MIB * (1 << 20) / 100 + 8_000;
    assert!(
        held <= 3 * 8_000 + DEVICES as u64 + journal_bound,
        "{held} messages held in memory and journal"
    );
    assert!(
        acked < published,
        "acknowledgements stopped once the journal was full ({acked} of {published})"
    );
    assert!(
        published > plateau + 5_000,
        "devices kept sending ({published} published) while fleetpulse stopped reading at {plateau}"
    );
    // Memory stays bounded while the stall goes on.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_rss = peak_rss.max(rss_mib(&app.child)?);
    }
    assert!(
        peak_rss < RSS_LIMIT_MIB,
        "RSS {peak_rss:.1} MiB during the stall"
    );
    assert_eq!(
        ingest_counter(&app, "readings_stored").await?,
        stored_at_stall,
        "nothing commits while the lock is held"
    );

    // Storage comes back: everything is stored once and the stream completes.
    let _ = release.send(());
    let recovered = std::time::Instant::now();
    let report = swarm.finish(Duration::from_secs(60)).await?;
    let took = recovered.elapsed();
    assert_eq!(report.counters.acked, TOTAL);
    eprintln!(
        "recovered: {} readings stored {:.1} s after the lock was released ({:.0}/s)",
        TOTAL - stored_at_stall,
        took.as_secs_f64(),
        (TOTAL - stored_at_stall) as f64 / took.as_secs_f64()
    );
    app.applied().await?;
    assert_eq!(ingest_counter(&app, "readings_stored").await?, TOTAL);
    app.interrupt().await?;
    assert_exactly_once(&db_path(data.path()), "ST-", &serials, PER_DEVICE)
}
