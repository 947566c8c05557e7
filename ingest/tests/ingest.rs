//! Ingest against real components: the built-in endpoint with the real SQLite store and
//! a real MQTT client (rumqttc), and the external source against a real Mosquitto.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use fleetpulse_domain::catalog::Catalog;
use fleetpulse_domain::rules::{DeviceContext, OrderRules, StateChange};
use fleetpulse_domain::store::{
    DeadLetter, DeadLetterQuery, ReadingQuery, Store, UnknownDevicePolicy,
};
use fleetpulse_domain::{ConnectionState, OrderIntent, RejectReason, Serial};
use fleetpulse_ingest::{
    BatchPolicy, EndpointConfig, ExternalConfig, ExternalSource, MqttEndpoint, Pipeline,
    PipelineConfig, PipelineHandle,
};
use fleetpulse_store::{Durability, SqliteStore, StoreOptions};
use rumqttc::{
    AsyncClient, Connect, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// Logs of the code under test, shown for failing tests (`RUST_LOG` to change the level).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("fleetpulse_ingest=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// No orders: these tests are about getting readings in.
struct NoRules;

impl OrderRules for NoRules {
    fn evaluate(
        &self,
        _: &DeviceContext<'_>,
        _: &StateChange<'_>,
        _: DateTime<Utc>,
    ) -> Vec<OrderIntent> {
        Vec::new()
    }
}

async fn open_store(dir: &Path) -> Arc<SqliteStore> {
    let options = StoreOptions {
        clock: Default::default(),
        catalog: Arc::new(
            Catalog::from_toml_str(include_str!("../../config/catalog.toml"))
                .expect("the example catalog is valid"),
        ),
        rules: Arc::new(NoRules),
        unknown_device: UnknownDevicePolicy::AutoRegister,
        durability: Durability::Full,
        sink_spool: false,
        cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
    };
    Arc::new(
        SqliteStore::open(&dir.join("fleet.db"), options)
            .await
            .expect("store opens"),
    )
}

/// fleetpulse ingest with its built-in endpoint on 127.0.0.1:0.
struct App {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    pipeline: PipelineHandle,
    shutdown: Option<oneshot::Sender<()>>,
    endpoint: JoinHandle<()>,
    _dir: TempDir,
}

async fn spawn_app() -> App {
    spawn_app_with(EndpointConfig::default(), BatchPolicy::default()).await
}

async fn spawn_app_with(config: EndpointConfig, batch: BatchPolicy) -> App {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path()).await;
    let (pipeline, _task) = Pipeline::spawn(
        store.clone(),
        PipelineConfig {
            batch,
            ..PipelineConfig::default()
        },
    );
    let bound = MqttEndpoint::bind(EndpointConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..config
    })
    .await
    .expect("endpoint binds");
    let addr = bound.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let endpoint = tokio::spawn(bound.run(pipeline.clone(), async {
        let _ = rx.await;
    }));
    App {
        addr,
        store,
        pipeline,
        shutdown: Some(tx),
        endpoint,
        _dir: dir,
    }
}

impl App {
    async fn readings(&self, serial: &str) -> Vec<u64> {
        readings(self.store.as_ref(), serial).await
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        dead_letters(self.store.as_ref()).await
    }

    /// Shuts the endpoint down and waits until it returned (pipeline drained of its
    /// connections' messages).
    /// Stops the endpoint and drains the pipeline; returns the store with the directory
    /// that holds it (the database is gone once that is dropped).
    async fn shut_down(mut self) -> (Arc<SqliteStore>, TempDir) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(WAIT, &mut self.endpoint)
            .await
            .expect("endpoint stops")
            .expect("endpoint task ok");
        self.pipeline.close();
        tokio::time::timeout(WAIT, self.pipeline.drained())
            .await
            .expect("pipeline drains");
        (self.store, self._dir)
    }
}

async fn readings(store: &dyn Store, serial: &str) -> Vec<u64> {
    let query = ReadingQuery {
        serial: Serial::parse(serial).expect("serial"),
        from: None,
        to: None,
        after: None,
        limit: 1000,
    };
    let mut seqs: Vec<u64> = store
        .readings(query)
        .await
        .expect("readings")
        .items
        .into_iter()
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    seqs
}

async fn dead_letters(store: &dyn Store) -> Vec<DeadLetter> {
    let query = DeadLetterQuery {
        reason: None,
        after: None,
        limit: 100,
    };
    store.dead_letters(query).await.expect("dead letters").items
}

