//! Configuration: embedded defaults, then a TOML file, then `FLEETPULSE_*` environment
//! variables (`__` separates sections: `FLEETPULSE_HTTP__LISTEN=0.0.0.0:8080`), then
//! command-line flags. An unknown key or a bad value is an error that names it.
//! Every key is documented in the README's configuration reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use fleetpulse_domain::store::UnknownDevicePolicy;
use fleetpulse_domain::{Catalog, Policy};
use fleetpulse_ingest::{EndpointConfig, ExternalConfig, PipelineConfig, SinkConfig};
use serde::{Deserialize, Serialize};

/// The shipped catalog, used when `catalog.path` is not set.
pub const EMBEDDED_CATALOG: &str = include_str!("../../config/catalog.toml");
/// The shipped order policy, used when `policy.path` is not set.
pub const EMBEDDED_POLICY: &str = include_str!("../../config/policy.toml");

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub data: DataConfig,
    /// The built-in MQTT device endpoint (used when no broker is configured).
    pub mqtt: EndpointConfig,
    /// An external MQTT broker to subscribe to instead of running the built-in endpoint.
    pub broker: Option<ExternalConfig>,
    /// Batching, retry, queue and telemetry limits of the ingest pipeline.
    pub ingest: PipelineConfig,
    /// A time-series server (InfluxDB v2 write API) that receives every stored reading,
    /// through a durable spool. Absent: readings stay in the embedded store only.
    pub sink: Option<SinkConfig>,
    pub registry: RegistryConfig,
    /// Delivery of order events to registered webhooks.
    pub webhooks: WebhooksConfig,
    /// The analytics worker: predictions and their orders, model training.
    pub analytics: AnalyticsConfig,
    pub catalog: FileRef,
    pub policy: FileRef,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            data: DataConfig::default(),
            mqtt: EndpointConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_DEVICE_PORT)),
                ..EndpointConfig::default()
            },
            broker: None,
            ingest: PipelineConfig::default(),
            sink: None,
            registry: RegistryConfig::default(),
            webhooks: WebhooksConfig::default(),
            analytics: AnalyticsConfig::default(),
            catalog: FileRef::default(),
            policy: FileRef::default(),
            log: LogConfig::default(),
        }
    }
}

/// Default port of the built-in device endpoint: 1884, because 1883 usually belongs to a
/// broker on the same host.
pub const DEFAULT_DEVICE_PORT: u16 = 1884;

/// The HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the API listens on (`--http`). Port 0 picks a free port; the chosen
    /// address is printed when the API is ready.
    pub listen: SocketAddr,
    /// `required`: every API route except `/health` and `/metrics` needs an API token
    /// (`fleetpulse token create --role …`). `disabled`: no tokens, every caller may do
    /// everything; accepted only on a loopback `listen`. Unset: `required`, except for
    /// `demo`, where it is `disabled`.
    pub auth: Option<HttpAuth>,
    /// `[http.streams]`: the order streams (Server-Sent Events).
    pub streams: HttpStreamsConfig,
    /// PEM certificate chain and key: the API speaks only HTTPS (rustls, ring).
    pub tls: Option<HttpTlsConfig>,
    /// Plain HTTP on a non-loopback `listen` is refused unless this is true (e.g. behind
    /// a TLS-terminating proxy on the same network segment).
    pub allow_plain_http: bool,
    /// Most HTTP connections open at once (default 1024). One more closes the connection
    /// idle longest; when all are busy it waits in the listen backlog. Lowered at start
    /// to what the open-file limit leaves after `reserved_fds` (logged).
    pub max_connections: usize,
    /// File descriptors the HTTP cap leaves to the rest of the process (default 512):
    /// device connections of the built-in endpoint, the store and journal files, the
    /// listeners, the sink and webhook clients. The cap in effect is
    /// `min(max_connections, open-file limit - reserved_fds)`.
    pub reserved_fds: u64,
    /// Seconds a client has to send a complete request head (default 10), counted from
    /// the accept or from the first byte of the request.
    pub header_read_timeout_s: u64,
    /// Seconds a client has to send a request's whole body after its head (default 60);
    /// slower bodies fail (400) and the connection closes.
    pub body_timeout_s: u64,
    /// Seconds a kept-alive connection may wait for its next request (default 60).
    pub idle_timeout_s: u64,
    /// At shutdown (the API stops last), seconds requests in flight may take to finish
    /// (default 10); connections still open after that are dropped.
    pub shutdown_grace_s: u64,
}

