//! Ingest throughput benchmark. Prints figures; asserts nothing but zero loss.
//!
//! In one run, with the same lean publisher ([`fleetpulse_simulator::Swarm`]: one QoS 1
//! connection per device, a window of PUBLISHes awaiting their PUBACK, resend on
//! reconnect):
//! 1. **Mosquitto ceiling**: a private Mosquitto and plain QoS 1 subscribers that only
//!    count (one subscription, and optionally N shared subscriptions `$share/…`).
//! 2. **Built-in endpoint**: the release `fleetpulse serve` as a separate process; a
//!    PUBACK there means committed, so the swarm's elapsed time is the durable rate.
//! 3. **External mode**: `fleetpulse serve --mqtt-url` on a fresh private Mosquitto; the
//!    durable rate runs until fleetpulse has committed (and acked to the broker) every
//!    reading; the publish → PUBACK latency is the broker's.
//!
//! For each fleetpulse mode it prints the durable rate, p50/p99 PUBACK latency, peak RSS
//! (VmHWM), CPU seconds per 100 000 readings (utime + stime of the fleetpulse process),
//! the rate as a ratio of the broker ceiling, and lost/duplicated readings counted in
//! the SQLite file after a clean stop. Run it with `bench/ingest.sh`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::Parser;
use fleetpulse_bench::{Broker, Fleetpulse, cpu_seconds, default_fleetpulse, ms, wait_until};
use fleetpulse_simulator::{Swarm, SwarmConfig, SwarmReport};
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Subscribe};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "fleetpulse ingest throughput benchmark (both modes + Mosquitto ceiling)")]
struct Args {
    /// Device connections.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Readings per device (one reading per PUBLISH).
    #[arg(long, default_value_t = 100)]
    per_device: u64,
    /// QoS 1 PUBLISHes in flight per connection.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// What to run, comma separated: ceiling, builtin, external.
    #[arg(
        long,
        default_value = "ceiling,builtin,external",
        value_delimiter = ','
    )]
    modes: Vec<String>,
    /// Ingest connections to the broker in external mode (`broker.connections`); more
    /// than one uses a shared subscription. The ceiling is measured with one
    /// subscriber and with this many.
    #[arg(long, default_value_t = 1)]
    broker_connections: usize,
    /// The fleetpulse binary (default: `fleetpulse` beside this benchmark's binary).
    #[arg(long)]
    fleetpulse: Option<PathBuf>,
    /// Where the data directories go (a fresh one per mode).
    #[arg(long, default_value = "/var/tmp")]
    work_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a crypto provider of its own (the workspace uses ring
    // only, and feature unification reaches this binary): install it as `fleetpulse` does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let fleetpulse = args
        .fleetpulse
        .clone()
        .map_or_else(default_fleetpulse, Ok)?;
    check_fd_limit(args.devices)?;
    let total = args.devices as u64 * args.per_device;
    println!(
        "ingest benchmark: {} devices x {} readings = {total} QoS 1 readings, window {} per connection, fleetpulse {}",
        args.devices,
        args.per_device,
        args.window,
        fleetpulse.display()
    );

    let mut ceilings: Vec<(usize, f64)> = Vec::new();
    if args.modes.iter().any(|m| m == "ceiling") {
        let mut subs = vec![1];
        if args.broker_connections > 1 {
            subs.push(args.broker_connections);
        }
        for n in subs {
            let rate = ceiling(&args, n).await?;
            ceilings.push((n, rate));
        }
    }
    let reference = |conns: usize| {
        ceilings
            .iter()
            .find(|(n, _)| *n == conns)
            .or(ceilings.first())
            .map(|(_, r)| *r)
    };

    let mut results = Vec::new();
    if args.modes.iter().any(|m| m == "builtin") {
        let r = builtin(&args, &fleetpulse).await?;
        r.print(reference(1));
        results.push(r);
    }
    if args.modes.iter().any(|m| m == "external") {
        let r = external(&args, &fleetpulse).await?;
        r.print(reference(args.broker_connections));
        results.push(r);
    }

    println!("\n== summary ==");
    for (n, rate) in &ceilings {
        println!("mosquitto ceiling, {n} subscriber(s): {rate:.0} msg/s");
    }
    for r in &results {
        r.print_line(reference(if r.mode == "builtin" {
            1
        } else {
            args.broker_connections
        }));
    }
    if results.iter().any(|r| r.lost + r.duplicated > 0) {
        bail!("readings were lost or duplicated");
    }
    Ok(())
}

