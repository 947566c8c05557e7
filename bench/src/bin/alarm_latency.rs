//! Critical alarm → repair order latency. Prints figures; asserts only that every alarm
//! became exactly one order.
//!
//! The release `fleetpulse serve` runs as a separate process on embedded defaults
//! (built-in MQTT endpoint, SQLite, ingest journal on). `--alarms` registered
//! concentrators (model OC-5A, at a customer) each publish one QoS 1 reading with the
//! critical alarm E101, one every `--gap-ms`, while `--background` other devices publish
//! ordinary telemetry at `--background-rate` readings per second in total. For each
//! alarm it measures, from the moment the reading is handed to the MQTT client:
//! - **PUBACK**: the reading is durable (journal synced);
//! - **stream**: the `order.created` event for that device arrives on the Server-Sent
//!   Events stream `GET /api/v1/orders/stream`;
//! - **API**: `GET /api/v1/orders?serial=…` lists the order (polled every 5 ms, so this
//!   figure carries up to 5 ms of polling).
//!
//! The run happens twice: once with no background load, once with it. Run it with
//! `cargo build --release -p fleetpulse -p fleetpulse-bench` and
//! `target/release/alarm_latency`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetpulse_bench::{Fleetpulse, cpu_seconds, default_fleetpulse, ms};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

#[derive(Parser, Debug, Clone)]
#[command(about = "fleetpulse critical alarm -> repair order latency (SSE stream and API)")]
struct Args {
    /// Devices that each raise one critical alarm.
    #[arg(long, default_value_t = 300)]
    alarms: usize,
    /// Pause between two alarms, ms.
    #[arg(long, default_value_t = 50)]
    gap_ms: u64,
    /// Background devices publishing ordinary telemetry during the loaded run.
    #[arg(long, default_value_t = 500)]
    background: usize,
    /// Background readings per second, all devices together.
    #[arg(long, default_value_t = 5_000)]
    background_rate: u64,
    /// The fleetpulse binary (default: `fleetpulse` beside this benchmark's binary).
    #[arg(long)]
    fleetpulse: Option<std::path::PathBuf>,
    /// Where the data directories go (a fresh one per run).
    #[arg(long, default_value = "/var/tmp")]
    work_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let bin = args
        .fleetpulse
        .clone()
        .map_or_else(default_fleetpulse, Ok)?;
    println!(
        "alarm latency benchmark: {} critical alarms, one every {} ms; loaded run with {} background devices at {} readings/s; fleetpulse {}",
        args.alarms,
        args.gap_ms,
        args.background,
        args.background_rate,
        bin.display()
    );
    let idle = run(&args, &bin, false).await?;
    let loaded = run(&args, &bin, true).await?;
    println!("\n== summary (ms from publish) ==");
    idle.print_line();
    loaded.print_line();
    Ok(())
}

struct RunResult {
    label: String,
    puback: Vec<f64>,
    stream: Vec<f64>,
    api: Vec<f64>,
    background_stored: u64,
    vm_hwm_mib: f64,
    cpu_s: f64,
    elapsed: Duration,
}

impl RunResult {
    fn print_line(&self) {
        println!(
            "{:<8} PUBACK p50 {:>6.1} p99 {:>6.1} | stream p50 {:>6.1} p99 {:>6.1} max {:>6.1} | API p50 {:>6.1} p99 {:>6.1} | {} orders, {} readings stored during the run ({:.0}/s), peak RSS {:.0} MiB, {:.1} CPU s",
            self.label,
            quantile(&self.puback, 0.5),
            quantile(&self.puback, 0.99),
            quantile(&self.stream, 0.5),
            quantile(&self.stream, 0.99),
            quantile(&self.stream, 1.0),
            quantile(&self.api, 0.5),
            quantile(&self.api, 0.99),
            self.stream.len(),
            self.background_stored,
            self.background_stored as f64 / self.elapsed.as_secs_f64(),
            self.vm_hwm_mib,
            self.cpu_s,
        );
    }
}

fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn run(args: &Args, bin: &std::path::Path, loaded: bool) -> anyhow::Result<RunResult> {
    let label = if loaded { "loaded" } else { "idle" };
    println!("\n== {label} ==");
    let data = tempfile::Builder::new()
        .prefix("fleetpulse-alarm-bench-")
        .tempdir_in(&args.work_dir)?;
    let token = admin_token(bin, data.path()).await?;
    let app =
        Fleetpulse::spawn(bin, data.path(), &["serve", "--mqtt-listen", "127.0.0.1:0"]).await?;
    let mqtt = app.mqtt.context("no endpoint address printed")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = app.api.clone();
    let auth = format!("Bearer {token}");

    let serials: Vec<String> = (0..args.alarms)
        .map(|i| format!("AL{}-{i:05}", if loaded { "L" } else { "I" }))
        .collect();
    for s in &serials {
        let resp = http
            .post(format!("{api}/api/v1/devices"))
            .header("authorization", &auth)
            .json(
                &json!({"serial": s, "model": "OC-5A", "status": "at_customer", "region": "north", "address": "1 Main St"}),
            )
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 201,
            "registering {s}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }

    // the order stream, from now on
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stream_task = tokio::spawn(read_stream(
        http.clone(),
        format!("{api}/api/v1/orders/stream"),
        auth.clone(),
        created.clone(),
    ));

    // background telemetry
    let stop_background = tokio_util::sync::CancellationToken::new();
    let mut background = Vec::new();
    if loaded && args.background > 0 {
        let per_device =
            Duration::from_secs_f64(args.background as f64 / args.background_rate as f64);
        for i in 0..args.background {
            background.push(tokio::spawn(background_device(
                mqtt,
                format!("BG-{i:05}"),
                per_device,
                per_device.mul_f64(i as f64 / args.background as f64),
                stop_background.clone(),
            )));
        }
        // let the load settle
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let before = stored(&http, &api, &auth).await?;
    let cpu0 = cpu_seconds(app.pid)?;
    let started = Instant::now();

    // the alarm devices: connect all first, then raise one alarm every gap
    let mut devices = Vec::new();
    for s in &serials {
        devices.push(AlarmDevice::connect(mqtt, s).await?);
    }
    let mut measurements = Vec::new();
    for d in devices {
        measurements.push(tokio::spawn(d.raise(
            http.clone(),
            api.clone(),
            auth.clone(),
            created.clone(),
        )));
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let (mut puback, mut stream, mut api_ms) = (Vec::new(), Vec::new(), Vec::new());
    for m in measurements {
        let (p, s, a) = m.await??;
        puback.push(p);
        stream.push(s);
        api_ms.push(a);
    }
    let elapsed = started.elapsed();
    let after = stored(&http, &api, &auth).await?;
    let cpu_s = cpu_seconds(app.pid)? - cpu0;
    stop_background.cancel();
    for b in background {
        let _ = b.await;
    }
    stream_task.abort();

    // exactly one order per alarm device
    let orders: Value = http
        .get(format!(
            "{api}/api/v1/orders?cause=critical_alarm:E101&limit=1000"
        ))
        .header("authorization", &auth)
        .send()
        .await?
        .json()
        .await?;
    let listed = orders["items"].as_array().map_or(0, Vec::len);
    if listed != serials.len() {
        bail!(
            "{listed} critical-alarm orders for {} alarms",
            serials.len()
        );
    }
    let (hwm, _) = app.stop().await?;
    let r = RunResult {
        label: label.to_owned(),
        puback,
        stream,
        api: api_ms,
        background_stored: after.saturating_sub(before),
        vm_hwm_mib: hwm,
        cpu_s,
        elapsed,
    };
    r.print_line();
    Ok(r)
}

async fn admin_token(bin: &std::path::Path, data: &std::path::Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin)
        .args([
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "alarm-bench",
            "--data",
        ])
        .arg(data)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn stored(http: &reqwest::Client, api: &str, auth: &str) -> anyhow::Result<u64> {
    let h: Value = http
        .get(format!("{api}/health"))
        .header("authorization", auth)
        .send()
        .await?
        .json()
        .await?;
    h["ingest"]["readings_stored"]
        .as_u64()
        .context("health has ingest.readings_stored")
}

/// Reads the Server-Sent Events stream and notes when each device's order was created.
async fn read_stream(
    http: reqwest::Client,
    url: String,
    auth: String,
    created: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    let resp = reqwest::Client::builder()
        .build()?
        .get(url)
        .header("authorization", auth)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    drop(http);
    anyhow::ensure!(resp.status().is_success(), "stream: {}", resp.status());
    let mut resp = resp;
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await? {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let mut kind = "";
            let mut data = "";
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d;
                }
            }
            if kind == "order.created"
                && let Ok(v) = serde_json::from_str::<Value>(data)
                && let Some(serial) = v["event"]["serial"].as_str()
            {
                created.lock().await.entry(serial.to_owned()).or_insert(now);
            }
        }
    }
    Ok(())
}

