//! Per-device credentials for the built-in MQTT endpoint (`mqtt.auth =
//! "device_credentials"`), as a trait the store implements.
//!
//! Only a digest of each device's token is kept: a copy of the database does not let
//! anyone log in as a device. The digest is SHA-256. A plain hash is enough here, where a
//! password would need a slow, salted one (Argon2, scrypt): tokens are generated, 32
//! bytes from the operating system's random number generator, so there is no dictionary
//! to try and 2^256 candidates to search; slowing each guess down buys nothing. The
//! hashing itself lives with the endpoint (`fleetpulse-ingest`); this crate does no I/O.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::serial::Serial;
use crate::store::StoreError;

/// The SHA-256 digest of a device token. Its `Debug` does not print the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

/// Where device credentials are kept.
#[async_trait::async_trait]
pub trait DeviceCredentials: Send + Sync + 'static {
    /// The digest of the device's current token, `None` when it has none (never issued,
    /// or revoked).
    async fn token_digest(&self, serial: &Serial) -> Result<Option<TokenDigest>, StoreError>;

    /// Stores `digest` as the device's token, replacing (and so revoking) any earlier
    /// one. Durable when it returns.
    async fn set_token_digest(
        &self,
        serial: &Serial,
        digest: TokenDigest,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Removes the device's token: it can no longer log in with one. Returns whether it
    /// had one. Durable when it returns.
    async fn revoke_token(&self, serial: &Serial) -> Result<bool, StoreError>;
}