const fn default_max_connections() -> usize {
    1024
}
const fn default_reserved_fds() -> u64 {
    512
}
const fn default_header_read_timeout_s() -> u64 {
    10
}
const fn default_body_timeout_s() -> u64 {
    60
}
const fn default_idle_timeout_s() -> u64 {
    60
}
const fn default_shutdown_grace_s() -> u64 {
    10
}

/// Fewest HTTP connections the open-file limit must leave room for.
const MIN_HTTP_CONNECTIONS: u64 = 16;

/// Fewest device connections the open-file limit must leave room for.
const MIN_DEVICE_CONNECTIONS: u64 = 16;

/// File descriptors the process needs besides its connections: store, WAL and lock files,
/// journal segments, listeners, runtime, stdio, sink and webhook sockets (19 measured for
/// an idle `serve`, about 60 under load; docs/operations.md).
pub const PROCESS_FDS: u64 = 64;

/// `[http.tls]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[http.streams]`: limits and wake-ups of `GET /api/v1/orders/stream`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpStreamsConfig {
    /// Streams one API token may hold open at once (default 16); one more answers 429
    /// `too_many_streams` until one of them closes. With `http.auth = "disabled"` every
    /// caller shares one allowance.
    pub max_per_token: usize,
    /// Period of the one shared look at the store for order events and token revocations
    /// made by another process (a second instance on the same database, `fleetpulse token
    /// revoke`), in milliseconds (default 1000). Changes made by this process wake the
    /// streams at once; this look runs only while a stream is open and costs two small
    /// queries per period whatever the number of streams.
    pub store_poll_ms: u64,
}

impl Default for HttpStreamsConfig {
    fn default() -> Self {
        Self {
            max_per_token: fleetpulse_api::DEFAULT_STREAMS_PER_TOKEN,
            store_poll_ms: 1000,
        }
    }
}

impl HttpStreamsConfig {
    /// Refuses a cap of 0 (no stream could open) and a period of 0 (a busy loop).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_per_token >= 1,
            "http.streams.max_per_token must be at least 1"
        );
        anyhow::ensure!(
            self.store_poll_ms >= 1,
            "http.streams.store_poll_ms must be at least 1"
        );
        Ok(())
    }
}

/// See [`HttpConfig::auth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpAuth {
    Required,
    Disabled,
}

