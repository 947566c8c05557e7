//! The firmware-like device link against a real Mosquitto and against a minimal peer
//! that misbehaves on purpose.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Mosquitto, Peer};
use fleetpulse_domain::Serial;
use fleetpulse_simulator::{
    DeviceLink, Endpoint, FirmwarePublisher, LinkError, LinkIdentity, LinkOptions,
};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish};
use rumqttc::{AsyncClient, Event, MqttOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn reading(n: u64) -> Value {
    json!({
        "ts": chrono::Utc::now().to_rfc3339(),
        "runtime_hours": 100.0 + n as f64,
        "filter_life_pct": 80.0,
        "alarms": [],
    })
}

fn seq_of(p: &Publish) -> u64 {
    let v: Value = serde_json::from_slice(&p.payload).expect("JSON payload");
    v["seq"].as_u64().expect("a seq")
}

fn quick_options() -> LinkOptions {
    LinkOptions {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..LinkOptions::default()
    }
}

/// Subscribes to `filters` and forwards every PUBLISH it receives.
async fn subscriber(
    port: u16,
    filters: &[String],
) -> anyhow::Result<mpsc::UnboundedReceiver<rumqttc::Publish>> {
    let mut opts = MqttOptions::new("link-test-subscriber", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 100);
    for f in filters {
        client
            .subscribe(f.as_str(), rumqttc::QoS::AtLeastOnce)
            .await?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    for _ in filters {
        tokio::time::timeout(WAIT, subscribed.recv()).await?;
    }
    Ok(rx)
}

#[tokio::test]
async fn every_reading_published_to_mosquitto_is_acked_and_delivered_in_order() -> anyhow::Result<()>
{
    let broker = Mosquitto::start().await?;
    let serial = "LINK-000001";
    let telemetry = format!("fleetpulse/v1/devices/{serial}/telemetry");
    let status = format!("fleetpulse/v1/devices/{serial}/status");
    let mut received = subscriber(broker.port, &[telemetry.clone(), status.clone()]).await?;

    let publisher = FirmwarePublisher::connect(&broker.url(), serial, None).await?;
    const N: u64 = 300;
    for n in 1..=N {
        assert_eq!(publisher.publish_reading(reading(n)).await?, n);
    }
    publisher.wait_all_acked(WAIT).await?;
    assert_eq!(publisher.acked_count(), N);

    let mut seqs = Vec::new();
    let mut states = Vec::new();
    while seqs.len() < N as usize {
        let p = tokio::time::timeout(WAIT, received.recv())
            .await?
            .expect("subscriber alive");
        if p.topic == telemetry {
            seqs.push(seq_of_rumqttc(&p));
        } else {
            states.push(String::from_utf8(p.payload.to_vec())?);
        }
    }
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    assert_eq!(
        states.first().map(String::as_str),
        Some(r#"{"state":"online"}"#),
        "birth first"
    );

    let stats = publisher.close(Duration::from_secs(2)).await;
    assert_eq!(
        (stats.published, stats.acked, stats.queued, stats.resent),
        (N, N, 0, 0)
    );
    let goodbye = tokio::time::timeout(WAIT, received.recv())
        .await?
        .expect("subscriber alive");
    assert_eq!(
        (goodbye.topic.as_str(), &goodbye.payload[..]),
        (status.as_str(), &b"offline"[..])
    );
    Ok(())
}

fn seq_of_rumqttc(p: &rumqttc::Publish) -> u64 {
    let v: Value = serde_json::from_slice(&p.payload).expect("JSON payload");
    v["seq"].as_u64().expect("a seq")
}

#[tokio::test]
async fn a_device_that_vanishes_leaves_its_last_will() -> anyhow::Result<()> {
    let broker = Mosquitto::start().await?;
    let serial = "LINK-000002";
    let status = format!("fleetpulse/v1/devices/{serial}/status");
    let mut received = subscriber(broker.port, std::slice::from_ref(&status)).await?;
    let publisher = FirmwarePublisher::connect(&broker.url(), serial, None).await?;
    let birth = tokio::time::timeout(WAIT, received.recv())
        .await?
        .expect("subscriber alive");
    assert_eq!(&birth.payload[..], br#"{"state":"online"}"#);
    drop(publisher); // the task is aborted: the socket closes without DISCONNECT
    let will = tokio::time::timeout(WAIT, received.recv())
        .await?
        .expect("subscriber alive");
    assert_eq!(&will.payload[..], b"offline");
    Ok(())
}

/// Accepts one connection and answers its CONNECT.
async fn accept(
    listener: &TcpListener,
    code: ConnectReturnCode,
) -> anyhow::Result<(Peer, Connect)> {
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept()).await??;
    let mut peer = Peer::new(stream);
    let Packet::Connect(connect) = peer.expect(WAIT).await? else {
        anyhow::bail!("first packet is not CONNECT");
    };
    peer.write(Packet::ConnAck(ConnAck::new(code, false)))
        .await?;
    Ok((peer, connect))
}

async fn next_publish(peer: &mut Peer) -> anyhow::Result<Publish> {
    loop {
        match peer.expect(WAIT).await? {
            Packet::Publish(p) => return Ok(p),
            Packet::PingReq => peer.write(Packet::PingResp).await?,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn unacked_readings_are_resent_with_dup_in_order_after_a_reconnect() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("mqtt://{}", listener.local_addr()?);
    const N: u64 = 60;
    const READ_BEFORE_CLOSE: usize = 10;

    let peer = tokio::spawn(async move {
        // first connection: read the birth and some readings, ack nothing, hang up
        let (mut first, connect) = accept(&listener, ConnectReturnCode::Success).await?;
        let birth = next_publish(&mut first).await?;
        let mut unacked = Vec::new();
        while unacked.len() < READ_BEFORE_CLOSE {
            unacked.push(next_publish(&mut first).await?);
        }
        drop(first);
        // second connection: ack everything
        let (mut second, _) = accept(&listener, ConnectReturnCode::Success).await?;
        let mut seen = Vec::new();
        loop {
            let p = next_publish(&mut second).await?;
            second.write(Packet::PubAck(PubAck::new(p.pkid))).await?;
            let last = p.topic.ends_with("/telemetry") && seq_of(&p) == N;
            seen.push(p);
            if last {
                break;
            }
        }
        // keep the connection open until the publisher has its acks
        tokio::time::sleep(Duration::from_millis(500)).await;
        anyhow::Ok((connect, birth, unacked, seen))
    });

    let publisher =
        FirmwarePublisher::connect_with(&url, "LINK-000003", None, quick_options()).await?;
    for n in 1..=N {
        publisher.publish_reading(reading(n)).await?;
    }
    publisher.wait_all_acked(WAIT).await?;
    let (connect, birth, first_session, second_session) = peer.await??;

    // what the first CONNECT said
    assert_eq!(connect.client_id, "LINK-000003");
    assert!(!connect.clean_session);
    let will = connect.last_will.expect("a last will");
    assert_eq!(
        (
            will.topic.as_str(),
            &will.message[..],
            will.qos,
            will.retain
        ),
        (
            "fleetpulse/v1/devices/LINK-000003/status",
            &b"offline"[..],
            QoS::AtLeastOnce,
            true
        )
    );
    assert!(birth.retain && birth.topic.ends_with("/status"));

    // the second session: birth, then the resends (DUP, in order, same packet ids), then new ones
    let (status, telemetry): (Vec<_>, Vec<_>) = second_session
        .into_iter()
        .partition(|p| p.topic.ends_with("/status"));
    assert_eq!(status.len(), 1, "one birth per connection");
    let resent: Vec<&Publish> = telemetry.iter().take_while(|p| p.dup).collect();
    assert!(
        resent.len() >= READ_BEFORE_CLOSE && resent.len() <= 16,
        "{} resent",
        resent.len()
    );
    assert!(
        telemetry[resent.len()..].iter().all(|p| !p.dup),
        "only resends carry DUP"
    );
    let seqs: Vec<u64> = telemetry.iter().map(seq_of).collect();
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "every reading once, in seq order"
    );
    for (before, again) in first_session.iter().zip(&resent) {
        assert_eq!((seq_of(before), before.pkid), (seq_of(again), again.pkid));
    }

    let stats = publisher.stats();
    assert_eq!((stats.acked, stats.queued, stats.reconnects), (N, 0, 1));
    assert_eq!(stats.resent, resent.len() as u64);
    Ok(())
}

#[tokio::test]
async fn an_idle_link_pings_and_reconnects_when_pings_go_unanswered() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("mqtt://{}", listener.local_addr()?);
    let options = LinkOptions {
        keep_alive: Duration::from_secs(1),
        ..quick_options()
    };
    let peer = tokio::spawn(async move {
        let (mut first, connect) = accept(&listener, ConnectReturnCode::Success).await?;
        assert_eq!(connect.keep_alive, 1);
        assert!(
            matches!(first.expect(WAIT).await?, Packet::Publish(_)),
            "birth"
        );
        // answer one PINGREQ, ignore the next: the link must give up and reconnect
        assert_eq!(first.expect(WAIT).await?, Packet::PingReq);
        first.write(Packet::PingResp).await?;
        assert_eq!(first.expect(WAIT).await?, Packet::PingReq);
        let (_second, _) = accept(&listener, ConnectReturnCode::Success).await?;
        anyhow::Ok(())
    });
    let publisher = FirmwarePublisher::connect_with(&url, "LINK-000004", None, options).await?;
    tokio::time::timeout(Duration::from_secs(15), peer).await???;
    tokio::time::timeout(WAIT, async {
        while publisher.stats().reconnects < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_full_store_stops_taking_readings_and_drops_none() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("mqtt://{}", listener.local_addr()?);
    let options = LinkOptions {
        queue_capacity: 5,
        ..quick_options()
    };
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<()>();
    let peer = tokio::spawn(async move {
        let (mut peer, _) = accept(&listener, ConnectReturnCode::Success).await?;
        next_publish(&mut peer).await?; // birth
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(next_publish(&mut peer).await?);
        }
        // ack only when told
        ack_rx.recv().await;
        for p in &held {
            peer.write(Packet::PubAck(PubAck::new(p.pkid))).await?;
        }
        let sixth = next_publish(&mut peer).await?;
        peer.write(Packet::PubAck(PubAck::new(sixth.pkid))).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        anyhow::Ok(held.iter().chain([&sixth]).map(seq_of).collect::<Vec<_>>())
    });

    let publisher = FirmwarePublisher::connect_with(&url, "LINK-000005", None, options).await?;
    for n in 1..=5 {
        publisher.publish_reading(reading(n)).await?;
    }
    let sixth = publisher.publish_reading(reading(6));
    tokio::pin!(sixth);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut sixth)
            .await
            .is_err(),
        "a full store does not take the sixth reading"
    );
    assert_eq!(publisher.unacked_count(), 5);
    ack_tx.send(())?;
    assert_eq!(tokio::time::timeout(WAIT, &mut sixth).await??, 6);
    publisher.wait_all_acked(WAIT).await?;
    assert_eq!(peer.await??, [1, 2, 3, 4, 5, 6]);
    Ok(())
}

#[tokio::test]
async fn the_device_logs_in_as_its_serial_and_a_refusal_is_an_error() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("mqtt://{}", listener.local_addr()?);
    let peer = tokio::spawn(async move {
        let (_peer, connect) = accept(&listener, ConnectReturnCode::BadUserNamePassword).await?;
        anyhow::Ok(connect)
    });
    let refused =
        FirmwarePublisher::connect_with(&url, "LINK-000006", Some("s3cret"), quick_options()).await;
    assert!(matches!(
        refused,
        Err(LinkError::Refused(ConnectReturnCode::BadUserNamePassword))
    ));
    let login = peer.await??.login.expect("a login");
    assert_eq!(
        (login.username.as_str(), login.password.as_str()),
        ("LINK-000006", "s3cret")
    );

    assert!(matches!(
        FirmwarePublisher::connect("mqtts://x:1", "A", None).await,
        Err(LinkError::Url(_))
    ));
    assert!(matches!(
        FirmwarePublisher::connect(&url, "bad/serial", None).await,
        Err(LinkError::Serial(_))
    ));
    Ok(())
}

/// A gateway's status for the device it polls: published at once while connected, and
/// announced instead of the birth after a reconnect.
#[tokio::test]
async fn a_status_set_while_connected_is_published_and_replaces_the_birth() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = Endpoint::parse(&format!("mqtt://{}", listener.local_addr()?))?;
    let link = DeviceLink::spawn(
        endpoint,
        LinkIdentity {
            serial: Serial::parse("LINK-000009")?,
            password: None,
            model: Some("OC-5A".into()),
            firmware: None,
        },
        quick_options(),
        Duration::ZERO,
    );
    let (mut first, _) = accept(&listener, ConnectReturnCode::Success).await?;
    let birth = next_publish(&mut first).await?;
    let birth: Value = serde_json::from_slice(&birth.payload)?;
    assert_eq!(birth, json!({"state": "online", "model": "OC-5A"}));

    let unreachable = Bytes::from_static(br#"{"state":"unreachable","reason":"timeout"}"#);
    link.set_status(unreachable.clone());
    let status = next_publish(&mut first).await?;
    assert!(status.retain && status.topic.ends_with("/status"));
    assert_eq!(status.payload, unreachable);
    first
        .write(Packet::PubAck(PubAck::new(status.pkid)))
        .await?;
    drop(first);

    let (mut second, _) = accept(&listener, ConnectReturnCode::Success).await?;
    let announced = next_publish(&mut second).await?;
    assert_eq!(
        announced.payload, unreachable,
        "the latest status, not the birth"
    );
    drop(second);
    link.shutdown(Duration::ZERO).await;
    Ok(())
}
