//! Configuration of the built-in MQTT device endpoint (section `mqtt`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of the built-in MQTT device endpoint (section `mqtt`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Address devices connect to (`mqtt.listen`). Default `127.0.0.1:1884`:
    /// loopback only (set `0.0.0.0:…` to take devices from the network), and not 1883,
    /// which usually belongs to a broker on the same host.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest MQTT packet read whole, in bytes (remaining length: topic, packet id and
    /// payload). A bigger PUBLISH is read past without being buffered (only its topic,
    /// packet id and first 1 KiB are kept), dead-lettered (`payload_too_large`) and
    /// acknowledged; any other packet that big closes the connection. Default 260 KiB:
    /// the telemetry payload limit (256 KiB) plus room for the topic.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// How long a new connection may take to send CONNECT, in seconds
    /// (`connect_timeout_s`). Default 10.
    #[serde(
        rename = "connect_timeout_s",
        with = "crate::duration::secs",
        default = "default_connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// What a device must present to connect (`auth`): `none` (a valid serial as client
    /// id is enough), `shared_password` (user name = serial, password = `mqtt.password`)
    /// or `device_credentials` (user name = serial, password = the device's own token
    /// from `fleetpulse device credential SERIAL`). Unset: `shared_password` when
    /// `mqtt.password` is set, else `none`. A connection that presented a client
    /// certificate verified against `mqtt.tls.client_ca_file` is authenticated by it and
    /// needs no password, whatever this says.
    #[serde(default)]
    pub auth: Option<AuthMode>,
    /// Shared device password (`password`), for `auth = "shared_password"`: a device
    /// logs in with its serial as user name and this password. Never logged.
    #[serde(default, deserialize_with = "crate::secret::deserialize_option")]
    pub password: Option<String>,
    /// TLS for the device endpoint (`[mqtt.tls]`). Absent (the default): plain MQTT on
    /// `mqtt.listen`. Present: `mqtt.listen` speaks only MQTT over TLS (no plain
    /// listener stays open beside it).
    #[serde(default)]
    pub tls: Option<EndpointTlsConfig>,
    /// Most QoS 1 PUBLISHes of one connection waiting for their commit (and so for their
    /// PUBACK). Beyond that the endpoint stops reading that device's socket until a batch
    /// commits: TCP backpressure instead of an unbounded queue. Default 1 024.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// How long writing to a device may block before the connection is dropped, in
    /// seconds (`write_timeout_s`). Default 10.
    #[serde(
        rename = "write_timeout_s",
        with = "crate::duration::secs",
        default = "default_write_timeout"
    )]
    pub write_timeout: Duration,
    /// Most device connections open at once (`max_connections`). One more TCP connection
    /// is closed as soon as it is accepted, before TLS or CONNECT (nothing is read from
    /// it), counted (`device_connections_refused` in `/health`) and logged (WARN, at most
    /// every 10 s); the connections already open go on. Devices retry with their
    /// reconnect backoff. Default 20 000 (the whole process held 187 MiB at 10 000 idle
    /// connections, docs/benchmarks.md);
    /// `serve` lowers it at start to what the open-file limit leaves after the HTTP
    /// connection cap and the process's own files (logged at INFO when the default is
    /// fitted, WARN when a configured value is lowered).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// See [`EndpointConfig::auth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Any valid serial as client id may connect (a client certificate, when presented,
    /// must still match it).
    None,
    /// User name = serial, password = `mqtt.password`, the same for every device.
    SharedPassword,
    /// User name = serial, password = the device's own token; only its digest is stored.
    DeviceCredentials,
}

impl AuthMode {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::SharedPassword => "shared_password",
            AuthMode::DeviceCredentials => "device_credentials",
        }
    }
}

/// TLS on the device endpoint (section `[mqtt.tls]`). Certificates and keys are PEM files,
/// read once at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTlsConfig {
    /// The endpoint's certificate chain, PEM (`cert_file`): the server certificate first,
    /// then any intermediates. Its names must match the host name devices connect to.
    pub cert_file: PathBuf,
    /// The private key of the server certificate, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC)
    /// (`key_file`). Its contents are never logged.
    pub key_file: PathBuf,
    /// CA certificates (PEM) that sign device certificates (`client_ca_file`). Set: the
    /// endpoint asks each device for a certificate, verifies it against these, and accepts
    /// it as the device's identity when its subject CN (or a DNS name in its subject
    /// alternative names) equals the client id; a certificate naming another serial is
    /// refused. Unset: no client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (a device without a valid certificate fails the
    /// TLS handshake) or `optional` (a device without one falls back to `mqtt.auth`).
    /// Default `required`.
    #[serde(default = "default_client_cert")]
    pub client_cert: ClientCertMode,
}