impl HttpConfig {
    /// Refuses plain HTTP on a non-loopback address unless explicitly allowed.
    pub fn check_transport(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.tls.is_some() || self.listen.ip().is_loopback() || self.allow_plain_http,
            "http.listen = {} is not a loopback address: configure [http.tls] (cert_file, key_file) \
             for HTTPS, or set http.allow_plain_http = true if a TLS proxy fronts it",
            self.listen
        );
        Ok(())
    }

    /// The API's bounds under an open-file limit of `open_files` (the soft limit in
    /// effect): the connection cap leaves `reserved_fds` to the rest of the process.
    /// Refuses a limit that leaves fewer than 16 connections; the returned flag says the
    /// cap was lowered to fit.
    pub fn serve_limits(
        &self,
        open_files: Option<u64>,
    ) -> anyhow::Result<(fleetpulse_api::ServeLimits, bool)> {
        anyhow::ensure!(
            self.max_connections >= 1,
            "http.max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.header_read_timeout_s >= 1 && self.body_timeout_s >= 1 && self.idle_timeout_s >= 1,
            "http.header_read_timeout_s, http.body_timeout_s and http.idle_timeout_s must be at least 1"
        );
        let wanted = self.max_connections as u64;
        let room = open_files.map_or(wanted, |limit| limit.saturating_sub(self.reserved_fds));
        anyhow::ensure!(
            room >= MIN_HTTP_CONNECTIONS.min(wanted),
            "the open-file limit ({}) leaves {room} HTTP connections after http.reserved_fds = {}: \
             raise the limit (ulimit -n, systemd LimitNOFILE=) or lower http.reserved_fds",
            open_files.unwrap_or_default(),
            self.reserved_fds
        );
        let cap = wanted.min(room);
        let secs = std::time::Duration::from_secs;
        Ok((
            fleetpulse_api::ServeLimits {
                max_connections: usize::try_from(cap).unwrap_or(self.max_connections),
                header_read_timeout: secs(self.header_read_timeout_s),
                body_timeout: secs(self.body_timeout_s),
                idle_timeout: secs(self.idle_timeout_s),
                shutdown_grace: secs(self.shutdown_grace_s),
            },
            cap < wanted,
        ))
    }

    /// The authentication mode in effect; `demo_default` when `auth` is unset.
    pub fn auth_mode(&self, demo: bool) -> anyhow::Result<fleetpulse_api::AuthMode> {
        let auth = self.auth.unwrap_or(if demo {
            HttpAuth::Disabled
        } else {
            HttpAuth::Required
        });
        match auth {
            HttpAuth::Required => Ok(fleetpulse_api::AuthMode::Required),
            HttpAuth::Disabled => {
                anyhow::ensure!(
                    self.listen.ip().is_loopback(),
                    "http.auth = \"disabled\" is accepted only on a loopback address, not {}: \
                     create API tokens (`fleetpulse token create --role admin`) instead",
                    self.listen
                );
                Ok(fleetpulse_api::AuthMode::Disabled)
            }
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: None,
            streams: HttpStreamsConfig::default(),
            tls: None,
            allow_plain_http: false,
            max_connections: default_max_connections(),
            reserved_fds: default_reserved_fds(),
            header_read_timeout_s: default_header_read_timeout_s(),
            body_timeout_s: default_body_timeout_s(),
            idle_timeout_s: default_idle_timeout_s(),
            shutdown_grace_s: default_shutdown_grace_s(),
        }
    }
}

/// Where state lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Directory of the embedded store (`--data`); created if missing.
    pub dir: PathBuf,
    /// Raw readings older than this many days (device time) are deleted hourly;
    /// hourly rollups, alarm episodes and orders are kept. 0 keeps readings forever.
    pub retention_days: u32,
    /// `full`: a commit survives power loss (SQLite synchronous=FULL). `normal`: survives a
    /// process crash but may lose the last commits on power loss; faster.
    pub durability: DurabilitySetting,
    /// The store writer's SQLite page cache in MiB (default 16). More keeps more of a
    /// large store's indexes in memory, at that much more RSS.
    pub cache_mib: u32,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data"),
            retention_days: 90,
            durability: DurabilitySetting::Full,
            cache_mib: fleetpulse_store::DEFAULT_CACHE_MIB,
        }
    }
}

/// See [`DataConfig::durability`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilitySetting {
    Full,
    Normal,
}

/// The device registry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// What to do with readings from a serial nobody registered: `auto_register` (as
    /// `unassigned`) or `reject` (dead letter, reason `unknown_device`).
    pub unknown_device: UnknownDevicePolicy,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            unknown_device: UnknownDevicePolicy::AutoRegister,
        }
    }
}

