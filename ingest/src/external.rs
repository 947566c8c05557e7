//! External broker source (`--mqtt-url mqtt://host:port`): ingest subscribes to an
//! existing broker (Mosquitto, EMQX, HiveMQ …) instead of serving devices itself.
//!
//! The session is persistent (`clean_session = false`, a fixed client id) and acks are
//! manual: a delivery is acked only after the batch holding it committed, so the broker
//! keeps and redelivers whatever was not stored when ingest stopped or crashed. Acks are
//! sent in arrival order by a separate acker task, never from the task that polls the
//! event loop (which must keep polling: nothing moves otherwise).
//!
//! What this source cannot promise, plainly: rumqttc drops PUBACKs still queued when the
//! connection breaks, and a delivery received on an earlier connection is not acked on
//! a later one (its packet id may name another message by then). Either way the broker
//! redelivers, and the store's (serial, seq) dedupe makes that harmless.
//!
//! TLS: `mqtts://host:port` connects with rustls (ring), verifying the broker's
//! certificate against `broker.tls.ca_file` (or the system's CA certificates), and
//! presents a client certificate when `broker.tls.cert_file`/`key_file` are set.
//!
//! Poison from the broker: every delivery the client can read is decoded, and whatever
//! cannot be used (too large for `ingest.limits.max_payload_bytes`, not JSON, another
//! contract's topic …) becomes one dead letter, acked like any reading, so the broker
//! never redelivers it. The client reads packets up to `broker.max_packet_bytes`
//! (default 2 MiB), well above the payload limit, and the broker must refuse anything
//! larger (`max_packet_size` in `config/mosquitto.example.conf`). A delivery over the
//! client's limit cannot be read, hence not acked: rumqttc drops the connection and the
//! broker sends it again on the next. That is logged as an error each time, counted
//! (`broker_oversized_packets_total`), and retried only every `max_reconnect_backoff`,
//! never in a tight loop; the fix is the broker's limit.
//!
//! Backpressure: while the pipeline is full the event loop is not polled, so the socket
//! is not read and the broker holds its messages. A stall longer than 1.5 × keepalive
//! makes the broker drop the connection; rumqttc reconnects and the session resumes.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetpulse_domain::telemetry::{STATUS_FILTER, TELEMETRY_FILTER};
use rumqttc::mqttbytes::Error as MqttBytesError;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish, SubscribeFilter, SubscribeReasonCode};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, StateError,
    TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::decode::{decode, topic_client_id};
use crate::pipeline::{Ack, Inbound, PipelineHandle};
use crate::stats::IngestStats;
use crate::tls::{TlsFileError, load_certs, load_key, load_roots, provider};

/// The client id used when none is configured.
pub const DEFAULT_CLIENT_ID: &str = "fleetpulse-ingest";

/// Configuration of the external broker source (section `[broker]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Broker address: `mqtt://host:port` (port 1883 when left out), or
    /// `mqtts://host:port` for MQTT over TLS (port 8883 when left out; see `[broker.tls]`).
    pub url: String,
    /// Client id of the persistent session. Must be fixed: the broker keeps the
    /// subscriptions and the unacked messages under it. Default `fleetpulse-ingest`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name for the broker, if it requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker. Never logged.
    #[serde(default, deserialize_with = "crate::secret::deserialize_option")]
    pub password: Option<String>,
    /// MQTT keepalive, in seconds (`keep_alive_s`). Default 30.
    #[serde(
        rename = "keep_alive_s",
        with = "crate::duration::secs",
        default = "default_keep_alive"
    )]
    pub keep_alive: Duration,
    /// Largest packet read from the broker, in bytes (remaining length: topic, packet id
    /// and payload; rumqttc buffers one whole packet). Default 2 MiB: well above
    /// `ingest.limits.max_payload_bytes` (256 KiB), so an oversized payload is read and
    /// becomes a `payload_too_large` dead letter. Keep it above the broker's own limit
    /// (Mosquitto `max_packet_size`): a delivery over this one cannot be read or acked,
    /// and the broker redelivers it on every connection (logged and counted, retried
    /// every `max_reconnect_backoff_ms`).
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// Longest pause between reconnection attempts, in milliseconds
    /// (`max_reconnect_backoff_ms`). The pause starts at 100 ms and doubles. Default
    /// 10 000.
    #[serde(
        rename = "max_reconnect_backoff_ms",
        with = "crate::duration::millis",
        default = "default_max_reconnect_backoff"
    )]
    pub max_reconnect_backoff: Duration,
    /// TLS towards the broker (`[broker.tls]`), used with an `mqtts://` url.
    #[serde(default)]
    pub tls: Option<BrokerTlsConfig>,
}

