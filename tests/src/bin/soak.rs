//! The fault-matrix soak (issue 20, "nothing stops the line"): drives the fleetpulse
//! binary (build it with `--release`) for a chosen time with firmware-like publishers and
//! injects faults at random, one at a time, then checks that every acknowledged reading
//! is stored exactly once and every refused message left exactly one dead letter.
//!
//! Two legs run side by side, each with its own data directory:
//! - **builtin**: devices on fleetpulse's built-in MQTT endpoint (a PUBACK means durable);
//! - **external**: devices on a Mosquitto broker (persistent session, graceful restarts),
//!   fleetpulse subscribed to it.
//!
//! Devices are [`Swarm`] connections: each keeps what was not acknowledged and resends it
//! (DUP) after a reconnect, and forgets a reading once acknowledged, so an acknowledged
//! reading that is lost shows up as missing. Poison devices on both legs send only
//! messages the store must refuse (seq 2^63, a value of 1.7e308, text that is not JSON,
//! a wrong type, a payload over the limit), each with a unique key in its first bytes.
//!
//! Faults (drawn with the seed): SIGKILL and restart, SIGTERM and restart, a broker
//! restart, the disk full and freed (the data directories live on a real ext4 file
//! system on a loop device; a ballast file takes every free block), slow storage (a blkio
//! cgroup throttles the loop device's writes to a few IOPS), SIGKILL while the disk is
//! full or slow, and slow HTTP clients (slowloris connections and order streams that are
//! never read) while `/health` is timed. Disk faults need root; without it they are left
//! out and the run says so.
//!
//! `scripts/soak` builds and runs it; `--help` lists the knobs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetpulse_simulator::{Swarm, SwarmConfig, SwarmCounters};
use fleetpulse_system_tests::load::{PersistentMosquitto, db_path, signal, stored_seqs};
use fleetpulse_system_tests::{App, eventually, free_port, http_client};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{Connection, OpenFlags};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Fault-matrix soak of the fleetpulse binary (FLEETPULSE_BIN)")]
struct Args {
    /// How long faults are injected, in minutes (then the devices finish and it checks).
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seed of the fault schedule (printed; the same seed draws the same faults).
    #[arg(long)]
    seed: Option<u64>,
    /// Devices per leg.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Milliseconds between two readings of one device.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Poison devices per leg (one refused message every `poison_interval_ms` each).
    #[arg(long, default_value_t = 5)]
    poison_devices: usize,
    #[arg(long, default_value_t = 2_000)]
    poison_interval_ms: u64,
    /// Size of the file system that holds the data directories, in MiB.
    #[arg(long, default_value_t = 2_048)]
    fs_mib: u64,
    /// Seconds between two faults (drawn uniformly from 0.5× to 1.5×).
    #[arg(long, default_value_t = 40)]
    fault_every_s: u64,
    /// Leave out the disk faults even when running as root.
    #[arg(long)]
    no_disk_faults: bool,
}

