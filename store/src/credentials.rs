//! [`DeviceCredentials`] on SQLite: table `device_credentials` (migration 0003), one
//! token digest per serial.

use chrono::{DateTime, Utc};
use fleetpulse_domain::credentials::{DeviceCredentials, TokenDigest};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::StoreError;
use rusqlite::{OptionalExtension, params};

use crate::SqliteStore;
use crate::convert::{ms, sql_err};

#[async_trait::async_trait]
impl DeviceCredentials for SqliteStore {
    async fn token_digest(&self, serial: &Serial) -> Result<Option<TokenDigest>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, _| {
            let digest: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT token_sha256 FROM device_credentials WHERE serial = ?1",
                    params![serial.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            digest
                .map(|bytes| {
                    <[u8; 32]>::try_from(bytes.as_slice())
                        .map(TokenDigest)
                        .map_err(|_| {
                            StoreError::Internal(format!(
                                "the token digest of {serial} is not 32 bytes"
                            ))
                        })
                })
                .transpose()
        })
        .await
    }

    async fn set_token_digest(
        &self,
        serial: &Serial,
        digest: TokenDigest,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let serial = serial.clone();
        self.write(move |conn, _, _| {
            conn.execute(
                "INSERT INTO device_credentials (serial, token_sha256, issued_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (serial) DO UPDATE SET token_sha256 = excluded.token_sha256, \
                 issued_at = excluded.issued_at",
                params![serial.as_str(), digest.0.as_slice(), ms(at)],
            )
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(&self, serial: &Serial) -> Result<bool, StoreError> {
        let serial = serial.clone();
        self.write(move |conn, _, _| {
            let deleted = conn
                .execute(
                    "DELETE FROM device_credentials WHERE serial = ?1",
                    params![serial.as_str()],
                )
                .map_err(sql_err)?;
            Ok(deleted > 0)
        })
        .await
    }
}