/// TLS towards the broker (section `[broker.tls]`); files are PEM, read at start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTlsConfig {
    /// CA certificates that sign the broker's certificate (`ca_file`). Unset: the
    /// system's CA certificates. The broker's certificate must name the url's host.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain to present, for brokers that require one (`cert_file`);
    /// needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (`key_file`): PKCS#8, PKCS#1 or SEC1. Never logged.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_client_id() -> String {
    DEFAULT_CLIENT_ID.to_owned()
}
const fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
const fn default_max_packet_bytes() -> usize {
    2 * 1024 * 1024
}
const fn default_max_reconnect_backoff() -> Duration {
    Duration::from_secs(10)
}

const INITIAL_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a clean DISCONNECT may take once everything is acked.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests (acks, subscriptions) rumqttc queues for its event loop.
const REQUEST_CAPACITY: usize = 1_024;

impl ExternalConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_id: default_client_id(),
            username: None,
            password: None,
            keep_alive: default_keep_alive(),
            max_packet_bytes: default_max_packet_bytes(),
            max_reconnect_backoff: default_max_reconnect_backoff(),
            tls: None,
        }
    }
}

impl fmt::Debug for ExternalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_alive", &self.keep_alive)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("max_reconnect_backoff", &self.max_reconnect_backoff)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A configuration the external source cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("broker url {url:?} (setting --mqtt-url): {problem}")]
    BadUrl { url: String, problem: &'static str },
    #[error("broker client id {0:?} is empty (setting broker.client_id)")]
    EmptyClientId(String),
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The external broker source, ready to run.
pub struct ExternalSource {
    options: MqttOptions,
    broker: String,
    client_id: String,
    max_reconnect_backoff: Duration,
    max_packet_bytes: usize,
}

impl ExternalSource {
    /// Checks the configuration (URL, client id) without connecting.
    pub fn new(config: ExternalConfig) -> Result<Self, ExternalError> {
        let (scheme, host, port) = parse_broker_url(&config.url)?;
        if config.client_id.is_empty() {
            return Err(ExternalError::EmptyClientId(config.client_id));
        }
        let mut options = MqttOptions::new(config.client_id.clone(), host.clone(), port);
        match (scheme, &config.tls) {
            (Scheme::Mqtts, tls) => {
                let tls = client_tls_config(tls.as_ref().unwrap_or(&BrokerTlsConfig::default()))?;
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
            }
            (Scheme::Mqtt, Some(_)) => {
                return Err(ExternalError::Config(format!(
                    "[broker.tls] is set but broker.url {:?} is plain MQTT: use mqtts://",
                    config.url
                )));
            }
            (Scheme::Mqtt, None) => {}
        }
        options
            .set_manual_acks(true)
            .set_clean_session(false)
            .set_keep_alive(config.keep_alive.max(Duration::from_secs(1)))
            .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
        if config.username.is_some() || config.password.is_some() {
            options.set_credentials(
                config.username.unwrap_or_default(),
                config.password.unwrap_or_default(),
            );
        }
        Ok(Self {
            options,
            broker: format!("{host}:{port}"),
            client_id: config.client_id,
            max_reconnect_backoff: config.max_reconnect_backoff,
            max_packet_bytes: config.max_packet_bytes,
        })
    }

    /// Consumes the broker's deliveries until `shutdown` completes. Then it stops
    /// handing new deliveries on (they stay with the broker, unacked), keeps the
    /// connection polled until the pipeline has committed and acked everything it was
    /// given and those acks are sent, and disconnects. The pipeline must keep running
    /// until this returns.
    pub async fn run(self, pipeline: PipelineHandle, shutdown: impl Future<Output = ()> + Send) {
        let ExternalSource {
            options,
            broker,
            client_id,
            max_reconnect_backoff,
            max_packet_bytes,
        } = self;
        info!(%broker, %client_id, "external broker source starting");
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        // Bumped on every connect and every connection loss: an ack is sent only on the
        // connection its delivery came from.
        let epoch = Arc::new(AtomicU64::new(0));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let acker = tokio::spawn(ack_loop(client.clone(), ack_rx, Arc::clone(&epoch)));
        let mut backoff = INITIAL_RECONNECT_BACKOFF;
        tokio::pin!(shutdown);

        loop {
            let event = tokio::select! {
                () = &mut shutdown => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    epoch.fetch_add(1, Ordering::SeqCst);
                    backoff = INITIAL_RECONNECT_BACKOFF;
                    info!(%broker, session_present = connack.session_present, "connected to the broker");
                    subscribe(&client);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let item = inbound(&publish, &pipeline, &ack_tx, epoch.load(Ordering::SeqCst));
                    let submitted = tokio::select! {
                        () = &mut shutdown => break,
                        submitted = pipeline.submit(item) => submitted,
                    };
                    if submitted.is_err() {
                        warn!(%broker, "ingest pipeline closed; the external source stops");
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    let granted = !suback.return_codes.contains(&SubscribeReasonCode::Failure);
                    pipeline.stats().set_connected(granted);
                    if !granted {
                        error!(%broker, %client_id, "the broker refused a subscription: no telemetry will arrive (check the broker's ACL)");
                    }
                }
                Ok(Event::Outgoing(Outgoing::PubAck(_))) => pipeline.stats().acked(1),
                Ok(_) => {}
                Err(err) => {
                    epoch.fetch_add(1, Ordering::SeqCst);
                    pipeline.stats().broker_connection_lost();
                    let pause = if let Some(bytes) = oversized(&err) {
                        // The broker sends it again on the next connection: no tight
                        // loop, and said loudly every time.
                        pipeline.stats().broker_oversized_packet();
                        let retry_in_ms =
                            u64::try_from(max_reconnect_backoff.as_millis()).unwrap_or(u64::MAX);
                        error!(%broker, bytes, max_packet_bytes, retry_in_ms,
                            "a delivery is over broker.max_packet_bytes: it cannot be read or acked, and the broker redelivers it on every connection, holding back what is queued behind it; \
                             set the broker's max_packet_size below broker.max_packet_bytes (or raise broker.max_packet_bytes)");
                        max_reconnect_backoff
                    } else {
                        log_connection_error(&broker, &err, backoff);
                        backoff
                    };
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    backoff = (backoff * 2).min(max_reconnect_backoff);
                }
            }
        }

        pipeline.stats().set_connected(false);
        info!(%broker, "external broker source stopping: waiting for the pipeline's acks");
        drop(ack_tx);
        drain(
            &client,
            &mut eventloop,
            acker,
            &epoch,
            &broker,
            pipeline.stats(),
        )
        .await;
        info!(%broker, "external broker source stopped");
    }
}

/// After shutdown: keep the event loop polled (acks only move when it is) but hand no
/// new delivery on; once the acker sent every ack, disconnect cleanly.
async fn drain(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    mut acker: tokio::task::JoinHandle<()>,
    epoch: &AtomicU64,
    broker: &str,
    stats: &IngestStats,
) {
    let mut acked_all = false;
    let mut dropped = 0_u64;
    let disconnect_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(disconnect_deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut acker, if !acked_all => {
                acked_all = true;
                // The DISCONNECT request queues behind every ack the acker sent.
                let client = client.clone();
                tokio::spawn(async move {
                    let _ = client.disconnect().await;
                });
                disconnect_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + DISCONNECT_TIMEOUT);
            }
            () = &mut disconnect_deadline => {
                warn!(%broker, "no clean DISCONNECT in time; closing");
                break;
            }
            event = eventloop.poll() => match event {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(Event::Incoming(Packet::Publish(_))) => dropped += 1,
                Ok(Event::Outgoing(Outgoing::PubAck(_))) => stats.acked(1),
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    epoch.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(err) => {
                    epoch.fetch_add(1, Ordering::SeqCst);
                    if acked_all {
                        break;
                    }
                    log_connection_error(broker, &err, INITIAL_RECONNECT_BACKOFF);
                    tokio::time::sleep(INITIAL_RECONNECT_BACKOFF).await;
                }
            },
        }
    }
    if dropped > 0 {
        debug!(%broker, dropped, "deliveries left with the broker at shutdown (unacked: redelivered later)");
    }
}