/// The analytics worker (`[analytics]`): runs the predictors on a schedule (and on
/// demand, `POST /api/v1/predictions/run`), raises their orders, trains the failure-risk
/// models on its own schedule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Run the worker in `serve` and `demo` (on-demand runs answer either way).
    pub enabled: bool,
    /// Seconds between prediction runs (the first runs this long after start).
    pub predict_interval_s: u64,
    /// Seconds between training runs (the first runs one interval after start).
    pub train_interval_s: u64,
    /// Days of daily history the predictors read.
    pub history_days: u32,
    /// Days of hourly points the predictors read (consumable and meter slopes).
    pub recent_days: u32,
    /// How the predictors forecast and the failure-risk models train (`[analytics.model]`:
    /// horizon, sampling, validation share, target warning precision, …; every key has
    /// a default, see `fleetpulse_analytics::predict::PredictOptions`).
    pub model: fleetpulse_analytics::predict::PredictOptions,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            predict_interval_s: 900,
            train_interval_s: 86_400,
            history_days: 365,
            recent_days: 14,
            model: fleetpulse_analytics::predict::PredictOptions::default(),
        }
    }
}

impl AnalyticsConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.predict_interval_s >= 1 && self.train_interval_s >= 1,
            "analytics.predict_interval_s and analytics.train_interval_s must be at least 1"
        );
        anyhow::ensure!(
            self.history_days >= 1
                && self.recent_days >= 1
                && self.recent_days <= self.history_days,
            "analytics.history_days and analytics.recent_days must be at least 1, recent_days at most history_days"
        );
        self.model
            .check("analytics.model")
            .map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

/// Webhook delivery (receivers are registered through `POST /api/v1/webhooks`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Attempts of one delivery before it is `dead` (kept in the delivery log).
    pub max_attempts: u32,
    /// Pause after the first failed attempt; it doubles after each further failure…
    pub initial_backoff_ms: u64,
    /// …up to this.
    pub max_backoff_ms: u64,
    /// Time one POST may take, connecting included; longer counts as a failed attempt.
    pub timeout_ms: u64,
    /// How often an idle worker looks for new order events.
    pub poll_ms: u64,
    /// Requests in flight at once (different orders; one order's events go one by one).
    pub concurrency: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_backoff_ms: 1000,
            max_backoff_ms: 600_000,
            timeout_ms: 10_000,
            poll_ms: 250,
            concurrency: 8,
        }
    }
}

impl WebhooksConfig {
    pub fn settings(&self) -> anyhow::Result<fleetpulse_api::push::PushSettings> {
        anyhow::ensure!(
            self.max_attempts >= 1,
            "webhooks.max_attempts must be at least 1"
        );
        anyhow::ensure!(
            self.initial_backoff_ms >= 1 && self.initial_backoff_ms <= self.max_backoff_ms,
            "webhooks.initial_backoff_ms must be from 1 to webhooks.max_backoff_ms"
        );
        anyhow::ensure!(
            self.timeout_ms >= 1,
            "webhooks.timeout_ms must be at least 1"
        );
        anyhow::ensure!(self.poll_ms >= 1, "webhooks.poll_ms must be at least 1");
        anyhow::ensure!(
            (1..=256).contains(&self.concurrency),
            "webhooks.concurrency must be from 1 to 256"
        );
        Ok(fleetpulse_api::push::PushSettings {
            max_attempts: self.max_attempts,
            initial_backoff: std::time::Duration::from_millis(self.initial_backoff_ms),
            max_backoff: std::time::Duration::from_millis(self.max_backoff_ms),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            poll: std::time::Duration::from_millis(self.poll_ms),
            concurrency: self.concurrency,
        })
    }
}

/// A configuration file that has an embedded default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileRef {
    /// Path of the file; unset uses the copy shipped inside the binary (`config/…`).
    pub path: Option<PathBuf>,
}

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `info,fleetpulse_ingest=debug`. `RUST_LOG`
    /// overrides it.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// See [`LogConfig::format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Overrides from command-line flags (highest precedence).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub http: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub mqtt_url: Option<String>,
    pub mqtt_listen: Option<SocketAddr>,
    pub sink_url: Option<String>,
}

