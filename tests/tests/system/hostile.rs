//! The process holds under clients and operators that do the wrong thing: a second server
//! on the same data directory, and (below) HTTP clients that open connections and never
//! finish a request.

use std::time::Duration;

use fleetpulse_simulator::FirmwarePublisher;
use fleetpulse_system_tests::{App, eventually, fleetpulse_bin};
use serde_json::json;

fn payload() -> serde_json::Value {
    json!({
        "ts": chrono::Utc::now().to_rfc3339(),
        "model": "HV-200",
        "runtime_hours": 1000.0,
        "filter_life_pct": 90.0,
        "leak_lpm": 12.5,
        "alarms": [],
    })
}

async fn connection_of(app: &App, serial: &str) -> anyhow::Result<serde_json::Value> {
    Ok(app.get_ok(&format!("/api/v1/devices/{serial}")).await?["connection"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_stops_at_once_and_names_the_first()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut first = App::serve_builtin(data.path()).await?;
    let mqtt = first.mqtt.expect("built-in endpoint");
    let device = FirmwarePublisher::connect(&format!("mqtt://{mqtt}"), "LK-0001", None).await?;
    device.publish_reading(payload()).await?;
    device.wait_all_acked(Duration::from_secs(20)).await?;
    first.applied().await?;
    eventually(Duration::from_secs(20), "the device online", || async {
        Ok((connection_of(&first, "LK-0001").await? == "online").then_some(()))
    })
    .await?;

    let second = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(fleetpulse_bin())
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(data.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the second serve did not stop within 20 s"))??;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second serve: {stderr}");
    let first_pid = first.child.id().expect("first still runs");
    assert!(
        stderr.contains("is in use by another fleetpulse process")
            && stderr.contains(&format!("pid {first_pid}"))
            && stderr.contains("serve"),
        "{stderr}"
    );

    // the first server's live state is untouched and it still takes readings
    assert_eq!(connection_of(&first, "LK-0001").await?, "online");
    device.publish_reading(payload()).await?;
    device.wait_all_acked(Duration::from_secs(20)).await?;
    first.applied().await?;
    let readings = first.readings("LK-0001", "limit=10").await?;
    assert_eq!(readings.len(), 2, "{readings:?}");

    // a lock left by a killed holder never blocks the next start
    first.kill().await;
    let _ = first.child.wait().await;
    let mut again = App::serve_builtin(data.path()).await?;
    again.interrupt().await?;
    Ok(())
}

/// Idle connections the test opens: more than the whole open-file limit of the server.
const IDLE: usize = 1_100;
/// Requests that declare a body and never send it.
const SLOW: usize = 50;
/// The server's open-file limit, soft and hard (`ulimit -n`), as on many hosts.
const SERVER_NOFILE: u64 = 1024;
/// The server's header read timeout (s) in this test.
const HEADER_TIMEOUT_S: u64 = 10;
/// The server's shutdown grace period (s) in this test.
const GRACE_S: u64 = 2;

/// The test itself holds about `IDLE + SLOW` sockets: its own soft limit goes up to its
/// hard one (the server is the one under a low limit).
fn raise_own_open_file_limit() -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
    if let Some(hard) = maximum {
        anyhow::ensure!(
            hard >= (IDLE + SLOW + 256) as u64,
            "this test needs a hard open-file limit of at least {}, not {hard}",
            IDLE + SLOW + 256
        );
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum,
            },
        )?;
    }
    Ok(())
}

/// Whether the peer closed the connection within `within` (EOF or reset).
async fn closed_within(mut stream: tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // an answer (e.g. to a slow request): keep reading to the close
            Ok(Ok(_)) => {}
        }
    }
}

