-- A refused message received again counts on its dead letter (migration 10). A device
-- resends what was not acknowledged (a PUBACK lost with the connection, a crash after the
-- commit), and a broker redelivers: the same message from the same sender must not add a
-- row per try. `repeats` counts how often it was received and refused (1: once),
-- `last_seen_at` when it was last; `received_at` stays the first time.
-- `fingerprint` is a 64-bit FNV-1a hash of (client_id, topic, reason, payload, and for
-- payload_too_large the detail naming the full sizes), computed by the store, to find
-- the earlier row; the columns themselves are compared too. Rows written before this
-- migration have none and count no repeats.
ALTER TABLE dead_letters ADD COLUMN repeats INTEGER NOT NULL DEFAULT 1;
ALTER TABLE dead_letters ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN fingerprint INTEGER;
UPDATE dead_letters SET last_seen_at = received_at;
CREATE INDEX dead_letters_by_fingerprint ON dead_letters(fingerprint, received_at)
    WHERE fingerprint IS NOT NULL;
