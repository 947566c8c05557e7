//! The bridge's configuration file: where to publish, where the outbox lives, how to
//! poll, and the devices. Every key is documented in `docs/bridge.md` and
//! `config/bridge.example.toml`; an unknown key or a bad value stops the start with the
//! file, line and key named.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetpulse_domain::{Catalog, Serial};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::registers::{MapError, RegisterMap, line_of, syntax_message};

const fn default_keep_alive_s() -> u64 {
    30
}
const fn default_inflight_window() -> usize {
    16
}
const fn default_reconnect_initial_ms() -> u64 {
    250
}
const fn default_reconnect_max_ms() -> u64 {
    8000
}
const fn default_max_readings_per_device() -> usize {
    100_000
}
const fn default_interval_ms() -> u64 {
    1000
}
const fn default_timeout_ms() -> u64 {
    1000
}
const fn default_retry_max_ms() -> u64 {
    30_000
}
const fn default_unit() -> u8 {
    1
}
const fn default_baud() -> u32 {
    19_200
}
const fn default_data_bits() -> u8 {
    8
}
const fn default_stop_bits() -> u8 {
    1
}
fn default_outbox_dir() -> PathBuf {
    PathBuf::from("bridge-data")
}

/// A password: read from the file, never printed (`Debug` and `Serialize` show `***`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The password itself, for the CONNECT packet only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeFile {
    /// Where readings are published.
    pub mqtt: MqttConfig,
    /// The on-disk outbox.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Poll interval, timeout and retry defaults (a device may override them).
    #[serde(default)]
    pub polling: PollingConfig,
    /// Directory of register maps, one `<MODEL>.toml` per model (relative paths are
    /// relative to this file). Default: `registers` beside this file.
    #[serde(default)]
    pub registers_dir: Option<PathBuf>,
    /// Catalog file the maps' models and alarm codes are checked against (relative to
    /// this file). Default: the catalog built into the binary.
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Serve Prometheus text metrics on `http://ADDR/metrics` (port 0 picks one). Unset:
    /// no HTTP listener; figures are logged every minute either way.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The devices polled.
    #[serde(default, rename = "device")]
    pub devices: Vec<Spanned<DeviceConfig>>,
}

/// The MQTT side.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// fleetpulse's built-in device endpoint or a broker, `mqtt://host:port`, or
    /// `mqtts://host:port` for TLS (the server's certificate must name `host`). Each
    /// device gets its own connection with client id = its serial, as the endpoint
    /// requires.
    pub url: String,
    /// Password presented with user name = serial (`mqtt.password` of the endpoint).
    /// Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// MQTT keepalive in seconds.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Readings of one device in flight (published, PUBACK not yet received).
    #[serde(default = "default_inflight_window")]
    pub inflight_window: usize,
    /// First reconnect pause; doubles (with jitter) up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// TLS for an `mqtts://` url. Unset: the system's CA certificates, no client
    /// certificate.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
}

/// `[mqtt.tls]`: whom the bridge trusts and what it shows. Relative paths are relative to
/// the config file, like `registers_dir`. Files are PEM.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// CA certificate(s) the server's certificate must chain to. Default: the system's CA
    /// certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (chain) for endpoints that ask for one (mutual TLS); set with
    /// `key_file`. Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1); set with
    /// `cert_file`. Default: none. Never logged.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl MqttConfig {
    /// `url` with every other key at its default.
    pub fn new(url: String) -> Self {
        MqttConfig {
            url,
            password: None,
            keep_alive_s: default_keep_alive_s(),
            inflight_window: default_inflight_window(),
            reconnect_initial_ms: default_reconnect_initial_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            tls: None,
        }
    }
}

/// The outbox: every reading is on disk before it is published and stays there until
/// its PUBACK.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the outbox database `outbox.db` (relative paths are relative to this
    /// file, like `registers_dir`). Default: `bridge-data` beside this file.
    #[serde(default = "default_outbox_dir")]
    pub dir: PathBuf,
    /// Readings one device may hold unacknowledged. When full, new polls of that device
    /// are not stored (counted in `bridge_outbox_full_total`); the oldest are never dropped.
    #[serde(default = "default_max_readings_per_device")]
    pub max_readings_per_device: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            dir: default_outbox_dir(),
            max_readings_per_device: default_max_readings_per_device(),
        }
    }
}