impl Config {
    /// The built-in endpoint's connection cap under an open-file limit of `open_files`
    /// (the soft limit in effect): `mqtt.max_connections`, lowered to what the limit
    /// leaves after the HTTP connection cap and [`PROCESS_FDS`], so that devices can never
    /// take the descriptors the API, the store and the journal need. Refuses a limit that
    /// leaves fewer than 16; the flag says the cap was lowered to fit.
    pub fn device_connection_cap(&self, open_files: Option<u64>) -> anyhow::Result<(usize, bool)> {
        let (http, _) = self.http.serve_limits(open_files)?;
        let wanted = self.mqtt.max_connections as u64;
        let taken = http.max_connections as u64 + PROCESS_FDS;
        let room = open_files.map_or(wanted, |limit| limit.saturating_sub(taken));
        anyhow::ensure!(
            room >= MIN_DEVICE_CONNECTIONS.min(wanted),
            "the open-file limit ({}) leaves {room} device connections after {} HTTP connections \
             and {PROCESS_FDS} for the process itself: raise the limit (ulimit -n, systemd \
             LimitNOFILE=), or raise http.reserved_fds to lower the HTTP cap",
            open_files.unwrap_or_default(),
            http.max_connections
        );
        let cap = wanted.min(room);
        Ok((
            usize::try_from(cap).unwrap_or(self.mqtt.max_connections),
            cap < wanted,
        ))
    }

    /// Loads defaults, then `file` (if given; it must exist), then the environment, then
    /// `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                bail!("configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only `SECTION__KEY` variables are configuration; FLEETPULSE_CONFIG and the like are
        // flags' environment forms and must not read as unknown keys. Secrets are taken
        // verbatim instead (figment would read `007` as the number 7).
        fig = fig.merge(
            Env::prefixed("FLEETPULSE_")
                .filter(|k| k.as_str().contains("__") && secret_key(k.as_str()).is_none())
                .split("__"),
        );
        for (name, value) in std::env::vars_os() {
            let Some(key) = name
                .to_str()
                .and_then(|n| {
                    n.get(..ENV_PREFIX.len())
                        .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                        .map(|_| &n[ENV_PREFIX.len()..])
                })
                .and_then(secret_key)
            else {
                continue;
            };
            let value = value.into_string().map_err(|_| {
                anyhow::anyhow!(
                    "invalid configuration: {key} (from the environment) is not valid UTF-8"
                )
            })?;
            fig = fig.merge(Serialized::default(key, value));
        }
        // `--mqtt-url` goes in before extraction, so the other `[broker]` settings (from the
        // file or the environment) complete it rather than needing a url of their own.
        if let Some(u) = &overrides.mqtt_url {
            fig = fig.merge(Serialized::default("broker.url", u));
        }
        if let Some(u) = &overrides.sink_url {
            fig = fig.merge(Serialized::default("sink.url", u));
        }
        let mut cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
            anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
        })?;
        if let Some(a) = overrides.http {
            cfg.http.listen = a;
        }
        if let Some(d) = &overrides.data {
            cfg.data.dir = d.clone();
        }
        if let Some(a) = overrides.mqtt_listen {
            cfg.mqtt.listen = a;
            cfg.broker = None;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(b) = &self.broker
            && !b.url.starts_with("mqtt://")
            && !b.url.starts_with("mqtts://")
        {
            bail!(
                "invalid configuration: broker.url = {:?} must look like mqtt://host:port or mqtts://host:port",
                b.url
            );
        }
        let i = &self.ingest;
        if i.batch.max_readings == 0 || i.batch.max_bytes == 0 || i.queue_capacity == 0 {
            bail!(
                "invalid configuration: ingest.batch.max_readings, ingest.batch.max_bytes and ingest.queue_capacity must be > 0"
            );
        }
        self.mqtt
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        if let Some(sink) = &self.sink {
            fleetpulse_ingest::InfluxSink::new(sink)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
            if sink.batch.max_readings == 0
                || sink.batch.max_bytes == 0
                || sink.spool_max_bytes == 0
            {
                bail!(
                    "invalid configuration: sink.batch.max_readings, sink.batch.max_bytes and sink.spool_max_bytes must be > 0"
                );
            }
        }
        if self.mqtt.max_packet_bytes < 1024 {
            bail!("invalid configuration: mqtt.max_packet_bytes must be at least 1024");
        }
        Ok(())
    }

    /// The catalog: the configured file, or the shipped one.
    pub fn load_catalog(&self) -> anyhow::Result<Catalog> {
        let (text, origin) = read_or_embedded(&self.catalog, EMBEDDED_CATALOG, "catalog.path")?;
        Catalog::from_toml_str(&text).with_context(|| format!("loading the catalog from {origin}"))
    }

    /// The order policy: the configured file, or the shipped one.
    pub fn load_policy(&self) -> anyhow::Result<Policy> {
        let (text, origin) = read_or_embedded(&self.policy, EMBEDDED_POLICY, "policy.path")?;
        Policy::from_toml_str(&text)
            .with_context(|| format!("loading the order policy from {origin}"))
    }
}

