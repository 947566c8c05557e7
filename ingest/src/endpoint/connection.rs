//! One device connection: the reader loop (this task) and a writer task fed by a
//! channel. The pipeline's acks go to the writer, so a PUBACK is written only after its
//! batch committed, and in arrival order.

use std::net::SocketAddr;
use std::sync::Arc;
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use super::auth::authenticate;
use super::tls::{DeviceStream, PeerCertificate};
use super::{Kill, KillSender, Shared};
use crate::decode::{Decoded, decode};
use crate::pipeline::{Ack, Inbound, PipelineHandle};
use fleetpulse_domain::store::ConnectionEnd;

/// Bytes asked of the socket at least per read. Also each connection's initial read
/// buffer: at 10 000 connections every KiB here is 10 MiB of RSS, and a reading is a
/// few hundred bytes (a bigger packet reserves exactly what it lacks).
const READ_CHUNK: usize = 2 * 1024;
/// Outgoing packets gathered into one write.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

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
            read_packet(&mut rd, &mut buf, config.max_packet_bytes, None),
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
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(
        wr,
        out_rx,
        kill_tx.clone(),
        kill_rx.clone(),
        config.write_timeout,
    ));
    // Queued before any PUBACK can be: the CONNACK is the first packet written.
    let _ = out_tx.send(Outgoing::packet(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        false,
    ))));
    debug!(serial = %serial, %peer, keep_alive = connect.keep_alive, took_over, "device connected");

    let mut reader = Reader {
        rd,
        buf,
        max_packet_bytes: config.max_packet_bytes,
        // MQTT 3.1.1 §3.1.2.10: one and a half times the keepalive; 0 turns it off.
        idle_limit: (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
        serial: serial.clone(),
        pipeline: pipeline.clone(),
        out: out_tx,
        inflight: Arc::new(Semaphore::new(config.max_inflight.max(1))),
        kill: kill_rx,
        stop: stop.clone(),
    };
    let close = reader.read_loop().await;
    drop(reader);

    let still_current = shared.registry.deregister(&serial, conn_id);
    if close != Close::Shutdown {
        // Stop the writer now: a connection that ended otherwise gets no more packets.
        // On shutdown the writer runs on until the pipeline ran every ack it holds.
        kill_tx.send_if_modified(|kill| {
            let unset = kill.is_none();
            if unset {
                *kill = Some(Kill::Closed);
            }
            unset
        });
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
    idle_limit: Option<Duration>,
    serial: Serial,
    pipeline: PipelineHandle,
    out: mpsc::UnboundedSender<Outgoing>,
    /// One permit per QoS 1 PUBLISH waiting for its PUBACK (released once written).
    inflight: Arc<Semaphore>,
    kill: watch::Receiver<Option<Kill>>,
    stop: watch::Receiver<bool>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    async fn read_loop(&mut self) -> Close {
        loop {
            let read = tokio::select! {
                biased;
                close = interrupted(&mut self.kill, &mut self.stop) => return close,
                read = read_packet(&mut self.rd, &mut self.buf, self.max_packet_bytes, self.idle_limit) => read,
            };
            let packet = match read {
                Ok(packet) => packet,
                Err(error) => return error.into(),
            };
            if let Some(close) = self.handle(packet).await {
                return close;
            }
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
            // Kept so an operator sees what the device tried; not acked, since the
            // device is disconnected anyway.
            if let Some(close) = self.submit(Inbound::new(decoded, None)).await {
                return Some(close);
            }
            return Some(Close::ForeignTopic(publish.topic));
        }
        let ack = if publish.qos == QoS::AtLeastOnce {
            let permit = tokio::select! {
                biased;
                close = interrupted(&mut self.kill, &mut self.stop) => return Some(close),
                permit = Arc::clone(&self.inflight).acquire_owned() => {
                    permit.expect("the in-flight semaphore of a connection is never closed")
                }
            };
            let out = self.out.clone();
            let pkid = publish.pkid;
            Some(Ack::new(move || {
                // A closed connection cannot take its PUBACK: the device resends.
                let _ = out.send(Outgoing::PubAck { pkid, permit });
            }))
        } else {
            None
        };
        self.submit(Inbound::new(decoded, ack)).await
    }

    /// Hands an item to the pipeline, waiting while it is full (and not reading the
    /// socket meanwhile: that is the backpressure).
    async fn submit(&mut self, item: Inbound) -> Option<Close> {
        tokio::select! {
            biased;
            close = interrupted(&mut self.kill, &mut self.stop) => Some(close),
            submitted = self.pipeline.submit(item) => submitted.err().map(|_| Close::PipelineClosed),
        }
    }

    fn send(&self, packet: Packet) {
        let _ = self.out.send(Outgoing::packet(packet));
    }
}

/// Completes when the connection must stop reading: taken over, writer failed, or the
/// endpoint is shutting down.
async fn interrupted(
    kill: &mut watch::Receiver<Option<Kill>>,
    stop: &mut watch::Receiver<bool>,
) -> Close {
    tokio::select! {
        kill = kill.wait_for(Option::is_some) => match kill.ok().and_then(|k| *k) {
            Some(Kill::TakenOver) => Close::TakenOver,
            _ => Close::WriteFailed,
        },
        _ = stop.wait_for(|stopping| *stopping) => Close::Shutdown,
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

/// Reads one packet, refusing a packet over `max` bytes before reading its body. With
/// `idle_limit`, fails when no byte arrives for that long. Cancel-safe: bytes read stay
/// in `buf`.
async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    max: usize,
    idle_limit: Option<Duration>,
) -> Result<Packet, ReadError> {
    loop {
        match Packet::read(buf, max) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(missing)) => {
                buf.reserve(missing.max(READ_CHUNK));
                let read = match idle_limit {
                    None => rd.read_buf(buf).await?,
                    Some(limit) => tokio::time::timeout(limit, rd.read_buf(buf))
                        .await
                        .map_err(|_| ReadError::Idle)??,
                };
                if read == 0 {
                    return Err(ReadError::Eof);
                }
            }
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(bytes)) => {
                return Err(ReadError::TooLarge(bytes));
            }
            Err(error) => return Err(ReadError::Protocol(error)),
        }
    }
}

