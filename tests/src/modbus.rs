//! Helpers for the firmware-bridge system tests: a real pymodbus server holding known
//! values (`tests/pymodbus/server.py`), bridge configuration files, and a running
//! `fleetpulse bridge` process with its `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{fleetpulse_bin, free_port};

/// A pymodbus TCP server (unit id 1) on a free loopback port.
pub struct PyModbus {
    child: Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl PyModbus {
    /// Starts `tests/pymodbus/server.py` as a Modbus TCP server with `spec` (see the
    /// script for its format).
    pub async fn start(spec: &Value) -> anyhow::Result<PyModbus> {
        let port = free_port();
        Self::start_with(spec, &["--port".into(), port.to_string()], port).await
    }

    /// The same as a Modbus RTU server (19200 baud, 8 data bits, `parity` N/E/O, 1 stop
    /// bit) on the serial device `path`.
    pub async fn start_rtu(spec: &Value, path: &Path, parity: &str) -> anyhow::Result<PyModbus> {
        let args = [
            "--serial".into(),
            path.display().to_string(),
            "--parity".into(),
            parity.into(),
        ];
        Self::start_with(spec, &args, 0).await
    }

    async fn start_with(spec: &Value, args: &[String], port: u16) -> anyhow::Result<PyModbus> {
        let dir = tempfile::tempdir()?;
        let spec_path = dir.path().join("spec.json");
        std::fs::write(&spec_path, spec.to_string())?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pymodbus/server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting python3 (scripts/test installs pymodbus with pip)")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("pymodbus server not ready within 30 s")??;
        if line.as_deref() != Some("ready") {
            let status = child.wait().await?;
            bail!(
                "pymodbus server did not start ({status}); is pymodbus installed? (pip install pymodbus)"
            );
        }
        Ok(PyModbus {
            child,
            addr: format!("127.0.0.1:{port}").parse()?,
            _dir: dir,
        })
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A pseudo-terminal pair made by `socat`: a serial line whose two ends are files.
pub struct PtyPair {
    child: Child,
    /// The end the bridge opens.
    pub bridge_end: PathBuf,
    /// The end the Modbus RTU server opens.
    pub device_end: PathBuf,
    _dir: tempfile::TempDir,
}

impl PtyPair {
    pub async fn start() -> anyhow::Result<PtyPair> {
        let dir = tempfile::tempdir()?;
        let bridge_end = dir.path().join("bridge");
        let device_end = dir.path().join("device");
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", bridge_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", device_end.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting socat (scripts/test installs it: apt-get install socat)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(bridge_end.exists() && device_end.exists()) {
            anyhow::ensure!(Instant::now() < deadline, "socat made no pty pair in 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(PtyPair {
            child,
            bridge_end,
            device_end,
            _dir: dir,
        })
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Writes `dir/bridge.toml` (with `body` after the `[mqtt]` section) and the register
/// maps `(model, text)` under `dir/registers/`. Returns the file's path.
pub fn write_bridge_config(
    dir: &Path,
    mqtt_url: &str,
    maps: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<PathBuf> {
    let registers = dir.join("registers");
    std::fs::create_dir_all(&registers)?;
    for (model, text) in maps {
        std::fs::write(registers.join(format!("{model}.toml")), text)?;
    }
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "registers_dir = \"registers\"\n\n[mqtt]\nurl = \"{mqtt_url}\"\nreconnect_initial_ms = 100\nreconnect_max_ms = 1000\n\n{body}"
        ),
    )?;
    Ok(path)
}

/// A running `fleetpulse bridge`.
pub struct BridgeProc {
    child: Child,
    /// `http://ADDR` of its metrics endpoint.
    pub metrics_url: String,
    lines: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl BridgeProc {
    /// `fleetpulse bridge -c CONFIG --outbox OUTBOX --metrics 127.0.0.1:0`; waits until
    /// it polls.
    pub async fn spawn(config: &Path, outbox: &Path) -> anyhow::Result<BridgeProc> {
        let mut child = Command::new(fleetpulse_bin())
            .arg("bridge")
            .arg("-c")
            .arg(config)
            .arg("--outbox")
            .arg(outbox)
            .args(["--metrics", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning fleetpulse bridge")?;
        // the log (stderr) is kept too, for tests that read what the operator would see
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().context("stderr")?;
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut log = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = log.next_line().await {
                eprintln!("[bridge log] {line}");
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let stdout = child.stdout.take().context("stdout")?;
        let mut reader = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut metrics_url = None;
        loop {
            let line = tokio::time::timeout_at(deadline.into(), reader.next_line())
                .await
                .context("fleetpulse bridge not ready within 60 s")??;
            let Some(line) = line else {
                let status = child.wait().await?;
                bail!("fleetpulse bridge exited before it was ready: {status}");
            };
            eprintln!("[bridge stdout] {line}");
            if let Some(rest) = line.strip_prefix("fleetpulse: bridge metrics on ") {
                metrics_url = Some(rest.trim().trim_end_matches("/metrics").to_owned());
            }
            if line.starts_with("fleetpulse: bridge polling") {
                break;
            }
        }
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[bridge stdout] {line}");
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(BridgeProc {
            child,
            metrics_url: metrics_url.context("metrics address")?,
            lines,
            http: crate::http_client().build()?,
        })
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// The value of the one sample named exactly `series` (name and labels as printed,
    /// e.g. `bridge_polls_total{serial="X",result="ok"}`).
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        sample(&text, series).with_context(|| format!("{series} not in /metrics"))
    }

    /// SIGINT; waits for the exit and returns the `bridge stopped: {…}` report.
    pub async fn interrupt(&mut self) -> anyhow::Result<Value> {
        let pid = self.child.id().context("bridge already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -INT failed");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(exit.success(), "bridge exited with {exit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let report = lines
            .iter()
            .find_map(|l| l.strip_prefix("fleetpulse: bridge stopped: "))
            .context("no `bridge stopped` report")?;
        Ok(serde_json::from_str(report)?)
    }

    /// The lines of its stdout and log (stderr) so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits up to `within` for a line of stdout or log containing `needle`.
    pub async fn wait_for_line(&self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.lines_with(needle).into_iter().next() {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                bail!("no line containing {needle:?} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: nothing is flushed.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The value of `series` in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
