//! One device connection: the reader loop (this task) and a writer task. The pipeline
//! stages the connection's PUBACKs for the writer in its [`Outbox`], so a PUBACK is
//! written only after its batch is durable, in arrival order; the reader queues its other
//! packets (CONNACK, PINGRESP …) in the same outbox.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use fleetpulse_domain::Serial;
use fleetpulse_domain::telemetry::status_topic;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use super::auth::authenticate;
use super::tls::{DeviceStream, PeerCertificate};
use super::{Kill, KillSender, Shared};
use crate::decode::{Decoded, decode};
use crate::pipeline::{Ack, AckQueue, Inbound, PipelineHandle, QueuedAck};
use fleetpulse_domain::store::ConnectionEnd;

/// Bytes asked of the socket at least per read. Also each connection's initial read
/// buffer: at 10 000 connections every KiB here is 10 MiB of RSS, and a reading is a
/// few hundred bytes (a bigger packet reserves exactly what it lacks).
const READ_CHUNK: usize = 2 * 1024;

/// Serves one connection (plain TCP, or TLS after its handshake) from accept to close.
/// `certificate`: the names of the client certificate a TLS handshake verified.
pub(super) async fn serve<S: DeviceStream>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<PeerCertificate>,
    shared: Arc<Shared>,
    pipeline: PipelineHandle,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let (mut rd, mut wr) = stream.split();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);

    let first = tokio::select! {
        biased;
        _ = stop.wait_for(|stopping| *stopping) => return,
        read = tokio::time::timeout(
            config.connect_timeout,
            read_packet(&mut rd, &mut buf, config.max_packet_bytes),
        ) => read,
    };
    let connect = match first {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            debug!(%peer, reason = "not_connect", packet = packet_name(&other), "first packet is not CONNECT; closing");
            return;
        }
        Ok(Err(error)) => {
            debug!(%peer, reason = error.label(), %error, "no valid CONNECT; closing");
            return;
        }
        Err(_) => {
            debug!(%peer, reason = "connect_timeout", "no CONNECT in time; closing");
            return;
        }
    };
    let serial = match authenticate(&connect, certificate.as_ref(), &shared).await {
        Ok(serial) => serial,
        Err(refusal) => {
            let certificate = certificate.as_ref().map(ToString::to_string);
            info!(%peer, client_id = ?connect.client_id, reason = refusal.reason, code = ?refusal.code, certificate, "connection refused");
            refuse(&mut wr, refusal.code, config.write_timeout).await;
            return;
        }
    };
    let will = own_will(&serial, connect.last_will, peer);

    let (kill_tx, kill_rx) = watch::channel(None);
    let (conn_id, took_over) = shared.registry.register(&serial, kill_tx.clone());
    let max_inflight = config.max_inflight.max(1);
    let inflight = Arc::new(Semaphore::new(max_inflight));
    let outbox = Arc::new(Outbox::default());
    let writer = tokio::spawn(
        Writer {
            wr,
            outbox: outbox.clone(),
            inflight: inflight.clone(),
            max_inflight,
            kill_tx: kill_tx.clone(),
            kill: kill_rx.clone(),
            write_timeout: config.write_timeout,
        }
        .run(),
    );
    // Queued before any PUBACK can be: the CONNACK is the first packet written.
    outbox.send(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    )));
    debug!(serial = %serial, %peer, keep_alive = connect.keep_alive, took_over, "device connected");

    let mut reader = Reader {
        rd,
        buf,
        max_packet_bytes: config.max_packet_bytes,
        // MQTT 3.1.1 §3.1.2.10: one and a half times the keepalive; 0 turns it off.
        idle: (connect.keep_alive > 0)
            .then(|| IdleTimer::new(Duration::from_millis(u64::from(connect.keep_alive) * 1500))),
        serial: serial.clone(),
        pipeline: pipeline.clone(),
        outbox,
        group: Vec::new(),
        inflight,
        interrupt: interruption(kill_rx, stop.clone()),
    };
    let close = reader.read_loop().await;
    drop(reader);

    let still_current = shared.registry.deregister(&serial, conn_id);
    if close != Close::Shutdown {
        // Stop the writer now: a connection that ended otherwise gets no more packets.
        // On shutdown the writer runs on until the pipeline ran every ack it holds.
        kill_once(&kill_tx, Kill::Closed);
    }
    close.log(&serial, peer, config.max_packet_bytes);
    if close.publishes_will()
        && still_current
        && let Some(will) = will
    {
        let mut decoded = decode(
            &will.topic,
            serial.as_str(),
            &will.message,
            Utc::now(),
            pipeline.limits(),
        );
        // the will speaks for a device that could not say goodbye: the connection was lost
        decoded.connection_end = Some(ConnectionEnd {
            serial: serial.clone(),
            at: Utc::now(),
            graceful: false,
        });
        tokio::select! {
            _ = pipeline.submit(Inbound::new(decoded, None)) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
        debug!(serial = %serial, %peer, "last will submitted");
    } else if close == Close::Disconnected && still_current {
        // a DISCONNECT is a goodbye: the device was switched off (or closed) normally
        let decoded = Decoded {
            connection_end: Some(ConnectionEnd {
                serial: serial.clone(),
                at: Utc::now(),
                graceful: true,
            }),
            ..Decoded::default()
        };
        tokio::select! {
            _ = pipeline.submit(Inbound::new(decoded, None)) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
    }
    if let Err(error) = writer.await {
        warn!(serial = %serial, %peer, %error, "connection writer task failed");
    }
}

/// Kills the connection for `why`, unless it was killed already (the first reason
/// stays).
fn kill_once(kill: &KillSender, why: Kill) {
    kill.send_if_modified(|kill| {
        let unset = kill.is_none();
        if unset {
            *kill = Some(why);
        }
        unset
    });
}

/// The device's last will, kept only when it is on the device's own status topic.
fn own_will(serial: &Serial, will: Option<LastWill>, peer: SocketAddr) -> Option<LastWill> {
    let will = will?;
    if will.topic == status_topic(serial) {
        Some(will)
    } else {
        debug!(serial = %serial, %peer, topic = ?will.topic, "last will ignored: not on the device's own status topic");
        None
    }
}

async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    code: ConnectReturnCode,
    write_timeout: Duration,
) {
    let mut buf = BytesMut::new();
    if Packet::ConnAck(ConnAck::new(code, false))
        .write(&mut buf, usize::MAX)
        .is_ok()
    {
        let _ = tokio::time::timeout(write_timeout, async {
            wr.write_all(&buf).await?;
            wr.shutdown().await
        })
        .await;
    }
}