/// Polling defaults.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollingConfig {
    /// Time between two polls of one device.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Timeout of one Modbus request (and of a TCP connect).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// After a failed poll the device is retried after the interval, then twice as long
    /// each time, up to this.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            retry_max_ms: default_retry_max_ms(),
        }
    }
}

/// One `[[device]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Serial number; the MQTT client id and topic (`fleetpulse/v1/devices/{serial}/…`).
    pub serial: String,
    /// Catalog model id; selects the register map `<registers_dir>/<model>.toml`.
    pub model: String,
    /// Firmware version published with every reading (optional).
    #[serde(default)]
    pub fw: Option<String>,
    /// This device's own MQTT password (its token under fleetpulse's
    /// `mqtt.auth = "device_credentials"`); overrides `mqtt.password`. Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Modbus TCP address `host:port` of the device or its gateway (this or `rtu`).
    #[serde(default)]
    pub tcp: Option<String>,
    /// Modbus RTU serial line (this or `tcp`). Devices on the same port share the bus and
    /// are polled one after the other.
    #[serde(default)]
    pub rtu: Option<RtuConfig>,
    /// Modbus unit id (slave id) behind that address or on that bus.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Overrides `polling.interval_ms`.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Overrides `polling.timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Serial parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// The Modbus serial line default.
    #[default]
    Even,
    Odd,
    None,
}

/// An RS-485/RS-232 serial line (Modbus RTU).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// Serial device, e.g. `/dev/ttyUSB0`.
    pub port: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `even` (default, as the Modbus serial line specification says), `odd` or `none`.
    #[serde(default)]
    pub parity: Parity,
    /// 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

