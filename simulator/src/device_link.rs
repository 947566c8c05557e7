//! One device's MQTT 3.1.1 connection, behaving like device firmware. The wire format is
//! rumqttc's codec (`rumqttc::mqttbytes::v4`); this module owns the client side of the
//! protocol and one lightweight task per device.
//!
//! # A connection
//! - TCP, then a TLS handshake for `mqtts://` (server name = the URL's host, trust and
//!   client certificate from [`LinkOptions::tls`]).
//! - CONNECT with client id = serial, `clean_session = false`, the keepalive, an
//!   optional login (user name = serial), and a last will `offline` on
//!   `fleetpulse/v1/devices/{serial}/status` (QoS 1, retained).
//! - After CONNACK: a birth `{"state":"online","model":…,"fw":…}` (QoS 1, retained),
//!   then every reading sent but not acknowledged on an earlier connection, in order, with
//!   DUP and its original packet identifier (whatever `session_present` says: the
//!   service dedupes on (serial, seq), so a resend is harmless and a loss is not), then
//!   new readings, at most `inflight_window` unacknowledged at a time.
//! - PINGREQ when nothing was sent for a keepalive; no PINGRESP by the next keepalive,
//!   a failed write, a protocol error or a closed socket ends the connection.
//! - Reconnect with capped exponential backoff and jitter (a delay drawn uniformly
//!   between half and all of the current step); the step resets once a connection has
//!   shown it works (a PUBACK or PINGRESP arrived).
//!
//! # Shutdown
//! [`DeviceLink::begin_shutdown`]: stop sending new readings, wait up to the grace for
//! the PUBACKs of those in flight, then publish `offline` (retained) and DISCONNECT.
//! Readings still held are reported by [`LinkStats::queued`]; nothing is written to disk
//! (the simulator's store is memory only).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetpulse_domain::Serial;
use fleetpulse_domain::telemetry::{status_topic, telemetry_topic};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, LastWill, Packet, PubAck};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::{debug, warn};

use crate::endpoint::Endpoint;
use crate::outbox::{Acked, Outbox, OutboxFull};

/// The largest packet written or read (the MQTT limit).
const MAX_PACKET_BYTES: usize = 268_435_455;
/// How long the goodbye (`offline` + DISCONNECT) may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// The TLS client configuration of `mqtts://` links (server trust, optional client
/// certificate). Equal when it is the same configuration (the same `Arc`): rustls
/// configurations cannot be compared by value.
#[derive(Clone, Debug)]
pub struct LinkTls(pub Arc<rustls::ClientConfig>);

impl PartialEq for LinkTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LinkTls {}

/// A connection's byte stream: plain TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

/// How a device link behaves. Defaults are firmware-like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkOptions {
    /// MQTT keepalive (whole seconds, at least 1): PINGREQ after this long without
    /// sending. Default 30 s.
    pub keep_alive: Duration,
    /// Most readings in flight (sent, not yet acknowledged). Default 16.
    pub inflight_window: usize,
    /// Most readings held until acknowledged; when full the producer stops producing
    /// (the oldest is never dropped). Default 100 000.
    pub queue_capacity: usize,
    /// First reconnect delay. Default 250 ms.
    pub backoff_initial: Duration,
    /// Largest reconnect delay. Default 8 s.
    pub backoff_max: Duration,
    /// Time allowed for TCP connect (+ TLS handshake) + CONNACK. Default 10 s.
    pub connect_timeout: Duration,
    /// TLS for `mqtts://` endpoints; required by them, unused by `mqtt://`. Default none.
    pub tls: Option<LinkTls>,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            keep_alive: Duration::from_secs(30),
            inflight_window: 16,
            queue_capacity: 100_000,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl LinkOptions {
    fn keep_alive_secs(&self) -> u16 {
        self.keep_alive.as_secs().clamp(1, u64::from(u16::MAX)) as u16
    }
}

/// Who the device is on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkIdentity {
    pub serial: Serial,
    /// Password presented with user name = serial (none: no login).
    pub password: Option<String>,
    /// Model and firmware announced in the birth message.
    pub model: Option<String>,
    pub firmware: Option<String>,
}

/// Where a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting, or waiting to reconnect.
    Connecting,
    Connected,
    /// The last CONNACK refused the connection (the link keeps retrying).
    Refused(ConnectReturnCode),
    /// The link task ended.
    Stopped,
}