/// How a connection ended. The label set is fixed (log field `reason`).
#[derive(Debug)]
enum Close {
    /// The device sent DISCONNECT.
    Disconnected,
    /// The endpoint is shutting down.
    Shutdown,
    /// A new connection with the same client id replaced this one.
    TakenOver,
    /// Writing to the device failed or timed out.
    WriteFailed,
    /// The device closed the socket without DISCONNECT.
    Eof,
    Io(std::io::Error),
    KeepaliveTimeout,
    TooLarge(usize),
    Protocol(mqttbytes::Error),
    Qos2,
    Unexpected(&'static str),
    ForeignTopic(String),
    PipelineClosed,
}

impl PartialEq for Close {
    fn eq(&self, other: &Self) -> bool {
        self.label() == other.label()
    }
}

impl Close {
    fn label(&self) -> &'static str {
        match self {
            Close::Disconnected => "disconnect",
            Close::Shutdown => "shutdown",
            Close::TakenOver => "taken_over",
            Close::WriteFailed => "write_failed",
            Close::Eof => "eof",
            Close::Io(_) => "io_error",
            Close::KeepaliveTimeout => "keepalive_timeout",
            Close::TooLarge(_) => "packet_too_large",
            Close::Protocol(_) => "protocol_error",
            Close::Qos2 => "qos2_unsupported",
            Close::Unexpected(_) => "unexpected_packet",
            Close::ForeignTopic(_) => "unsupported_topic",
            Close::PipelineClosed => "pipeline_closed",
        }
    }

