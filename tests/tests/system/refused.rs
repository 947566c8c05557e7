//! Issue 20, defects 3 and 4: a message fleetpulse refuses is dead-lettered once and
//! acknowledged, so a sender that resends whatever was not acknowledged makes progress
//! and nothing behind the refused message waits.
//!
//! Built-in endpoint: a device client that speaks MQTT by hand (so it can send what a
//! library would not: another device's topic, a 300 KB packet, QoS 2 by hand) and
//! behaves like firmware: it keeps every message until it is acknowledged and, after a
//! lost connection, reconnects and resends what is unacknowledged (DUP set, same packet
//! id), whatever CONNACK's session-present flag says. External mode: a real Mosquitto
//! that takes a 300 KB publish among normal readings.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use fleetpulse_system_tests::load::publish_acked;
use fleetpulse_system_tests::{App, Mosquitto, eventually, reading, telemetry_topic};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, PubRel, Publish};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
/// How long the device waits for the next acknowledgement before it drops the
/// connection and starts over (as firmware would after its ack timeout).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Connections a device may use before the test calls it a reconnect loop.
const MAX_CONNECTIONS: usize = 5;
/// The size of the oversized message: over `mqtt.max_packet_bytes` and
/// `ingest.limits.max_payload_bytes` (both about 256 KiB by default), and over the
/// 260 KiB packet limit the external source had.
const BIG: usize = 300_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unsent,
    Sent,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited.
    Released,
    Done,
}

struct Message {
    publish: Publish,
    state: State,
}

#[derive(Debug, Default)]
struct Outcome {
    /// Connections used, the first included.
    connections: usize,
    /// PUBACKs and PUBRECs received: what the service's `acked_total` must count.
    acks: u64,
    /// Packet ids never acknowledged.
    unfinished: Vec<u16>,
}

/// A firmware-like device: keeps every message until acknowledged, resends after a
/// reconnect.
struct Device {
    addr: SocketAddr,
    serial: String,
    messages: Vec<Message>,
}

impl Device {
    fn new(addr: SocketAddr, serial: &str) -> Self {
        Self {
            addr,
            serial: serial.to_owned(),
            messages: Vec::new(),
        }
    }

    fn publish(mut self, topic: &str, qos: QoS, payload: impl Into<Vec<u8>>) -> Self {
        let mut publish = Publish::new(topic, qos, payload);
        publish.pkid = u16::try_from(self.messages.len() + 1).expect("a few messages");
        self.messages.push(Message {
            publish,
            state: State::Unsent,
        });
        self
    }

    /// Delivers every message, reconnecting (at most [`MAX_CONNECTIONS`] connections)
    /// whenever a connection ends before everything was acknowledged.
    async fn deliver(mut self) -> Outcome {
        let mut outcome = Outcome::default();
        while outcome.connections < MAX_CONNECTIONS && self.pending() {
            outcome.connections += 1;
            if let Err(error) = self.session(&mut outcome).await {
                eprintln!(
                    "[device {}] connection {} ended: {error:#}",
                    self.serial, outcome.connections
                );
            }
        }
        outcome.unfinished = self
            .messages
            .iter()
            .filter(|m| m.state != State::Done)
            .map(|m| m.publish.pkid)
            .collect();
        outcome
    }

    fn pending(&self) -> bool {
        self.messages.iter().any(|m| m.state != State::Done)
    }

    fn set(&mut self, pkid: u16, state: State) {
        if let Some(m) = self.messages.iter_mut().find(|m| m.publish.pkid == pkid) {
            m.state = state;
        }
    }