fn api_addr(app: &App) -> anyhow::Result<std::net::SocketAddr> {
    Ok(app
        .api
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("plain http api: {}", app.api))?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_http_clients_under_ulimit_1024_block_neither_health_nor_devices_nor_shutdown()
-> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    raise_own_open_file_limit()?;
    let data = tempfile::tempdir()?;
    let header = HEADER_TIMEOUT_S.to_string();
    let grace = GRACE_S.to_string();
    let mut app = App::spawn_limited(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[
            ("FLEETPULSE_HTTP__HEADER_READ_TIMEOUT_S", header.as_str()),
            ("FLEETPULSE_HTTP__IDLE_TIMEOUT_S", header.as_str()),
            // the slow bodies stay in flight until the shutdown, which must not wait for them
            ("FLEETPULSE_HTTP__BODY_TIMEOUT_S", "600"),
            ("FLEETPULSE_HTTP__SHUTDOWN_GRACE_S", grace.as_str()),
        ],
        Some(&format!("-n {SERVER_NOFILE}")),
    )
    .await?;
    let pid = app.child.id().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(&SERVER_NOFILE.to_string())),
        "{limits}"
    );
    let api = api_addr(&app)?;
    let mqtt = app.mqtt.expect("built-in endpoint");

    // requests that declare a body and never send it (authorised, so they reach the body)
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = tokio::net::TcpStream::connect(api).await?;
        s.write_all(
            format!(
                "POST /api/v1/devices HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n{{\"serial\":",
                app.admin_token
            )
            .as_bytes(),
        )
        .await?;
        slow.push(s);
    }
    // connections that never send a byte: more than the server has file descriptors
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(api).await?);
    }
    let opened = std::time::Instant::now();

    let started = std::time::Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), app.get_ok("/health"))
        .await
        .map_err(|_| anyhow::anyhow!("/health did not answer within 5 s"))??;
    eprintln!(
        "/health answered in {:?}: {}",
        started.elapsed(),
        health["status"]
    );

    let device = tokio::time::timeout(
        Duration::from_secs(20),
        FirmwarePublisher::connect(&format!("mqtt://{mqtt}"), "HC-0001", None),
    )
    .await
    .map_err(|_| anyhow::anyhow!("a device could not connect within 20 s"))??;
    device.publish_reading(payload()).await?;
    device.wait_all_acked(Duration::from_secs(20)).await?;

    // every idle connection is closed: at the header read timeout, or earlier to make
    // room for a newcomer
    let mut waits = tokio::task::JoinSet::new();
    for s in idle {
        waits.spawn(closed_within(s, Duration::from_secs(HEADER_TIMEOUT_S + 30)));
    }
    let mut closed = 0;
    while let Some(c) = waits.join_next().await {
        closed += usize::from(c?);
    }
    eprintln!(
        "{closed} of {IDLE} idle connections closed after {:?}",
        opened.elapsed()
    );
    assert_eq!(closed, IDLE, "idle connections closed");
    // the API still answers after the storm (on a new connection: the pooled one may
    // have just met the idle timeout)
    let after = fleetpulse_system_tests::http_client()
        .build()?
        .get(app.url("/health"))
        .send()
        .await?;
    assert_eq!(after.status().as_u16(), 200);

    // SIGTERM with the slow requests still in flight: the process exits within the grace
    // period (plus the rest of an orderly stop)
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(term.success(), "kill -TERM failed");
    let asked = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(GRACE_S + 15), app.child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("still running {} s after SIGTERM", GRACE_S + 15))??;
    eprintln!("exited {:?} after SIGTERM: {status}", asked.elapsed());
    assert!(status.success(), "{status}");
    let mut still_open = 0;
    for s in slow {
        still_open += usize::from(!closed_within(s, Duration::from_secs(2)).await);
    }
    assert_eq!(
        still_open, 0,
        "slow requests' connections are gone with the process"
    );
    drop(device);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let mut app = App::spawn_limited(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[],
        Some("-S -n 512 && ulimit -H -n 4096"),
    )
    .await?;
    let pid = app.child.id().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a limits line");
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(values, ["4096", "4096"], "{line}");
    app.interrupt().await?;
    Ok(())
}