    /// MQTT publishes the will when a connection ends without DISCONNECT. Not on
    /// takeover (the device is connected) nor on shutdown (see the module docs).
    fn publishes_will(&self) -> bool {
        !matches!(
            self,
            Close::Disconnected | Close::Shutdown | Close::TakenOver | Close::PipelineClosed
        )
    }

    fn log(&self, serial: &Serial, peer: SocketAddr, max_packet_bytes: usize) {
        let reason = self.label();
        match self {
            Close::Disconnected | Close::Shutdown | Close::PipelineClosed => {
                debug!(serial = %serial, %peer, reason, "device connection closed");
            }
            Close::TakenOver => {
                info!(serial = %serial, %peer, reason, "device connection closed: the same client id connected again");
            }
            Close::Eof | Close::WriteFailed | Close::KeepaliveTimeout => {
                info!(serial = %serial, %peer, reason, "device connection lost");
            }
            Close::Io(error) => {
                info!(serial = %serial, %peer, reason, %error, "device connection lost");
            }
            Close::TooLarge(bytes) => {
                warn!(serial = %serial, %peer, reason, bytes, max_packet_bytes, "packet over mqtt.max_packet_bytes; disconnecting");
            }
            Close::Protocol(error) => {
                warn!(serial = %serial, %peer, reason, %error, "malformed MQTT packet; disconnecting");
            }
            Close::Qos2 => {
                warn!(serial = %serial, %peer, reason, "QoS 2 PUBLISH (only QoS 0 and 1 are supported); disconnecting");
            }
            Close::Unexpected(packet) => {
                warn!(serial = %serial, %peer, reason, packet, "packet a device must not send; disconnecting");
            }
            Close::ForeignTopic(topic) => {
                warn!(serial = %serial, %peer, reason, topic = ?topic, "PUBLISH to a topic that is not the device's own; dead-lettered, disconnecting");
            }
        }
    }
}

/// The reading half of a connection and what it needs to hand messages on.
struct Reader<R> {
    rd: R,
    buf: BytesMut,
    max_packet_bytes: usize,
    idle: Option<IdleTimer>,
    serial: Serial,
    pipeline: PipelineHandle,
    /// The writer's queue: the pipeline stages this connection's PUBACKs there, the
    /// reader its other packets.
    outbox: Arc<Outbox>,
    /// Messages read and not yet handed to the pipeline ([`Reader::flush`]).
    group: Vec<Inbound>,
    /// One permit per QoS 1 PUBLISH waiting for its PUBACK (released once written).
    inflight: Arc<Semaphore>,
    /// Completes when the connection must stop reading ([`interruption`]). Made once
    /// per connection and polled again by every wait: a fresh pair of `watch` waits per
    /// packet registered and unregistered this connection with the endpoint-wide stop
    /// signal's waiter list each time (~3 % of the endpoint's CPU at 10 000
    /// connections). Once it has completed the connection ends; it is not polled again.
    interrupt: Interruption,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn read_loop(&mut self) -> Close {
        let close = self.read_packets().await;
        match close {
            // The interruption has completed (it is not polled again) or the pipeline
            // is gone: what was read and not handed on stays unacked, the device
            // resends it.
            Close::Shutdown | Close::TakenOver | Close::WriteFailed | Close::PipelineClosed => {
                close
            }
            // What the device sent before the packet that ended the connection is kept.
            _ => self.flush().await.unwrap_or(close),
        }
    }

    /// Handles packets until one ends the connection. Every packet one socket read
    /// brought is handled before the PUBLISHes among them go to the pipeline together
    /// ([`flush`](Self::flush)): they stay together in one batch, and their PUBACKs go
    /// out in one write.
    async fn read_packets(&mut self) -> Close {
        loop {
            match Packet::read(&mut self.buf, self.max_packet_bytes) {
                Ok(packet) => {
                    if let Some(close) = self.handle(packet).await {
                        return close;
                    }
                }
                Err(mqttbytes::Error::InsufficientBytes(missing)) => {
                    if let Some(close) = self.flush().await {
                        return close;
                    }
                    let filled = tokio::select! {
                        biased;
                        close = &mut self.interrupt => return close,
                        filled = fill(&mut self.rd, &mut self.buf, missing, &mut self.idle) => filled,
                    };
                    if let Err(error) = filled {
                        return error.into();
                    }
                }
                Err(error) => return ReadError::from(error).into(),
            }
        }
    }