/// A packet for the writer; a PUBACK carries the in-flight permit of its PUBLISH.
enum Outgoing {
    /// The PUBACK of a committed PUBLISH, with the in-flight permit it releases once
    /// written. The common case is kept small: each connection's channel allocates its
    /// slots in blocks, and at 10 000 connections a slot of a whole `Packet` (a few
    /// hundred bytes, for CONNECT's sake) costs tens of MiB.
    PubAck {
        pkid: u16,
        permit: OwnedSemaphorePermit,
    },
    /// Anything else (CONNACK, SUBACK, PINGRESP …): rare, boxed.
    Packet(Box<Packet>),
}

impl Outgoing {
    fn packet(packet: Packet) -> Self {
        Self::Packet(Box::new(packet))
    }
}

/// Writes outgoing packets in queue order until every sender is gone (then closes the
/// write half) or the connection is killed (then drops it at once).
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    kill_tx: KillSender,
    mut kill: watch::Receiver<Option<Kill>>,
    write_timeout: Duration,
) {
    let mut buf = BytesMut::with_capacity(256);
    let mut written_permits = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = kill.wait_for(Option::is_some) => return,
            next = rx.recv() => match next {
                Some(out) => out,
                None => break,
            },
        };
        encode(first, &mut buf, &mut written_permits);
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(out) => encode(out, &mut buf, &mut written_permits),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            biased;
            _ = kill.wait_for(Option::is_some) => return,
            written = tokio::time::timeout(write_timeout, wr.write_all(&buf)) => written,
        };
        if !matches!(written, Ok(Ok(()))) {
            kill_tx.send_if_modified(|k| {
                let unset = k.is_none();
                if unset {
                    *k = Some(Kill::WriteFailed);
                }
                unset
            });
            return;
        }
        buf.clear();
        written_permits.clear();
    }
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
}

fn encode(out: Outgoing, buf: &mut BytesMut, permits: &mut Vec<OwnedSemaphorePermit>) {
    let (packet, permit) = match out {
        Outgoing::PubAck { pkid, permit } => (Packet::PubAck(PubAck::new(pkid)), Some(permit)),
        Outgoing::Packet(packet) => (*packet, None),
    };
    if let Err(error) = packet.write(buf, usize::MAX) {
        warn!(%error, packet = packet_name(&packet), "cannot encode an outgoing packet");
    }
    permits.extend(permit);
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