/// How a device is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP, `host:port`.
    Tcp(String),
    /// Modbus RTU on a serial line.
    Rtu(RtuConfig),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp(a) => write!(f, "tcp://{a}"),
            Transport::Rtu(r) => write!(f, "rtu:{}", r.port),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` starts with the line number.
    #[error("{path}:{message}")]
    Syntax { path: PathBuf, message: String },
    /// `line` and `column` (from 1) are those of the key's own TOML span.
    #[error("{path}:{line}:{column}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("catalog {path}: {message}")]
    Catalog { path: PathBuf, message: String },
}

/// One device, validated, with its register map.
#[derive(Clone, Debug)]
pub struct Device {
    pub serial: Serial,
    pub model: String,
    pub fw: Option<String>,
    /// MQTT password of this device (its own, else `mqtt.password`).
    pub password: Option<Secret>,
    pub transport: Transport,
    pub unit: u8,
    pub interval: Duration,
    pub timeout: Duration,
    pub retry_max: Duration,
    pub map: Arc<RegisterMap>,
    /// The clock readings are stamped with: the wall clock, or the process's when the
    /// bridge runs inside `demo` (its simulated clock).
    pub clock: fleetpulse_domain::Clock,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    pub mqtt: MqttConfig,
    pub outbox: OutboxConfig,
    pub metrics_listen: Option<SocketAddr>,
    pub devices: Vec<Device>,
    /// Register maps by model.
    pub maps: BTreeMap<String, Arc<RegisterMap>>,
}

impl BridgeConfig {
    /// Reads and validates `path`; `embedded_catalog` is used unless the file names one.
    pub fn load(path: &Path, embedded_catalog: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, embedded_catalog)
    }

    /// Parses and validates configuration text; `path` names it and anchors relative paths.
    pub fn parse(text: &str, path: &Path, embedded_catalog: &str) -> Result<Self, ConfigError> {
        let file: BridgeFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: syntax_message(text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // the keys' spans, so that an error names the key's own line and column (a search
        // of the text would find a comment that mentions the key first); the text parsed
        // above, so this parses too
        let doc = toml::de::DeTable::parse(text).ok();
        let key_at = |keys: &[&str]| {
            doc.as_ref()
                .and_then(|d| key_offset(d.get_ref(), keys))
                .unwrap_or(0)
        };
        let device_key_at = |index: usize, key: &str, fallback: usize| {
            doc.as_ref()
                .and_then(|d| device_key_offset(d.get_ref(), index, key))
                .unwrap_or(fallback)
        };
        let invalid = |offset: usize, key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, offset),
            column: column_of(text, offset),
            key: key.to_owned(),
            reason,
        };
        let tls_url = file.mqtt.url.starts_with("mqtts://");
        if !tls_url && !file.mqtt.url.starts_with("mqtt://") {
            return Err(invalid(
                key_at(&["mqtt", "url"]),
                "mqtt.url",
                format!(
                    "{:?} must be mqtt://host:port or mqtts://host:port",
                    file.mqtt.url
                ),
            ));
        }
        if let Some(tls) = &file.mqtt.tls {
            if !tls_url {
                return Err(invalid(
                    key_at(&["mqtt", "tls"]),
                    "mqtt.tls",
                    "TLS settings need an mqtts:// url".into(),
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(invalid(
                    key_at(&["mqtt", "tls"]),
                    "mqtt.tls",
                    "cert_file and key_file go together: set both or neither".into(),
                ));
            }
        }
        for (key, value) in [
            ("polling.interval_ms", file.polling.interval_ms),
            ("polling.timeout_ms", file.polling.timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(
                    key_at(&key.split('.').collect::<Vec<_>>()),
                    key,
                    "must be at least 1".into(),
                ));
            }
        }
        if file.outbox.max_readings_per_device == 0 {
            return Err(invalid(
                key_at(&["outbox", "max_readings_per_device"]),
                "outbox.max_readings_per_device",
                "must be at least 1".into(),
            ));
        }

        let catalog = match &file.catalog {
            Some(p) => {
                let p = base.join(p);
                let t = std::fs::read_to_string(&p).map_err(|source| ConfigError::Io {
                    path: p.clone(),
                    source,
                })?;
                Catalog::from_toml_str(&t).map_err(|e| ConfigError::Catalog {
                    path: p.clone(),
                    message: e.to_string(),
                })?
            }
            None => Catalog::from_toml_str(embedded_catalog).map_err(|e| ConfigError::Catalog {
                path: PathBuf::from("(built in)"),
                message: e.to_string(),
            })?,
        };
        let registers_dir = base.join(
            file.registers_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("registers")),
        );

        let mut maps: BTreeMap<String, Arc<RegisterMap>> = BTreeMap::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut devices = Vec::new();
        let mut buses: HashMap<String, (RtuConfig, usize)> = HashMap::new();
        let mut units: HashMap<(String, u8), usize> = HashMap::new();
        for (index, spanned) in file.devices.iter().enumerate() {
            let offset = spanned.span().start;
            let line = line_of(text, offset);
            let at = |key: &str| device_key_at(index, key, offset);
            let d = spanned.get_ref();
            let serial = Serial::parse(&d.serial)
                .map_err(|e| invalid(at("serial"), "device.serial", e.to_string()))?;
            if let Some(first) = seen.insert(d.serial.clone(), line_of(text, at("serial"))) {
                return Err(invalid(
                    at("serial"),
                    "device.serial",
                    format!("{} is already configured on line {first}", d.serial),
                ));
            }
            if d.unit == 0 || d.unit > 247 {
                return Err(invalid(
                    at("unit"),
                    "device.unit",
                    format!("{} is not a Modbus unit id (1–247)", d.unit),
                ));
            }
            let transport = match (&d.tcp, &d.rtu) {
                (Some(tcp), None) if tcp.contains(':') => Transport::Tcp(tcp.clone()),
                (Some(tcp), None) => {
                    return Err(invalid(
                        at("tcp"),
                        "device.tcp",
                        format!("{tcp:?} must be host:port"),
                    ));
                }
                (None, Some(rtu)) => {
                    check_rtu(rtu).map_err(|r| invalid(at("rtu"), "device.rtu", r))?;
                    match buses.get(&rtu.port) {
                        Some((first, first_line)) if first != rtu => {
                            return Err(invalid(
                                at("rtu"),
                                "device.rtu",
                                format!(
                                    "{} is configured with other line settings on line {first_line}",
                                    rtu.port
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            buses.insert(rtu.port.clone(), (rtu.clone(), line));
                        }
                    }
                    if let Some(first) = units.insert((rtu.port.clone(), d.unit), line) {
                        return Err(invalid(
                            at("unit"),
                            "device.unit",
                            format!(
                                "unit {} on {} is already used on line {first}",
                                d.unit, rtu.port
                            ),
                        ));
                    }
                    Transport::Rtu(rtu.clone())
                }
                _ => {
                    return Err(invalid(
                        offset,
                        "device",
                        "give exactly one of `tcp = \"host:port\"` and `rtu = { port = … }`".into(),
                    ));
                }
            };
            if catalog.model(&d.model).is_none() {
                return Err(invalid(
                    at("model"),
                    "device.model",
                    format!("model {:?} is not in the catalog", d.model),
                ));
            }
            let map = match maps.get(&d.model) {
                Some(m) => m.clone(),
                None => {
                    let map_path = registers_dir.join(format!("{}.toml", d.model));
                    if !map_path.exists() {
                        return Err(invalid(
                            at("model"),
                            "device.model",
                            format!(
                                "no register map for {} ({} does not exist)",
                                d.model,
                                map_path.display()
                            ),
                        ));
                    }
                    let map = RegisterMap::load(&map_path, &catalog)?;
                    if map.model != d.model {
                        return Err(ConfigError::Map(MapError::Invalid {
                            path: map_path,
                            line: 1,
                            reason: format!(
                                "describes model {}, but the file name says {}",
                                map.model, d.model
                            ),
                        }));
                    }
                    let map = Arc::new(map);
                    maps.insert(d.model.clone(), map.clone());
                    map
                }
            };
            let interval = d.interval_ms.unwrap_or(file.polling.interval_ms);
            let timeout = d.timeout_ms.unwrap_or(file.polling.timeout_ms);
            if interval == 0 || timeout == 0 {
                let key = if interval == 0 {
                    "interval_ms"
                } else {
                    "timeout_ms"
                };
                return Err(invalid(
                    at(key),
                    "device.interval_ms",
                    "interval_ms and timeout_ms must be at least 1".into(),
                ));
            }
            devices.push(Device {
                serial,
                model: d.model.clone(),
                fw: d.fw.clone(),
                password: d.password.clone().or_else(|| file.mqtt.password.clone()),
                transport,
                unit: d.unit,
                interval: Duration::from_millis(interval),
                timeout: Duration::from_millis(timeout),
                retry_max: Duration::from_millis(file.polling.retry_max_ms.max(interval)),
                map,
                clock: fleetpulse_domain::Clock::Wall,
            });
        }
        let mut mqtt = file.mqtt;
        // relative TLS files, like registers_dir, are beside this file
        if let Some(tls) = &mut mqtt.tls {
            for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
                .into_iter()
                .flatten()
            {
                *p = base.join(&*p);
            }
        }
        let mut outbox = file.outbox;
        // like registers_dir: a service manager's working directory is not the file's
        outbox.dir = base.join(&outbox.dir);
        Ok(BridgeConfig {
            mqtt,
            outbox,
            metrics_listen: file.metrics_listen,
            devices,
            maps,
        })
    }
}