    /// Hands the messages read so far to the pipeline, waiting while it is full (and
    /// not reading the socket meanwhile: that is the backpressure).
    async fn flush(&mut self) -> Option<Close> {
        if self.group.is_empty() {
            return None;
        }
        let items = std::mem::take(&mut self.group);
        tokio::select! {
            biased;
            close = &mut self.interrupt => Some(close),
            submitted = self.pipeline.submit_all(items) => submitted.err().map(|_| Close::PipelineClosed),
        }
    }

    /// Handles one packet; `Some` ends the connection.
    async fn handle(&mut self, packet: Packet) -> Option<Close> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish).await,
            Packet::Subscribe(subscribe) => {
                // No server → device messages yet: refuse every filter.
                let codes = vec![SubscribeReasonCode::Failure; subscribe.filters.len()];
                self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
                None
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)));
                None
            }
            Packet::PingReq => {
                self.send(Packet::PingResp);
                None
            }
            Packet::Disconnect => Some(Close::Disconnected),
            other => Some(Close::Unexpected(packet_name(&other))),
        }
    }

    async fn on_publish(&mut self, publish: Publish) -> Option<Close> {
        if publish.qos == QoS::ExactlyOnce {
            return Some(Close::Qos2);
        }
        let mut decoded = decode(
            &publish.topic,
            self.serial.as_str(),
            &publish.payload,
            Utc::now(),
            self.pipeline.limits(),
        );
        // `offline` published by the device itself, on a live connection: a goodbye
        if let Some(status) = &decoded.status
            && status.state == fleetpulse_domain::ConnectionState::Offline
        {
            decoded.connection_end = Some(ConnectionEnd {
                serial: self.serial.clone(),
                at: status.at,
                graceful: true,
            });
        }
        if decoded.topic_refused {
            // Kept so an operator sees what the device tried (the read loop hands it
            // on); not acked, since the device is disconnected anyway.
            self.group.push(Inbound::new(decoded, None));
            return Some(Close::ForeignTopic(publish.topic));
        }
        let ack = if publish.qos == QoS::AtLeastOnce {
            let permit = match Arc::clone(&self.inflight).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // Over the in-flight limit: hand on what is held (their acks free
                    // permits), then wait.
                    if let Some(close) = self.flush().await {
                        return Some(close);
                    }
                    tokio::select! {
                        biased;
                        close = &mut self.interrupt => return Some(close),
                        permit = Arc::clone(&self.inflight).acquire_owned() => {
                            permit.expect("the in-flight semaphore of a connection is never closed")
                        }
                    }
                }
            };
            Some(Ack::queued(
                self.outbox.clone(),
                QueuedAck {
                    packet_id: publish.pkid,
                    permit,
                },
            ))
        } else {
            None
        };
        self.group.push(Inbound::new(decoded, ack));
        None
    }

    fn send(&self, packet: Packet) {
        self.outbox.send(packet);
    }
}

impl<R> Drop for Reader<R> {
    /// However the reader ends (returned or its task dropped), the writer learns that
    /// nothing but the PUBACKs of what was handed on comes any more.
    fn drop(&mut self) {
        self.outbox.reader_gone();
    }
}

type Interruption = Pin<Box<dyn Future<Output = Close> + Send>>;

/// Completes when the connection must stop reading: taken over, writer failed, or the
/// endpoint is shutting down.
fn interruption(
    mut kill: watch::Receiver<Option<Kill>>,
    mut stop: watch::Receiver<bool>,
) -> Interruption {
    Box::pin(async move {
        tokio::select! {
            kill = kill.wait_for(Option::is_some) => match kill.ok().and_then(|k| *k) {
                Some(Kill::TakenOver) => Close::TakenOver,
                _ => Close::WriteFailed,
            },
            _ = stop.wait_for(|stopping| *stopping) => Close::Shutdown,
        }
    })
}