/// A faulty file system: ext4 on a loop device over a sparse file, with a blkio cgroup
/// whose write throttle makes it slow.
struct Disk {
    image: PathBuf,
    device: String,
    majmin: String,
    mount: tempfile::TempDir,
    cgroup: Option<PathBuf>,
    ballast: PathBuf,
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = StdCommand::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Disk {
    fn setup(mib: u64) -> anyhow::Result<Disk> {
        anyhow::ensure!(rustix::process::geteuid().is_root(), "not root");
        let image =
            std::env::temp_dir().join(format!("fleetpulse-soak-{}.img", std::process::id()));
        // Preallocated, not sparse: the file system under test must only fill up when the
        // soak fills it. A sparse image on a host disk that filled up lost writes under
        // ext4 in a first run ("Buffer I/O error on device loop0").
        run(
            "fallocate",
            &["-l", &format!("{mib}MiB"), &image.display().to_string()],
        )
        .context("preallocating the file-system image (is there enough free space?)")?;
        let device = run("losetup", &["-f", "--show", &image.display().to_string()])?;
        // -m 0: no blocks reserved for root (fleetpulse runs as root here, and the ballast
        // must take every block).
        run("mkfs.ext4", &["-q", "-m", "0", &device])?;
        let mount = tempfile::tempdir()?;
        run("mount", &[&device, &mount.path().display().to_string()])?;
        let name = device.trim_start_matches("/dev/");
        let majmin = std::fs::read_to_string(format!("/sys/block/{name}/dev"))?
            .trim()
            .to_owned();
        let cgroup = {
            let dir = PathBuf::from(format!(
                "/sys/fs/cgroup/blkio/fleetpulse-soak-{}",
                std::process::id()
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    println!("slow storage left out: no blkio cgroup ({e})");
                    None
                }
            }
        };
        let ballast = mount.path().join("ballast");
        Ok(Disk {
            image,
            device,
            majmin,
            mount,
            cgroup,
            ballast,
        })
    }

    fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.mount.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn available_bytes(&self) -> anyhow::Result<u64> {
        let out = run(
            "df",
            &[
                "--output=avail",
                "-B1",
                &self.mount.path().display().to_string(),
            ],
        )?;
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .context("df output")
    }

    /// Takes every free block (a preallocated file, then writes until ENOSPC).
    fn fill(&self) -> anyhow::Result<()> {
        let avail = self.available_bytes()?;
        if avail > 1 << 20 {
            let len = (avail - (256 << 10)).to_string();
            run(
                "fallocate",
                &["-l", &len, &self.ballast.display().to_string()],
            )?;
        }
        let mut rest = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ballast.with_extension("rest"))?;
        let chunk = vec![0u8; 4096];
        loop {
            if let Err(e) = rest.write_all(&chunk).and_then(|()| rest.sync_data()) {
                if e.raw_os_error() == Some(28) {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }

    fn free(&self) -> anyhow::Result<()> {
        for path in [self.ballast.clone(), self.ballast.with_extension("rest")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Throttles writes to the file system to `iops` per second for the processes in the
    /// cgroup (0: no throttle).
    fn throttle(&self, iops: u32) -> anyhow::Result<()> {
        if let Some(cg) = &self.cgroup {
            std::fs::write(
                cg.join("blkio.throttle.write_iops_device"),
                format!("{} {iops}", self.majmin),
            )?;
        }
        Ok(())
    }

    fn enroll(&self, pid: u32) {
        if let Some(cg) = &self.cgroup
            && let Err(e) = std::fs::write(cg.join("cgroup.procs"), pid.to_string())
        {
            println!("could not put pid {pid} in the blkio cgroup: {e}");
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.free();
        let _ = self.throttle(0);
        let _ = StdCommand::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
        let _ = StdCommand::new("losetup")
            .args(["-d", &self.device])
            .status();
        let _ = std::fs::remove_file(&self.image);
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// What a poison device sends as its message number `n` (every one must be refused):
/// a unique key first, so its dead letter can be matched even when only the first bytes
/// are kept.
fn poison(serial: &str, n: u64) -> Vec<u8> {
    let key = format!("{serial}/{n}");
    match n % 5 {
        0 => {
            format!(r#"{{"n":"{key}","seq":9223372036854775808,"ts":1765000000000}}"#).into_bytes()
        }
        1 => format!(r#"{{"n":"{key}","seq":{n},"ts":1765000000000,"flow_lpm":1.7e308}}"#)
            .into_bytes(),
        2 => format!("{key} is not JSON {{").into_bytes(),
        3 => format!(r#"{{"n":"{key}","seq":"abc","ts":"yesterday"}}"#).into_bytes(),
        _ => {
            let mut p = format!(r#"{{"n":"{key}","pad":""#).into_bytes();
            p.resize(300 * 1024, b'x');
            p.extend_from_slice(b"\"}");
            p
        }
    }
}

fn poison_key(payload: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(64)]).into_owned();
    let start = text.find("PZ")?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '/'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Builtin,
    External,
}

/// One fleetpulse process, its devices and its poison devices.
struct Leg {
    name: &'static str,
    mode: Mode,
    data: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    app: Option<App>,
    devices: Option<Swarm>,
    counters: Arc<SwarmCounters>,
    serials: Vec<String>,
    per_device: u64,
    poison: Option<Swarm>,
    poison_counters: Arc<SwarmCounters>,
    poison_serials: Vec<String>,
    poison_per_device: u64,
    restarts: u64,
    failed_starts: u64,
}

impl Leg {
    async fn start_app(&mut self, disk: Option<&Disk>) -> anyhow::Result<()> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let app = App::spawn_with_env(&self.data, &args, &env).await?;
        if let (Some(disk), Some(pid)) = (disk, app.child.id()) {
            disk.enroll(pid);
        }
        self.app = Some(app);
        Ok(())
    }

    /// Starts again until it comes up (a start can fail while the disk is full).
    async fn restart(&mut self, disk: Option<&Disk>) {
        self.restarts += 1;
        loop {
            match self.start_app(disk).await {
                Ok(()) => return,
                Err(e) => {
                    self.failed_starts += 1;
                    println!("  {}: start failed, retrying in 2 s: {e:#}", self.name);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn kill(&mut self) {
        if let Some(mut app) = self.app.take() {
            app.kill().await;
        }
    }

    async fn terminate(&mut self) -> anyhow::Result<Duration> {
        let mut app = self.app.take().context("not running")?;
        let t = Instant::now();
        signal(&app.child, "TERM")?;
        let status = tokio::time::timeout(Duration::from_secs(90), app.child.wait())
            .await
            .context("no exit within 90 s of SIGTERM")??;
        anyhow::ensure!(status.success(), "exited with {status} after SIGTERM");
        Ok(t.elapsed())
    }

    async fn stored(&self) -> Option<u64> {
        let app = self.app.as_ref()?;
        app.stored_readings().await.ok()
    }
}

#[derive(Default)]
struct Tally {
    faults: BTreeMap<&'static str, u64>,
    health_probes: u64,
    health_slow: u64,
    health_max: Duration,
    sigterm_max: Duration,
    problems: Vec<String>,
}

struct Soak {
    args: Args,
    rng: ChaCha8Rng,
    disk: Option<Disk>,
    broker: PersistentMosquitto,
    legs: Vec<Leg>,
    tally: Tally,
    started: Instant,
}

fn devices_config(addr: SocketAddr, prefix: &str, args: &Args, n: u64) -> SwarmConfig {
    let mut config = SwarmConfig::new(addr, prefix, args.devices, n);
    config.window = 8;
    config.connect_concurrency = 64;
    config.max_backoff = Duration::from_secs(2);
    config.interval = Some(Duration::from_millis(args.interval_ms));
    config
}

fn poison_config(addr: SocketAddr, prefix: &str, args: &Args, n: u64) -> SwarmConfig {
    let mut config = SwarmConfig::new(addr, prefix, args.poison_devices, n);
    config.window = 2;
    config.max_backoff = Duration::from_secs(2);
    config.interval = Some(Duration::from_millis(args.poison_interval_ms));
    config.payload = Arc::new(poison);
    config
}

impl Soak {
    async fn setup(args: Args) -> anyhow::Result<Soak> {
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_007)
        });
        println!("fault schedule seeded with --seed {seed}");
        let disk = if args.no_disk_faults {
            println!("disk faults left out (--no-disk-faults)");
            None
        } else {
            match Disk::setup(args.fs_mib) {
                Ok(d) => {
                    println!(
                        "data on ext4 ({} MiB) on {} ({}), mounted at {}",
                        args.fs_mib,
                        d.device,
                        d.majmin,
                        d.mount.path().display()
                    );
                    Some(d)
                }
                Err(e) => {
                    println!("disk faults left out: cannot set up a loop file system ({e:#})");
                    None
                }
            }
        };
        let scratch =
            std::env::temp_dir().join(format!("fleetpulse-soak-data-{}", std::process::id()));
        let data_dir = |name: &str| -> anyhow::Result<PathBuf> {
            match &disk {
                Some(d) => d.dir(name),
                None => {
                    let dir = scratch.join(name);
                    std::fs::create_dir_all(&dir)?;
                    Ok(dir)
                }
            }
        };
        let broker = PersistentMosquitto::start(free_port()).await?;
        let per_device = ((args.minutes * 60_000.0) / args.interval_ms as f64).ceil() as u64;
        let poison_per_device =
            ((args.minutes * 60_000.0) / args.poison_interval_ms as f64).ceil() as u64;

        let mqtt_port = free_port();
        let builtin_addr: SocketAddr = format!("127.0.0.1:{mqtt_port}").parse()?;
        let mut legs = Vec::new();
        for (name, mode) in [("builtin", Mode::Builtin), ("external", Mode::External)] {
            let (args_v, env, addr, prefix) = match mode {
                Mode::Builtin => (
                    vec![
                        "serve".to_owned(),
                        "--mqtt-listen".to_owned(),
                        builtin_addr.to_string(),
                    ],
                    vec![],
                    builtin_addr,
                    ("SB", "PZB"),
                ),
                Mode::External => (
                    vec![
                        "serve".to_owned(),
                        "--mqtt-url".to_owned(),
                        format!("mqtt://{}", broker.addr),
                    ],
                    vec![(
                        "FLEETPULSE_BROKER__CLIENT_ID".to_owned(),
                        "fleetpulse-soak".to_owned(),
                    )],
                    broker.addr,
                    ("SX", "PZX"),
                ),
            };
            let devices = devices_config(addr, prefix.0, &args, per_device);
            let poison = poison_config(addr, prefix.1, &args, poison_per_device);
            legs.push(Leg {
                name,
                mode,
                data: data_dir(name)?,
                args: args_v,
                env: env
                    .into_iter()
                    .chain([(
                        "FLEETPULSE_INGEST__RETRY__MAX_BACKOFF_MS".to_owned(),
                        "1000".to_owned(),
                    )])
                    .collect(),
                app: None,
                serials: devices.serials.clone(),
                per_device,
                poison_serials: poison.serials.clone(),
                poison_per_device,
                devices: Some(Swarm::start(devices)),
                counters: Arc::default(),
                poison: Some(Swarm::start(poison)),
                poison_counters: Arc::default(),
                restarts: 0,
                failed_starts: 0,
            });
        }
        for leg in &mut legs {
            leg.counters = leg
                .devices
                .as_ref()
                .map(|s| s.counters().clone())
                .unwrap_or_default();
            leg.poison_counters = leg
                .poison
                .as_ref()
                .map(|s| s.counters().clone())
                .unwrap_or_default();
            leg.start_app(disk.as_ref()).await?;
        }
        // Wait for every device's first connection, then let them all go.
        for leg in &legs {
            leg.devices
                .as_ref()
                .context("devices")?
                .connected(Duration::from_secs(120))
                .await?;
            leg.poison
                .as_ref()
                .context("poison")?
                .connected(Duration::from_secs(120))
                .await?;
        }
        for leg in &legs {
            leg.devices.as_ref().context("devices")?.go();
            leg.poison.as_ref().context("poison")?.go();
        }
        println!(
            "{} devices per leg, a reading every {} ms each ({} per device); {} poison devices per leg, one every {} ms ({} each)",
            args.devices,
            args.interval_ms,
            per_device,
            args.poison_devices,
            args.poison_interval_ms,
            poison_per_device
        );
        Ok(Soak {
            rng: ChaCha8Rng::seed_from_u64(seed),
            args,
            disk,
            broker,
            legs,
            tally: Tally::default(),
            started: Instant::now(),
        })
    }

    fn elapsed(&self) -> String {
        let s = self.started.elapsed().as_secs();
        format!("{:02}:{:02}", s / 60, s % 60)
    }

    async fn progress(&self) {
        let mut parts = Vec::new();
        for leg in &self.legs {
            let c = leg.counters.snapshot();
            let p = leg.poison_counters.snapshot();
            let stored = leg
                .stored()
                .await
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            parts.push(format!(
                "{}: published {} acked {} stored {} resent {} | poison acked {}",
                leg.name, c.published, c.acked, stored, c.resent, p.acked
            ));
        }
        println!("[{}] {}", self.elapsed(), parts.join(" || "));
    }

    fn count(&mut self, fault: &'static str) {
        *self.tally.faults.entry(fault).or_default() += 1;
    }

    async fn hold(&mut self, secs: std::ops::Range<u64>) {
        let s = self.rng.random_range(secs);
        tokio::time::sleep(Duration::from_secs(s)).await;
    }

    /// One fault, drawn from the matrix, applied and undone.
    async fn fault(&mut self) -> anyhow::Result<()> {
        let disk = self.disk.is_some();
        let slow = self.disk.as_ref().is_some_and(|d| d.cgroup.is_some());
        let mut menu: Vec<&'static str> = vec![
            "sigkill",
            "sigkill",
            "sigterm",
            "broker_restart",
            "slow_http",
        ];
        if disk {
            menu.extend(["disk_full", "disk_full_sigkill"]);
        }
        if slow {
            menu.extend(["slow_storage", "slow_storage_sigkill"]);
        }
        let fault = menu[self.rng.random_range(0..menu.len())];
        let leg = self.rng.random_range(0..self.legs.len());
        let name = self.legs[leg].name;
        self.count(fault);
        match fault {
            "sigkill" => {
                println!("[{}] SIGKILL {name}", self.elapsed());
                self.legs[leg].kill().await;
                self.hold(0..4).await;
                let disk = self.disk.as_ref();
                self.legs[leg].restart(disk).await;
            }
            "sigterm" => {
                println!("[{}] SIGTERM {name}", self.elapsed());
                match self.legs[leg].terminate().await {
                    Ok(took) => {
                        self.tally.sigterm_max = self.tally.sigterm_max.max(took);
                        println!("  {name} exited {:.1} s after SIGTERM", took.as_secs_f64());
                    }
                    Err(e) => {
                        self.tally.problems.push(format!("{name}: SIGTERM: {e:#}"));
                        self.legs[leg].kill().await;
                    }
                }
                let disk = self.disk.as_ref();
                self.legs[leg].restart(disk).await;
            }
            "broker_restart" => {
                println!("[{}] broker restart (graceful)", self.elapsed());
                self.broker.stop_gracefully().await?;
                self.hold(1..10).await;
                self.broker.restart().await?;
            }
            "disk_full" | "disk_full_sigkill" => {
                let d = self.disk.as_ref().context("disk")?;
                d.fill()?;
                println!(
                    "[{}] disk full ({} bytes free)",
                    self.elapsed(),
                    d.available_bytes()?
                );
                // Hold until every leg has stopped acknowledging (ingest held), at most 90 s,
                // then a little longer.
                let t = Instant::now();
                let mut held_after: Vec<Option<Duration>> = vec![None; self.legs.len()];
                while t.elapsed() < Duration::from_secs(90)
                    && held_after.iter().any(Option::is_none)
                {
                    for (i, leg) in self.legs.iter().enumerate() {
                        if held_after[i].is_none()
                            && let Some(app) = &leg.app
                            && let Ok(h) = app.get_ok("/health").await
                            && h["ingest"]["held"] == serde_json::json!(true)
                        {
                            held_after[i] = Some(t.elapsed());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                let held: Vec<String> = self
                    .legs
                    .iter()
                    .zip(&held_after)
                    .map(|(l, h)| match h {
                        Some(d) => format!("{} held after {:.1} s", l.name, d.as_secs_f64()),
                        None => format!("{} not held within 90 s", l.name),
                    })
                    .collect();
                println!("  {}", held.join(", "));
                self.hold(5..20).await;
                if fault == "disk_full_sigkill" {
                    println!(
                        "[{}]   SIGKILL {name} while the disk is full",
                        self.elapsed()
                    );
                    self.legs[leg].kill().await;
                    self.hold(1..10).await;
                }
                self.disk.as_ref().context("disk")?.free()?;
                println!("[{}]   disk freed", self.elapsed());
                if self.legs[leg].app.is_none() {
                    let disk = self.disk.as_ref();
                    self.legs[leg].restart(disk).await;
                }
            }
            "slow_storage" | "slow_storage_sigkill" => {
                let iops = self.rng.random_range(1..10);
                self.disk.as_ref().context("disk")?.throttle(iops)?;
                let before: Vec<u64> = self
                    .legs
                    .iter()
                    .map(|l| l.counters.acked.load(Ordering::Relaxed))
                    .collect();
                let t = Instant::now();
                println!("[{}] slow storage: {iops} write IOPS", self.elapsed());
                self.hold(10..40).await;
                let rates: Vec<String> = self
                    .legs
                    .iter()
                    .zip(&before)
                    .map(|(l, b)| {
                        format!(
                            "{} {:.0}/s",
                            l.name,
                            (l.counters.acked.load(Ordering::Relaxed) - b) as f64
                                / t.elapsed().as_secs_f64()
                        )
                    })
                    .collect();
                println!("  acked while slow: {}", rates.join(", "));
                if fault == "slow_storage_sigkill" {
                    println!("[{}]   SIGKILL {name} on slow storage", self.elapsed());
                    self.legs[leg].kill().await;
                    self.hold(0..4).await;
                    let disk = self.disk.as_ref();
                    self.legs[leg].restart(disk).await;
                    self.hold(5..15).await;
                }
                self.disk.as_ref().context("disk")?.throttle(0)?;
                println!("[{}]   storage fast again", self.elapsed());
            }
            "slow_http" => self.slow_http(leg).await?,
            other => bail!("unknown fault {other}"),
        }
        Ok(())
    }

    /// Slowloris connections (a request head trickled a byte at a time), idle
    /// connections and order streams that are never read, while `/health` is timed.
    async fn slow_http(&mut self, leg: usize) -> anyhow::Result<()> {
        let name = self.legs[leg].name;
        let app = self.legs[leg].app.as_ref().context("app")?;
        let api: SocketAddr = app
            .api
            .trim_start_matches("http://")
            .parse()
            .context("api address")?;
        let token = app.admin_token.clone();
        let hold = Duration::from_secs(self.rng.random_range(15..40));
        println!(
            "[{}] slow HTTP clients on {name}: 300 slowloris, 200 idle, 20 unread streams for {} s",
            self.elapsed(),
            hold.as_secs()
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..520 {
            let stop = stop.clone();
            let token = token.clone();
            clients.spawn(async move {
                let Ok(mut s) = TcpStream::connect(api).await else {
                    return;
                };
                if i < 300 {
                    let head = b"GET /health HTTP/1.1\r\nHost: soak\r\nX-Slow: ";
                    for b in head.iter().cycle() {
                        if s.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                } else if i < 500 {
                    stop.cancelled().await;
                } else {
                    let req = format!(
                        "GET /api/v1/orders/stream HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                    );
                    if s.write_all(req.as_bytes()).await.is_ok() {
                        stop.cancelled().await;
                    }
                }
                drop(s);
            });
        }
        let probe = http_client().timeout(Duration::from_secs(5)).build()?;
        let url = format!("{}/health", app.api);
        let until = Instant::now() + hold;
        while Instant::now() < until {
            let t = Instant::now();
            let ok = probe.get(&url).send().await.is_ok();
            let took = t.elapsed();
            self.tally.health_probes += 1;
            self.tally.health_max = self.tally.health_max.max(took);
            if !ok {
                self.tally.health_slow += 1;
                println!(
                    "  /health {} after {:.2} s",
                    if ok { "answered" } else { "failed" },
                    took.as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop.cancel();
        while clients.join_next().await.is_some() {}
        println!("[{}]   slow clients gone", self.elapsed());
        Ok(())
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let deadline = self.started + Duration::from_secs_f64(self.args.minutes * 60.0);
        let mut next_progress = Instant::now();
        while Instant::now() < deadline {
            let every = self.args.fault_every_s as f64;
            let pause = Duration::from_secs_f64(self.rng.random_range(every * 0.5..every * 1.5));
            let wake = (Instant::now() + pause).min(deadline);
            while Instant::now() < wake {
                if Instant::now() >= next_progress {
                    self.progress().await;
                    next_progress += Duration::from_secs(30);
                }
                tokio::time::sleep(Duration::from_secs(1).min(wake - Instant::now().min(wake)))
                    .await;
            }
            if Instant::now() >= deadline {
                break;
            }
            self.fault().await?;
        }
        Ok(())
    }

    /// Undoes any fault, lets the devices finish and waits until everything is stored.
    async fn settle(&mut self) -> anyhow::Result<()> {
        if let Some(d) = &self.disk {
            d.free()?;
            d.throttle(0)?;
        }
        println!("[{}] faults stopped; devices finishing", self.elapsed());
        for i in 0..self.legs.len() {
            if self.legs[i].app.is_none() {
                let disk = self.disk.as_ref();
                self.legs[i].restart(disk).await;
            }
            let swarm = self.legs[i].devices.take().context("devices")?;
            let report = swarm.finish(Duration::from_secs(900)).await;
            if let Err(e) = report {
                self.tally.problems.push(format!(
                    "{}: devices did not finish: {e}",
                    self.legs[i].name
                ));
            }
            let poison = self.legs[i].poison.take().context("poison")?;
            if let Err(e) = poison.finish(Duration::from_secs(300)).await {
                self.tally.problems.push(format!(
                    "{}: poison devices did not finish: {e}",
                    self.legs[i].name
                ));
            }
        }
        for leg in &self.legs {
            let total = leg.serials.len() as u64 * leg.per_device;
            let app = leg.app.as_ref().context("app")?;
            if leg.mode == Mode::External {
                // The broker holds what fleetpulse has not acked yet.
                let r = eventually(Duration::from_secs(600), "every reading stored", || async {
                    let n = app.stored_readings().await?;
                    Ok((n >= total).then_some(n))
                })
                .await;
                if let Err(e) = r {
                    self.tally.problems.push(format!("{}: {e:#}", leg.name));
                }
            }
            if let Err(e) = app.applied().await {
                self.tally.problems.push(format!("{}: {e:#}", leg.name));
            }
        }
        // Dead letters of poison sent through the broker arrive after the broker acked them.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for leg in &mut self.legs {
            if let Err(e) = leg.terminate().await {
                self.tally
                    .problems
                    .push(format!("{}: final SIGTERM: {e:#}", leg.name));
                leg.kill().await;
            }
        }
        Ok(())
    }

    fn verify(&mut self) -> anyhow::Result<bool> {
        println!();
        println!(
            "| leg | published | resent | acked | stored | missing | duplicated | unexpected | poison sent | dead letters | poison without letter | letters twice | restarts |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut ok = self.tally.problems.is_empty();
        for leg in &self.legs {
            let c = leg.counters.snapshot();
            let p = leg.poison_counters.snapshot();
            let db = db_path(&leg.data);
            let prefix = if leg.mode == Mode::Builtin {
                "SB-"
            } else {
                "SX-"
            };
            let stored = stored_seqs(&db, prefix)?;
            let expected: BTreeSet<u64> = (1..=leg.per_device).collect();
            let (mut missing, mut dup, mut stored_n) = (0u64, 0u64, 0u64);
            for serial in &leg.serials {
                let seqs = stored.get(serial).map(Vec::as_slice).unwrap_or_default();
                let unique: BTreeSet<u64> = seqs.iter().copied().collect();
                stored_n += seqs.len() as u64;
                dup += (seqs.len() - unique.len()) as u64;
                missing += expected.difference(&unique).count() as u64;
            }
            let unexpected = stored
                .iter()
                .filter(|(s, _)| !leg.serials.contains(s))
                .map(|(_, v)| v.len() as u64)
                .sum::<u64>()
                + stored
                    .values()
                    .flatten()
                    .filter(|seq| **seq > leg.per_device)
                    .count() as u64;
            // Poison: every message refused exactly once.
            let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let mut stmt = conn.prepare(
                "SELECT payload FROM dead_letters WHERE client_id LIKE 'PZ%' OR topic LIKE '%/PZ%'",
            )?;
            let mut letters: BTreeMap<String, u64> = BTreeMap::new();
            let mut unkeyed = 0u64;
            for payload in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
                match poison_key(&payload?) {
                    Some(k) => *letters.entry(k).or_default() += 1,
                    None => unkeyed += 1,
                }
            }
            let poison_stored: u64 = stored_seqs(&db, "PZ")?
                .values()
                .map(|v| v.len() as u64)
                .sum();
            let mut without = 0u64;
            for serial in &leg.poison_serials {
                for n in 1..=leg.poison_per_device {
                    if !letters.contains_key(&format!("{serial}/{n}")) {
                        without += 1;
                    }
                }
            }
            let twice: u64 = letters.values().map(|n| n.saturating_sub(1)).sum();
            let letters_n: u64 = letters.values().sum::<u64>() + unkeyed;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({} failed starts) |",
                leg.name,
                c.published,
                c.resent,
                c.acked,
                stored_n,
                missing,
                dup,
                unexpected,
                p.acked,
                letters_n,
                without,
                twice,
                leg.restarts,
                leg.failed_starts
            );
            if missing + dup + unexpected + without + twice + poison_stored + unkeyed > 0 {
                ok = false;
            }
            if poison_stored > 0 {
                self.tally.problems.push(format!(
                    "{}: {poison_stored} poison readings stored",
                    leg.name
                ));
            }
            if unkeyed > 0 {
                self.tally.problems.push(format!(
                    "{}: {unkeyed} poison dead letters without a key",
                    leg.name
                ));
            }
            if c.unexpected_acks > 0 || (leg.mode == Mode::Builtin && c.out_of_order_acks > 0) {
                ok = false;
                self.tally.problems.push(format!(
                    "{}: {} unexpected and {} out-of-order PUBACKs",
                    leg.name, c.unexpected_acks, c.out_of_order_acks
                ));
            }
        }
        println!();
        let faults: Vec<String> = self
            .tally
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("faults: {}", faults.join(", "));
        println!(
            "slow HTTP: {} /health probes, {} without an answer within 5 s, slowest {:.2} s; longest exit after SIGTERM {:.1} s",
            self.tally.health_probes,
            self.tally.health_slow,
            self.tally.health_max.as_secs_f64(),
            self.tally.sigterm_max.as_secs_f64()
        );
        if self.tally.health_slow > 0 {
            ok = false;
        }
        for p in &self.tally.problems {
            println!("PROBLEM: {p}");
        }
        Ok(ok)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let t = Instant::now();
    let mut soak = Soak::setup(args).await?;
    // Ctrl-C or SIGTERM: the processes are killed (kill on drop), the file system is
    // unmounted and its image removed (Disk's drop), then the soak ends with status 130.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let finished = tokio::select! {
        result = async {
            let result = soak.run().await;
            if let Err(e) = &result {
                soak.tally.problems.push(format!("fault injection: {e:#}"));
            }
            soak.settle().await
        } => Some(result),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    let Some(settled) = finished else {
        println!("interrupted: stopping the processes and removing the file system");
        drop(soak);
        std::process::exit(130);
    };
    settled?;
    let ok = soak.verify()?;
    println!(
        "soak {} after {:.1} min",
        if ok { "PASSED" } else { "FAILED" },
        t.elapsed().as_secs_f64() / 60.0
    );
    drop(soak);
    std::process::exit(if ok { 0 } else { 1 });
}