fn read_or_embedded(file: &FileRef, embedded: &str, key: &str) -> anyhow::Result<(String, String)> {
    match &file.path {
        None => Ok((
            embedded.to_owned(),
            "the copy built into the binary".to_owned(),
        )),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{key} = {}: cannot read the file", p.display()))?;
            Ok((text, p.display().to_string()))
        }
    }
}

/// The effective configuration as TOML, with every secret replaced by `<redacted>`.
pub fn to_redacted_toml(cfg: &Config) -> anyhow::Result<String> {
    let mut c = cfg.clone();
    let redact = |s: &mut Option<String>| {
        if s.is_some() {
            *s = Some("<redacted>".to_owned());
        }
    };
    redact(&mut c.mqtt.password);
    if let Some(b) = &mut c.broker {
        redact(&mut b.password);
    }
    if let Some(s) = &mut c.sink {
        redact(&mut s.token);
    }
    Ok(toml::to_string_pretty(&c)?)
}

const ENV_PREFIX: &str = "FLEETPULSE_";

/// The configuration key of a secret's environment variable (`MQTT__PASSWORD`, after the
/// prefix, in any case), if it is one.
fn secret_key(env_key: &str) -> Option<&'static str> {
    const SECRETS: [(&str, &str); 3] = [
        ("mqtt__password", "mqtt.password"),
        ("broker__password", "broker.password"),
        ("sink__token", "sink.token"),
    ];
    SECRETS
        .iter()
        .find(|(env, _)| env_key.eq_ignore_ascii_case(env))
        .map(|(_, key)| *key)
}