/// The keepalive check of a connection: fails a read that waited `limit` without a
/// byte. One timer per connection, moved only when it fires early, rather than a new
/// timeout armed (and disarmed) around every read. Only time spent waiting in a read
/// counts: a reader held back by the pipeline (backpressure) is not idle.
struct IdleTimer {
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// Reads into `buf`; `Err(Idle)` when nothing arrived for `limit`.
    async fn read<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
    ) -> Result<usize, ReadError> {
        // The timer's deadline is never later than `due` (it was armed by this or an
        // earlier read): when it fires early, it is moved to `due`.
        let due = Instant::now() + self.limit;
        loop {
            tokio::select! {
                biased;
                read = rd.read_buf(buf) => return Ok(read?),
                () = self.timer.as_mut() => {
                    if Instant::now() >= due {
                        return Err(ReadError::Idle);
                    }
                    self.timer.as_mut().reset(due);
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("nothing received for 1.5 × keepalive")]
    Idle,
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("{0}")]
    Protocol(mqttbytes::Error),
}

impl ReadError {
    fn label(&self) -> &'static str {
        match self {
            ReadError::Eof => "eof",
            ReadError::Io(_) => "io_error",
            ReadError::Idle => "keepalive_timeout",
            ReadError::TooLarge(_) => "packet_too_large",
            ReadError::Protocol(_) => "protocol_error",
        }
    }
}

impl From<ReadError> for Close {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Eof => Close::Eof,
            ReadError::Io(e) => Close::Io(e),
            ReadError::Idle => Close::KeepaliveTimeout,
            ReadError::TooLarge(n) => Close::TooLarge(n),
            ReadError::Protocol(e) => Close::Protocol(e),
        }
    }
}