fn check_fd_limit(devices: usize) -> anyhow::Result<()> {
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()?;
    let limit: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    let need = devices as u64 + 512;
    anyhow::ensure!(
        limit >= need,
        "open-file limit {limit} is below the {need} this run needs: raise it (`ulimit -n {need}`; bench/ingest.sh raises it to the hard limit)"
    );
    Ok(())
}

fn swarm_config(args: &Args, addr: SocketAddr, prefix: &str) -> SwarmConfig {
    let mut config = SwarmConfig::new(addr, prefix, args.devices, args.per_device);
    config.window = args.window;
    config
}

async fn run_swarm(config: SwarmConfig) -> anyhow::Result<(Swarm, Instant)> {
    let swarm = Swarm::start(config);
    swarm.connected(Duration::from_secs(180)).await?;
    let go = Instant::now();
    swarm.go();
    Ok((swarm, go))
}

// ---------------------------------------------------------------- Mosquitto ceiling

async fn ceiling(args: &Args, subscribers: usize) -> anyhow::Result<f64> {
    println!("\n== mosquitto ceiling: {subscribers} counting QoS 1 subscriber(s) ==");
    let broker = Broker::start().await?;
    let count = Arc::new(AtomicU64::new(0));
    let filter = if subscribers > 1 {
        "$share/bench/fleetpulse/v1/devices/+/telemetry"
    } else {
        "fleetpulse/v1/devices/+/telemetry"
    };
    let mut subs = Vec::new();
    for i in 0..subscribers {
        subs.push(tokio::spawn(count_messages(
            broker.addr,
            format!("bench-counter-{i}"),
            filter.to_owned(),
            count.clone(),
        )));
    }
    // the subscriptions must be in place before anything is published
    wait_until(Duration::from_secs(10), || {
        count.load(Ordering::Relaxed) >= subscribers as u64
    })
    .await?;
    count.store(0, Ordering::Relaxed);
    let total = args.devices as u64 * args.per_device;
    let (swarm, go) = run_swarm(swarm_config(args, broker.addr, "BC")).await?;
    wait_until(Duration::from_secs(600), || {
        count.load(Ordering::Relaxed) >= total
    })
    .await?;
    let elapsed = go.elapsed();
    let report = swarm.finish(Duration::from_secs(60)).await?;
    for s in subs {
        s.abort();
    }
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "{total} messages counted in {:.2} s: {rate:.0} msg/s (broker PUBACK p50 {:.1} ms, p99 {:.1} ms)",
        elapsed.as_secs_f64(),
        ms(report.latency_quantile(0.5)),
        ms(report.latency_quantile(0.99)),
    );
    Ok(rate)
}