/// A figment error with its key path spelled as in the file (`mqtt.listen`).
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let origin = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{origin}", e.kind)
    } else {
        format!("{key}: {}{origin}", e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn with_file(text: &str) -> anyhow::Result<Config> {
        let mut f = tempfile_in_target();
        f.1.write_all(text.as_bytes()).expect("write config");
        Config::load(Some(&f.0), &Overrides::default())
    }

    fn tempfile_in_target() -> (PathBuf, std::fs::File) {
        let dir =
            std::env::temp_dir().join(format!("fleetpulse-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{}.toml", rand_suffix()));
        let f = std::fs::File::create(&path).expect("create");
        (path, f)
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_load_and_embedded_files_are_valid() {
        let cfg = Config::load(None, &Overrides::default()).expect("defaults are valid");
        assert_eq!(cfg.mqtt.listen.port(), DEFAULT_DEVICE_PORT);
        assert!(cfg.broker.is_none());
        assert!(cfg.load_catalog().expect("catalog").models().count() >= 4);
        cfg.load_policy().expect("policy");
    }

    #[test]
    fn a_file_overrides_defaults_and_flags_override_the_file() {
        let cfg = with_file("[http]\nlisten = \"127.0.0.1:9999\"\n[ingest.batch]\nlinger_ms = 5\n")
            .expect("valid");
        assert_eq!(cfg.http.listen.port(), 9999);
        assert_eq!(cfg.ingest.batch.linger, std::time::Duration::from_millis(5));
        assert_eq!(
            cfg.mqtt.listen.port(),
            DEFAULT_DEVICE_PORT,
            "defaults kept beside the file's keys"
        );
        let (path, mut f) = tempfile_in_target();
        f.write_all(b"[http]\nlisten = \"127.0.0.1:9999\"\n")
            .expect("write");
        let o = Overrides {
            http: Some("127.0.0.1:1".parse().expect("addr")),
            ..Default::default()
        };
        assert_eq!(
            Config::load(Some(&path), &o)
                .expect("valid")
                .http
                .listen
                .port(),
            1
        );
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/fleetpulse.example.toml");
        let example =
            Config::load(Some(&path), &Overrides::default()).expect("the example is valid");
        let defaults = Config::load(None, &Overrides::default()).expect("defaults");
        assert_eq!(
            to_redacted_toml(&example).expect("toml"),
            to_redacted_toml(&defaults).expect("toml")
        );
    }

    #[test]
    fn the_sink_url_flag_is_completed_by_the_files_sink_settings_and_the_token_is_redacted() {
        let (path, mut f) = tempfile_in_target();
        f.write_all(b"[sink]\nbucket = \"b1\"\ntoken = \"tok-very-secret\"\n")
            .expect("write");
        let o = Overrides {
            sink_url: Some("http://127.0.0.1:8428".to_owned()),
            ..Default::default()
        };
        let cfg = Config::load(Some(&path), &o).expect("valid");
        let sink = cfg.sink.as_ref().expect("sink configured");
        assert_eq!(
            (sink.url.as_str(), sink.bucket.as_str(), sink.org.as_str()),
            ("http://127.0.0.1:8428", "b1", "fleetpulse")
        );
        let shown = to_redacted_toml(&cfg).expect("toml");
        assert!(!shown.contains("tok-very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let o = Overrides {
            sink_url: Some("influx.local:8086".to_owned()),
            ..Default::default()
        };
        let err = Config::load(None, &o).expect_err("no scheme").to_string();
        assert!(err.contains("sink.url"), "{err}");
    }

    #[test]
    fn the_mqtt_url_flag_is_completed_by_the_files_broker_settings() {
        let (path, mut f) = tempfile_in_target();
        f.write_all(b"[broker]\nclient_id = \"ingest-7\"\nkeep_alive_s = 15\n")
            .expect("write");
        let o = Overrides {
            mqtt_url: Some("mqtt://127.0.0.1:1999".to_owned()),
            ..Default::default()
        };
        let cfg = Config::load(Some(&path), &o).expect("valid");
        let broker = cfg.broker.expect("external broker mode");
        assert_eq!(
            (broker.url.as_str(), broker.client_id.as_str()),
            ("mqtt://127.0.0.1:1999", "ingest-7")
        );
        assert_eq!(broker.keep_alive, std::time::Duration::from_secs(15));
        let err = Config::load(Some(&path), &Overrides::default())
            .expect_err("no url anywhere")
            .to_string();
        assert!(err.contains("url"), "{err}");
    }

    #[test]
    fn the_analytics_model_options_are_read_and_checked() {
        let cfg = with_file("[analytics.model]\ntarget_precision = 0.7\nreplay_every_days = 2\n")
            .expect("valid");
        assert_eq!(cfg.analytics.model.target_precision, 0.7);
        assert_eq!(cfg.analytics.model.replay_every_days, 2);
        assert_eq!(
            cfg.analytics.model.horizon_days, 14.0,
            "the rest keeps its defaults"
        );
        cfg.analytics.check().expect("in range");
        let cfg = with_file("[analytics.model]\ntarget_precision = 1.5\n").expect("parses");
        let err = cfg.analytics.check().expect_err("out of range").to_string();
        assert!(err.contains("analytics.model.target_precision"), "{err}");
        let err = with_file("[analytics.model]\nhorizon = 3\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("horizon"), "{err}");
    }

    #[test]
    fn the_device_cap_fits_beside_the_http_cap_and_the_process() {
        let cfg = Config::default();
        assert_eq!(cfg.mqtt.max_connections, 20_000);
        let cap = |cfg: &Config, limit| cfg.device_connection_cap(limit);
        assert_eq!(cap(&cfg, Some(1_048_576)).expect("room"), (20_000, false));
        assert_eq!(cap(&cfg, None).expect("no limit"), (20_000, false));
        // `ulimit -n 1024`: 512 for HTTP, 64 for the process, the rest for devices
        assert_eq!(cap(&cfg, Some(1024)).expect("room"), (448, true));
        // a hard limit of 4096: HTTP keeps its 1024
        assert_eq!(
            cap(&cfg, Some(4096)).expect("room"),
            (4096 - 1024 - 64, true)
        );
        let small = with_file("[mqtt]\nmax_connections = 5\n").expect("valid");
        assert_eq!(cap(&small, Some(1024)).expect("room"), (5, false));
        let crowded = with_file("[http]\nreserved_fds = 70\n").expect("valid");
        let err = cap(&crowded, Some(1024))
            .expect_err("954 HTTP + 64 leave 6 devices")
            .to_string();
        assert!(
            err.contains("leaves 6 device connections") && err.contains("http.reserved_fds"),
            "{err}"
        );
    }

    #[test]
    fn the_http_cap_leaves_the_reserve_to_the_rest_of_the_process() {
        let http = HttpConfig::default();
        let (limits, lowered) = http.serve_limits(Some(1_048_576)).expect("room");
        assert_eq!((limits.max_connections, lowered), (1024, false));
        assert_eq!(limits, fleetpulse_api::ServeLimits::default());
        // `ulimit -n 1024`: 512 for HTTP, 512 for devices, files and clients
        let (limits, lowered) = http.serve_limits(Some(1024)).expect("room");
        assert_eq!((limits.max_connections, lowered), (512, true));
        let err = http
            .serve_limits(Some(520))
            .expect_err("8 connections are too few")
            .to_string();
        assert!(err.contains("http.reserved_fds"), "{err}");
        let (limits, _) = http.serve_limits(None).expect("no limit");
        assert_eq!(limits.max_connections, 1024);
        let err = with_file("[http]\nidle_timeout_s = 0\n")
            .expect("parses")
            .http
            .serve_limits(None)
            .expect_err("zero")
            .to_string();
        assert!(err.contains("http.idle_timeout_s"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = with_file("[http]\nlistne = \"127.0.0.1:1\"\n")
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("listne"), "{err}");
        let err = with_file("[mqtt]\nlisten = \"not an address\"\n")
            .expect_err("bad value")
            .to_string();
        assert!(err.contains("mqtt.listen"), "{err}");
        let err = with_file("[registry]\nunknown_device = \"maybe\"\n")
            .expect_err("bad enum")
            .to_string();
        assert!(
            err.contains("registry.unknown_device") && err.contains("maybe"),
            "{err}"
        );
        let err = with_file("[broker]\nurl = \"http://x\"\n")
            .expect_err("bad url")
            .to_string();
        assert!(err.contains("broker.url"), "{err}");
        let err = with_file("[ingest.batch]\nmax_readngs = 5\n")
            .expect_err("unknown nested key")
            .to_string();
        assert!(err.contains("max_readngs"), "{err}");
        let err = Config::load(Some(Path::new("/nonexistent.toml")), &Overrides::default())
            .expect_err("missing file")
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
