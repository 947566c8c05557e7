//! TLS plumbing shared by the device endpoint (server side) and the external broker
//! source (client side): the one crypto provider, and PEM files read with errors that
//! name the setting and never quote a key.
//!
//! Every rustls configuration here is built with an explicit provider (ring), so nothing
//! depends on a process-wide default being installed, and a second provider appearing in
//! the dependency tree cannot make a build panic at run time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider of every TLS configuration fleetpulse builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS file or setting that cannot be used. The message names the setting and the
/// path; it never contains key material.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {setting} {}: {problem}", path.display())]
pub struct TlsFileError {
    pub setting: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

impl TlsFileError {
    pub(crate) fn new(setting: &'static str, path: &Path, problem: impl Into<String>) -> Self {
        Self {
            setting,
            path: path.to_owned(),
            problem: problem.into(),
        }
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError::new(setting, path, e.to_string()))
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::new(setting, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsFileError::new(
            setting,
            path,
            "no certificate in it (expected PEM \"BEGIN CERTIFICATE\" sections)",
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 or SEC1. The parser's own
/// message is not passed on, since it may quote a line of the file.
pub fn load_key(
    setting: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound => {
                "no private key in it (expected PEM PKCS#8, PKCS#1 or SEC1)"
            }
            _ => "not a valid PEM private key",
        };
        TlsFileError::new(setting, path, problem)
    })
}

/// Trust anchors from a PEM file of CA certificates.
pub fn load_roots(setting: &'static str, path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(setting, path)? {
        roots.add(cert).map_err(|e| {
            TlsFileError::new(setting, path, format!("not a usable CA certificate: {e}"))
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_setting_and_never_quote_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = load_certs("mqtt.tls.cert_file", &missing).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("cannot read mqtt.tls.cert_file "),
            "{err}"
        );

        let bad = dir.path().join("bad.pem");
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA=\n=garbage!!\n-----END PRIVATE KEY-----\n";
        std::fs::write(&bad, secret).expect("write");
        let err = load_key("mqtt.tls.key_file", &bad)
            .expect_err("bad key")
            .to_string();
        assert!(err.contains("mqtt.tls.key_file"), "{err}");
        assert!(
            !err.contains("c2VjcmV0") && !err.contains("garbage"),
            "{err}"
        );

        std::fs::write(&bad, "just text").expect("write");
        let err = load_certs("broker.tls.ca_file", &bad)
            .expect_err("no certs")
            .to_string();
        assert!(err.contains("no certificate"), "{err}");
    }
}
