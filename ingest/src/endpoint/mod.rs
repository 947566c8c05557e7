//! The built-in MQTT 3.1.1 device endpoint: devices connect to fleetpulse itself.
//!
//! The wire format is rumqttc's codec (`rumqttc::mqttbytes::v4`); this module owns the
//! server side of the protocol. Why not an embedded general-purpose broker: a broker
//! PUBACKs as soon as it holds a message, so a crash between its PUBACK and our commit
//! would lose a reading the device was told is safe. Here a QoS 1 PUBACK is written only
//! after the batch holding its PUBLISH committed (see [`crate::pipeline`]).
//!
//! # Sessions
//! CONNACK always says `session_present = false`: the endpoint keeps no session state
//! for devices, and needs none. Device → server is the only flow: a device resends its
//! unacknowledged PUBLISHes (with DUP) after reconnecting, and the store's
//! (serial, seq) dedupe makes a resent reading harmless. QoS 2 is served the same way:
//! PUBREC once committed, PUBCOMP for every PUBREL (no per-packet state). There are no server → device
//! messages yet, so there are no subscriptions to keep: SUBSCRIBE is answered with a
//! failure code for every filter.
//!
//! # A connection
//! - At most `max_connections` are open at once. One more is closed as soon as it is
//!   accepted, before anything is read from it (no TLS handshake, no CONNECT: a CONNACK
//!   "server unavailable" would cost a read and a file descriptor held for up to
//!   `connect_timeout`, which is what the cap saves), counted and logged (WARN, at most
//!   every [`REFUSAL_LOG_EVERY`]); the connections already open are not touched. Its
//!   place frees when a connection's task ends.
//! - With `[mqtt.tls]`, the TLS handshake comes first (within `connect_timeout`); a
//!   client that does not speak TLS, or whose certificate does not verify against
//!   `mqtt.tls.client_ca_file`, is closed with the reason logged.
//! - The first packet must be CONNECT, within `connect_timeout`. The client id must be a
//!   valid serial (else CONNACK "identifier rejected"). A verified client certificate
//!   must name that serial (subject CN or a DNS subject alternative name; else "not
//!   authorised") and then stands for the device's identity. Without one, `mqtt.auth`
//!   decides: nothing more, the shared `mqtt.password`, or the device's own token (user
//!   name = client id in both). Refusals are logged with a reason, never with a secret.
//! - A device may publish only to its own topics (`fleetpulse/v1/devices/{client id}/
//!   telemetry` and `…/status`).
//! - Whatever is refused leaves one dead letter and is then acknowledged like a stored
//!   message, on a connection that stays open: another device's topic
//!   (`unsupported_topic`), a payload that fails validation, and a PUBLISH over
//!   `max_packet_bytes`, which is read past without being buffered (`payload_too_large`
//!   with its sizes and first bytes). A device that resends what was not acknowledged
//!   must always make progress; closing instead made it resend the refused message
//!   forever, with nothing behind it getting through. Only a packet that is not a
//!   message (another packet over the limit, a malformed one, one a client must not send)
//!   closes the connection.
//! - Nothing received for 1.5 × keepalive closes the connection.
//! - A second connection with the same client id takes over: the first is closed
//!   without publishing its will (the new connection's birth message must not be
//!   followed by an `offline` from the old one).
//! - Any other close without DISCONNECT publishes the device's last will, when it is on
//!   the device's own status topic (→ device offline).
//!
//! # Shutdown
//! Stop accepting, stop reading, let the pipeline commit what the connections handed it
//! (their PUBACKs are flushed), then close the sockets. Wills are not published on
//! shutdown: no connection survives a restart, and the store marks every device offline
//! at start.

mod auth;
mod config;
mod connection;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fleetpulse_domain::Serial;
use fleetpulse_domain::credentials::DeviceCredentials;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

pub use config::{AuthMode, ClientCertMode, EndpointConfig, EndpointTlsConfig};

use crate::pipeline::PipelineHandle;
use crate::stats::IngestStats;
use crate::tls::TlsFileError;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen for devices on {addr} (setting mqtt.listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read the local address of the device endpoint (setting mqtt.listen = {addr}): {source}"
    )]
    LocalAddr {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    #[error(
        "mqtt.auth = \"device_credentials\" needs the store's device credentials, and none were given to the endpoint"
    )]
    NoCredentialStore,
}