/// A device connection by hand: CONNECT, then what the endpoint answers.
struct RawDevice {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl RawDevice {
    /// Connects as `serial`: `Some` after a successful CONNACK, `None` when the endpoint
    /// closed the connection instead of answering.
    async fn connect(addr: std::net::SocketAddr, serial: &str) -> anyhow::Result<Option<Self>> {
        use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet};
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let mut device = RawDevice {
            stream,
            buf: bytes::BytesMut::new(),
        };
        let mut out = bytes::BytesMut::new();
        Packet::Connect(Connect::new(serial)).write(&mut out, usize::MAX)?;
        if device.stream.write_all(&out).await.is_err() {
            return Ok(None);
        }
        match device.read().await? {
            Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                Ok(Some(device))
            }
            None => Ok(None),
            Some(other) => anyhow::bail!("{serial}: unexpected answer {other:?}"),
        }
    }

    /// The next packet, or `None` when the endpoint closed the connection.
    async fn read(&mut self) -> anyhow::Result<Option<rumqttc::mqttbytes::v4::Packet>> {
        use tokio::io::AsyncReadExt;
        let wait = Duration::from_secs(10);
        loop {
            match rumqttc::mqttbytes::v4::Packet::read(&mut self.buf, usize::MAX) {
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    match tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf)).await {
                        Err(_) => anyhow::bail!("no answer within {wait:?}"),
                        Ok(Ok(0) | Err(_)) => return Ok(None),
                        Ok(Ok(_)) => {}
                    }
                }
                Err(error) => anyhow::bail!("unreadable packet: {error}"),
            }
        }
    }

    /// Publishes a reading at QoS 1 and waits for its PUBACK.
    async fn publish_acked(&mut self, serial: &str, pkid: u16) -> anyhow::Result<()> {
        use rumqttc::mqttbytes::QoS;
        use rumqttc::mqttbytes::v4::{Packet, Publish};
        use tokio::io::AsyncWriteExt;
        let topic = fleetpulse_system_tests::telemetry_topic(serial);
        let body = json!({ "seq": pkid, "ts": chrono::Utc::now().to_rfc3339() });
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, body.to_string());
        publish.pkid = pkid;
        let mut out = bytes::BytesMut::new();
        Packet::Publish(publish).write(&mut out, usize::MAX)?;
        self.stream.write_all(&out).await?;
        match self.read().await? {
            Some(Packet::PubAck(ack)) if ack.pkid == pkid => Ok(()),
            other => anyhow::bail!("{serial}: no PUBACK for {pkid}: {other:?}"),
        }
    }

    async fn disconnect(mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        rumqttc::mqttbytes::v4::Packet::Disconnect.write(&mut out, usize::MAX)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }
}

/// Issue 20 (edge 3): the built-in endpoint keeps at most `mqtt.max_connections` device
/// connections. One more is closed at once and counted; the open ones go on; a place
/// freed by a closed connection takes the next device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_endpoint_refuses_connections_over_its_cap_and_serves_the_rest()
-> anyhow::Result<()> {
    const CAP: usize = 5;
    let data = tempfile::tempdir()?;
    let mut app = App::spawn_with_env(
        data.path(),
        &["serve", "--mqtt-listen", "127.0.0.1:0"],
        &[("FLEETPULSE_MQTT__MAX_CONNECTIONS", "5")],
    )
    .await?;
    let addr = app.mqtt.expect("built-in endpoint");
    let serial = |i: usize| format!("CAP-{i:04}");

    let mut open = Vec::new();
    for i in 0..CAP {
        let device = RawDevice::connect(addr, &serial(i)).await?;
        open.push(device.ok_or_else(|| anyhow::anyhow!("device {i} of {CAP} refused"))?);
    }
    let sixth = RawDevice::connect(addr, &serial(CAP)).await?;
    assert!(
        sixth.is_none(),
        "the sixth connection is closed, not answered"
    );
    open[0].publish_acked(&serial(0), 1).await?;
    let health = app.get_ok("/health").await?;
    let ingest = &health["ingest"];
    assert_eq!(
        (
            &ingest["device_connections"],
            &ingest["device_connections_max"],
            &ingest["device_connections_refused"]
        ),
        (&json!(CAP), &json!(CAP), &json!(1)),
        "{health}"
    );
    let metrics = app.get_text("/metrics").await?;
    for line in [
        "fleetpulse_ingest_device_connections_refused_total 1",
        "fleetpulse_ingest_device_connections_max 5",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // one leaves: its place takes the next device (once its task has ended)
    open.remove(CAP - 1).disconnect().await?;
    let mut newcomer = eventually(Duration::from_secs(20), "a freed place", || async {
        RawDevice::connect(addr, &serial(CAP)).await
    })
    .await?;
    newcomer.publish_acked(&serial(CAP), 1).await?;
    open[1].publish_acked(&serial(1), 1).await?;
    app.interrupt().await?;
    Ok(())
}