/// Polls `check` until it holds (the store is written asynchronously from the test's
/// point of view when no ack tells us it is done).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn telemetry_topic(serial: &str) -> String {
    format!("fleetpulse/v1/devices/{serial}/telemetry")
}

fn status_topic(serial: &str) -> String {
    format!("fleetpulse/v1/devices/{serial}/status")
}

fn reading(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"ts":"{}","flow_lpm":2.5,"filter_life_pct":80}}"#,
        Utc::now().to_rfc3339()
    )
}

/// A device: a real MQTT client whose events the test reads. The event loop stops at
/// the first error (no automatic reconnect), so a disconnect is observable.
struct Device {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

fn device_options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

fn connect_device(options: MqttOptions) -> Device {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                break;
            }
        }
    });
    Device {
        client,
        events,
        task,
    }
}

impl Device {
    async fn next(&mut self) -> Result<Event, ConnectionError> {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event in time")
            .expect("event loop running")
    }

    /// Waits for CONNACK; panics on anything else that ends the connection.
    async fn connected(mut self) -> Self {
        loop {
            match self.next().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success);
                    assert!(!ack.session_present, "the endpoint keeps no session");
                    return self;
                }
                Ok(_) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// Waits for the next PUBACK and returns its packet id.
    async fn puback(&mut self) -> u16 {
        loop {
            match self.next().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => return ack.pkid,
                Ok(_) => {}
                Err(e) => panic!("connection failed while waiting for PUBACK: {e}"),
            }
        }
    }

    /// Waits until the connection ends; returns the error.
    async fn disconnected(&mut self) -> ConnectionError {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }

    async fn publish(&self, topic: &str, qos: QoS, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, false, payload)
            .await
            .expect("publish queued");
    }
}

#[tokio::test]
async fn readings_are_stored_and_each_puback_comes_after_its_commit() {
    let app = spawn_app().await;
    let mut device = connect_device(device_options(app.addr, "OC5-000001"))
        .connected()
        .await;

    for seq in 1..=5 {
        device
            .publish(
                &telemetry_topic("OC5-000001"),
                QoS::AtLeastOnce,
                reading(seq),
            )
            .await;
    }
    for _ in 1..=5 {
        // rumqttc numbers packets from 1, so packet id n carries seq n.
        let pkid = device.puback().await;
        let stored = app.readings("OC5-000001").await;
        assert!(
            stored.contains(&u64::from(pkid)),
            "PUBACK {pkid} arrived before its reading was stored (stored: {stored:?})"
        );
    }
    assert_eq!(app.readings("OC5-000001").await, [1, 2, 3, 4, 5]);
    let stats = app.pipeline.stats().snapshot();
    assert_eq!((stats.readings_stored, stats.acked), (5, 5));
    device.task.abort();
}

#[tokio::test]
async fn a_resent_reading_is_acked_again_and_stored_once() {
    let app = spawn_app().await;
    let mut device = connect_device(device_options(app.addr, "OC5-000001"))
        .connected()
        .await;
    device
        .publish(&telemetry_topic("OC5-000001"), QoS::AtLeastOnce, reading(7))
        .await;
    device
        .publish(&telemetry_topic("OC5-000001"), QoS::AtLeastOnce, reading(7))
        .await;
    device.puback().await;
    device.puback().await;
    assert_eq!(app.readings("OC5-000001").await, [7]);
    assert_eq!(app.pipeline.stats().snapshot().duplicates, 1);
    device.task.abort();
}

#[tokio::test]
async fn a_malformed_payload_beside_a_good_one_becomes_one_dead_letter_and_both_are_acked() {
    let app = spawn_app().await;
    let mut device = connect_device(device_options(app.addr, "OC5-000001"))
        .connected()
        .await;

    device
        .publish(
            &telemetry_topic("OC5-000001"),
            QoS::AtLeastOnce,
            "{not json",
        )
        .await;
    device
        .publish(&telemetry_topic("OC5-000001"), QoS::AtLeastOnce, reading(1))
        .await;
    device.puback().await;
    device.puback().await;

    assert_eq!(app.readings("OC5-000001").await, [1]);
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, RejectReason::MalformedJson);
    assert_eq!(dead[0].client_id, "OC5-000001");
    assert_eq!(dead[0].payload, "{not json");
    device.task.abort();
}

