//! Configuration of the built-in MQTT device endpoint (section `mqtt`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// Largest MQTT packet accepted, in bytes (remaining length: topic, packet id and
    /// payload). A device sending a bigger one is disconnected without its packet being
    /// read. Default 260 KiB: the telemetry payload limit (256 KiB) plus room for the
    /// topic, so a payload just over its limit becomes a `payload_too_large` dead letter
    /// instead of a disconnect.
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
    /// Shared device password. When set, a device must log in with its serial as user
    /// name and this password; when unset, any device with a valid serial as client id
    /// may connect. Never logged.
    #[serde(default)]
    pub password: Option<String>,
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

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_packet_bytes: default_max_packet_bytes(),
            connect_timeout: default_connect_timeout(),
            password: None,
            max_inflight: default_max_inflight(),
            write_timeout: default_write_timeout(),
        }
    }
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("listen", &self.listen)
            .field("max_packet_bytes", &self.max_packet_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_inflight", &self.max_inflight)
            .field("write_timeout", &self.write_timeout)
            .finish()
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
}