/// Counters of one link (or, summed, of many).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Readings taken into the device's store.
    pub produced: u64,
    /// Readings sent for the first time.
    pub published: u64,
    /// Readings sent again (DUP) after a reconnect.
    pub resent: u64,
    /// Readings acknowledged (PUBACK).
    pub acked: u64,
    /// Readings held now, not yet acknowledged (in flight or waiting).
    pub queued: u64,
    /// Readings in flight now.
    pub in_flight: u64,
    /// Connections established (CONNACK success).
    pub connects: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed (TCP, timeout, refused CONNACK).
    pub connect_failures: u64,
}

impl std::ops::AddAssign for LinkStats {
    fn add_assign(&mut self, o: Self) {
        self.produced += o.produced;
        self.published += o.published;
        self.resent += o.resent;
        self.acked += o.acked;
        self.queued += o.queued;
        self.in_flight += o.in_flight;
        self.connects += o.connects;
        self.reconnects += o.reconnects;
        self.connect_failures += o.connect_failures;
    }
}

/// State and counters, watched by producers (room, all acknowledged, connected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub state: LinkState,
    pub stats: LinkStats,
}

struct Shared {
    outbox: Mutex<Outbox>,
    /// Status to announce instead of the birth (see [`DeviceLink::set_status`]).
    status_payload: Mutex<Option<Bytes>>,
    /// The status changed since it was last sent.
    status_dirty: AtomicBool,
    /// New readings to send.
    wake: Notify,
    status: watch::Sender<LinkStatus>,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies the outbox counters into the watched status.
    fn publish_counters(&self, outbox: &Outbox) {
        let c = outbox.counters();
        self.status.send_modify(|s| {
            s.stats.produced = c.produced;
            s.stats.published = c.published;
            s.stats.resent = c.resent;
            s.stats.acked = c.acked;
            s.stats.queued = outbox.len() as u64;
            s.stats.in_flight = outbox.in_flight() as u64;
        });
    }

    /// The status payload announced after connecting: the one set by
    /// [`DeviceLink::set_status`], else the birth.
    fn current_status(&self, identity: &LinkIdentity) -> Bytes {
        self.status_payload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| birth_payload(identity))
    }

    fn set_state(&self, state: LinkState) {
        self.status.send_modify(|s| s.state = state);
    }
}

/// One device's connection task and its store of unacknowledged readings.
pub struct DeviceLink {
    shared: Arc<Shared>,
    /// `Some(deadline)`: stop sending new readings, wait for in-flight PUBACKs until the
    /// deadline, then say goodbye.
    stop: watch::Sender<Option<Instant>>,
    task: Option<JoinHandle<()>>,
    serial: Serial,
}

impl DeviceLink {
    /// Starts the link task; it waits `start_delay` before its first connection (a fleet
    /// spreads its connects so thousands of devices do not knock at once).
    pub fn spawn(
        endpoint: Endpoint,
        identity: LinkIdentity,
        options: LinkOptions,
        start_delay: Duration,
    ) -> Self {
        let outbox = Outbox::new(
            telemetry_topic(&identity.serial),
            options.queue_capacity,
            options.inflight_window,
        );
        let (status, _) = watch::channel(LinkStatus {
            state: LinkState::Connecting,
            stats: LinkStats::default(),
        });
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            status_payload: Mutex::new(None),
            status_dirty: AtomicBool::new(false),
            wake: Notify::new(),
            status,
        });
        let (stop, stop_rx) = watch::channel(None);
        let serial = identity.serial.clone();
        let task = tokio::spawn(run_link(
            Arc::clone(&shared),
            endpoint,
            identity,
            options,
            start_delay,
            stop_rx,
        ));
        DeviceLink {
            shared,
            stop,
            task: Some(task),
            serial,
        }
    }

    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// Takes a reading into the store (sent as soon as the window allows), or refuses
    /// it when the store is full.
    pub fn try_push(&self, seq: u64, payload: Bytes) -> Result<(), OutboxFull> {
        {
            let mut outbox = self.shared.outbox();
            outbox.try_push(seq, payload)?;
            self.shared.publish_counters(&outbox);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Replaces the status announced on the status topic (QoS 1, retained) after each
    /// connect, and publishes it now if connected (a gateway reporting a device it polls
    /// as `unreachable`, for instance). Announced once per change, not resent until
    /// acknowledged: the next connect announces the latest one again.
    pub fn set_status(&self, payload: Bytes) {
        *self
            .shared
            .status_payload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(payload);
        self.shared.status_dirty.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Whether the store can take another reading.
    pub fn has_room(&self) -> bool {
        self.shared.outbox().has_room()
    }

    pub fn stats(&self) -> LinkStats {
        self.shared.status.borrow().stats
    }

    pub fn state(&self) -> LinkState {
        self.shared.status.borrow().state
    }

    /// Watches state and counters.
    pub fn subscribe(&self) -> watch::Receiver<LinkStatus> {
        self.shared.status.subscribe()
    }

    /// Stops sending new readings; in-flight ones get `grace` for their PUBACKs, then the
    /// device says goodbye. Returns at once; [`DeviceLink::join`] waits for the end.
    pub fn begin_shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.stop.send_if_modified(|s| {
            let first = s.is_none();
            if first {
                *s = Some(deadline);
            }
            first
        });
    }

    /// Waits for the link task to end and returns its final counters.
    pub async fn join(mut self) -> LinkStats {
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            warn!(serial = %self.serial, %error, "device link task ended abnormally");
        }
        self.stats()
    }

    /// [`DeviceLink::begin_shutdown`] then [`DeviceLink::join`].
    pub async fn shutdown(self, grace: Duration) -> LinkStats {
        self.begin_shutdown(grace);
        self.join().await
    }
}

