//! TLS on the device endpoint: the server configuration from `[mqtt.tls]`, the identity
//! a verified client certificate gives, and the split of a plain or TLS stream into the
//! halves a connection reads and writes.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

use super::config::{ClientCertMode, EndpointTlsConfig};
use crate::tls::{TlsFileError, load_certs, load_key, load_roots, provider};

/// Builds the rustls server configuration: certificate and key, and the client
/// certificate verifier when `client_ca_file` is set.
pub(super) fn server_config(tls: &EndpointTlsConfig) -> Result<Arc<ServerConfig>, TlsFileError> {
    let certs = load_certs("mqtt.tls.cert_file", &tls.cert_file)?;
    let key = load_key("mqtt.tls.key_file", &tls.key_file)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::new("mqtt.tls.cert_file", &tls.cert_file, e.to_string()))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let roots = load_roots("mqtt.tls.client_ca_file", ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match tls.client_cert {
                ClientCertMode::Required => verifier,
                ClientCertMode::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| {
                TlsFileError::new("mqtt.tls.client_ca_file", ca_file, e.to_string())
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        // rustls says what is wrong (e.g. the key does not match the certificate);
        // it does not quote the key.
        TlsFileError::new(
            "mqtt.tls.key_file",
            &tls.key_file,
            format!("does not fit mqtt.tls.cert_file: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// The names a verified client certificate vouches for: its subject common names and the
/// DNS names of its subject alternative names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct PeerCertificate {
    pub common_names: Vec<String>,
    pub dns_names: Vec<String>,
}

impl PeerCertificate {
    /// Reads the names of the end-entity certificate of a finished handshake. `None`
    /// when the device presented no certificate.
    pub(super) fn of(stream: &TlsStream<TcpStream>) -> Option<Result<Self, String>> {
        let der = stream.get_ref().1.peer_certificates()?.first()?;
        Some(Self::from_der(der))
    }

    pub(super) fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("unreadable client certificate: {e}"))?;
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .collect();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("unreadable subject alternative names: {e}")),
        };
        Ok(Self {
            common_names,
            dns_names,
        })
    }

    /// Whether the certificate names `serial` exactly (CN or DNS SAN).
    pub(super) fn names(&self, serial: &str) -> bool {
        self.common_names
            .iter()
            .chain(&self.dns_names)
            .any(|name| name == serial)
    }
}

impl std::fmt::Display for PeerCertificate {
    /// `CN=a,DNS=b`: what the log shows of a refused certificate.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self
            .common_names
            .iter()
            .map(|n| format!("CN={n}"))
            .chain(self.dns_names.iter().map(|n| format!("DNS={n}")));
        let mut first = true;
        for name in names {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(&name)?;
            first = false;
        }
        if first {
            f.write_str("no names")?;
        }
        Ok(())
    }
}

/// A device connection's byte stream, split into the halves the reader and the writer
/// task own. Plain TCP splits without a lock; a TLS stream shares its state between the
/// halves.
pub(super) trait DeviceStream: Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn split(self) -> (Self::Read, Self::Write);
}

impl DeviceStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn split(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl DeviceStream for TlsStream<TcpStream> {
    type Read = ReadHalf<TlsStream<TcpStream>>;
    type Write = WriteHalf<TlsStream<TcpStream>>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_cn_and_dns_sans_exactly() {
        let mut params =
            rcgen::CertificateParams::new(vec!["OC5-SAN1".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "OC5-CN1");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let peer = PeerCertificate::from_der(cert.der()).expect("parsed");
        assert!(peer.names("OC5-CN1"));
        assert!(peer.names("OC5-SAN1"));
        assert!(!peer.names("OC5-CN"));
        assert!(!peer.names("oc5-cn1"));
        assert_eq!(peer.to_string(), "CN=OC5-CN1,DNS=OC5-SAN1");
        assert!(PeerCertificate::from_der(b"not a certificate").is_err());
    }
}