#[tokio::test]
async fn another_devices_topic_is_dead_lettered_once_acked_and_the_connection_goes_on() {
    let app = spawn_app().await;
    let mut device = RawDevice::connect(app.addr, "OC5-000001").await;
    let foreign = telemetry_topic("OC5-000002");
    device
        .send(publish(&foreign, QoS::AtLeastOnce, 1, reading(1)))
        .await;
    device
        .send(publish(
            &telemetry_topic("OC5-000001"),
            QoS::AtLeastOnce,
            2,
            reading(2),
        ))
        .await;
    assert_eq!(device.read_pkids(2).await, [("PUBACK", 1), ("PUBACK", 2)]);

    let letters = app.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, RejectReason::UnsupportedTopic);
    assert_eq!(letters[0].client_id, "OC5-000001");
    assert_eq!(letters[0].topic, foreign);
    assert!(app.readings("OC5-000002").await.is_empty());
    assert_eq!(app.readings("OC5-000001").await, [2]);
}

#[tokio::test]
async fn qos_2_gets_pubrec_after_the_commit_and_pubcomp_for_its_pubrel() {
    let app = spawn_app().await;
    let mut device = RawDevice::connect(app.addr, "OC5-000001").await;
    let topic = telemetry_topic("OC5-000001");
    device
        .send(publish(&topic, QoS::ExactlyOnce, 7, reading(1)))
        .await;
    assert_eq!(device.read_pkids(1).await, [("PUBREC", 7)]);
    // The PUBREC means committed.
    assert_eq!(app.readings("OC5-000001").await, [1]);
    device.send(Packet::PubRel(rumqttc::PubRel::new(7))).await;
    assert_eq!(device.read_pkids(1).await, [("PUBCOMP", 7)]);
    // A PUBREL after a reconnect (the endpoint keeps no state) is answered too, and a
    // resent PUBLISH is stored once.
    let mut device = RawDevice::connect(app.addr, "OC5-000001").await;
    let mut again = rumqttc::Publish::new(&topic, QoS::ExactlyOnce, reading(1));
    again.pkid = 7;
    again.dup = true;
    device.send(Packet::Publish(again)).await;
    device.send(Packet::PubRel(rumqttc::PubRel::new(9))).await;
    device
        .send(publish(&topic, QoS::AtLeastOnce, 8, reading(2)))
        .await;
    // PUBCOMP goes out as soon as the PUBREL is read; PUBREC and PUBACK in order after
    // their commit.
    let mut acks = device.read_pkids(3).await;
    let pubcomp = acks
        .iter()
        .position(|a| a.0 == "PUBCOMP")
        .expect("a PUBCOMP");
    assert_eq!(acks.remove(pubcomp), ("PUBCOMP", 9));
    assert_eq!(acks, [("PUBREC", 7), ("PUBACK", 8)]);
    assert_eq!(app.readings("OC5-000001").await, [1, 2]);
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_right_one_accepted() {
    let config = EndpointConfig {
        password: Some("s3cret".into()),
        ..EndpointConfig::default()
    };
    let app = spawn_app_with(config, BatchPolicy::default()).await;

    let mut options = device_options(app.addr, "OC5-000001");
    options.set_credentials("OC5-000001", "wrong");
    let mut refused = connect_device(options);
    match refused.disconnected().await {
        ConnectionError::ConnectionRefused(code) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("expected a refused CONNACK, got {other}"),
    }

    let mut options = device_options(app.addr, "OC5-000001");
    options.set_credentials("OC5-000001", "s3cret");
    let mut accepted = connect_device(options).connected().await;
    accepted
        .publish(&telemetry_topic("OC5-000001"), QoS::AtLeastOnce, reading(1))
        .await;
    accepted.puback().await;
    assert_eq!(app.readings("OC5-000001").await, [1]);
    accepted.task.abort();
}

#[tokio::test]
async fn a_client_id_that_is_not_a_serial_is_refused() {
    let app = spawn_app().await;
    let mut device = connect_device(device_options(app.addr, "not a serial!"));
    match device.disconnected().await {
        ConnectionError::ConnectionRefused(code) => {
            assert_eq!(code, ConnectReturnCode::BadClientId)
        }
        other => panic!("expected a refused CONNACK, got {other}"),
    }
}

#[tokio::test]
async fn subscriptions_are_refused_and_pings_answered() {
    let app = spawn_app().await;
    let mut options = device_options(app.addr, "OC5-000001");
    options.set_keep_alive(Duration::from_secs(1));
    let mut device = connect_device(options).connected().await;
    device
        .client
        .subscribe(
            "fleetpulse/v1/devices/OC5-000001/commands",
            QoS::AtLeastOnce,
        )
        .await
        .expect("subscribe queued");
    let mut pings = 0;
    let mut suback = None;
    while suback.is_none() || pings < 2 {
        match device.next().await {
            Ok(Event::Incoming(Packet::SubAck(ack))) => suback = Some(ack),
            Ok(Event::Incoming(Packet::PingResp)) => pings += 1,
            Ok(_) => {}
            Err(e) => panic!("connection failed: {e}"),
        }
    }
    let suback = suback.expect("SUBACK");
    assert_eq!(suback.return_codes, [SubscribeReasonCode::Failure]);
    drop(app);
    device.task.abort();
}

#[tokio::test]
async fn a_lost_connection_publishes_the_devices_last_will() {
    let app = spawn_app().await;
    let mut options = device_options(app.addr, "OC5-000001");
    options.set_last_will(LastWill::new(
        status_topic("OC5-000001"),
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let mut device = connect_device(options).connected().await;
    device
        .publish(&telemetry_topic("OC5-000001"), QoS::AtLeastOnce, reading(1))
        .await;
    device.puback().await;
    device
        .publish(&status_topic("OC5-000001"), QoS::AtLeastOnce, "online")
        .await;
    device.puback().await;
    assert_eq!(
        connection_state(&app, "OC5-000001").await,
        Some(ConnectionState::Online)
    );

    // The socket closes without DISCONNECT.
    device.task.abort();
    drop(device);

    let app = &app;
    eventually("the will to mark the device offline", move || async move {
        connection_state(app, "OC5-000001").await == Some(ConnectionState::Offline)
    })
    .await;
}

async fn connection_state(app: &App, serial: &str) -> Option<ConnectionState> {
    app.store
        .device(&Serial::parse(serial).expect("serial"))
        .await
        .expect("device query")
        .map(|d| d.device.connection)
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let app = spawn_app().await;
    let mut first = connect_device(device_options(app.addr, "OC5-000001"))
        .connected()
        .await;
    let mut second = connect_device(device_options(app.addr, "OC5-000001"))
        .connected()
        .await;

    first.disconnected().await;
    second
        .publish(&telemetry_topic("OC5-000001"), QoS::AtLeastOnce, reading(1))
        .await;
    second.puback().await;
    assert_eq!(app.readings("OC5-000001").await, [1]);
    second.task.abort();
}

#[tokio::test]
async fn shutdown_commits_and_acks_what_was_accepted_before_closing_sockets() {
    // A long linger: at shutdown the batch is still open.
    let batch = BatchPolicy {
        linger: Duration::from_millis(500),
        ..BatchPolicy::default()
    };
    let app = spawn_app_with(EndpointConfig::default(), batch).await;
    // A client on the raw codec: rumqttc drops PUBACKs that arrive together with the
    // close, and this test is about exactly those bytes.
    let mut device = RawDevice::connect(app.addr, "OC5-000001").await;
    for seq in 1..=3 {
        let mut publish = Publish::new(
            telemetry_topic("OC5-000001"),
            QoS::AtLeastOnce,
            reading(seq),
        );
        publish.pkid = u16::try_from(seq).expect("small");
        device.send(Packet::Publish(publish)).await;
    }
    let pipeline = &app.pipeline;
    eventually("the pipeline to accept the messages", move || async move {
        pipeline.stats().snapshot().received_messages == 3
    })
    .await;

    let (store, _dir) = app.shut_down().await;

    let acked: Vec<u16> = device
        .read_until_closed()
        .await
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(ack) => Some(ack.pkid),
            _ => None,
        })
        .collect();
    assert_eq!(
        acked,
        [1, 2, 3],
        "every accepted PUBLISH is acked, in order, before the close"
    );
    assert_eq!(readings(store.as_ref(), "OC5-000001").await, [1, 2, 3]);
}

/// A device speaking MQTT through rumqttc's codec over a plain socket.
fn publish(topic: &str, qos: QoS, pkid: u16, payload: impl Into<Vec<u8>>) -> Packet {
    let mut publish = Publish::new(topic, qos, payload);
    publish.pkid = pkid;
    Packet::Publish(publish)
}

struct RawDevice {
    stream: tokio::net::TcpStream,
    buf: BytesMut,
}

impl RawDevice {
    async fn connect(addr: SocketAddr, client_id: &str) -> Self {
        Self::connect_with(addr, Connect::new(client_id)).await
    }

    async fn connect_with(addr: SocketAddr, connect: Connect) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let mut device = Self {
            stream,
            buf: BytesMut::new(),
        };
        device.send(Packet::Connect(connect)).await;
        match device.read().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        device
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).expect("encodes");
        self.stream.write_all(&out).await.expect("writes");
    }

    /// The next packet, or `None` at end of stream.
    async fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::Error::InsufficientBytes(_)) => {
                    let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                        .await
                        .expect("data in time");
                    match read {
                        Ok(0) => return None,
                        Ok(_) => {}
                        // Closing with our unread bytes still queued resets the socket.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                        Err(e) => panic!("read failed: {e}"),
                    }
                }
                Err(e) => panic!("bad packet from the endpoint: {e}"),
            }
        }
    }

    /// The next `n` acknowledgements, by kind and packet id.
    async fn read_pkids(&mut self, n: usize) -> Vec<(&'static str, u16)> {
        let mut acks = Vec::new();
        while acks.len() < n {
            acks.push(match self.read().await {
                Some(Packet::PubAck(a)) => ("PUBACK", a.pkid),
                Some(Packet::PubRec(a)) => ("PUBREC", a.pkid),
                Some(Packet::PubComp(a)) => ("PUBCOMP", a.pkid),
                other => panic!("expected an acknowledgement, got {other:?}"),
            });
        }
        acks
    }

    async fn read_until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.read().await {
            packets.push(packet);
        }
        packets
    }
}