    async fn session(&mut self, outcome: &mut Outcome) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(self.addr).await?;
        let mut connect = Connect::new(self.serial.clone());
        connect.clean_session = false;
        connect.keep_alive = 30;
        let mut out = BytesMut::new();
        Packet::Connect(connect).write(&mut out, usize::MAX)?;
        stream.write_all(&out).await?;
        let mut buf = BytesMut::new();
        match tokio::time::timeout(ACK_WAIT, read(&mut stream, &mut buf)).await?? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            other => bail!("no successful CONNACK: {other:?}"),
        }
        // What is unacknowledged first (DUP), in order, then what was never sent.
        out.clear();
        for m in &mut self.messages {
            match m.state {
                State::Done => {}
                State::Released => {
                    Packet::PubRel(PubRel::new(m.publish.pkid)).write(&mut out, usize::MAX)?;
                }
                State::Sent | State::Unsent => {
                    m.publish.dup = m.state == State::Sent;
                    Packet::Publish(m.publish.clone()).write(&mut out, usize::MAX)?;
                    m.state = State::Sent;
                }
            }
        }
        stream.write_all(&out).await?;
        while self.pending() {
            let packet = tokio::time::timeout(ACK_WAIT, read(&mut stream, &mut buf))
                .await
                .context("no acknowledgement in time")??;
            match packet {
                Packet::PubAck(ack) => {
                    outcome.acks += 1;
                    self.set(ack.pkid, State::Done);
                }
                Packet::PubRec(rec) => {
                    outcome.acks += 1;
                    self.set(rec.pkid, State::Released);
                    out.clear();
                    Packet::PubRel(PubRel::new(rec.pkid)).write(&mut out, usize::MAX)?;
                    stream.write_all(&out).await?;
                }
                Packet::PubComp(comp) => self.set(comp.pkid, State::Done),
                other => bail!("unexpected packet {other:?}"),
            }
        }
        out.clear();
        Packet::Disconnect.write(&mut out, usize::MAX)?;
        stream.write_all(&out).await?;
        Ok(())
    }
}

async fn read(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Packet> {
    loop {
        match Packet::read(buf, usize::MAX) {
            Ok(packet) => return Ok(packet),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                if stream.read_buf(buf).await? == 0 {
                    bail!("closed by the service");
                }
            }
            Err(error) => bail!("unreadable packet: {error}"),
        }
    }
}

/// A reading padded to `size` bytes of JSON.
fn padded_reading(seq: u64, size: usize) -> String {
    let head = reading(seq, json!({ "filter_life_pct": 50.0 }));
    let pad = size.saturating_sub(head.len() + 10);
    let padded = reading(
        seq,
        json!({ "filter_life_pct": 50.0, "note": "x".repeat(pad) }),
    );
    assert!(padded.len() >= size - 20, "{}", padded.len());
    padded
}

async fn seqs(app: &App, serial: &str) -> anyhow::Result<Vec<u64>> {
    let rows = app.readings(serial, "limit=100").await?;
    Ok(rows.iter().filter_map(|r| r["seq"].as_u64()).collect())
}

async fn dead_letters_of(app: &App, client_id: &str) -> anyhow::Result<Vec<Value>> {
    let body = app.get_ok("/api/v1/dead-letters?limit=1000").await?;
    Ok(body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["client_id"] == json!(client_id))
        .cloned()
        .collect())
}

/// The reasons of dead letters (their payloads can be large).
fn reasons(letters: &[Value]) -> Vec<&Value> {
    letters.iter().map(|l| &l["reason"]).collect()
}

/// Checks the one dead letter of an oversized message: its size is named, and only
/// its first 1 024 bytes are kept.
fn assert_oversized_letter(letter: &Value, sent: &str) {
    assert_eq!(
        letter["reason"],
        json!("payload_too_large"),
        "{}",
        letter["detail"]
    );
    let detail = letter["detail"].as_str().expect("detail");
    let payload = letter["payload"].as_str().expect("payload");
    assert!(
        detail.contains(&sent.len().to_string()),
        "the size ({}) is named: {detail}",
        sent.len()
    );
    assert_eq!(
        payload,
        &sent[..1024],
        "the first 1 024 bytes are kept, not {} bytes",
        payload.len()
    );
}

