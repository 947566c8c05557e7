//! The rustls client configuration of an `mqtts://` MQTT side, from `[mqtt.tls]`: PEM
//! files read with errors that name the key and the path and never quote key material,
//! the ring provider (the one crypto provider of the tree), and the system's CA
//! certificates when no `ca_file` is set.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttTlsConfig;

/// A TLS setting that cannot be used; names the key (e.g. `mqtt.tls.ca_file`).
#[derive(Debug, thiserror::Error)]
#[error("{setting} {}: {problem}", path.display())]
pub struct TlsError {
    pub setting: &'static str,
    pub path: std::path::PathBuf,
    pub problem: String,
}

fn fail(setting: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        setting,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| fail(setting, path, format!("cannot read: {e}")))
}

fn load_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(setting, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            setting,
            path,
            "no certificate in it (expected PEM \"BEGIN CERTIFICATE\" sections)",
        ));
    }
    Ok(certs)
}

fn load_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(setting, path)?;
    // the parser's own message may quote a line of the file: not passed on
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound => {
                "no private key in it (expected PEM PKCS#8, PKCS#1 or SEC1)"
            }
            _ => "not a valid PEM private key",
        };
        fail(setting, path, problem)
    })
}

fn roots(tls: &MqttTlsConfig) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in load_certs("mqtt.tls.ca_file", path)? {
                roots.add(cert).map_err(|e| {
                    fail(
                        "mqtt.tls.ca_file",
                        path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(fail(
                    "mqtt.tls.ca_file",
                    Path::new("(unset)"),
                    format!(
                        "no system CA certificates found ({} errors); set mqtt.tls.ca_file",
                        found.errors.len()
                    ),
                ));
            }
        }
    }
    Ok(roots)
}

/// The client configuration for `[mqtt.tls]` (unset: system roots, no client
/// certificate).
pub fn client_config(tls: Option<&MqttTlsConfig>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let default = MqttTlsConfig::default();
    let tls = tls.unwrap_or(&default);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail("mqtt.tls", Path::new(""), e.to_string()))?
    .with_root_certificates(roots(tls)?);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = load_certs("mqtt.tls.cert_file", cert_file)?;
            let key = load_key("mqtt.tls.key_file", key_file)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                fail(
                    "mqtt.tls.key_file",
                    key_file,
                    format!("does not fit mqtt.tls.cert_file: {e}"),
                )
            })?
        }
        // the config loader refuses one without the other
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_never_quote_the_key_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let tls = MqttTlsConfig {
            ca_file: Some(missing.clone()),
            ..MqttTlsConfig::default()
        };
        let e = client_config(Some(&tls))
            .expect_err("missing CA")
            .to_string();
        assert!(e.starts_with("mqtt.tls.ca_file "), "{e}");
        assert!(e.contains("missing.pem"), "{e}");

        let bad = dir.path().join("bad.key");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA=\n=garbage!!\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let e = load_key("mqtt.tls.key_file", &bad)
            .expect_err("bad key")
            .to_string();
        assert!(e.contains("mqtt.tls.key_file"), "{e}");
        assert!(!e.contains("c2VjcmV0") && !e.contains("garbage"), "{e}");
    }
}