#[tokio::test]
async fn an_oversize_publish_is_skipped_unread_dead_lettered_and_acked() {
    let config = EndpointConfig {
        max_packet_bytes: 1024,
        ..EndpointConfig::default()
    };
    let app = spawn_app_with(config, BatchPolicy::default()).await;
    let mut device = RawDevice::connect(app.addr, "OC5-000001").await;
    let topic = telemetry_topic("OC5-000001");
    let big = format!("{{\"seq\":2,{}}}", " ".repeat(300_000));
    device
        .send(publish(&topic, QoS::AtLeastOnce, 1, reading(1)))
        .await;
    device
        .send(publish(&topic, QoS::AtLeastOnce, 2, big.clone()))
        .await;
    device
        .send(publish(&topic, QoS::ExactlyOnce, 3, big.clone()))
        .await;
    device
        .send(publish(&topic, QoS::AtLeastOnce, 4, reading(4)))
        .await;
    assert_eq!(
        device.read_pkids(4).await,
        [("PUBACK", 1), ("PUBACK", 2), ("PUBREC", 3), ("PUBACK", 4)]
    );
    assert_eq!(app.readings("OC5-000001").await, [1, 4]);
    // the same bytes twice (QoS 1, then QoS 2) are the same message: one row, counted twice
    let letters = app.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].repeats, 2, "{letters:?}");
    for letter in &letters {
        assert_eq!(letter.reason, RejectReason::PayloadTooLarge);
        assert_eq!(letter.topic, topic);
        assert_eq!(letter.payload.as_bytes(), &big.as_bytes()[..1024]);
        assert!(
            letter.detail.contains(&big.len().to_string()),
            "{}",
            letter.detail
        );
    }
    // Written PUBACKs and PUBRECs, counted once written.
    assert_eq!(app.pipeline.stats().snapshot().acked, 4);
}

