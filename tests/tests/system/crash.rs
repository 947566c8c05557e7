//! Guarantee 2: SIGKILL fleetpulse several times at seeded random moments while 1 000
//! firmware-like device connections send 100 000 readings, restart it each time on the
//! same data directory; afterwards the store holds every published reading exactly once.
//! Once directly against the built-in endpoint, once through a real Mosquitto.
//!
//! This is also guarantee 1 shown end to end: a device forgets a reading once it has its
//! PUBACK (it never resends it), so a reading acked before it was durable would be
//! missing after the kills; and on the built-in endpoint every connection's PUBACKs must
//! arrive in the order of its PUBLISHes.
//!
//! The seed is printed; `FLEETPULSE_TEST_SEED=N` replays a run's kill points.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fleetpulse_simulator::{Swarm, SwarmConfig};
use fleetpulse_system_tests::load::{assert_exactly_once, db_path};
use fleetpulse_system_tests::{App, Mosquitto, eventually, free_port};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const DEVICES: usize = 1_000;
const PER_DEVICE: u64 = 100;
const TOTAL: u64 = DEVICES as u64 * PER_DEVICE;
const KILLS: usize = 3;

fn seed() -> u64 {
    let seed = std::env::var("FLEETPULSE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_123_u64);
    eprintln!("kill points seeded with FLEETPULSE_TEST_SEED={seed}");
    seed
}

/// `KILLS` progress points (fractions of the total) in increasing order, spread so each
/// kill lands while plenty is still in flight.
fn kill_points(rng: &mut ChaCha8Rng) -> Vec<u64> {
    let mut points: Vec<u64> = (0..KILLS)
        .map(|i| {
            let lo = 0.1 + 0.25 * i as f64;
            let frac = rng.random_range(lo..lo + 0.2);
            (TOTAL as f64 * frac) as u64
        })
        .collect();
    points.sort_unstable();
    points
}

async fn stored_in_store(app: &App) -> anyhow::Result<u64> {
    app.stored_readings().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_survives_repeated_sigkill_under_1000_connections() -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let data = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["serve", "--mqtt-listen", listen.as_str()];
    let mut app = App::spawn(data.path(), &args).await?;

    let mut config = SwarmConfig::new(listen.parse()?, "CB", DEVICES, PER_DEVICE);
    config.window = 8;
    let serials = config.serials.clone();
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(60)).await?;
    swarm.go();
    let counters = swarm.counters().clone();

    for (i, point) in kill_points(&mut rng).into_iter().enumerate() {
        eventually(
            Duration::from_secs(60),
            &format!("{point} readings acknowledged before kill {i}"),
            || {
                let n = counters.acked.load(Ordering::Relaxed);
                async move { Ok((n >= point).then_some(())) }
            },
        )
        .await?;
        app.kill().await;
        let acked = counters.acked.load(Ordering::Relaxed);
        eprintln!("kill {i}: SIGKILL at {acked} of {TOTAL} acknowledged");
        assert!(acked < TOTAL, "kill {i} came after the stream ended");
        app = App::spawn(data.path(), &args).await?;
    }

    let report = swarm.finish(Duration::from_secs(120)).await?;
    assert_eq!(report.counters.acked, TOTAL, "every reading acknowledged");
    assert_eq!(
        report.counters.unexpected_acks, 0,
        "no PUBACK for an unknown id"
    );
    assert_eq!(
        report.counters.out_of_order_acks, 0,
        "PUBACKs in arrival order"
    );
    assert!(
        report.counters.resent > 0,
        "the kills interrupted readings in flight, which the devices resent: {:?}",
        report.counters
    );
    app.interrupt().await?;
    assert_exactly_once(&db_path(data.path()), "CB-", &serials, PER_DEVICE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_survives_repeated_sigkill_under_1000_connections() -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed().wrapping_add(1));
    let broker = Mosquitto::start().await?;
    let data = tempfile::tempdir()?;
    let client_id = "fleetpulse-crash";
    let mut app = App::serve_external(data.path(), broker.addr, client_id).await?;
    wait_subscribed(&app).await?;

    let config = SwarmConfig::new(broker.addr, "CX", DEVICES, PER_DEVICE);
    let serials = config.serials.clone();
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(60)).await?;
    swarm.go();

    for (i, point) in kill_points(&mut rng).into_iter().enumerate() {
        eventually(
            Duration::from_secs(60),
            &format!("{point} readings stored before kill {i}"),
            || async { Ok((stored_in_store(&app).await? >= point).then_some(())) },
        )
        .await?;
        app.kill().await;
        eprintln!("kill {i}: SIGKILL after {point}+ of {TOTAL} stored");
        app = App::serve_external(data.path(), broker.addr, client_id).await?;
    }

    // The broker acknowledged every PUBLISH to the devices; it holds what fleetpulse has
    // not acked for its persistent session.
    let report = swarm.finish(Duration::from_secs(120)).await?;
    assert_eq!(report.counters.acked, TOTAL);
    let stored = eventually(Duration::from_secs(90), "every reading stored", || async {
        let n = stored_in_store(&app).await?;
        Ok((n >= TOTAL).then_some(n))
    })
    .await?;
    assert_eq!(stored, TOTAL, "stored count");
    app.interrupt().await?;
    assert_exactly_once(&db_path(data.path()), "CX-", &serials, PER_DEVICE)
}

async fn wait_subscribed(app: &App) -> anyhow::Result<()> {
    eventually(
        Duration::from_secs(20),
        "ingest subscribed on the broker",
        || async {
            Ok((app.get_ok("/health").await?["ingest"]["connected"] == json!(true)).then_some(()))
        },
    )
    .await
}