/// The built-in MQTT device endpoint.
pub struct MqttEndpoint;

impl MqttEndpoint {
    /// Checks the configuration, reads the TLS files (`[mqtt.tls]`) and binds the
    /// listening socket. Every error names its setting (a port in use names
    /// `mqtt.listen`). `mqtt.auth = "device_credentials"` needs
    /// [`bind_with_credentials`](Self::bind_with_credentials).
    pub async fn bind(config: EndpointConfig) -> Result<BoundEndpoint, EndpointError> {
        Self::bind_with_credentials(config, None).await
    }

    /// [`bind`](Self::bind), with the store of per-device tokens.
    pub async fn bind_with_credentials(
        config: EndpointConfig,
        credentials: Option<Arc<dyn DeviceCredentials>>,
    ) -> Result<BoundEndpoint, EndpointError> {
        if config.auth_mode() == AuthMode::DeviceCredentials && credentials.is_none() {
            return Err(EndpointError::NoCredentialStore);
        }
        let tls = Self::prepare(&config)?;
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EndpointError::LocalAddr { addr, source })?;
        Ok(BoundEndpoint {
            listener,
            local_addr,
            config,
            tls,
            credentials,
        })
    }

    /// Checks what [`bind`](Self::bind) would, short of binding: the settings fit
    /// together and the TLS files are readable and match. For `check-config`.
    pub fn check(config: &EndpointConfig) -> Result<(), EndpointError> {
        Self::prepare(config).map(drop)
    }

    /// Validates the settings and builds the TLS acceptor, if TLS is configured.
    fn prepare(
        config: &EndpointConfig,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, EndpointError> {
        config.validate().map_err(EndpointError::Config)?;
        Ok(match &config.tls {
            Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(tls)?)),
            None => None,
        })
    }
}

/// An endpoint whose socket is bound; [`run`](Self::run) serves devices.
pub struct BoundEndpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: EndpointConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    credentials: Option<Arc<dyn DeviceCredentials>>,
}

impl BoundEndpoint {
    /// The address devices connect to (the real port when `mqtt.listen` used port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether devices must speak TLS (`[mqtt.tls]` is configured).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `mqtts://ADDR` with TLS, `mqtt://ADDR` without.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves devices until `shutdown` completes, then stops accepting, stops reading,
    /// waits until the pipeline committed what the connections handed it and their
    /// PUBACKs are written, and closes the sockets. The pipeline must keep running until
    /// this returns (close it afterwards).
    pub async fn run(self, pipeline: PipelineHandle, shutdown: impl Future<Output = ()> + Send) {
        let BoundEndpoint {
            listener,
            local_addr,
            config,
            tls,
            credentials,
        } = self;
        info!(listen = %local_addr, tls = tls.is_some(), auth = config.auth_mode().as_str(), "MQTT device endpoint listening");
        if tls.is_none() && config.auth_mode() != AuthMode::None && !local_addr.ip().is_loopback() {
            warn!(listen = %local_addr, auth = config.auth_mode().as_str(), "device passwords and tokens cross the network in clear text: configure [mqtt.tls]");
        }
        let shared = Arc::new(Shared {
            config,
            registry: Registry::default(),
            credentials,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let max_connections = shared.config.max_connections;
        let places = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
        let mut refusals = RefusalLog::default();
        pipeline.stats().set_connection_cap(max_connections);
        pipeline.stats().set_connected(true);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                            // closed before anything is read: the cap is there to keep
                            // file descriptors for the open connections and the rest
                            drop(stream);
                            pipeline.stats().connection_refused();
                            refusals.refused(peer, max_connections);
                            continue;
                        };
                        let open = OpenConnection::new(pipeline.stats().clone(), place);
                        // The task is this future alone: at 10 000 connections every
                        // byte of it is 10 kB of RSS (a wrapping `async` block held the
                        // connection's future twice, 15 kB per connection).
                        connections.spawn(serve_stream(
                            stream,
                            peer,
                            tls.clone(),
                            Arc::clone(&shared),
                            pipeline.clone(),
                            stop_rx.clone(),
                            open,
                        ));
                    }
                    Err(error) => {
                        // Usually out of file descriptors: pause rather than spin.
                        warn!(%error, "accepting a device connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    log_if_panicked(joined);
                }
            }
        }
        drop(listener);
        pipeline.stats().set_connected(false);
        let open = connections.len();
        info!(open, "MQTT device endpoint stopping: draining connections");
        stop_tx.send_replace(true);
        while let Some(joined) = connections.join_next().await {
            log_if_panicked(joined);
        }
        info!("MQTT device endpoint stopped");
    }
}