#[tokio::test]
async fn an_oversize_packet_other_than_publish_disconnects_without_being_read() {
    let config = EndpointConfig {
        max_packet_bytes: 1024,
        ..EndpointConfig::default()
    };
    let app = spawn_app_with(config, BatchPolicy::default()).await;
    let mut device = RawDevice::connect(app.addr, "OC5-000001").await;
    let filter = format!("fleetpulse/{}", "x".repeat(4096));
    let subscribe = rumqttc::Subscribe::new(filter, QoS::AtLeastOnce);
    device.send(Packet::Subscribe(subscribe)).await;
    assert_eq!(device.read_until_closed().await, []);
    assert_eq!(app.pipeline.stats().snapshot().received_messages, 0);
}

#[tokio::test]
async fn a_silent_device_is_dropped_after_one_and_a_half_keepalives() {
    let app = spawn_app().await;
    let mut connect = Connect::new("OC5-000001");
    connect.keep_alive = 1;
    let mut device = RawDevice::connect_with(app.addr, connect).await;
    let start = std::time::Instant::now();
    assert_eq!(device.read_until_closed().await, []);
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_setting() {
    let app = spawn_app().await;
    let taken = EndpointConfig {
        listen: app.addr,
        ..EndpointConfig::default()
    };
    let error = match MqttEndpoint::bind(taken).await {
        Ok(_) => panic!("binding a port in use must fail"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("mqtt.listen"), "{error}");
    assert!(error.contains(&app.addr.to_string()), "{error}");
}

// ---------------------------------------------------------------------------------
// External broker mode against a real Mosquitto.

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

struct Mosquitto {
    port: u16,
    child: std::process::Child,
    _dir: TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a private Mosquitto on a free port (never 1883: a system broker has it).
async fn start_mosquitto() -> Option<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!(
            "\n\n!!!!! SKIPPED: {MOSQUITTO} not found; external broker mode NOT tested !!!!!\n"
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 0\n"
        ),
    )
    .expect("write mosquitto.conf");
    let child = std::process::Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let broker = Mosquitto {
        port,
        child,
        _dir: dir,
    };
    eventually("mosquitto to listen", move || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    Some(broker)
}

/// The external source with its own pipeline and store, stoppable.
struct Ingest {
    pipeline: PipelineHandle,
    shutdown: oneshot::Sender<()>,
    source: JoinHandle<()>,
}

fn start_external(store: Arc<SqliteStore>, port: u16, client_id: &str) -> Ingest {
    let (pipeline, _task) = Pipeline::spawn(store, PipelineConfig::default());
    let config = ExternalConfig {
        client_id: client_id.into(),
        ..ExternalConfig::new(format!("mqtt://127.0.0.1:{port}"))
    };
    let source = ExternalSource::new(config).expect("valid config");
    let (shutdown, rx) = oneshot::channel::<()>();
    let source = tokio::spawn(source.run(pipeline.clone(), async {
        let _ = rx.await;
    }));
    Ingest {
        pipeline,
        shutdown,
        source,
    }
}

impl Ingest {
    async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(WAIT, self.source)
            .await
            .expect("source stops")
            .expect("source task ok");
        self.pipeline.close();
        tokio::time::timeout(WAIT, self.pipeline.drained())
            .await
            .expect("pipeline drains");
    }
}

/// A device publishing to the broker (QoS 1, waits for the broker's PUBACK).
async fn publish_to_broker(port: u16, client_id: &str, topic: &str, payloads: &[String]) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let mut device = connect_device(options).connected().await;
    for payload in payloads {
        device
            .publish(topic, QoS::AtLeastOnce, payload.clone())
            .await;
    }
    for _ in payloads {
        device.puback().await;
    }
    device.client.disconnect().await.expect("disconnect queued");
    device.task.abort();
}

