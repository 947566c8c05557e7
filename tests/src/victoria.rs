//! A private VictoriaMetrics server (Debian's `victoria-metrics`), the real time-series
//! server the sink tests write to through the InfluxDB v2 write API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::{eventually, free_port};

/// A VictoriaMetrics process on a free loopback port with its own data directory; it can
/// be stopped and started again on the same port and data.
pub struct VictoriaMetrics {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// One exported series: its labels and its points.
#[derive(Debug, Deserialize)]
pub struct Series {
    pub metric: BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

impl VictoriaMetrics {
    pub fn binary() -> Option<PathBuf> {
        [
            "/usr/bin/victoria-metrics",
            "/usr/local/bin/victoria-metrics",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    }

    pub async fn start() -> anyhow::Result<VictoriaMetrics> {
        let mut vm = VictoriaMetrics {
            child: None,
            addr: format!("127.0.0.1:{}", free_port()).parse()?,
            dir: tempfile::tempdir()?,
            http: crate::http_client().build()?,
        };
        vm.resume().await?;
        Ok(vm)
    }

    /// `http://127.0.0.1:PORT`, what `sink.url` is set to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server (again) on its port and data directory and waits until it is
    /// healthy. Retention is 100 years: the default month would silently drop the
    /// historical timestamps tests write.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let bin = Self::binary().context(
            "victoria-metrics is not installed: scripts/test installs it (apt-get install victoria-metrics)",
        )?;
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr={}", self.addr))
            .arg(format!("-storageDataPath={}", self.dir.path().display()))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=ERROR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting victoria-metrics")?;
        self.child = Some(child);
        let health = format!("{}/health", self.url());
        let http = self.http.clone();
        eventually(Duration::from_secs(30), "victoria-metrics healthy", || {
            let (http, health) = (http.clone(), health.clone());
            async move {
                Ok(match http.get(&health).send().await {
                    Ok(r) if r.status().is_success() => Some(()),
                    _ => None,
                })
            }
        })
        .await
    }

    /// Stops the server gracefully (SIGTERM: it flushes what it accepted) and waits for
    /// it to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("victoria-metrics did not stop within 30 s")??;
        Ok(())
    }

    /// Every series whose name matches `regex`, after a flush so fresh points are
    /// visible.
    pub async fn export(&self, regex: &str) -> anyhow::Result<Vec<Series>> {
        self.http
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await?
            .error_for_status()?;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.url()),
            &[
                ("match[]", format!("{{__name__=~\"{regex}\"}}")),
                ("start", "0".to_owned()),
            ],
        )?;
        let text = self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("export line {l:?}")))
            .collect()
    }
}