impl Drop for DeviceLink {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Capped exponential backoff with jitter.
struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
    rng: ChaCha8Rng,
}

impl Backoff {
    fn new(initial: Duration, max: Duration, serial: &Serial) -> Self {
        // Jitter must differ between devices and runs; it is not part of the simulation.
        let seed = RandomState::new().hash_one(serial.as_str());
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.step.mul_f64(self.rng.random_range(0.5..=1.0));
        self.step = (self.step * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed (an unknown CA, a wrong server name, a refused client
    /// certificate…): rustls' reason, e.g. "invalid peer certificate: UnknownIssuer".
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("no CONNACK within {0:?}")]
    Timeout(Duration),
    #[error("connection refused: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// How a connection ended.
enum SessionEnd {
    /// Shut down as asked.
    Stopped,
    /// Broken; `proven` when it had shown it works (resets the backoff).
    Broken { reason: String, proven: bool },
}

async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) {
    // An error means the handle is gone: stop as well.
    let _ = stop.wait_for(Option::is_some).await;
}

async fn run_link(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    identity: LinkIdentity,
    options: LinkOptions,
    start_delay: Duration,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let mut backoff = Backoff::new(
        options.backoff_initial,
        options.backoff_max,
        &identity.serial,
    );
    if !start_delay.is_zero() {
        tokio::select! {
            _ = sleep(start_delay) => {}
            _ = stopped(&mut stop) => {}
        }
    }
    // one WARN per kind of lasting failure until a connection succeeds; the rest at debug
    let mut refusal_logged = false;
    let mut tls_logged = false;
    while stop.borrow().is_none() {
        let attempt = tokio::select! {
            attempt = timeout(options.connect_timeout, open(&endpoint, &identity, &options)) => {
                attempt.unwrap_or(Err(ConnectError::Timeout(options.connect_timeout)))
            }
            _ = stopped(&mut stop) => break,
        };
        match attempt {
            Ok((stream, buf)) => {
                refusal_logged = false;
                tls_logged = false;
                shared.status.send_modify(|s| {
                    s.state = LinkState::Connected;
                    s.stats.connects += 1;
                    if s.stats.connects > 1 {
                        s.stats.reconnects += 1;
                    }
                });
                let end = Session::new(&shared, &identity, &options, stream, buf)
                    .run(&mut stop)
                    .await;
                shared.set_state(LinkState::Connecting);
                match end {
                    SessionEnd::Stopped => break,
                    SessionEnd::Broken { reason, proven } => {
                        debug!(serial = %identity.serial, %reason, "connection lost; reconnecting");
                        if proven {
                            backoff.reset();
                        }
                    }
                }
            }
            Err(error) => {
                shared.status.send_modify(|s| {
                    s.stats.connect_failures += 1;
                    if let ConnectError::Refused(code) = &error {
                        s.state = LinkState::Refused(*code);
                    }
                });
                if matches!(error, ConnectError::Refused(_)) && !refusal_logged {
                    refusal_logged = true;
                    warn!(serial = %identity.serial, endpoint = %endpoint, %error, "connection refused; retrying with backoff");
                } else if matches!(error, ConnectError::Tls(_)) && !tls_logged {
                    tls_logged = true;
                    warn!(serial = %identity.serial, endpoint = %endpoint, %error, "cannot connect: TLS handshake failed; retrying with backoff");
                } else {
                    debug!(serial = %identity.serial, endpoint = %endpoint, %error, "cannot connect; retrying with backoff");
                }
            }
        }
        tokio::select! {
            _ = sleep(backoff.next_delay()) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    shared.set_state(LinkState::Stopped);
}

/// TCP connect, and the TLS handshake for `mqtts://`.
async fn connect_stream(
    endpoint: &Endpoint,
    options: &LinkOptions,
) -> Result<Stream, ConnectError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    tcp.set_nodelay(true)?;
    if !endpoint.tls {
        return Ok(Box::new(tcp));
    }
    let tls = options.tls.as_ref().ok_or_else(|| {
        ConnectError::Tls("an mqtts:// endpoint needs a TLS configuration".into())
    })?;
    // the URL's host is the name checked against the server's certificate (an IP address
    // must then be in the certificate's subject alternative names)
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| ConnectError::Tls(format!("{:?} is not a server name: {e}", endpoint.host)))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.0))
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    Ok(Box::new(stream))
}