/// Subscribes to every device's telemetry and status, QoS 1. Done on every CONNACK:
/// harmless when the session kept the subscriptions, needed when it did not. From its
/// own task, because the request queue is drained by the task that polls.
fn subscribe(client: &AsyncClient) {
    let client = client.clone();
    tokio::spawn(async move {
        let filters = [TELEMETRY_FILTER, STATUS_FILTER]
            .map(|filter| SubscribeFilter::new(filter.to_owned(), QoS::AtLeastOnce));
        if let Err(error) = client.subscribe_many(filters).await {
            warn!(%error, "cannot queue the broker subscriptions");
        }
    });
}

/// Decodes a delivery and attaches the ack that, once its batch committed, hands the
/// delivery to the acker.
fn inbound(
    publish: &Publish,
    pipeline: &PipelineHandle,
    ack_tx: &mpsc::UnboundedSender<(u64, Publish)>,
    epoch: u64,
) -> Inbound {
    let decoded = decode(
        &publish.topic,
        topic_client_id(&publish.topic),
        &publish.payload,
        pipeline.now(),
        pipeline.limits(),
    );
    let ack = (publish.qos != QoS::AtMostOnce).then(|| {
        // The ack needs only the packet id and QoS: keep the payload out of memory.
        let mut token = Publish::new("", publish.qos, Vec::new());
        token.pkid = publish.pkid;
        let ack_tx = ack_tx.clone();
        Ack::new(move || {
            let _ = ack_tx.send((epoch, token));
        })
    });
    Inbound::new(decoded, ack)
}