/// Delivers the device's messages to `app` and checks that the device got every
/// acknowledgement on its first connection (no reconnect), and that the service counts
/// exactly the acknowledgements the device received.
async fn delivered_on_one_connection(app: &App, device: Device, case: &str) -> anyhow::Result<()> {
    let outcome = device.deliver().await;
    assert!(outcome.unfinished.is_empty(), "{case}: {outcome:?}");
    assert_eq!(outcome.connections, 1, "{case}: {outcome:?}");
    let acks = outcome.acks;
    eventually(WAIT, "acked_total to match the device's acks", || async {
        let health = app.get_ok("/health").await?;
        let counted = health["ingest"]["acked"].as_u64().context("ingest.acked")?;
        anyhow::ensure!(counted <= acks, "acked {counted} > received {acks}");
        Ok((counted == acks).then_some(()))
    })
    .await?;
    app.applied().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_another_devices_topic_is_dead_lettered_once_and_acked()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.context("built-in endpoint")?;
    let serial = "RF-000001";
    let own = telemetry_topic(serial);
    let foreign = telemetry_topic("RF-000999");
    let device = Device::new(addr, serial)
        .publish(&own, QoS::AtLeastOnce, reading(1, json!({})))
        .publish(&foreign, QoS::AtLeastOnce, reading(1, json!({})))
        .publish(&own, QoS::AtLeastOnce, reading(2, json!({})))
        .publish(&own, QoS::AtLeastOnce, reading(3, json!({})));
    delivered_on_one_connection(&app, device, "foreign topic").await?;
    assert_eq!(seqs(&app, serial).await?, [1, 2, 3]);
    let letters = dead_letters_of(&app, serial).await?;
    assert_eq!(letters.len(), 1, "one dead letter: {:?}", reasons(&letters));
    assert_eq!(letters[0]["reason"], json!("unsupported_topic"));
    assert_eq!(letters[0]["topic"], json!(foreign));
    assert!(seqs(&app, "RF-000999").await.unwrap_or_default().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_qos_2_runs_the_handshake_and_the_readings_flow() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.context("built-in endpoint")?;
    let serial = "RF-000002";
    let own = telemetry_topic(serial);
    let device = Device::new(addr, serial)
        .publish(&own, QoS::AtLeastOnce, reading(1, json!({})))
        .publish(&own, QoS::ExactlyOnce, reading(2, json!({})))
        .publish(&own, QoS::AtLeastOnce, reading(3, json!({})));
    delivered_on_one_connection(&app, device, "QoS 2").await?;
    assert_eq!(seqs(&app, serial).await?, [1, 2, 3]);
    assert!(dead_letters_of(&app, serial).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_a_packet_over_the_limit_is_dead_lettered_once_and_acked()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.context("built-in endpoint")?;
    let serial = "RF-000003";
    let own = telemetry_topic(serial);
    let big = padded_reading(2, BIG);
    let device = Device::new(addr, serial)
        .publish(&own, QoS::AtLeastOnce, reading(1, json!({})))
        .publish(&own, QoS::AtLeastOnce, big.clone())
        .publish(&own, QoS::AtLeastOnce, reading(3, json!({})));
    delivered_on_one_connection(&app, device, "oversized").await?;
    assert_eq!(seqs(&app, serial).await?, [1, 3]);
    let letters = dead_letters_of(&app, serial).await?;
    assert_eq!(letters.len(), 1, "one dead letter: {:?}", reasons(&letters));
    assert_oversized_letter(&letters[0], &big);

    // The same at QoS 2: PUBREC, PUBREL, PUBCOMP.
    let serial = "RF-000004";
    let own = telemetry_topic(serial);
    let big = padded_reading(1, BIG);
    let device = Device::new(addr, serial)
        .publish(&own, QoS::ExactlyOnce, big.clone())
        .publish(&own, QoS::AtLeastOnce, reading(2, json!({})));
    let outcome = device.deliver().await;
    assert!(
        outcome.unfinished.is_empty(),
        "oversized QoS 2: {outcome:?}"
    );
    assert_eq!(outcome.connections, 1, "oversized QoS 2: {outcome:?}");
    app.applied().await?;
    assert_eq!(seqs(&app, serial).await?, [2]);
    let letters = dead_letters_of(&app, serial).await?;
    assert_eq!(letters.len(), 1, "one dead letter: {:?}", reasons(&letters));
    assert_oversized_letter(&letters[0], &big);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_an_oversized_message_is_dead_lettered_once_and_the_rest_flows()
-> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_external(data.path(), broker.addr, "fleetpulse-refused").await?;
    eventually(WAIT, "ingest connected to the broker", || async {
        let h = app.get_ok("/health").await?;
        Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
    })
    .await?;
    let (a, big, c) = ("RX-000001", "RX-000002", "RX-000003");
    let r = |seq| reading(seq, json!({ "filter_life_pct": 80.0 }));
    publish_acked(broker.addr, "pub-a1", &telemetry_topic(a), &[r(1), r(2)]).await?;
    let sent = padded_reading(1, BIG);
    publish_acked(
        broker.addr,
        "pub-big",
        &telemetry_topic(big),
        std::slice::from_ref(&sent),
    )
    .await?;
    publish_acked(broker.addr, "pub-a2", &telemetry_topic(a), &[r(3), r(4)]).await?;
    publish_acked(broker.addr, "pub-c", &telemetry_topic(c), &[r(1), r(2)]).await?;

    eventually(WAIT, "the readings around the big one", || async {
        Ok((seqs(&app, a).await? == [1, 2, 3, 4] && seqs(&app, c).await? == [1, 2]).then_some(()))
    })
    .await?;
    let letters = eventually(WAIT, "the dead letter", || async {
        let letters = dead_letters_of(&app, big).await?;
        Ok((!letters.is_empty()).then_some(letters))
    })
    .await?;
    assert_eq!(letters.len(), 1, "one dead letter: {:?}", reasons(&letters));
    assert_oversized_letter(&letters[0], &sent);
    let health = app.get_ok("/health").await?;
    assert_eq!(
        health["ingest"]["broker_reconnects"],
        json!(0),
        "no reconnect: {health}"
    );
    Ok(())
}

/// A delivery over `broker.max_packet_bytes` cannot be read, so it cannot be acked: it is
/// said loudly (ERROR, `broker_oversized_packets_total`) and retried only every
/// `max_reconnect_backoff`, not in a tight loop. Once the limit is raised, the same
/// delivery is read, dead-lettered once and acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_a_delivery_over_the_client_limit_is_counted_and_never_loops_fast()
-> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let data = tempfile::tempdir()?;
    let url = format!("mqtt://{}", broker.addr);
    let args = ["serve", "--mqtt-url", url.as_str()];
    let client_id = ("FLEETPULSE_BROKER__CLIENT_ID", "fleetpulse-over-limit");
    let mut app = App::spawn_with_env(
        data.path(),
        &args,
        &[
            client_id,
            ("FLEETPULSE_BROKER__MAX_PACKET_BYTES", "65536"),
            ("FLEETPULSE_BROKER__MAX_RECONNECT_BACKOFF_MS", "1500"),
        ],
    )
    .await?;
    eventually(WAIT, "ingest connected to the broker", || async {
        let h = app.get_ok("/health").await?;
        Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
    })
    .await?;
    let serial = "RX-000009";
    let sent = padded_reading(1, BIG);
    publish_acked(
        broker.addr,
        "pub-over",
        &telemetry_topic(serial),
        std::slice::from_ref(&sent),
    )
    .await?;
    let oversized = |n: u64| {
        let app = &app;
        async move {
            let h = app.get_ok("/health").await?;
            let seen = h["ingest"]["broker_oversized_packets"]
                .as_u64()
                .context("ingest.broker_oversized_packets")?;
            Ok((seen >= n).then_some(()))
        }
    };
    eventually(WAIT, "the oversized delivery to be counted", || {
        oversized(1)
    })
    .await?;
    let first = std::time::Instant::now();
    eventually(WAIT, "the delivery to come again", || oversized(2)).await?;
    let gap = first.elapsed();
    assert!(
        gap >= Duration::from_millis(1_000),
        "retried after {gap:?}, not after max_reconnect_backoff (1.5 s)"
    );
    app.interrupt().await?;

    // The same session with the default limit: read, dead-lettered once, acked.
    let app = App::spawn_with_env(data.path(), &args, &[client_id]).await?;
    let letters = eventually(WAIT, "the dead letter", || async {
        let letters = dead_letters_of(&app, serial).await?;
        Ok((!letters.is_empty()).then_some(letters))
    })
    .await?;
    assert_eq!(letters.len(), 1, "one dead letter: {:?}", reasons(&letters));
    assert_oversized_letter(&letters[0], &sent);
    let r = reading(2, json!({}));
    publish_acked(broker.addr, "pub-after", &telemetry_topic(serial), &[r]).await?;
    eventually(WAIT, "the reading after it", || async {
        Ok((seqs(&app, serial).await? == [2]).then_some(()))
    })
    .await?;
    assert_eq!(dead_letters_of(&app, serial).await?.len(), 1);
    Ok(())
}

/// Connects as `serial`, waits for CONNACK and writes `publishes`. With `acked`, waits for
/// a PUBACK for each and says goodbye; without, drops the connection at once, before any
/// PUBACK can arrive (as a connection lost right after sending).
async fn session(
    addr: SocketAddr,
    serial: &str,
    publishes: &[Publish],
    acked: bool,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut connect = Connect::new(serial);
    connect.clean_session = false;
    connect.keep_alive = 30;
    let mut out = BytesMut::new();
    Packet::Connect(connect).write(&mut out, usize::MAX)?;
    stream.write_all(&out).await?;
    let mut buf = BytesMut::new();
    match tokio::time::timeout(ACK_WAIT, read(&mut stream, &mut buf)).await?? {
        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
        other => bail!("no successful CONNACK: {other:?}"),
    }
    out.clear();
    for publish in publishes {
        Packet::Publish(publish.clone()).write(&mut out, usize::MAX)?;
    }
    stream.write_all(&out).await?;
    if !acked {
        return Ok(());
    }
    let mut waiting: Vec<u16> = publishes.iter().map(|p| p.pkid).collect();
    while !waiting.is_empty() {
        match tokio::time::timeout(ACK_WAIT, read(&mut stream, &mut buf)).await?? {
            Packet::PubAck(ack) => waiting.retain(|pkid| *pkid != ack.pkid),
            other => bail!("unexpected packet {other:?}"),
        }
    }
    out.clear();
    Packet::Disconnect.write(&mut out, usize::MAX)?;
    stream.write_all(&out).await?;
    Ok(())
}

/// Issue 20 (edge 1): a refused message whose PUBACK was lost is resent (DUP) and must
/// not leave a second dead letter: the resend counts on the first (`repeats`,
/// `last_seen_at`). A different refused message still gets its own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_endpoint_a_refused_message_resent_after_a_lost_puback_is_one_dead_letter()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let app = App::serve_builtin(data.path()).await?;
    let addr = app.mqtt.context("built-in endpoint")?;
    let serial = "RF-000010";
    let own = telemetry_topic(serial);
    let foreign = telemetry_topic("RF-000999");
    let refused = [
        (own.as_str(), "{not json".to_owned()),
        (own.as_str(), reading(9_223_372_036_854_775_808, json!({}))),
        (foreign.as_str(), reading(1, json!({}))),
    ];
    let mut publishes: Vec<Publish> = refused
        .iter()
        .map(|(topic, payload)| Publish::new(*topic, QoS::AtLeastOnce, payload.clone()))
        .collect();
    publishes.push(Publish::new(&own, QoS::AtLeastOnce, reading(1, json!({}))));
    for (i, p) in publishes.iter_mut().enumerate() {
        p.pkid = u16::try_from(i + 1)?;
    }

    // the connection drops before any PUBACK: the device has none and keeps all four
    session(addr, serial, &publishes, false).await?;
    eventually(WAIT, "the first copies to be committed", || async {
        let letters = dead_letters_of(&app, serial).await?;
        Ok((letters.len() == refused.len() && seqs(&app, serial).await? == [1]).then_some(()))
    })
    .await?;
    // it reconnects and resends them, DUP set, same bytes
    for p in &mut publishes {
        p.dup = true;
    }
    session(addr, serial, &publishes, true).await?;
    let mut other = Publish::new(&own, QoS::AtLeastOnce, "{not json either");
    other.pkid = 9;
    session(addr, serial, &[other], true).await?;
    app.applied().await?;

    let letters = dead_letters_of(&app, serial).await?;
    let rows: Vec<(&Value, &Value, &Value)> = letters
        .iter()
        .map(|l| (&l["topic"], &l["payload"], &l["repeats"]))
        .collect();
    let expected: Vec<(Value, Value, Value)> = refused
        .iter()
        .map(|(topic, payload)| (json!(topic), json!(payload), json!(2)))
        .chain([(json!(own), json!("{not json either"), json!(1))])
        .collect();
    assert_eq!(
        rows,
        expected
            .iter()
            .map(|(a, b, c)| (a, b, c))
            .collect::<Vec<_>>(),
        "one row per refused message, the resend counted on it"
    );
    for letter in &letters[..refused.len()] {
        assert!(
            letter["last_seen_at"].as_str() > letter["received_at"].as_str(),
            "{letter}"
        );
    }
    assert_eq!(seqs(&app, serial).await?, [1]);
    let health = app.get_ok("/health").await?;
    assert_eq!(
        health["ingest"]["dead_letter_repeats"],
        json!(3),
        "{health}"
    );
    assert_eq!(health["store"]["dead_letters"], json!(4), "{health}");
    let metrics = app.get_text("/metrics").await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "fleetpulse_ingest_dead_letter_repeats_total 3"),
        "{metrics}"
    );
    Ok(())
}