/// TCP connect (+ TLS), CONNECT, CONNACK.
async fn open(
    endpoint: &Endpoint,
    identity: &LinkIdentity,
    options: &LinkOptions,
) -> Result<(Stream, BytesMut), ConnectError> {
    let mut stream = connect_stream(endpoint, options).await?;
    let serial = identity.serial.as_str();
    let mut connect = Connect::new(serial);
    connect.keep_alive = options.keep_alive_secs();
    connect.clean_session = false;
    connect.last_will = Some(LastWill::new(
        status_topic(&identity.serial),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(password) = &identity.password {
        connect.set_login(serial, password.as_str());
    }
    let mut out = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut out, MAX_PACKET_BYTES)
        .map_err(|e| ConnectError::Protocol(e.to_string()))?;
    stream.write_all(&out).await?;

    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match Packet::read(&mut buf, MAX_PACKET_BYTES) {
            Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                return Ok((stream, buf));
            }
            Ok(Packet::ConnAck(ack)) => return Err(ConnectError::Refused(ack.code)),
            Ok(other) => {
                return Err(ConnectError::Protocol(format!(
                    "expected CONNACK, got {other:?}"
                )));
            }
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(ConnectError::Protocol(e.to_string())),
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ConnectError::Protocol("closed before CONNACK".into()));
        }
    }
}

fn birth_payload(identity: &LinkIdentity) -> Bytes {
    let mut birth = serde_json::Map::new();
    birth.insert("state".into(), "online".into());
    if let Some(model) = &identity.model {
        birth.insert("model".into(), model.as_str().into());
    }
    if let Some(fw) = &identity.firmware {
        birth.insert("fw".into(), fw.as_str().into());
    }
    Bytes::from(serde_json::Value::Object(birth).to_string())
}

/// One established connection.
struct Session<'a> {
    shared: &'a Shared,
    identity: &'a LinkIdentity,
    keep_alive: Duration,
    write_timeout: Duration,
    rd: ReadHalf<Stream>,
    wr: WriteHalf<Stream>,
    buf: BytesMut,
    last_sent: Instant,
    ping_outstanding: bool,
    proven: bool,
}

impl<'a> Session<'a> {
    fn new(
        shared: &'a Shared,
        identity: &'a LinkIdentity,
        options: &LinkOptions,
        stream: Stream,
        buf: BytesMut,
    ) -> Self {
        let (rd, wr) = tokio::io::split(stream);
        let keep_alive = Duration::from_secs(u64::from(options.keep_alive_secs()));
        Session {
            shared,
            identity,
            keep_alive,
            write_timeout: keep_alive.max(Duration::from_secs(5)),
            rd,
            wr,
            buf,
            last_sent: Instant::now(),
            ping_outstanding: false,
            proven: false,
        }
    }

    fn broken(&self, reason: impl Into<String>) -> SessionEnd {
        SessionEnd::Broken {
            reason: reason.into(),
            proven: self.proven,
        }
    }