/// The offset of the key at `keys` (table names, then the key) in a parsed document.
fn key_offset(table: &toml::de::DeTable<'_>, keys: &[&str]) -> Option<usize> {
    let (first, rest) = keys.split_first()?;
    let (key, value) = table.iter().find(|(k, _)| k.get_ref() == first)?;
    if rest.is_empty() {
        return Some(key.span().start);
    }
    match value.get_ref() {
        toml::de::DeValue::Table(t) => key_offset(t, rest),
        _ => None,
    }
}

/// The offset of `key` in the `index`th `[[device]]`.
fn device_key_offset(doc: &toml::de::DeTable<'_>, index: usize, key: &str) -> Option<usize> {
    let (_, devices) = doc.iter().find(|(k, _)| k.get_ref() == "device")?;
    let toml::de::DeValue::Array(devices) = devices.get_ref() else {
        return None;
    };
    match devices.get(index)?.get_ref() {
        toml::de::DeValue::Table(t) => key_offset(t, &[key]),
        _ => None,
    }
}

/// The column (from 1, in characters) of `offset` in its line.
fn column_of(text: &str, offset: usize) -> usize {
    let before = &text[..offset.min(text.len())];
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    before[start..].chars().count() + 1
}

fn check_rtu(rtu: &RtuConfig) -> Result<(), String> {
    if rtu.port.is_empty() {
        return Err("rtu.port must name a serial device".into());
    }
    if rtu.baud == 0 {
        return Err("rtu.baud must be at least 1".into());
    }
    if !matches!(rtu.data_bits, 7 | 8) {
        return Err(format!("rtu.data_bits = {}: 7 or 8", rtu.data_bits));
    }
    if !matches!(rtu.stop_bits, 1 | 2) {
        return Err(format!("rtu.stop_bits = {}: 1 or 2", rtu.stop_bits));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = include_str!("../../config/catalog.toml");

    fn dir_with_map() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("registers")).expect("mkdir");
        std::fs::write(
            dir.path().join("registers/OC-5A.toml"),
            "model = \"OC-5A\"\n[[field]]\nname = \"flow_lpm\"\nfunction = \"holding\"\naddress = 0\ntype = \"u16\"\nscale = 0.01\n",
        )
        .expect("write");
        dir
    }

    fn parse(dir: &tempfile::TempDir, text: &str) -> Result<BridgeConfig, ConfigError> {
        BridgeConfig::parse(text, &dir.path().join("bridge.toml"), CATALOG)
    }

    #[test]
    fn a_valid_file_loads_with_defaults_and_overrides() {
        let dir = dir_with_map();
        let cfg = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n\n[[device]]\nserial = \"OC5-1\"\nmodel = \"OC-5A\"\ntcp = \"127.0.0.1:502\"\ninterval_ms = 250\n",
        )
        .expect("valid");
        assert_eq!(cfg.devices.len(), 1);
        assert_eq!(cfg.devices[0].interval, Duration::from_millis(250));
        assert_eq!(cfg.devices[0].timeout, Duration::from_millis(1000));
        assert_eq!(cfg.devices[0].unit, 1);
        assert_eq!(cfg.outbox.max_readings_per_device, 100_000);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bridge.example.toml");
        let cfg = BridgeConfig::load(&path, CATALOG).expect("config/bridge.example.toml is valid");
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(cfg.devices[1].unit, 3);
    }

    #[test]
    fn a_device_password_overrides_the_shared_one_and_is_never_printed() {
        let dir = dir_with_map();
        let cfg = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\npassword = \"shared-secret\"\n[[device]]\nserial = \"A\"\nmodel = \"OC-5A\"\ntcp = \"h:1\"\npassword = \"token-of-a\"\n[[device]]\nserial = \"B\"\nmodel = \"OC-5A\"\ntcp = \"h:2\"\n",
        )
        .expect("valid");
        let pw = |i: usize| cfg.devices[i].password.as_ref().map(Secret::expose);
        assert_eq!((pw(0), pw(1)), (Some("token-of-a"), Some("shared-secret")));
        let printed = format!("{cfg:?}");
        assert!(
            !printed.contains("secret") && !printed.contains("token-of-a"),
            "{printed}"
        );
    }

    #[test]
    fn a_relative_outbox_dir_is_taken_from_the_files_folder() {
        let dir = dir_with_map();
        let cfg = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[outbox]\ndir = \"state/outbox\"\n",
        )
        .expect("valid");
        assert_eq!(cfg.outbox.dir, dir.path().join("state/outbox"));
        let cfg = parse(&dir, "[mqtt]\nurl = \"mqtt://h:1\"\n").expect("valid");
        assert_eq!(
            cfg.outbox.dir,
            dir.path().join("bridge-data"),
            "the default too"
        );
        let cfg = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[outbox]\ndir = \"/var/lib/b\"\n",
        )
        .expect("valid");
        assert_eq!(cfg.outbox.dir, Path::new("/var/lib/b"));
    }

    #[test]
    fn mqtts_takes_tls_files_from_the_files_folder_and_tls_needs_mqtts() {
        let dir = dir_with_map();
        let cfg = parse(
            &dir,
            "[mqtt]\nurl = \"mqtts://fleet.example:8883\"\n[mqtt.tls]\nca_file = \"certs/ca.pem\"\ncert_file = \"/etc/b.pem\"\nkey_file = \"b.key\"\n",
        )
        .expect("valid");
        let tls = cfg.mqtt.tls.expect("tls");
        assert_eq!(tls.ca_file, Some(dir.path().join("certs/ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/etc/b.pem")));
        assert_eq!(tls.key_file, Some(dir.path().join("b.key")));
        // mqtts:// alone: system roots, no client certificate
        assert!(
            parse(&dir, "[mqtt]\nurl = \"mqtts://h:1\"\n")
                .expect("valid")
                .mqtt
                .tls
                .is_none()
        );

        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[mqtt.tls]\nca_file = \"ca.pem\"\n",
        )
        .expect_err("tls on plain")
        .to_string();
        assert!(e.contains("mqtt.tls") && e.contains("mqtts://"), "{e}");
        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtts://h:1\"\n[mqtt.tls]\ncert_file = \"b.pem\"\n",
        )
        .expect_err("cert without key")
        .to_string();
        assert!(e.contains("cert_file and key_file go together"), "{e}");
        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtts://h:1\"\n[mqtt.tls]\nca = \"x\"\n",
        )
        .expect_err("unknown key")
        .to_string();
        assert!(e.contains("ca"), "{e}");
    }

    #[test]
    fn an_error_points_at_the_keys_own_line_and_column_not_at_a_comment_naming_it() {
        let dir = dir_with_map();
        let text = "# url: the endpoint; timeout_ms: per request\n# max_readings_per_device below\n[mqtt]\n  url = \"tcp://h:1\"\n[polling]\n   timeout_ms = 0\n";
        let e = parse(&dir, text).expect_err("bad scheme").to_string();
        assert!(e.contains("bridge.toml:4:3: mqtt.url"), "{e}");
        let text = text.replace("tcp://", "mqtt://");
        let e = parse(&dir, &text).expect_err("zero timeout").to_string();
        assert!(e.contains("bridge.toml:6:4: polling.timeout_ms"), "{e}");
        let text = "# max_readings_per_device = 0 would refuse everything\n[mqtt]\nurl = \"mqtt://h:1\"\n[outbox]\nmax_readings_per_device = 0\n";
        let e = parse(&dir, text).expect_err("zero outbox").to_string();
        assert!(
            e.contains("bridge.toml:5:1: outbox.max_readings_per_device"),
            "{e}"
        );
        // a device's key: its own line, not the [[device]] header
        let text = "[mqtt]\nurl = \"mqtt://h:1\"\n[[device]]\n# unit 1-247\nserial = \"A\"\nmodel = \"OC-5A\"\ntcp = \"h:1\"\nunit = 0\n";
        let e = parse(&dir, text).expect_err("unit 0").to_string();
        assert!(e.contains("bridge.toml:8:1: device.unit"), "{e}");
    }

    #[test]
    fn mistakes_name_file_line_and_key() {
        let dir = dir_with_map();
        let e = parse(&dir, "[mqtt]\nurl = \"mqtt://h:1\"\nkeepalive = 3\n")
            .expect_err("unknown key")
            .to_string();
        assert!(
            e.contains("bridge.toml:3: unknown field `keepalive`"),
            "{e}"
        );
        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[[device]]\nserial = \"OC5-1\"\nmodel = \"HV-200\"\ntcp = \"h:1\"\n",
        )
        .expect_err("no map")
        .to_string();
        assert!(
            e.contains("bridge.toml:5:1: device.model") && e.contains("no register map"),
            "{e}"
        );
        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[[device]]\nserial = \"OC5-1\"\nmodel = \"OC-5A\"\ntcp = \"h:1\"\n[[device]]\nserial = \"OC5-1\"\nmodel = \"OC-5A\"\ntcp = \"h:2\"\n",
        )
        .expect_err("duplicate")
        .to_string();
        assert!(
            e.contains(":8:1: device.serial") && e.contains("line 4"),
            "{e}"
        );
        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[[device]]\nserial = \"A\"\nmodel = \"OC-5A\"\nrtu = { port = \"/dev/ttyS1\", baud = 9600 }\n[[device]]\nserial = \"B\"\nmodel = \"OC-5A\"\nrtu = { port = \"/dev/ttyS1\", baud = 19200 }\nunit = 2\n",
        )
        .expect_err("one bus, two speeds")
        .to_string();
        assert!(
            e.contains(":10:1: device.rtu") && e.contains("line 3"),
            "{e}"
        );
        let e = parse(
            &dir,
            "[mqtt]\nurl = \"mqtt://h:1\"\n[[device]]\nserial = \"A\"\nmodel = \"OC-5A\"\n",
        )
        .expect_err("no transport")
        .to_string();
        assert!(e.contains("exactly one of"), "{e}");
    }
}
