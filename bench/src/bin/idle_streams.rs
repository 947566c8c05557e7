//! Idle order streams: what 1 000 open `GET /api/v1/orders/stream` connections that
//! receive nothing cost the server. Prints figures; asserts only that every stream opened
//! and that every stream received the one order made while they were open.
//!
//! The release `fleetpulse serve` runs as a separate process on embedded defaults, with
//! `http.streams.max_per_token` raised to `--streams` (all streams use one token). The
//! benchmark reads the server's CPU seconds (utime + stime from `/proc/PID/stat`), its
//! resident set (`VmRSS`) and its open file descriptors (`/proc/PID/fd`):
//! - **before**: no stream open, over `--seconds`;
//! - **idle**: `--streams` streams open and idle, over `--seconds`;
//! - **wake**: one manual order, and the time until every stream has its `order.created`;
//! - **after**: every client hung up, after `--settle-ms`, over `--seconds`.
//!
//! The client needs about `--streams` + 50 file descriptors and so does the server:
//! run it as `ulimit -n 4096; cargo build --release -p fleetpulse -p fleetpulse-bench;
//! target/release/idle_streams`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use fleetpulse_bench::{Fleetpulse, cpu_seconds, default_fleetpulse, ms, wait_until};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Parser, Debug, Clone)]
#[command(about = "fleetpulse: the cost of idle order streams (SSE)")]
struct Args {
    /// Streams held open at once.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Length of each CPU measurement, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Pause after the clients hung up before the `after` figures, ms.
    #[arg(long, default_value_t = 2_000)]
    settle_ms: u64,
    /// The fleetpulse binary (default: `fleetpulse` beside this benchmark's binary).
    #[arg(long)]
    fleetpulse: Option<std::path::PathBuf>,
    /// Where the data directory goes.
    #[arg(long, default_value = "/var/tmp")]
    work_dir: std::path::PathBuf,
}

/// Resident set size now (VmRSS), MiB.
fn vm_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    Ok(kib / 1024.0)
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The server's CPU use over `secs` (share of one core), with RSS and fds at the end.
async fn measure(label: &str, pid: u32, secs: u64) -> anyhow::Result<f64> {
    let (c0, t0) = (cpu_seconds(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let share = (cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64();
    println!(
        "{label:<7} CPU {:>6.2} % of a core over {secs} s | RSS {:>7.1} MiB | {:>5} fds",
        share * 100.0,
        vm_rss_mib(pid)?,
        fds(pid)?
    );
    Ok(share)
}

async fn token(bin: &std::path::Path, data: &std::path::Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin)
        .args([
            "token",
            "create",
            "--role",
            "admin",
            "--name",
            "stream-bench",
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

/// Opens one stream, reports its status, then reads it until `order.created` arrives
/// (counted in `woken`) and on until the task is aborted.
async fn hold_stream(
    http: reqwest::Client,
    url: String,
    auth: String,
    opened: mpsc::Sender<anyhow::Result<()>>,
    woken: Arc<AtomicUsize>,
) {
    let resp = match http.get(&url).header("authorization", auth).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let _ = opened
                .send(Err(anyhow::anyhow!("stream answered {}", r.status())))
                .await;
            return;
        }
        Err(e) => {
            let _ = opened.send(Err(e.into())).await;
            return;
        }
    };
    let _ = opened.send(Ok(())).await;
    let mut resp = resp;
    let mut seen = false;
    while let Ok(Some(chunk)) = resp.chunk().await {
        if !seen && String::from_utf8_lossy(&chunk).contains("order.created") {
            seen = true;
            woken.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a crypto provider of its own (the workspace uses ring)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let bin = args
        .fleetpulse
        .clone()
        .map_or_else(default_fleetpulse, Ok)?;
    println!(
        "idle order streams: {} streams, {} s per measurement; fleetpulse {}",
        args.streams,
        args.seconds,
        bin.display()
    );
    let data = tempfile::tempdir_in(&args.work_dir)?;
    let secret = token(&bin, data.path()).await?;
    let cap = args.streams.to_string();
    let app = Fleetpulse::spawn_with_env(
        &bin,
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[("FLEETPULSE_HTTP__STREAMS__MAX_PER_TOKEN", cap.as_str())],
    )
    .await?;
    let auth = format!("Bearer {secret}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let registered = http
        .post(format!("{}/api/v1/devices", app.api))
        .header("authorization", &auth)
        .json(&json!({"serial": "OC5-B0001", "model": "OC-5A", "status": "at_customer", "region": "north", "address": "1 Main St"}))
        .send()
        .await?;
    anyhow::ensure!(
        registered.status().as_u16() == 201,
        "register: {}",
        registered.status()
    );

    let before = measure("before", app.pid, args.seconds).await?;

    let (tx, mut rx) = mpsc::channel(args.streams);
    let woken = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/api/v1/orders/stream", app.api);
    let t_open = Instant::now();
    let tasks: Vec<_> = (0..args.streams)
        .map(|_| {
            tokio::spawn(hold_stream(
                http.clone(),
                url.clone(),
                auth.clone(),
                tx.clone(),
                woken.clone(),
            ))
        })
        .collect();
    for _ in 0..args.streams {
        rx.recv().await.context("stream task ended")??;
    }
    println!(
        "opened  {} streams in {:.0} ms",
        args.streams,
        ms(t_open.elapsed())
    );
    let idle = measure("idle", app.pid, args.seconds).await?;

    let t_order = Instant::now();
    let order = http
        .post(format!("{}/api/v1/orders", app.api))
        .header("authorization", &auth)
        .json(&json!({"serial": "OC5-B0001", "cause": "customer_call", "kind": "repair", "title": "bench"}))
        .send()
        .await?;
    anyhow::ensure!(order.status().as_u16() == 201, "order: {}", order.status());
    let n = args.streams;
    wait_until(Duration::from_secs(60), || {
        woken.load(Ordering::SeqCst) >= n
    })
    .await
    .context("not every stream received the order")?;
    println!(
        "wake    one order reached all {n} streams {:.0} ms after its POST",
        ms(t_order.elapsed())
    );

    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let after = measure("after", app.pid, args.seconds).await?;
    let (hwm, cpu) = app.stop().await?;
    println!(
        "\n== summary == {} idle streams: {:.2} % of a core (before {:.2} %, after {:.2} %); peak RSS {:.0} MiB; {:.1} CPU s in all",
        args.streams,
        idle * 100.0,
        before * 100.0,
        after * 100.0,
        hwm,
        cpu
    );
    Ok(())
}