/// Serves an accepted socket: straight away, or after a TLS handshake (bounded by
/// `connect_timeout`, abandoned on shutdown) that yields the client certificate's names.
/// `open` counts the connection until this ends (or panics).
async fn serve_stream(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    pipeline: PipelineHandle,
    stop: watch::Receiver<bool>,
    open: OpenConnection,
) {
    let _open = open;
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    match tls {
        None => connection::serve(stream, peer, None, shared, pipeline, stop).await,
        // Boxed: the handshake and the rustls connection are large, and a plain
        // connection's task should not carry their size.
        Some(acceptor) => {
            Box::pin(serve_tls(stream, peer, acceptor, shared, pipeline, stop)).await;
        }
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    pipeline: PipelineHandle,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::select! {
        biased;
        _ = stop.wait_for(|stopping| *stopping) => return,
        handshake = tokio::time::timeout(shared.config.connect_timeout, acceptor.accept(stream)) => handshake,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            info!(%peer, reason = "tls_handshake_failed", %error, "connection refused");
            return;
        }
        Err(_) => {
            info!(%peer, reason = "tls_handshake_timeout", "connection refused");
            return;
        }
    };
    let certificate = match tls::PeerCertificate::of(&stream) {
        None => None,
        Some(Ok(certificate)) => Some(certificate),
        Some(Err(problem)) => {
            info!(%peer, reason = "unreadable_client_certificate", %problem, "connection refused");
            return;
        }
    };
    connection::serve(stream, peer, certificate, shared, pipeline, stop).await;
}

/// Counts an open device connection and holds its place under `max_connections` for as
/// long as it lives (a panicking task too).
struct OpenConnection {
    stats: IngestStats,
    _place: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(stats: IngestStats, place: OwnedSemaphorePermit) -> Self {
        stats.connection_opened();
        Self {
            stats,
            _place: place,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.connection_closed();
    }
}

/// How often at most a WARN says that connections are refused at the cap: a fleet
/// reconnecting at once must not flood the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs connections refused at the cap, at most every [`REFUSAL_LOG_EVERY`], each line
/// with how many were refused since the one before (every one is counted in the stats).
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr, max_connections: usize) {
        self.unlogged += 1;
        if self.last.is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        warn!(
            %peer,
            max_connections,
            refused = self.unlogged,
            "device connection refused: mqtt.max_connections connections are open (raise it, and the open-file limit, if the fleet is this large)"
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

fn log_if_panicked(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        error!(%error, "a device connection task panicked");
    }
}

/// What every connection task shares.
struct Shared {
    config: EndpointConfig,
    registry: Registry,
    /// Per-device tokens, for `mqtt.auth = "device_credentials"`.
    credentials: Option<Arc<dyn DeviceCredentials>>,
}

/// Why a connection's writer (and reader) must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// A new connection with the same client id took over.
    TakenOver,
    /// Writing to the device failed or timed out.
    WriteFailed,
    /// The reader ended the connection.
    Closed,
}

type KillSender = watch::Sender<Option<Kill>>;

/// The live connection of each client id, so a second one can take over.
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<Serial, (u64, KillSender)>>,
}

impl Registry {
    /// Registers a connection; closes the one it replaces. Returns the connection's id
    /// and whether it took over.
    fn register(&self, serial: &Serial, kill: KillSender) -> (u64, bool) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let previous = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(serial.clone(), (id, kill));
        let took_over = previous.is_some();
        if let Some((old_id, old_kill)) = previous {
            debug!(serial = %serial, old_id, new_id = id, "session taken over");
            old_kill.send_replace(Some(Kill::TakenOver));
        }
        (id, took_over)
    }

    /// Forgets a connection, unless another one already took its place. Returns
    /// whether it was still the device's current connection.
    fn deregister(&self, serial: &Serial, id: u64) -> bool {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let current = live.get(serial).is_some_and(|(live_id, _)| *live_id == id);
        if current {
            live.remove(serial);
        }
        current
    }
}
