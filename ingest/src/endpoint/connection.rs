//! One device connection: the reader loop (this task) and a writer task. The pipeline
//! stages the connection's PUBACKs for the writer in its [`Outbox`], so a PUBACK is
//! written only after its batch is durable, in arrival order; the reader queues its other
//! packets (CONNACK, PINGRESP …) in the same outbox.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fleetpulse_domain::Serial;
use fleetpulse_domain::telemetry::status_topic;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use super::auth::authenticate;
use super::tls::{DeviceStream, PeerCertificate};
use super::{Kill, KillSender, Shared};
use crate::decode::{Decoded, OVERSIZED_KEPT_BYTES, decode, oversized_packet};
use crate::pipeline::{Ack, AckQueue, Inbound, PipelineHandle, QueuedAck};
use crate::stats::IngestStats;
use fleetpulse_domain::store::ConnectionEnd;

/// Bytes asked of the socket at least per read. Also each connection's initial read
/// buffer: at 10 000 connections every KiB here is 10 MiB of RSS, and a reading is a
/// few hundred bytes (a bigger packet reserves exactly what it lacks).
const READ_CHUNK: usize = 2 * 1024;
/// Most bytes asked of the socket per read while an oversized PUBLISH is skipped: what
/// the connection buffers of it at a time.
const SKIP_CHUNK: usize = 64 * 1024;

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
            stats: pipeline.stats().clone(),
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
            pipeline.now(),
            pipeline.limits(),
        );
        // the will speaks for a device that could not say goodbye: the connection was lost
        decoded.connection_end = Some(ConnectionEnd {
            serial: serial.clone(),
            at: pipeline.now(),
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
                at: pipeline.now(),
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
    Unexpected(&'static str),
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
            Close::Unexpected(_) => "unexpected_packet",
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
                warn!(serial = %serial, %peer, reason, bytes, max_packet_bytes, "packet other than PUBLISH over mqtt.max_packet_bytes; disconnecting");
            }
            Close::Protocol(error) => {
                warn!(serial = %serial, %peer, reason, %error, "malformed MQTT packet; disconnecting");
            }
            Close::Unexpected(packet) => {
                warn!(serial = %serial, %peer, reason, packet, "packet a device must not send; disconnecting");
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
                Err(mqttbytes::Error::PayloadSizeLimitExceeded(remaining)) => {
                    if let Some(close) = self.skip_oversized(remaining).await {
                        return close;
                    }
                }
                Err(error) => return ReadError::from(error).into(),
            }
        }
    }

    /// Reads more bytes into the buffer (at least `missing` of room asked for), unless
    /// the connection is interrupted or the read fails.
    async fn read_more(&mut self, missing: usize) -> Option<Close> {
        let filled = tokio::select! {
            biased;
            close = &mut self.interrupt => return Some(close),
            filled = fill(&mut self.rd, &mut self.buf, missing, &mut self.idle) => filled,
        };
        filled.err().map(Close::from)
    }

    /// Reads until the buffer holds at least `len` bytes.
    async fn read_to(&mut self, len: usize) -> Option<Close> {
        while self.buf.len() < len {
            let missing = len - self.buf.len();
            if let Some(close) = self.read_more(missing).await {
                return Some(close);
            }
        }
        None
    }

    /// A packet over `max_packet_bytes` is at the front of the buffer, `remaining`
    /// bytes after its fixed header. A PUBLISH is read past without being buffered: its
    /// topic and packet id (at its start) and the first [`OVERSIZED_KEPT_BYTES`] of its
    /// payload are kept, the rest is discarded as it arrives. It becomes one
    /// `payload_too_large` dead letter, acknowledged like any other message once that
    /// is durable, and the connection goes on: a device that resends what was not
    /// acknowledged would otherwise send it forever. Any other packet that large ends
    /// the connection.
    async fn skip_oversized(&mut self, remaining: usize) -> Option<Close> {
        let Some(header) = oversized_publish_header(&self.buf) else {
            return Some(Close::TooLarge(remaining));
        };
        // What came before is handed on while this one streams past.
        if let Some(close) = self.flush().await {
            return Some(close);
        }
        let start = header.len;
        if let Some(close) = self.read_to(start + 2).await {
            return Some(close);
        }
        let topic_len = usize::from(u16::from_be_bytes([self.buf[start], self.buf[start + 1]]));
        let id_len = if header.qos == QoS::AtMostOnce { 0 } else { 2 };
        let variable = 2 + topic_len + id_len;
        if variable > remaining {
            return Some(Close::Protocol(mqttbytes::Error::MalformedPacket));
        }
        let payload_bytes = remaining - variable;
        let head_len = payload_bytes.min(OVERSIZED_KEPT_BYTES);
        // At most the topic (64 KiB) and the head are buffered.
        if let Some(close) = self.read_to(start + variable + head_len).await {
            return Some(close);
        }
        let Ok(topic) = std::str::from_utf8(&self.buf[start + 2..start + 2 + topic_len]) else {
            return Some(Close::Protocol(mqttbytes::Error::TopicNotUtf8));
        };
        let topic = topic.to_owned();
        let pkid = if id_len == 0 {
            0
        } else {
            u16::from_be_bytes([
                self.buf[start + 2 + topic_len],
                self.buf[start + 3 + topic_len],
            ])
        };
        let head = self.buf[start + variable..start + variable + head_len].to_vec();
        let mut left = start + remaining;
        loop {
            let n = left.min(self.buf.len());
            self.buf.advance(n);
            left -= n;
            if left == 0 {
                break;
            }
            if let Some(close) = self.read_more(left.min(SKIP_CHUNK)).await {
                return Some(close);
            }
        }
        warn!(serial = %self.serial, reason = "packet_too_large", topic = ?topic, bytes = remaining,
            max_packet_bytes = self.max_packet_bytes,
            "PUBLISH over mqtt.max_packet_bytes: skipped unread, dead-lettered and acknowledged");
        let decoded = oversized_packet(
            &topic,
            self.serial.as_str(),
            &head,
            remaining,
            payload_bytes,
            self.max_packet_bytes,
            self.pipeline.now(),
        );
        self.hand_on(decoded, header.qos, pkid).await
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
            Packet::PubRel(pubrel) => {
                // The device has our PUBREC, so the message is durable already. No state
                // is kept per packet id: PUBCOMP answers every PUBREL (MQTT 3.1.1
                // §4.3.3 asks that even for an unknown id).
                self.send(Packet::PubComp(PubComp::new(pubrel.pkid)));
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
        let mut decoded = decode(
            &publish.topic,
            self.serial.as_str(),
            &publish.payload,
            self.pipeline.now(),
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
            // Dead-lettered and acknowledged like any refused message: closing instead
            // made a device that resends what was not acknowledged loop forever.
            warn!(serial = %self.serial, reason = "unsupported_topic", topic = ?publish.topic,
                "PUBLISH to a topic that is not the device's own: dead-lettered and acknowledged");
        }
        self.hand_on(decoded, publish.qos, publish.pkid).await
    }

    /// Queues a message for the pipeline with the acknowledgement its QoS asks for, sent
    /// once the batch holding it is durable: PUBACK for QoS 1, PUBREC for QoS 2 (the
    /// device's PUBREL is then answered with PUBCOMP). A QoS 2 message is stored like a
    /// QoS 1 one: a resent PUBLISH is deduplicated on (serial, seq), which is what
    /// "exactly once" needs here.
    async fn hand_on(&mut self, decoded: Decoded, qos: QoS, pkid: u16) -> Option<Close> {
        let ack = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => {
                let permit = match self.inflight_permit().await {
                    Ok(permit) => permit,
                    Err(close) => return Some(close),
                };
                let queue: Arc<dyn AckQueue> = if qos == QoS::ExactlyOnce {
                    Arc::new(PubRecs(self.outbox.clone()))
                } else {
                    self.outbox.clone()
                };
                Some(Ack::queued(
                    queue,
                    QueuedAck {
                        packet_id: pkid,
                        permit,
                    },
                ))
            }
        };
        self.group.push(Inbound::new(decoded, ack));
        None
    }

    /// An in-flight slot for a message that waits for its acknowledgement.
    async fn inflight_permit(&mut self) -> Result<OwnedSemaphorePermit, Close> {
        if let Ok(permit) = Arc::clone(&self.inflight).try_acquire_owned() {
            return Ok(permit);
        }
        // Over the in-flight limit: hand on what is held (their acks free permits), then
        // wait.
        if let Some(close) = self.flush().await {
            return Err(close);
        }
        tokio::select! {
            biased;
            close = &mut self.interrupt => Err(close),
            permit = Arc::clone(&self.inflight).acquire_owned() => {
                Ok(permit.expect("the in-flight semaphore of a connection is never closed"))
            }
        }
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

/// The fixed header of an oversized PUBLISH at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
struct OversizedHeader {
    /// Bytes of the fixed header (type byte and remaining length).
    len: usize,
    qos: QoS,
}

/// The fixed header at the front of `buf` when it is a PUBLISH's (whose remaining
/// length `Packet::read` found over the limit, so all of the header is there); `None`
/// for any other packet, or a PUBLISH with the invalid QoS 3.
fn oversized_publish_header(buf: &[u8]) -> Option<OversizedHeader> {
    let (&first, rest) = buf.split_first()?;
    if first >> 4 != 3 {
        return None;
    }
    let qos = match (first >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return None,
    };
    // The remaining length: 1 to 4 bytes, each but the last with its top bit set.
    let length_bytes = rest.iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    Some(OversizedHeader {
        len: 1 + length_bytes,
        qos,
    })
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
    /// QoS 2: the PUBREC that takes the place of a PUBACK.
    PubRec(QueuedAck),
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

/// The same outbox, staging PUBRECs (QoS 2) where [`Outbox`] stages PUBACKs.
struct PubRecs(Arc<Outbox>);

impl AckQueue for PubRecs {
    fn stage(&self, ack: QueuedAck) -> bool {
        let mut staged = self.0.lock();
        staged.items.push(Outgoing::PubRec(ack));
        staged.items.len() == 1
    }

    fn flush(&self) {
        self.0.ready.notify_one();
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
    /// Counts the acknowledgements once they are written.
    stats: IngestStats,
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
            let mut acks = 0;
            for item in items.drain(..) {
                let (packet, permit) = match item {
                    Outgoing::Packet(packet) => {
                        encode(&packet, &mut buf);
                        continue;
                    }
                    Outgoing::PubAck(ack) => {
                        (Packet::PubAck(PubAck::new(ack.packet_id)), ack.permit)
                    }
                    Outgoing::PubRec(ack) => {
                        (Packet::PubRec(PubRec::new(ack.packet_id)), ack.permit)
                    }
                };
                encode(&packet, &mut buf);
                acks += 1;
                match released.as_mut() {
                    Some(all) => all.merge(permit),
                    None => released = Some(permit),
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
                self.stats.acked(acks);
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
    fn the_header_of_an_oversized_publish_is_found_and_other_packets_are_not() {
        let mut buf = BytesMut::new();
        let mut publish = Publish::new("t/x", QoS::ExactlyOnce, vec![b'x'; 300_000]);
        publish.pkid = 7;
        Packet::Publish(publish)
            .write(&mut buf, usize::MAX)
            .expect("encodes");
        assert!(matches!(
            Packet::read(&mut buf.clone(), 1_000),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(_))
        ));
        assert_eq!(
            oversized_publish_header(&buf),
            Some(OversizedHeader {
                len: 4,
                qos: QoS::ExactlyOnce
            })
        );
        let mut sub = BytesMut::new();
        Packet::PingReq
            .write(&mut sub, usize::MAX)
            .expect("encodes");
        assert_eq!(oversized_publish_header(&sub), None);
        assert_eq!(oversized_publish_header(&[0x36, 0x80]), None, "QoS 3");
    }

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