/// Sends acks in the order the pipeline ran them; skips deliveries of an earlier
/// connection (the broker redelivers those).
async fn ack_loop(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<(u64, Publish)>,
    epoch: Arc<AtomicU64>,
) {
    let mut stale = 0_u64;
    while let Some((delivered_in, publish)) = rx.recv().await {
        if delivered_in != epoch.load(Ordering::SeqCst) {
            stale += 1;
            continue;
        }
        if let Err(error) = client.ack(&publish).await {
            warn!(%error, pkid = publish.pkid, "cannot queue an ack; the broker will redeliver");
        }
    }
    if stale > 0 {
        debug!(
            stale,
            "acks skipped: their deliveries came on an earlier connection"
        );
    }
}

/// The size of the delivery when `err` is rumqttc refusing a packet over its limit.
fn oversized(err: &ConnectionError) -> Option<usize> {
    match err {
        ConnectionError::MqttState(StateError::Deserialization(
            MqttBytesError::PayloadSizeLimitExceeded(bytes),
        )) => Some(*bytes),
        _ => None,
    }
}

fn log_connection_error(broker: &str, err: &ConnectionError, retry_in: Duration) {
    let retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX);
    match err {
        ConnectionError::ConnectionRefused(code) => {
            error!(%broker, code = ?code, retry_in_ms, "the broker refused the connection (check broker.username/password and client id)");
        }
        other => warn!(%broker, error = %other, retry_in_ms, "broker connection failed; retrying"),
    }
}

/// The rustls client configuration for an `mqtts://` broker.
fn client_tls_config(tls: &BrokerTlsConfig) -> Result<Arc<rustls::ClientConfig>, ExternalError> {
    let roots = match &tls.ca_file {
        Some(ca_file) => load_roots("broker.tls.ca_file", ca_file)?,
        None => system_roots()?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ExternalError::Config(format!("TLS towards the broker: {e}")))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = load_certs("broker.tls.cert_file", cert_file)?;
            let key = load_key("broker.tls.key_file", key_file)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                TlsFileError::new(
                    "broker.tls.key_file",
                    key_file,
                    format!("does not fit broker.tls.cert_file: {e}"),
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ExternalError::Config(
                "broker.tls.cert_file and broker.tls.key_file go together: set both or neither"
                    .to_owned(),
            ));
        }
    };
    Ok(Arc::new(config))
}

/// The operating system's CA certificates (when `broker.tls.ca_file` is unset).
fn system_roots() -> Result<rustls::RootCertStore, ExternalError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ExternalError::Config(format!(
            "no system CA certificates found for the mqtts:// broker ({} errors); set broker.tls.ca_file",
            found.errors.len()
        )));
    }
    Ok(roots)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Mqtt,
    Mqtts,
}