/// Reads one packet (the CONNECT), refusing a packet over `max` bytes before reading
/// its body.
async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, ReadError> {
    loop {
        match Packet::read(buf, max) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(missing)) => {
                fill(rd, buf, missing, &mut None).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Reads more bytes into `buf`, at least `missing` of room asked for (a packet's
/// known remainder) and never less than [`READ_CHUNK`]. With `idle`, fails when no
/// byte arrives for its limit. Cancel-safe: bytes read stay in `buf`.
async fn fill<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    missing: usize,
    idle: &mut Option<IdleTimer>,
) -> Result<(), ReadError> {
    buf.reserve(missing.max(READ_CHUNK));
    let read = match idle {
        None => rd.read_buf(buf).await?,
        Some(idle) => idle.read(rd, buf).await?,
    };
    if read == 0 {
        return Err(ReadError::Eof);
    }
    Ok(())
}

impl From<mqttbytes::Error> for ReadError {
    /// A packet that cannot be read (not one still incomplete).
    fn from(error: mqttbytes::Error) -> Self {
        match error {
            mqttbytes::Error::PayloadSizeLimitExceeded(bytes) => ReadError::TooLarge(bytes),
            error => ReadError::Protocol(error),
        }
    }
}

/// What a connection's writer sends, in the order it was queued: the PUBACKs the
/// pipeline stages (all of a batch's before it wakes any writer, so a connection with
/// several readings in one batch gets its PUBACKs in one socket write) and the reader's
/// other packets. One queue for both: a channel beside it for the rare CONNACK, SUBACK
/// or PINGRESP cost 0.8 kB per connection (8 MiB at 10 000).
#[derive(Default)]
struct Outbox {
    staged: Mutex<Staged>,
    ready: Notify,
}

#[derive(Default)]
struct Staged {
    items: Vec<Outgoing>,
    /// The reader has ended: only PUBACKs of what it handed on come any more.
    reader_gone: bool,
}

enum Outgoing {
    PubAck(QueuedAck),
    /// Rare; boxed so that an entry stays small (a whole `Packet` is a few hundred
    /// bytes, for CONNECT's sake).
    Packet(Box<Packet>),
}

impl Outbox {
    /// Queues one of the reader's packets and wakes the writer.
    fn send(&self, packet: Packet) {
        self.lock().items.push(Outgoing::Packet(Box::new(packet)));
        self.ready.notify_one();
    }

    fn reader_gone(&self) {
        self.lock().reader_gone = true;
        self.ready.notify_one();
    }

    /// Swaps what is queued into `into` (empty); `true` once the reader is gone.
    fn take(&self, into: &mut Vec<Outgoing>) -> bool {
        let mut staged = self.lock();
        std::mem::swap(&mut staged.items, into);
        staged.reader_gone
    }

    fn lock(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AckQueue for Outbox {
    fn stage(&self, ack: QueuedAck) -> bool {
        let mut staged = self.lock();
        staged.items.push(Outgoing::PubAck(ack));
        staged.items.len() == 1
    }

    fn flush(&self) {
        self.ready.notify_one();
    }
}

/// The writing half of a connection.
struct Writer<W> {
    wr: W,
    outbox: Arc<Outbox>,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    kill_tx: KillSender,
    kill: watch::Receiver<Option<Kill>>,
    write_timeout: Duration,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes outgoing packets and staged PUBACKs until the reader is gone and every
    /// PUBLISH it handed on was acked or dropped (then closes the write half), or the
    /// connection is killed (then drops it at once).
    async fn run(mut self) {
        let mut buf = BytesMut::with_capacity(256);
        let mut items = Vec::new();
        let mut reader_gone = false;
        loop {
            let mut finished = false;
            tokio::select! {
                biased;
                _ = self.kill.wait_for(Option::is_some) => return,
                () = self.outbox.ready.notified() => {}
                // Every permit back: no PUBLISH of this connection waits for its ack.
                all = self.inflight.acquire_many(self.max_inflight as u32), if reader_gone => {
                    drop(all);
                    finished = true;
                }
            }
            reader_gone = self.outbox.take(&mut items);
            let mut released: Option<OwnedSemaphorePermit> = None;
            for item in items.drain(..) {
                match item {
                    Outgoing::Packet(packet) => encode(&packet, &mut buf),
                    Outgoing::PubAck(ack) => {
                        encode(&Packet::PubAck(PubAck::new(ack.packet_id)), &mut buf);
                        match released.as_mut() {
                            Some(all) => all.merge(ack.permit),
                            None => released = Some(ack.permit),
                        }
                    }
                }
            }
            if !buf.is_empty() {
                let written = tokio::select! {
                    biased;
                    _ = self.kill.wait_for(Option::is_some) => return,
                    written = tokio::time::timeout(self.write_timeout, self.wr.write_all(&buf)) => written,
                };
                if !matches!(written, Ok(Ok(()))) {
                    kill_once(&self.kill_tx, Kill::WriteFailed);
                    return;
                }
                buf.clear();
            }
            // The in-flight slots of the PUBLISHes just acked are free again.
            drop(released);
            if finished {
                break;
            }
        }
        let _ = tokio::time::timeout(self.write_timeout, self.wr.shutdown()).await;
    }
}

fn encode(packet: &Packet, buf: &mut BytesMut) {
    if let Err(error) = packet.write(buf, usize::MAX) {
        warn!(%error, packet = packet_name(packet), "cannot encode an outgoing packet");
    }
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_will_on_the_own_status_topic_is_kept() {
        let serial = Serial::parse("OC5-1").expect("valid");
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("valid");
        let will = |topic: &str| Some(LastWill::new(topic, "offline", QoS::AtLeastOnce, false));
        assert!(own_will(&serial, will("fleetpulse/v1/devices/OC5-1/status"), peer).is_some());
        assert!(own_will(&serial, will("fleetpulse/v1/devices/OC5-2/status"), peer).is_none());
        assert!(own_will(&serial, will("fleetpulse/v1/devices/OC5-1/telemetry"), peer).is_none());
    }
}