/// See [`EndpointTlsConfig::client_cert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// A device without a certificate that verifies fails the TLS handshake.
    Required,
    /// A device may connect without a certificate and is then checked by `mqtt.auth`; a
    /// certificate it does present must still verify.
    Optional,
}

const fn default_client_cert() -> ClientCertMode {
    ClientCertMode::Required
}

const fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1884)
}
const fn default_max_packet_bytes() -> usize {
    260 * 1024
}
const fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
const fn default_max_inflight() -> usize {
    1_024
}
const fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}
const fn default_max_connections() -> usize {
    20_000
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_packet_bytes: default_max_packet_bytes(),
            connect_timeout: default_connect_timeout(),
            auth: None,
            password: None,
            tls: None,
            max_inflight: default_max_inflight(),
            write_timeout: default_write_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("listen", &self.listen)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("auth", &self.auth)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("max_inflight", &self.max_inflight)
            .field("write_timeout", &self.write_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl EndpointConfig {
    /// The authentication actually required (see [`auth`](Self::auth)).
    pub fn auth_mode(&self) -> AuthMode {
        match (self.auth, &self.password) {
            (Some(mode), _) => mode,
            (None, Some(_)) => AuthMode::SharedPassword,
            (None, None) => AuthMode::None,
        }
    }

    /// Checks that the settings fit together (the files are read by
    /// [`MqttEndpoint::bind`](super::MqttEndpoint::bind)). The message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("mqtt.max_connections must be at least 1".to_owned());
        }
        match (self.auth_mode(), &self.password) {
            (AuthMode::SharedPassword, None) => {
                Err("mqtt.auth = \"shared_password\" needs mqtt.password to be set".to_owned())
            }
            (AuthMode::SharedPassword, Some(p)) if p.is_empty() => {
                Err("mqtt.password is empty".to_owned())
            }
            (mode @ (AuthMode::None | AuthMode::DeviceCredentials), Some(_)) => Err(format!(
                "mqtt.password is set but mqtt.auth = \"{}\" would ignore it: \
                 set mqtt.auth = \"shared_password\" or remove mqtt.password",
                mode.as_str()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let c: EndpointConfig = serde_json::from_str(r#"{"listen":"127.0.0.1:0"}"#).expect("valid");
        assert_eq!(c.max_packet_bytes, 260 * 1024);
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.max_connections, 20_000);
        assert!(serde_json::from_str::<EndpointConfig>(r#"{"listne":"127.0.0.1:0"}"#).is_err());
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = EndpointConfig {
            password: Some("hunter2".into()),
            ..EndpointConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_auth_mode_follows_the_password_unless_set() {
        let mut c = EndpointConfig::default();
        assert_eq!(c.auth_mode(), AuthMode::None);
        c.password = Some("pw".into());
        assert_eq!(c.auth_mode(), AuthMode::SharedPassword);
        assert!(c.validate().is_ok());
        c.auth = Some(AuthMode::DeviceCredentials);
        let err = c.validate().expect_err("a password that would be ignored");
        assert!(
            err.contains("mqtt.password") && err.contains("mqtt.auth"),
            "{err}"
        );
        c.password = None;
        assert!(c.validate().is_ok());
        c.auth = Some(AuthMode::SharedPassword);
        assert!(
            c.validate()
                .expect_err("no password")
                .contains("mqtt.password")
        );
    }

    #[test]
    fn the_tls_table_is_strict_and_defaults_to_required_client_certs() {
        let c: EndpointConfig = serde_json::from_str(
            r#"{"tls":{"cert_file":"/c.pem","key_file":"/k.pem","client_ca_file":"/ca.pem"}}"#,
        )
        .expect("valid");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.client_cert, ClientCertMode::Required);
        assert!(
            serde_json::from_str::<EndpointConfig>(
                r#"{"tls":{"cert_file":"/c.pem","key_file":"/k.pem","ca_file":"/ca.pem"}}"#
            )
            .is_err()
        );
    }
}