/// `mqtt://host:port` (or `tcp://`), `mqtts://host:port` (or `ssl://`) → (scheme, host,
/// port).
fn parse_broker_url(url: &str) -> Result<(Scheme, String, u16), ExternalError> {
    let bad = |problem| ExternalError::BadUrl {
        url: url.to_owned(),
        problem,
    };
    let (scheme, rest) = if let Some(rest) = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
    {
        (Scheme::Mqtt, rest)
    } else if let Some(rest) = url
        .strip_prefix("mqtts://")
        .or_else(|| url.strip_prefix("ssl://"))
    {
        (Scheme::Mqtts, rest)
    } else {
        return Err(bad("must start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(bad(
            "credentials belong in broker.username/password, not in the url",
        ));
    }
    if rest.contains('/') || rest.contains('?') {
        return Err(bad("must be mqtt://host:port with no path or query"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None if scheme == Scheme::Mqtts => 8883,
        None => 1883,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port must be 1 to 65535"))?,
    };
    Ok((scheme, host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_domain::telemetry::TelemetryLimits;

    #[test]
    fn broker_urls() {
        use Scheme::{Mqtt, Mqtts};
        assert_eq!(
            parse_broker_url("mqtt://localhost:1884").expect("valid"),
            (Mqtt, "localhost".into(), 1884)
        );
        assert_eq!(
            parse_broker_url("mqtt://broker").expect("valid"),
            (Mqtt, "broker".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("tcp://10.0.0.1:1883/").expect("valid"),
            (Mqtt, "10.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1999").expect("valid"),
            (Mqtt, "::1".into(), 1999)
        );
        assert_eq!(
            parse_broker_url("mqtts://broker").expect("valid"),
            (Mqtts, "broker".into(), 8883)
        );
        assert_eq!(
            parse_broker_url("mqtts://127.0.0.1:18883").expect("valid"),
            (Mqtts, "127.0.0.1".into(), 18883)
        );
        for bad in [
            "localhost:1883",
            "https://x:8883",
            "mqtt://u:p@x:1883",
            "mqtt://x:0",
            "mqtt://x:port",
            "mqtt://:1883",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_defaults_and_secrets() {
        let c: ExternalConfig =
            serde_json::from_str(r#"{"url":"mqtt://x","password":"hunter2"}"#).expect("valid");
        assert_eq!(c.client_id, DEFAULT_CLIENT_ID);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(
            serde_json::from_str::<ExternalConfig>(r#"{"url":"mqtt://x","clientid":"a"}"#).is_err()
        );
        assert!(ExternalSource::new(ExternalConfig::new("mqtt://x:1")).is_ok());
    }

    #[test]
    fn the_example_mosquitto_config_refuses_what_ingest_could_not_read() {
        let conf = include_str!("../../config/mosquitto.example.conf");
        let limit: usize = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("max_packet_size "))
            .expect("config/mosquitto.example.conf sets max_packet_size")
            .trim()
            .parse()
            .expect("a number");
        // Mosquitto's limit covers the whole packet, ours its remaining length.
        assert!(limit <= default_max_packet_bytes(), "{limit}");
        assert!(
            limit > TelemetryLimits::default().max_payload_bytes,
            "an oversized payload must reach ingest to be dead-lettered: {limit}"
        );
    }

    #[test]
    fn a_packet_over_the_client_limit_is_recognised() {
        let err = ConnectionError::MqttState(StateError::Deserialization(
            MqttBytesError::PayloadSizeLimitExceeded(300_000),
        ));
        assert_eq!(oversized(&err), Some(300_000));
        assert_eq!(oversized(&ConnectionError::NetworkTimeout), None);
    }

    #[test]
    fn tls_settings_must_fit_the_url_and_files_are_named() {
        let mut c = ExternalConfig::new("mqtt://x:1");
        c.tls = Some(BrokerTlsConfig::default());
        let err = ExternalSource::new(c)
            .err()
            .expect("tls on mqtt://")
            .to_string();
        assert!(err.contains("mqtts://"), "{err}");

        let mut c = ExternalConfig::new("mqtts://x:1");
        c.tls = Some(BrokerTlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..BrokerTlsConfig::default()
        });
        let err = ExternalSource::new(c)
            .err()
            .expect("missing CA")
            .to_string();
        assert!(
            err.contains("broker.tls.ca_file") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );

        let mut c = ExternalConfig::new("mqtts://x:1");
        c.tls = Some(BrokerTlsConfig {
            cert_file: Some("/c.pem".into()),
            ..BrokerTlsConfig::default()
        });
        let err = ExternalSource::new(c)
            .err()
            .expect("cert without key")
            .to_string();
        assert!(err.contains("broker.tls.key_file"), "{err}");
    }
}
