//! [`FirmwarePublisher`]: one device link usable on its own, for tests that need "a
//! publisher that keeps every reading until its PUBACK and resends after reconnect".

use std::time::Duration;

use bytes::Bytes;
use fleetpulse_domain::Serial;
use fleetpulse_domain::serial::SerialError;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use serde_json::Value;

use crate::device_link::{DeviceLink, LinkIdentity, LinkOptions, LinkState, LinkStats};
use crate::endpoint::{Endpoint, EndpointError};

/// Why a publisher could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Url(#[from] EndpointError),
    #[error("invalid serial: {0}")]
    Serial(#[from] SerialError),
    #[error("the server refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("not connected after {0:?}")]
    NotConnected(Duration),
    #[error("a reading must be a JSON object")]
    NotAnObject,
    #[error("{unacked} readings still unacknowledged after {waited:?}")]
    NotAllAcked { unacked: u64, waited: Duration },
    #[error("the device link has stopped")]
    Stopped,
}

/// A single firmware-like device connection: readings get the next `seq` (from 1), are
/// kept until their PUBACK, and are resent (DUP, in order) after a reconnect.
pub struct FirmwarePublisher {
    link: DeviceLink,
    next_seq: tokio::sync::Mutex<u64>,
}

impl FirmwarePublisher {
    /// Connects with the default [`LinkOptions`]; see [`FirmwarePublisher::connect_with`].
    pub async fn connect(
        url: &str,
        serial: &str,
        password: Option<&str>,
    ) -> Result<Self, LinkError> {
        Self::connect_with(url, serial, password, LinkOptions::default()).await
    }

    /// Starts the device link and waits until the first connection is up (retrying with
    /// backoff for up to `options.connect_timeout`); a refused CONNACK fails at once.
    /// After that the link reconnects on its own for as long as the publisher lives.
    pub async fn connect_with(
        url: &str,
        serial: &str,
        password: Option<&str>,
        options: LinkOptions,
    ) -> Result<Self, LinkError> {
        let endpoint = Endpoint::parse(url)?.require_tls_config(options.tls.is_some())?;
        let serial = Serial::parse(serial)?;
        let wait = options.connect_timeout;
        let link = DeviceLink::spawn(
            endpoint,
            LinkIdentity {
                serial,
                password: password.map(str::to_owned),
                model: None,
                firmware: None,
            },
            options,
            Duration::ZERO,
        );
        let mut status = link.subscribe();
        let settled = tokio::time::timeout(
            wait,
            status.wait_for(|s| matches!(s.state, LinkState::Connected | LinkState::Refused(_))),
        )
        .await;
        match settled {
            Err(_) => Err(LinkError::NotConnected(wait)),
            Ok(Err(_)) => Err(LinkError::Stopped),
            Ok(Ok(s)) => match s.state {
                LinkState::Refused(code) => Err(LinkError::Refused(code)),
                _ => {
                    drop(s);
                    Ok(FirmwarePublisher {
                        link,
                        next_seq: tokio::sync::Mutex::new(1),
                    })
                }
            },
        }
    }

    pub fn serial(&self) -> &Serial {
        self.link.serial()
    }

    /// Stores a reading (a JSON object; its `seq` is set to the next one) and returns
    /// its `seq`. Returns once the reading is held, not once it is acknowledged; waits
    /// while the store is full.
    pub async fn publish_reading(&self, reading: Value) -> Result<u64, LinkError> {
        let Value::Object(mut fields) = reading else {
            return Err(LinkError::NotAnObject);
        };
        let mut next_seq = self.next_seq.lock().await;
        let seq = *next_seq;
        fields.insert("seq".into(), Value::from(seq));
        let payload = Bytes::from(Value::Object(fields).to_string());
        let mut status = self.link.subscribe();
        loop {
            status.borrow_and_update();
            if self.link.try_push(seq, payload.clone()).is_ok() {
                *next_seq += 1;
                return Ok(seq);
            }
            if self.link.state() == LinkState::Stopped || status.changed().await.is_err() {
                return Err(LinkError::Stopped);
            }
        }
    }

    /// Readings acknowledged so far.
    pub fn acked_count(&self) -> u64 {
        self.link.stats().acked
    }

    /// Readings held, not yet acknowledged.
    pub fn unacked_count(&self) -> u64 {
        self.link.stats().queued
    }

    pub fn stats(&self) -> LinkStats {
        self.link.stats()
    }

    pub fn state(&self) -> LinkState {
        self.link.state()
    }

    /// Waits until every reading stored so far is acknowledged.
    pub async fn wait_all_acked(&self, timeout: Duration) -> Result<(), LinkError> {
        let mut status = self.link.subscribe();
        match tokio::time::timeout(timeout, status.wait_for(|s| s.stats.queued == 0)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(LinkError::Stopped),
            Err(_) => Err(LinkError::NotAllAcked {
                unacked: self.unacked_count(),
                waited: timeout,
            }),
        }
    }

    /// Stops: in-flight readings get `grace` for their PUBACKs, then `offline` and
    /// DISCONNECT. Returns the final counters (`queued`: readings never acknowledged).
    pub async fn close(self, grace: Duration) -> LinkStats {
        self.link.shutdown(grace).await
    }
}
