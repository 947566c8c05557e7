//! Helpers for the system tests: spawn the real `fleetpulse` binary on free ports with its
//! own data directory, talk to it over HTTP, and start private Mosquitto brokers.
//!
//! The binary is found next to the test executable's `deps/` folder (the test script
//! builds it first with `cargo build -p fleetpulse`), or at `$FLEETPULSE_BIN`.

pub mod load;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod modbus;
mod victoria;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
pub use victoria::{Series, VictoriaMetrics};

pub mod dispatch;
pub mod receiver;
pub mod tls;

/// An HTTP client. reqwest is built with rustls and no crypto provider of its own (the
/// workspace uses ring only); the process default is installed first, as `main` does.
pub fn http_client() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// Path of the `fleetpulse` binary under test.
pub fn fleetpulse_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLEETPULSE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe> → target/<profile>/fleetpulse
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("fleetpulse");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p fleetpulse` (scripts/test does), or set FLEETPULSE_BIN",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a restart test that
/// needs the same port twice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A running fleetpulse process.
pub struct App {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub api: String,
    /// Built-in MQTT endpoint, when it runs one.
    pub mqtt: Option<SocketAddr>,
    pub data_dir: PathBuf,
    args: Vec<String>,
    http: reqwest::Client,
    /// An `admin` API token (made with `fleetpulse token create` before the start); every
    /// request of the helpers below sends it.
    pub admin_token: String,
}

impl App {
    /// `fleetpulse serve` with the built-in endpoint on a free port.
    pub async fn serve_builtin(data_dir: &Path) -> anyhow::Result<App> {
        Self::spawn(data_dir, &["serve", "--mqtt-listen", "127.0.0.1:0"]).await
    }

    /// `fleetpulse serve` subscribed to an external broker.
    pub async fn serve_external(
        data_dir: &Path,
        broker: SocketAddr,
        client_id: &str,
    ) -> anyhow::Result<App> {
        let url = format!("mqtt://{broker}");
        Self::spawn_with_env(
            data_dir,
            &["serve", "--mqtt-url", &url],
            &[("FLEETPULSE_BROKER__CLIENT_ID", client_id)],
        )
        .await
    }

    /// Spawns `fleetpulse ARGS --http 127.0.0.1:0 --data DIR` and waits until it prints
    /// that its API is ready.
    pub async fn spawn(data_dir: &Path, args: &[&str]) -> anyhow::Result<App> {
        Self::spawn_with_env(data_dir, args, &[]).await
    }

    pub async fn spawn_with_env(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<App> {
        Self::spawn_limited(data_dir, args, env, None).await
    }

    /// As [`App::spawn_with_env`], started through `sh -c "ulimit ULIMIT && exec …"`
    /// (e.g. `-n 1024`: soft and hard open-file limit 1024) when `ulimit` is set.
    pub async fn spawn_limited(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ulimit: Option<&str>,
    ) -> anyhow::Result<App> {
        Self::spawn_inner(data_dir, args, env, ulimit, None).await
    }

    /// As [`App::spawn_with_env`], with the process's log (its standard error) written to
    /// `log` instead of the test's, for a test to read.
    pub async fn spawn_logging_to(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<App> {
        Self::spawn_inner(data_dir, args, env, None, Some(log)).await
    }

    async fn spawn_inner(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ulimit: Option<&str>,
        log: Option<&Path>,
    ) -> anyhow::Result<App> {
        let mut full: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        if !full.iter().any(|a| a == "--http") {
            full.extend(["--http".into(), "127.0.0.1:0".into()]);
        }
        full.extend(["--data".into(), data_dir.display().to_string()]);
        let admin_token = dispatch::create_token(data_dir, "admin", "system-tests").await?;
        let mut cmd = match ulimit {
            None => Command::new(fleetpulse_bin()),
            Some(limits) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit {limits} && exec \"$0\" \"$@\""))
                    .arg(fleetpulse_bin());
                sh
            }
        };
        cmd.args(&full)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match log {
                None => Stdio::inherit(),
                Some(path) => Stdio::from(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
            })
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning fleetpulse")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut api, mut mqtt) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.is_none() {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .context("fleetpulse did not print its API address within 60 s")??;
            let Some(line) = line else {
                let status = child.wait().await?;
                bail!("fleetpulse exited before it was ready: {status}");
            };
            eprintln!("[fleetpulse stdout] {line}");
            if let Some(rest) = line.strip_prefix("fleetpulse: mqtt device endpoint listening on ")
            {
                mqtt = Some(tls::endpoint_addr(rest)?);
            }
            if let Some(rest) = line.strip_prefix("fleetpulse: api listening on ") {
                api = Some(rest.trim().to_owned());
            }
        }
        // keep draining stdout so the child never blocks on a full pipe
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[fleetpulse stdout] {line}");
            }
        });
        Ok(App {
            child,
            api: api.context("api address")?,
            mqtt,
            data_dir: data_dir.to_owned(),
            args: full,
            http: dispatch::client_with_token(&admin_token)?,
            admin_token,
        })
    }

    /// The arguments it was started with (to restart it the same way).
    pub fn args(&self) -> Vec<String> {
        self.args.clone()
    }

    /// SIGKILL: no chance to flush or ack anything.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGINT, as Ctrl-C; waits for the exit.
    pub async fn interrupt(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("child already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -INT failed");
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    /// GET and parse JSON; returns (status, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.get(self.url(path)).send().await?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// GET that must answer 200.
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {body}");
        Ok(body)
    }

    /// Every reading of `serial` (`query`: more parameters, e.g. `from=…&to=…`), following
    /// the pages' `next` cursor to the end, in the API's (device time, seq) order.
    pub async fn readings(&self, serial: &str, query: &str) -> anyhow::Result<Vec<Value>> {
        let first = format!("/api/v1/devices/{serial}/readings?{query}");
        let mut all = Vec::new();
        let mut path = first.clone();
        loop {
            let page = self.get_ok(&path).await?;
            all.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => path = format!("{first}&after={next}"),
                None => return Ok(all),
            }
        }
    }

    /// GET that must answer 200 with text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.http.get(self.url(path)).send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {text}");
        Ok(text)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.post(self.url(path)).json(body).send().await?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Orders matching a query string (e.g. `status=active&serial=X`).
    pub async fn orders(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let body = self
            .get_ok(&format!("/api/v1/orders?limit=1000&{query}"))
            .await?;
        Ok(body["items"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the store applied everything the ingest journal acknowledged: a
    /// PUBACK means durable, and API reads follow once the applier took the record
    /// (`ingest.journal_unapplied_records` reaches 0 in `/health`).
    pub async fn applied(&self) -> anyhow::Result<()> {
        eventually(
            Duration::from_secs(30),
            "the journal to be applied",
            || async {
                let body = self.get_ok("/health").await?;
                let pending = body["ingest"]["journal_unapplied_records"]
                    .as_u64()
                    .context("health has ingest.journal_unapplied_records")?;
                Ok((pending == 0).then_some(()))
            },
        )
        .await
    }

    /// Number of stored readings, from `/health`.
    pub async fn stored_readings(&self) -> anyhow::Result<u64> {
        let body = self.get_ok("/health").await?;
        body["store"]["readings"]
            .as_u64()
            .context("health has store.readings")
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private Mosquitto broker on a free loopback port (the system one holds 1883).
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts `mosquitto -c conf` and waits until it accepts connections on `addr`.
pub async fn spawn_mosquitto(bin: &Path, conf: &Path, addr: SocketAddr) -> anyhow::Result<Child> {
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting mosquitto")?;
    eventually(
        Duration::from_secs(10),
        "mosquitto to listen",
        || async move { Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())) },
    )
    .await?;
    Ok(child)
}

impl Mosquitto {
    pub fn binary() -> Option<PathBuf> {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    /// Starts a broker that queues without limit for persistent sessions.
    pub async fn start() -> anyhow::Result<Mosquitto> {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> anyhow::Result<Mosquitto> {
        let bin = Self::binary().context(
            "mosquitto is not installed: scripts/test installs it (apt-get install mosquitto)",
        )?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = spawn_mosquitto(&bin, &conf, addr).await?;
        Ok(Mosquitto {
            child,
            addr,
            _dir: dir,
        })
    }

    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Publishes one message with the real `mosquitto_pub` client at QoS 1 and waits for it
/// to exit (it exits after the PUBACK for a single `-m` message).
pub async fn mosquitto_pub(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    payload: &str,
) -> anyhow::Result<()> {
    let out = Command::new("mosquitto_pub")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-i", client_id, "-q", "1", "-t", topic, "-m", payload])
        .output()
        .await
        .context("running mosquitto_pub (scripts/test installs mosquitto-clients)")?;
    anyhow::ensure!(
        out.status.success(),
        "mosquitto_pub failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A v1 telemetry payload with the current time.
pub fn reading(seq: u64, fields: Value) -> String {
    let mut v = serde_json::json!({ "seq": seq, "ts": chrono::Utc::now().to_rfc3339() });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), fields) {
        obj.extend(extra);
    }
    v.to_string()
}

pub fn telemetry_topic(serial: &str) -> String {
    format!("fleetpulse/v1/devices/{serial}/telemetry")
}