#[tokio::test]
async fn external_mode_stores_what_devices_publish_to_a_real_broker() {
    let Some(broker) = start_mosquitto().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path()).await;
    let ingest = start_external(store.clone(), broker.port, "fleetpulse-ingest-test");

    // The subscription is made asynchronously: resend seq 1 until it lands (dedupe
    // makes the repeats harmless).
    let topic = telemetry_topic("OC5-000009");
    eventually("the first reading through the broker", || {
        let (store, topic) = (store.clone(), topic.clone());
        async move {
            publish_to_broker(broker.port, "dev-9", &topic, &[reading(1)]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            readings(store.as_ref(), "OC5-000009").await == [1]
        }
    })
    .await;

    let burst: Vec<String> = (2..=10)
        .map(reading)
        .chain(["{broken".to_owned()])
        .collect();
    publish_to_broker(broker.port, "dev-9", &topic, &burst).await;
    let s = store.as_ref();
    eventually("the burst to be stored", move || async move {
        readings(s, "OC5-000009").await.len() == 10
    })
    .await;
    eventually("the malformed payload's dead letter", move || async move {
        dead_letters(s)
            .await
            .iter()
            .any(|d| d.reason == RejectReason::MalformedJson && d.client_id == "OC5-000009")
    })
    .await;
    ingest.stop().await;

    // The session is persistent: what arrives while ingest is down is delivered when it
    // comes back with the same client id.
    publish_to_broker(broker.port, "dev-9", &topic, &[reading(11)]).await;
    let ingest = start_external(store.clone(), broker.port, "fleetpulse-ingest-test");
    eventually(
        "the reading published while ingest was down",
        move || async move { readings(s, "OC5-000009").await.contains(&11) },
    )
    .await;
    ingest.stop().await;
}
