//! Test helpers: a private Mosquitto, a minimal MQTT peer built on rumqttc's codec, and a
//! small catalog.

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use fleetpulse_domain::Catalog;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A private Mosquitto broker on a free loopback port (never 1883: the system one holds
/// it). Stopped (by its process id) when dropped.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub async fn start() -> anyhow::Result<Mosquitto> {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> anyhow::Result<Mosquitto> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("mosquitto is not installed")?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n"
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mosquitto")?;
        let broker = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(broker)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One side of an MQTT connection, speaking through rumqttc's codec.
pub struct Peer {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    pub fn new(stream: TcpStream) -> Self {
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The next packet, or `None` when the other side closed.
    pub async fn read(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Ok(Some(p)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => bail!("protocol error: {e}"),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next packet within `timeout`.
    pub async fn expect(&mut self, timeout: Duration) -> anyhow::Result<Packet> {
        tokio::time::timeout(timeout, self.read())
            .await
            .context("no packet in time")??
            .context("connection closed")
    }

    pub async fn write(&mut self, packet: Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        packet.write(&mut out, 1 << 20)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }
}

/// One concentrator and one ventilator model.
pub const CATALOG: &str = r#"
[[model]]
id = "OC-T"
name = "Test concentrator"
kind = "oxygen_concentrator"
default_criticality = "high"
service_interval_hours = 5000
service_skill = "concentrator_service"
service_labour_minutes = 60
[[model.consumable]]
id = "filter"
name = "Inlet filter"
field = "filter_life_pct"
order_at_pct = 15
rated_life_hours = 500
skill = "basic_maintenance"
labour_minutes = 15
[[model.alarm]]
code = "E101"
title = "Compressor failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "compressor"
solution = "Replace the compressor"
labour_minutes = 120
skill = "concentrator_repair"

[[model]]
id = "V-T"
name = "Test ventilator"
kind = "ventilator"
default_criticality = "life_supporting"
service_interval_hours = 10000
service_skill = "ventilator_service"
service_labour_minutes = 90
[[model.consumable]]
id = "filter"
name = "Air filter"
field = "filter_life_pct"
order_at_pct = 20
rated_life_hours = 400
skill = "basic_maintenance"
labour_minutes = 10
[[model.alarm]]
code = "V101"
title = "Blower failure"
severity = "critical"
category = "hardware"
counts_as_failure = true
failure_mode = "blower"
solution = "Replace the blower"
labour_minutes = 120
skill = "ventilator_repair"
"#;

pub fn catalog() -> Catalog {
    Catalog::from_toml_str(CATALOG).expect("the test catalog is valid")
}
