-- Per-device credentials for the built-in MQTT endpoint (mqtt.auth = "device_credentials"),
-- issued with `fleetpulse device credential SERIAL`.
-- Only the SHA-256 digest of each token is kept, never the token: tokens are 32 random
-- bytes from the OS, so a fast hash is enough (nothing to guess from a dictionary).
-- A serial may get a token before it first connects, so there is no reference to devices.
CREATE TABLE device_credentials (
    serial       TEXT PRIMARY KEY,
    token_sha256 BLOB NOT NULL CHECK (length(token_sha256) = 32),
    issued_at    INTEGER NOT NULL   -- ms since 1970 UTC
) WITHOUT ROWID;
