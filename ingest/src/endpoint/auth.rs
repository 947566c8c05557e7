//! Who may connect: CONNECT checked against the client certificate (mutual TLS) or the
//! configured `mqtt.auth`. Every refusal has a reason label for the log; no refusal and
//! no log line carries a password or token.

use fleetpulse_domain::Serial;
use rumqttc::mqttbytes::Protocol;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};
use tracing::error;

use super::Shared;
use super::config::AuthMode;
use super::tls::PeerCertificate;
use crate::credentials::token_matches;

/// Why a CONNECT was refused: the CONNACK code and a fixed label for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: ConnectReturnCode,
    pub reason: &'static str,
}

const fn refuse(code: ConnectReturnCode, reason: &'static str) -> Refusal {
    Refusal { code, reason }
}

/// Checks CONNECT: protocol 3.1.1 and a serial as client id; then the identity. A
/// verified client certificate must name the serial (subject CN or DNS SAN) and then
/// needs no password; without one, `mqtt.auth` decides.
pub(super) async fn authenticate(
    connect: &Connect,
    certificate: Option<&PeerCertificate>,
    shared: &Shared,
) -> Result<Serial, Refusal> {
    if connect.protocol != Protocol::V4 {
        return Err(refuse(
            ConnectReturnCode::RefusedProtocolVersion,
            "protocol_version",
        ));
    }
    let serial = Serial::parse(&connect.client_id)
        .map_err(|_| refuse(ConnectReturnCode::BadClientId, "bad_client_id"))?;
    if let Some(certificate) = certificate {
        return if certificate.names(serial.as_str()) {
            Ok(serial)
        } else {
            Err(refuse(
                ConnectReturnCode::NotAuthorized,
                "certificate_names_another_device",
            ))
        };
    }
    match shared.config.auth_mode() {
        AuthMode::None => Ok(serial),
        AuthMode::SharedPassword => {
            let password = login(connect)?;
            let expected = shared.config.password.as_deref().unwrap_or_default();
            if same_secret(password, expected) && !expected.is_empty() {
                Ok(serial)
            } else {
                Err(refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    "wrong_password",
                ))
            }
        }
        AuthMode::DeviceCredentials => {
            let password = login(connect)?;
            let Some(store) = &shared.credentials else {
                // bind() refuses this configuration; kept safe regardless.
                return Err(refuse(
                    ConnectReturnCode::ServiceUnavailable,
                    "no_credential_store",
                ));
            };
            match store.token_digest(&serial).await {
                Ok(Some(digest)) if token_matches(password, &digest) => Ok(serial),
                Ok(Some(_)) => Err(refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    "wrong_token",
                )),
                // The same answer as a wrong token: a client learns nothing about which
                // serials have credentials.
                Ok(None) => Err(refuse(
                    ConnectReturnCode::BadUserNamePassword,
                    "no_credential_issued",
                )),
                Err(e) => {
                    error!(serial = %serial, error = %e, "cannot read device credentials; refusing the connection");
                    Err(refuse(
                        ConnectReturnCode::ServiceUnavailable,
                        "credential_store_unavailable",
                    ))
                }
            }
        }
    }
}

/// The password of a login whose user name is the client id.
fn login(connect: &Connect) -> Result<&str, Refusal> {
    let login = connect.login.as_ref().ok_or(refuse(
        ConnectReturnCode::BadUserNamePassword,
        "no_credentials",
    ))?;
    if login.username != connect.client_id {
        return Err(refuse(
            ConnectReturnCode::NotAuthorized,
            "user_name_is_not_the_client_id",
        ));
    }
    Ok(&login.password)
}

