//! Helpers for the durability tests: a Mosquitto that keeps its persistent sessions across
//! its own restart, process figures from `/proc`, and an exactly-once check that reads the
//! SQLite file directly once fleetpulse has stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use tokio::process::Child;

use crate::Mosquitto;

/// A Mosquitto broker with `persistence true`: a graceful stop (SIGTERM) writes its
/// sessions and queued QoS 1 messages to disk, and a restart on the same port and
/// directory brings them back.
pub struct PersistentMosquitto {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PersistentMosquitto {
    pub async fn start(port: u16) -> anyhow::Result<PersistentMosquitto> {
        let dir = tempfile::tempdir()?;
        // Mosquitto started as root drops to its own user before writing the
        // persistence file: that user must be able to write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut broker = PersistentMosquitto {
            child: None,
            addr,
            dir,
        };
        broker.restart().await?;
        Ok(broker)
    }

    /// (Re)starts the broker on its port with its persistence directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the broker is still running");
        let bin = Mosquitto::binary().context(
            "mosquitto is not installed: scripts/test installs it (apt-get install mosquitto)",
        )?;
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {dir}/\nautosave_interval 0\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\n\
                 log_type error\nlog_type warning\n",
                port = self.addr.port(),
                dir = self.dir.path().display(),
            ),
        )?;
        self.child = Some(crate::spawn_mosquitto(&bin, &conf, self.addr).await?);
        Ok(())
    }

    /// SIGTERM and wait: Mosquitto saves its persistence file on the way out.
    pub async fn stop_gracefully(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the broker is not running")?;
        signal(&child, "TERM")?;
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .context("mosquitto did not stop within 20 s of SIGTERM")??;
        anyhow::ensure!(status.success(), "mosquitto exited with {status}");
        Ok(())
    }
}

/// Sends `kill -SIG pid`.
pub fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let pid = child.id().context("the process has already exited")?;
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
    Ok(())
}

/// A `/proc/PID/status` field in KiB (e.g. `VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("/proc/{pid}/status has no {field}"))
}

/// Resident set size of a running process, in MiB.
pub fn rss_mib(child: &Child) -> anyhow::Result<f64> {
    let pid = child.id().context("the process has already exited")?;
    Ok(proc_status_kib(pid, "VmRSS")? as f64 / 1024.0)
}

/// The data file of a fleetpulse data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("fleetpulse.db")
}

/// Every stored `(serial, seq)` of the devices whose serial starts with `prefix`, read
/// from the SQLite file (open it only after fleetpulse stopped or while it runs: WAL
/// readers see the last commit).
pub fn stored_seqs(db: &Path, prefix: &str) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    let mut stmt = conn.prepare(
        "SELECT serial, seq FROM readings WHERE serial >= ?1 AND serial < ?2 ORDER BY serial, seq",
    )?;
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let upper = format!("{prefix}\u{10FFFF}");
    let rows = stmt.query_map([prefix, upper.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (serial, seq) = row?;
        out.entry(serial)
            .or_default()
            .push(u64::try_from(seq).context("negative seq")?);
    }
    Ok(out)
}

/// Asserts that exactly the readings `1..=per_device` of every serial are stored, each
/// once, and nothing else under those serials. Reports what is missing or extra.
pub fn assert_exactly_once(
    db: &Path,
    prefix: &str,
    serials: &[String],
    per_device: u64,
) -> anyhow::Result<()> {
    let stored = stored_seqs(db, prefix)?;
    let expected: BTreeSet<u64> = (1..=per_device).collect();
    let mut missing = 0u64;
    let mut duplicated = 0u64;
    let mut problems = Vec::new();
    for serial in serials {
        let seqs = stored.get(serial).map(Vec::as_slice).unwrap_or_default();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        duplicated += (seqs.len() - unique.len()) as u64;
        let lost: Vec<u64> = expected.difference(&unique).copied().collect();
        let extra: Vec<u64> = unique.difference(&expected).copied().collect();
        missing += lost.len() as u64;
        if (!lost.is_empty() || !extra.is_empty() || seqs.len() != unique.len())
            && problems.len() < 10
        {
            problems.push(format!(
                "{serial}: {} stored, missing {:?}, unexpected {:?}",
                seqs.len(),
                &lost[..lost.len().min(10)],
                &extra[..extra.len().min(10)]
            ));
        }
    }
    let unknown: Vec<&String> = stored
        .keys()
        .filter(|s| !serials.contains(s))
        .take(10)
        .collect();
    let total: usize = stored.values().map(Vec::len).sum();
    anyhow::ensure!(
        missing == 0 && duplicated == 0 && unknown.is_empty(),
        "{total} readings stored, expected {}: {missing} missing, {duplicated} duplicated, \
         unknown serials {unknown:?}; {problems:#?}",
        serials.len() as u64 * per_device
    );
    anyhow::ensure!(
        total as u64 == serials.len() as u64 * per_device,
        "stored count {total} != published {}",
        serials.len() as u64 * per_device
    );
    Ok(())
}

/// Publishes `payloads` in order at QoS 1 over one rumqttc connection with client id
/// `client_id` (on the built-in endpoint, the serial) and returns once every PUBACK
/// arrived: on the built-in endpoint, once every message is committed.
pub async fn publish_acked(
    addr: SocketAddr,
    client_id: &str,
    topic: &str,
    payloads: &[String],
) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, payloads.len().max(1));
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await?;
    }
    let mut acked = 0;
    let result = tokio::time::timeout(Duration::from_secs(30), async {
        while acked < payloads.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await? {
                acked += 1;
            }
        }
        anyhow::Ok(())
    })
    .await;
    let _ = client.disconnect().await;
    result.map_err(|_| anyhow::anyhow!("only {acked} of {} PUBACKs within 30 s", payloads.len()))?
}
