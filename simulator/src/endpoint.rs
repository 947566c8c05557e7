//! Where devices connect: `mqtt://host[:port]` (plain TCP) or `mqtts://host[:port]` (TLS;
//! the server name checked against the certificate is `host`).

use std::fmt;

/// A parsed MQTT endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: the connection is TLS, and `host` is the name the server's
    /// certificate must carry.
    pub tls: bool,
}

/// Why an MQTT URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MQTT URL {url:?}: {reason}")]
pub struct EndpointError {
    pub url: String,
    pub reason: String,
}

const DEFAULT_PORT: u16 = 1883;
const DEFAULT_TLS_PORT: u16 = 8883;

impl Endpoint {
    /// Parses `mqtt://host`, `mqtt://host:port`, `mqtt://[::1]:port`, and the same with
    /// `mqtts://` (default port 8883).
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let bad = |reason: &str| EndpointError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected mqtt://host:port or mqtts://host:port"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            _ => return Err(bad("only mqtt:// and mqtts:// are supported")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(bad("a path, query or fragment has no meaning here"));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL; the user name is the serial",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in IPv6 host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        let port = match port {
            None if tls => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// Refuses `mqtts://` when the caller has no TLS configuration to connect with (a
    /// link would otherwise retry a handshake it can never make).
    pub fn require_tls_config(self, has_tls: bool) -> Result<Self, EndpointError> {
        if self.tls && !has_tls {
            return Err(EndpointError {
                url: self.to_string(),
                reason: "mqtts:// needs TLS settings, which are not given here; use mqtt://"
                    .to_owned(),
            });
        }
        Ok(self)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16) {
        let e = Endpoint::parse(url).expect("valid URL");
        (e.host, e.port)
    }

    #[test]
    fn parses_hosts_ports_and_ipv6() {
        assert_eq!(ok("mqtt://127.0.0.1:1884"), ("127.0.0.1".into(), 1884));
        assert_eq!(ok("mqtt://broker.local"), ("broker.local".into(), 1883));
        assert_eq!(
            ok("mqtt://broker.local:2000/"),
            ("broker.local".into(), 2000)
        );
        assert_eq!(ok("mqtt://[::1]:1885"), ("::1".into(), 1885));
        assert_eq!(
            Endpoint::parse("mqtt://[::1]:1885")
                .expect("valid")
                .to_string(),
            "mqtt://[::1]:1885"
        );
    }

    #[test]
    fn mqtts_is_tls_with_its_own_default_port() {
        let e = Endpoint::parse("mqtts://fleet.example:8884").expect("valid");
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("fleet.example", 8884));
        assert_eq!(e.to_string(), "mqtts://fleet.example:8884");
        let e = Endpoint::parse("mqtts://fleet.example").expect("valid");
        assert_eq!(e.port, 8883);
        assert!(!Endpoint::parse("mqtt://h").expect("valid").tls);
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        for bad in [
            "127.0.0.1:1883",
            "http://host",
            "mqtt://",
            "mqtt://host:0",
            "mqtt://host:99999",
            "mqtt://host/topic",
            "mqtt://u:p@host",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
