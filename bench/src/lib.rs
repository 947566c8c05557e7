//! What the benchmark binaries share: the fleetpulse process under test (started from
//! the release build beside the benchmark, stopped with SIGINT), a private Mosquitto,
//! and readings of `/proc` (peak RSS, CPU seconds).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The `fleetpulse` binary beside the running benchmark's binary (both from
/// `cargo build --release`).
pub fn default_fleetpulse() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("benchmark binary has a directory")?
        .join("fleetpulse");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: cargo build --release -p fleetpulse",
        bin.display()
    );
    Ok(bin)
}

/// A fleetpulse process started for one mode.
pub struct Fleetpulse {
    child: Child,
    pub pid: u32,
    /// `http://host:port` of its API.
    pub api: String,
    /// Its built-in MQTT endpoint, when it printed one.
    pub mqtt: Option<SocketAddr>,
}

impl Fleetpulse {
    pub async fn spawn(bin: &Path, data: &Path, args: &[&str]) -> anyhow::Result<Fleetpulse> {
        Self::spawn_with_env(bin, data, args, &[]).await
    }

    pub async fn spawn_with_env(
        bin: &Path,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Fleetpulse> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .args(["--http", "127.0.0.1:0", "--data"])
            .arg(data)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning fleetpulse")?;
        let pid = child.id().context("fleetpulse pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut api, mut mqtt) = (None, None);
        while api.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .context("fleetpulse did not start within 60 s")??
                .context("fleetpulse exited before it was ready")?;
            if let Some(rest) =
                line.strip_prefix("fleetpulse: mqtt device endpoint listening on mqtt://")
            {
                mqtt = Some(rest.trim().parse()?);
            }
            if let Some(rest) = line.strip_prefix("fleetpulse: api listening on ") {
                api = Some(rest.trim().to_owned());
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Fleetpulse {
            child,
            pid,
            api: api.context("api address")?,
            mqtt,
        })
    }

    /// Reads VmHWM and CPU seconds, then stops it with SIGINT and waits.
    pub async fn stop(mut self) -> anyhow::Result<(f64, f64)> {
        let hwm = vm_hwm_mib(self.pid)?;
        let cpu = cpu_seconds(self.pid)?;
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -INT failed");
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        anyhow::ensure!(exit.success(), "fleetpulse exited with {exit}");
        Ok((hwm, cpu))
    }
}

/// A private Mosquitto on a free port, as permissive as the test brokers.
pub struct Broker {
    _child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub async fn start() -> anyhow::Result<Broker> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 1000\nlog_dest stderr\nlog_type error\n"
            ),
        )?;
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .context("mosquitto is not installed (apt-get install mosquitto)")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Broker {
            _child: child,
            addr,
            _dir: dir,
        })
    }
}

// ---------------------------------------------------------------- /proc

/// Peak resident set size (VmHWM) of a process, MiB.
pub fn vm_hwm_mib(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmHWM")?;
    Ok(kib / 1024.0)
}

/// utime + stime of a process, in seconds (clock ticks of 100 Hz, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').context("/proc stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("/proc stat field")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