    async fn run(mut self, stop: &mut watch::Receiver<Option<Instant>>) -> SessionEnd {
        let first: Vec<Packet> = {
            self.shared.status_dirty.store(false, Ordering::Release);
            let status = self.shared.current_status(self.identity);
            let mut outbox = self.shared.outbox();
            let birth = outbox.status_publish(status_topic(&self.identity.serial), status);
            let resends = outbox.resume();
            self.shared.publish_counters(&outbox);
            std::iter::once(birth)
                .chain(resends)
                .map(Packet::Publish)
                .collect()
        };
        if let Err(reason) = self.send(&first).await {
            return self.broken(reason);
        }
        loop {
            let draining = *stop.borrow();
            match draining {
                None => {
                    let status = self
                        .shared
                        .status_dirty
                        .swap(false, Ordering::AcqRel)
                        .then(|| self.shared.current_status(self.identity));
                    let batch: Vec<Packet> = {
                        let mut outbox = self.shared.outbox();
                        let status = status.map(|payload| {
                            outbox.status_publish(status_topic(&self.identity.serial), payload)
                        });
                        let batch = outbox.next_publishes();
                        if !batch.is_empty() {
                            self.shared.publish_counters(&outbox);
                        }
                        status
                            .into_iter()
                            .chain(batch)
                            .map(Packet::Publish)
                            .collect()
                    };
                    if let Err(reason) = self.send(&batch).await {
                        return self.broken(reason);
                    }
                }
                Some(_) if self.shared.outbox().in_flight() == 0 => {
                    self.goodbye().await;
                    return SessionEnd::Stopped;
                }
                Some(_) => {}
            }
            let ping_at = self.last_sent + self.keep_alive;
            let drain_deadline = draining.unwrap_or(ping_at);
            tokio::select! {
                biased;
                read = self.rd.read_buf(&mut self.buf) => match read {
                    Ok(0) => return self.broken("closed by the server"),
                    Ok(_) => {
                        if let Err(reason) = self.on_bytes().await {
                            return self.broken(reason);
                        }
                    }
                    Err(e) => return self.broken(e.to_string()),
                },
                changed = stop.changed(), if draining.is_none() => {
                    if changed.is_err() {
                        return SessionEnd::Stopped;
                    }
                }
                _ = sleep_until(drain_deadline), if draining.is_some() => {
                    self.goodbye().await;
                    return SessionEnd::Stopped;
                }
                _ = self.shared.wake.notified(), if draining.is_none() => {}
                _ = sleep_until(ping_at) => {
                    if self.ping_outstanding {
                        return self.broken("no PINGRESP within the keepalive");
                    }
                    self.ping_outstanding = true;
                    if let Err(reason) = self.send(&[Packet::PingReq]).await {
                        return self.broken(reason);
                    }
                }
            }
        }
    }

    /// Handles every complete packet in the read buffer.
    async fn on_bytes(&mut self) -> Result<(), String> {
        let mut acked_any = false;
        let mut replies = Vec::new();
        loop {
            let packet = match Packet::read(&mut self.buf, MAX_PACKET_BYTES) {
                Ok(p) => p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(format!("protocol error: {e}")),
            };
            match packet {
                Packet::PubAck(ack) => {
                    self.proven = true;
                    if let Acked::Reading { .. } = self.shared.outbox().on_puback(ack.pkid) {
                        acked_any = true;
                    }
                }
                Packet::PingResp => {
                    self.proven = true;
                    self.ping_outstanding = false;
                }
                // No subscriptions, but a server may still deliver: acknowledge, ignore.
                Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                    replies.push(Packet::PubAck(PubAck::new(p.pkid)));
                }
                Packet::Disconnect => return Err("DISCONNECT from the server".into()),
                other => {
                    debug!(serial = %self.identity.serial, packet = ?other, "unexpected packet ignored")
                }
            }
        }
        if acked_any {
            let outbox = self.shared.outbox();
            self.shared.publish_counters(&outbox);
        }
        self.send(&replies).await
    }

    async fn send(&mut self, packets: &[Packet]) -> Result<(), String> {
        if packets.is_empty() {
            return Ok(());
        }
        let mut out = BytesMut::new();
        for p in packets {
            p.write(&mut out, MAX_PACKET_BYTES)
                .map_err(|e| format!("cannot encode a packet: {e}"))?;
        }
        match timeout(self.write_timeout, self.wr.write_all(&out)).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write blocked for {:?}", self.write_timeout)),
        }
    }

    /// `offline` (retained) and DISCONNECT, best effort: a clean exit announces itself
    /// instead of leaving a retained `online` behind.
    async fn goodbye(&mut self) {
        let offline = self.shared.outbox().status_publish(
            status_topic(&self.identity.serial),
            Bytes::from_static(b"offline"),
        );
        let packets = [Packet::Publish(offline), Packet::Disconnect];
        let _ = timeout(GOODBYE_TIMEOUT, async {
            if self.send(&packets).await.is_ok() {
                let _ = self.wr.shutdown().await;
            }
        })
        .await;
    }
}