/// A device publishing ordinary telemetry every `every` until stopped.
async fn background_device(
    mqtt: std::net::SocketAddr,
    serial: String,
    every: Duration,
    offset: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new(&serial, mqtt.ip().to_string(), mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(32);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let topic = format!("fleetpulse/v1/devices/{serial}/telemetry");
    // the devices are spread over the interval
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        let payload = fleetpulse_simulator::swarm::concentrator_reading(
            &serial,
            seq,
            chrono::Utc::now().timestamp_millis(),
        );
        if client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = client.disconnect().await;
    poll.abort();
    Ok(())
}

/// A registered concentrator connected and waiting to raise its alarm.
struct AlarmDevice {
    serial: String,
    client: AsyncClient,
    pubacks: mpsc::UnboundedReceiver<Instant>,
}

impl AlarmDevice {
    async fn connect(mqtt: std::net::SocketAddr, serial: &str) -> anyhow::Result<AlarmDevice> {
        let mut opts = MqttOptions::new(serial, mqtt.ip().to_string(), mqtt.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 8);
        let (tx, pubacks) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected_tx.take() {
                            let _ = c.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(Instant::now());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), connected)
            .await
            .context("CONNACK within 30 s")??;
        Ok(AlarmDevice {
            serial: serial.to_owned(),
            client,
            pubacks,
        })
    }

    /// Publishes the alarm; returns ms to PUBACK, to the stream event, to the API.
    async fn raise(
        mut self,
        http: reqwest::Client,
        api: String,
        auth: String,
        created: Arc<Mutex<HashMap<String, Instant>>>,
    ) -> anyhow::Result<(f64, f64, f64)> {
        let payload = json!({
            "seq": 1,
            "ts": chrono::Utc::now().to_rfc3339(),
            "model": "OC-5A",
            "runtime_hours": 4321.0,
            "filter_life_pct": 80.0,
            "o2_purity_pct": 93.0,
            "alarms": ["E101"],
        })
        .to_string();
        let topic = format!("fleetpulse/v1/devices/{}/telemetry", self.serial);
        let t0 = Instant::now();
        self.client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await?;
        let deadline = Duration::from_secs(30);
        let puback = tokio::time::timeout(deadline, self.pubacks.recv())
            .await
            .context("PUBACK within 30 s")?
            .context("connection task ended")?;
        let url = format!(
            "{api}/api/v1/orders?serial={}&cause=critical_alarm:E101",
            self.serial
        );
        let api_seen = loop {
            let v: Value = http
                .get(&url)
                .header("authorization", &auth)
                .send()
                .await?
                .json()
                .await?;
            if v["items"].as_array().is_some_and(|a| !a.is_empty()) {
                break Instant::now();
            }
            anyhow::ensure!(
                t0.elapsed() < deadline,
                "{}: no order in the API",
                self.serial
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let stream_seen = loop {
            if let Some(t) = created.lock().await.get(&self.serial) {
                break *t;
            }
            anyhow::ensure!(
                t0.elapsed() < deadline,
                "{}: no order.created on the stream",
                self.serial
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let _ = self.client.disconnect().await;
        Ok((
            ms(puback - t0),
            ms(stream_seen.saturating_duration_since(t0)),
            ms(api_seen - t0),
        ))
    }
}