/// External mode: the broker delivers the same refused message again (a redelivery, or
/// the device resending it through the broker): one dead letter, counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_a_refused_message_delivered_again_is_one_dead_letter() -> anyhow::Result<()>
{
    let broker = Mosquitto::start().await?;
    let data = tempfile::tempdir()?;
    let app = App::serve_external(data.path(), broker.addr, "fleetpulse-repeats").await?;
    eventually(WAIT, "ingest connected to the broker", || async {
        let h = app.get_ok("/health").await?;
        Ok((h["ingest"]["connected"] == json!(true)).then_some(()))
    })
    .await?;
    let serial = "RX-000020";
    let topic = telemetry_topic(serial);
    let bad = "{not json".to_owned();
    publish_acked(broker.addr, "pub-bad-1", &topic, std::slice::from_ref(&bad)).await?;
    publish_acked(
        broker.addr,
        "pub-bad-2",
        &topic,
        &[bad, reading(1, json!({}))],
    )
    .await?;
    publish_acked(broker.addr, "pub-bad-3", &topic, &["{other".to_owned()]).await?;

    let letters = eventually(WAIT, "both dead letters", || async {
        let letters = dead_letters_of(&app, serial).await?;
        let repeats: Vec<&Value> = letters.iter().map(|l| &l["repeats"]).collect();
        Ok(
            (repeats == [&json!(2), &json!(1)] && seqs(&app, serial).await? == [1])
                .then_some(letters),
        )
    })
    .await?;
    assert_eq!(letters[0]["payload"], json!("{not json"));
    assert_eq!(letters[1]["payload"], json!("{other"));
    Ok(())
}
