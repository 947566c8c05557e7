-- fleetpulse embedded store, schema version 4: the dispatch API.
-- Order lifecycle fields, the append-only order history (also the sequence that the
-- order stream and webhooks follow), failure events, consumable replacements, device
-- status history, API tokens and the audit log.

ALTER TABLE orders ADD COLUMN origin TEXT NOT NULL DEFAULT 'rule';   -- rule / manual
ALTER TABLE orders ADD COLUMN engineer TEXT;                         -- assigned engineer id
ALTER TABLE orders ADD COLUMN planned_visit_at INTEGER;
ALTER TABLE orders ADD COLUMN cancel_reason TEXT;
ALTER TABLE orders ADD COLUMN outcome TEXT;                          -- JSON completion outcome
ALTER TABLE orders ADD COLUMN acknowledged_at INTEGER;
ALTER TABLE orders ADD COLUMN started_at INTEGER;
ALTER TABLE orders ADD COLUMN closed_at INTEGER;                     -- completed or cancelled
CREATE INDEX orders_by_updated ON orders(updated_at, id);

-- Every change of an order, in commit order. id is the event id of the SSE stream
-- (Last-Event-ID) and the position webhooks deliver from.
CREATE TABLE order_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    INTEGER NOT NULL REFERENCES orders(id),
    serial      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,   -- "rules", or "token:<id>:<name>"
    kind        TEXT NOT NULL,   -- created, triggered, acknowledged, assigned, started, completed, cancelled
    from_status TEXT,
    to_status   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    data        TEXT NOT NULL    -- JSON: what the change carried
);
CREATE INDEX order_events_by_order ON order_events(order_id, id);
CREATE TRIGGER order_events_append_only_u BEFORE UPDATE ON order_events
BEGIN SELECT RAISE(ABORT, 'order_events is append-only'); END;
CREATE TRIGGER order_events_append_only_d BEFORE DELETE ON order_events
BEGIN SELECT RAISE(ABORT, 'order_events is append-only'); END;

-- Confirmed failures. One per repair order at most: a failure and its repair order for
-- the same incident are one event.
CREATE TABLE failure_events (
    id            INTEGER PRIMARY KEY,
    serial        TEXT NOT NULL REFERENCES devices(serial),
    at            INTEGER NOT NULL,
    runtime_hours REAL,            -- the device's age on its meter
    source        TEXT NOT NULL,   -- repair_order, import, alarm
    order_id      INTEGER UNIQUE REFERENCES orders(id),
    fault_code    TEXT,
    notes         TEXT
);
CREATE INDEX failure_events_by_serial ON failure_events(serial, id);

-- A consumable replaced on site: the new baseline of its life.
CREATE TABLE consumable_replacements (
    id            INTEGER PRIMARY KEY,
    serial        TEXT NOT NULL REFERENCES devices(serial),
    consumable    TEXT NOT NULL,
    at            INTEGER NOT NULL,
    runtime_hours REAL,
    order_id      INTEGER REFERENCES orders(id)
);
CREATE INDEX consumable_replacements_by_serial ON consumable_replacements(serial, id);

-- Lifecycle status changes of a device.
CREATE TABLE device_status_history (
    id          INTEGER PRIMARY KEY,
    serial      TEXT NOT NULL REFERENCES devices(serial),
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT
);
CREATE INDEX device_status_history_by_serial ON device_status_history(serial, id);

-- API tokens: only the SHA-256 digest of the secret is kept.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    token_sha256 BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

-- Who changed what, when, with the state before and after. Append-only.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,     -- e.g. order.acknowledge, device.register, token.create
    target  TEXT NOT NULL,     -- e.g. order:17, device:OC5-1, token:3
    before  TEXT,              -- JSON
    after   TEXT               -- JSON
);
CREATE TRIGGER audit_log_append_only_u BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_append_only_d BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