/// Compares secrets in time independent of where they differ.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use chrono::{DateTime, Utc};
    use fleetpulse_domain::credentials::{DeviceCredentials, TokenDigest};
    use fleetpulse_domain::store::StoreError;

    use super::super::Registry;
    use super::super::config::EndpointConfig;
    use super::*;
    use crate::credentials::token_digest;

    fn connect(client_id: &str, login: Option<(&str, &str)>) -> Connect {
        let mut c = Connect::new(client_id);
        if let Some((u, p)) = login {
            c.set_login(u, p);
        }
        c
    }

    fn shared(config: EndpointConfig, credentials: Option<Arc<dyn DeviceCredentials>>) -> Shared {
        Shared {
            config,
            registry: Registry::default(),
            credentials,
        }
    }

    /// Tokens in memory; the SQLite implementation has its own tests in the store crate.
    #[derive(Default)]
    struct Tokens(Mutex<HashMap<String, TokenDigest>>);

    #[async_trait::async_trait]
    impl DeviceCredentials for Tokens {
        async fn token_digest(&self, serial: &Serial) -> Result<Option<TokenDigest>, StoreError> {
            Ok(self.0.lock().expect("lock").get(serial.as_str()).cloned())
        }
        async fn set_token_digest(
            &self,
            serial: &Serial,
            digest: TokenDigest,
            _at: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.0
                .lock()
                .expect("lock")
                .insert(serial.to_string(), digest);
            Ok(())
        }
        async fn revoke_token(&self, serial: &Serial) -> Result<bool, StoreError> {
            Ok(self
                .0
                .lock()
                .expect("lock")
                .remove(serial.as_str())
                .is_some())
        }
    }

    async fn code(
        c: &Connect,
        cert: Option<&PeerCertificate>,
        s: &Shared,
    ) -> Option<ConnectReturnCode> {
        authenticate(c, cert, s).await.err().map(|r| r.code)
    }

    #[tokio::test]
    async fn client_id_must_be_a_serial() {
        let s = shared(EndpointConfig::default(), None);
        assert_eq!(code(&connect("OC5-000001", None), None, &s).await, None);
        assert_eq!(
            code(&connect("not a serial", None), None, &s).await,
            Some(ConnectReturnCode::BadClientId)
        );
    }

    #[tokio::test]
    async fn with_a_password_the_user_is_the_client_id() {
        let s = shared(
            EndpointConfig {
                password: Some("s3cret".into()),
                ..EndpointConfig::default()
            },
            None,
        );
        assert_eq!(
            code(&connect("OC5-1", Some(("OC5-1", "s3cret"))), None, &s).await,
            None
        );
        assert_eq!(
            code(&connect("OC5-1", Some(("OC5-1", "wrong"))), None, &s).await,
            Some(ConnectReturnCode::BadUserNamePassword)
        );
        assert_eq!(
            code(&connect("OC5-1", None), None, &s).await,
            Some(ConnectReturnCode::BadUserNamePassword)
        );
        assert_eq!(
            code(&connect("OC5-1", Some(("OC5-2", "s3cret"))), None, &s).await,
            Some(ConnectReturnCode::NotAuthorized)
        );
    }

    #[tokio::test]
    async fn device_credentials_accept_only_the_devices_own_token() {
        let tokens = Arc::new(Tokens::default());
        let serial = Serial::parse("OC5-T1").expect("serial");
        tokens
            .set_token_digest(&serial, token_digest("right-token"), Utc::now())
            .await
            .expect("set");
        let s = shared(
            EndpointConfig {
                auth: Some(AuthMode::DeviceCredentials),
                ..EndpointConfig::default()
            },
            Some(tokens),
        );
        let refused = |r: Result<Serial, Refusal>| r.err().map(|r| r.reason);
        assert_eq!(
            refused(
                authenticate(
                    &connect("OC5-T1", Some(("OC5-T1", "right-token"))),
                    None,
                    &s
                )
                .await
            ),
            None
        );
        assert_eq!(
            refused(
                authenticate(
                    &connect("OC5-T1", Some(("OC5-T1", "wrong-token"))),
                    None,
                    &s
                )
                .await
            ),
            Some("wrong_token")
        );
        assert_eq!(
            refused(
                authenticate(
                    &connect("OC5-T2", Some(("OC5-T2", "right-token"))),
                    None,
                    &s
                )
                .await
            ),
            Some("no_credential_issued")
        );
        assert_eq!(
            refused(authenticate(&connect("OC5-T1", None), None, &s).await),
            Some("no_credentials")
        );
    }

    #[tokio::test]
    async fn a_client_certificate_must_name_the_client_id_and_then_needs_no_password() {
        let s = shared(
            EndpointConfig {
                auth: Some(AuthMode::DeviceCredentials),
                ..EndpointConfig::default()
            },
            Some(Arc::new(Tokens::default())),
        );
        let cert = PeerCertificate {
            common_names: vec!["OC5-C1".into()],
            dns_names: vec![],
        };
        assert_eq!(code(&connect("OC5-C1", None), Some(&cert), &s).await, None);
        assert_eq!(
            code(&connect("OC5-C2", None), Some(&cert), &s).await,
            Some(ConnectReturnCode::NotAuthorized)
        );
    }
}