/// A plain QoS 1 subscriber that PUBACKs and counts every PUBLISH. Adds 1 to `count`
/// once its SUBACK arrived (the caller resets it before publishing).
async fn count_messages(
    addr: SocketAddr,
    client_id: String,
    filter: String,
    count: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 0;
    Packet::Connect(connect).write(&mut out, usize::MAX)?;
    let mut sub = Subscribe::new(filter, QoS::AtLeastOnce);
    sub.pkid = 1;
    Packet::Subscribe(sub).write(&mut out, usize::MAX)?;
    stream.write_all(&out).await?;
    out.clear();
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match Packet::read(&mut inbuf, usize::MAX) {
                Ok(Packet::Publish(p)) => {
                    Packet::PubAck(PubAck::new(p.pkid)).write(&mut out, usize::MAX)?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Packet::SubAck(_)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => bail!("subscriber: {e}"),
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        inbuf.reserve(64 * 1024);
        if stream.read_buf(&mut inbuf).await? == 0 {
            bail!("broker closed the subscriber's connection");
        }
    }
}

// ---------------------------------------------------------------- fleetpulse modes

struct ModeResult {
    mode: &'static str,
    total: u64,
    /// Start signal → every reading durable and acked (built-in: the last PUBACK;
    /// external: fleetpulse acked every delivery to the broker).
    elapsed: Duration,
    /// Start signal → every reading applied to the store (queryable through the API).
    applied: Duration,
    swarm: SwarmReport,
    vm_hwm_mib: f64,
    cpu_s: f64,
    lost: u64,
    duplicated: u64,
}

impl ModeResult {
    fn rate(&self) -> f64 {
        self.total as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, ceiling: Option<f64>) {
        println!(
            "{}: {} readings durable in {:.2} s = {:.0} readings/s{}",
            self.mode,
            self.total,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ceiling.map_or(String::new(), |c| format!(
                " ({:.0} % of the broker ceiling {c:.0}/s)",
                100.0 * self.rate() / c
            )),
        );
        println!(
            "  every reading applied to the store (queryable) after {:.2} s = {:.0} readings/s",
            self.applied.as_secs_f64(),
            self.total as f64 / self.applied.as_secs_f64()
        );
        println!(
            "  publish→PUBACK p50 {:.1} ms, p99 {:.1} ms; resent {}, reconnects {}, PUBACKs out of order {}",
            ms(self.swarm.latency_quantile(0.5)),
            ms(self.swarm.latency_quantile(0.99)),
            self.swarm.counters.resent,
            self.swarm.counters.reconnects,
            self.swarm.counters.out_of_order_acks,
        );
        println!(
            "  fleetpulse peak RSS (VmHWM) {:.1} MiB, CPU {:.2} s per 100 000 readings ({:.1} s total)",
            self.vm_hwm_mib,
            self.cpu_s * 100_000.0 / self.total as f64,
            self.cpu_s
        );
        println!("  lost {}, duplicated {}", self.lost, self.duplicated);
    }

    fn print_line(&self, ceiling: Option<f64>) {
        println!(
            "{:8} {:>8.0} readings/s  applied {:>8.0}/s  ratio {:>5}  p50 {:>6.1} ms  p99 {:>7.1} ms  VmHWM {:>6.1} MiB  CPU {:.2} s/100k  lost {} dup {}",
            self.mode,
            self.rate(),
            self.total as f64 / self.applied.as_secs_f64(),
            ceiling.map_or("-".into(), |c| format!("{:.2}", self.rate() / c)),
            ms(self.swarm.latency_quantile(0.5)),
            ms(self.swarm.latency_quantile(0.99)),
            self.vm_hwm_mib,
            self.cpu_s * 100_000.0 / self.total as f64,
            self.lost,
            self.duplicated
        );
    }
}

async fn builtin(args: &Args, bin: &Path) -> anyhow::Result<ModeResult> {
    println!("\n== built-in endpoint ==");
    let data = tempfile::tempdir_in(&args.work_dir)?;
    let app =
        Fleetpulse::spawn(bin, data.path(), &["serve", "--mqtt-listen", "127.0.0.1:0"]).await?;
    let addr = app.mqtt.context("no endpoint address printed")?;
    let cpu0 = cpu_seconds(app.pid)?;
    let total = args.devices as u64 * args.per_device;
    let (swarm, go) = run_swarm(swarm_config(args, addr, "BB")).await?;
    let report = swarm.finish(Duration::from_secs(1800)).await?;
    let elapsed = go.elapsed();
    wait_for_health(&app.api, "readings_stored", total).await?;
    let applied = go.elapsed();
    finish_mode(
        "builtin",
        args,
        app.stop().await?,
        cpu0,
        (elapsed, applied),
        report,
        data.path(),
    )
}

async fn external(args: &Args, bin: &Path) -> anyhow::Result<ModeResult> {
    println!(
        "\n== external Mosquitto, {} ingest connection(s) ==",
        args.broker_connections
    );
    let broker = Broker::start().await?;
    let data = tempfile::tempdir_in(&args.work_dir)?;
    let url = format!("mqtt://{}", broker.addr);
    let conns = args.broker_connections.to_string();
    let mut env = vec![("FLEETPULSE_BROKER__CLIENT_ID", "fleetpulse-bench")];
    if args.broker_connections > 1 {
        env.push(("FLEETPULSE_BROKER__CONNECTIONS", conns.as_str()));
    }
    let app =
        Fleetpulse::spawn_with_env(bin, data.path(), &["serve", "--mqtt-url", &url], &env).await?;
    let http = reqwest::Client::new();
    let health = format!("{}/health", app.api);
    let stored = || async {
        let body: serde_json::Value = http.get(&health).send().await?.json().await?;
        anyhow::Ok((
            body["ingest"]["connected"].as_bool().unwrap_or(false),
            body["ingest"]["readings_stored"].as_u64().unwrap_or(0),
        ))
    };
    let started = Instant::now();
    while !stored().await?.0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "ingest never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu0 = cpu_seconds(app.pid)?;
    let total = args.devices as u64 * args.per_device;
    let (swarm, go) = run_swarm(swarm_config(args, broker.addr, "BX")).await?;
    wait_for_health(&app.api, "acked", total).await?;
    let elapsed = go.elapsed();
    wait_for_health(&app.api, "readings_stored", total).await?;
    let applied = go.elapsed();
    let report = swarm.finish(Duration::from_secs(60)).await?;
    finish_mode(
        "external",
        args,
        app.stop().await?,
        cpu0,
        (elapsed, applied),
        report,
        data.path(),
    )
}

/// Polls `/health` until `ingest.<counter>` reaches `total` (30 minutes at most).
async fn wait_for_health(api: &str, counter: &str, total: u64) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let health = format!("{api}/health");
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let body: serde_json::Value = http.get(&health).send().await?.json().await?;
        if body["ingest"][counter].as_u64().unwrap_or(0) >= total {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "fleetpulse never reported {counter} = {total}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finish_mode(
    mode: &'static str,
    args: &Args,
    (vm_hwm_mib, cpu_end): (f64, f64),
    cpu0: f64,
    (elapsed, applied): (Duration, Duration),
    swarm: SwarmReport,
    data: &Path,
) -> anyhow::Result<ModeResult> {
    let (lost, duplicated) = count_lost_and_duplicated(&data.join("fleetpulse.db"), args)?;
    let result = ModeResult {
        mode,
        total: args.devices as u64 * args.per_device,
        elapsed,
        applied,
        swarm,
        vm_hwm_mib,
        cpu_s: cpu_end - cpu0,
        lost,
        duplicated,
    };
    Ok(result)
}

/// Compares the readings table with what was published: every (serial, seq) of
/// 1..=per_device for each device, once.
fn count_lost_and_duplicated(db: &Path, args: &Args) -> anyhow::Result<(u64, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (rows, distinct, in_range): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT serial || '/' || seq), \
         SUM(seq BETWEEN 1 AND ?1) FROM readings",
        [i64::try_from(args.per_device)?],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            ))
        },
    )?;
    let devices: i64 = conn.query_row("SELECT COUNT(DISTINCT serial) FROM readings", [], |r| {
        r.get(0)
    })?;
    let expected = args.devices as u64 * args.per_device;
    let duplicated = u64::try_from(rows - distinct)?;
    let lost = expected.saturating_sub(u64::try_from(in_range)?);
    println!("  store: {rows} rows, {distinct} distinct (serial, seq), {devices} devices");
    Ok((lost, duplicated))
}
