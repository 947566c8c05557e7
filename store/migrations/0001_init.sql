-- fleetpulse embedded store, schema version 1.
-- Times are integer milliseconds since 1970-01-01 UTC. JSON columns hold serde_json text.

-- The device registry: one row per serial.
CREATE TABLE devices (
    serial        TEXT PRIMARY KEY,
    model         TEXT,                         -- NULL: auto-registered with an unknown model
    kind          TEXT,
    status        TEXT NOT NULL,                -- lifecycle: unassigned, in_stock, …, retired
    criticality   TEXT NOT NULL,
    region        TEXT,
    address       TEXT,
    firmware      TEXT,
    connection    TEXT NOT NULL DEFAULT 'unknown', -- online / offline / unknown
    registered_at INTEGER NOT NULL,
    last_seen_at  INTEGER
) WITHOUT ROWID;
CREATE INDEX devices_by_status ON devices(status, serial);

-- The newest state of each device: the reading with the highest seq, fields merged.
CREATE TABLE latest_state (
    serial      TEXT PRIMARY KEY REFERENCES devices(serial),
    seq         INTEGER NOT NULL,
    ts          INTEGER,
    received_at INTEGER,
    vals        TEXT NOT NULL,   -- JSON object field -> number
    alarms      TEXT NOT NULL,   -- JSON array of active alarm codes
    firmware    TEXT
) WITHOUT ROWID;

-- Raw readings; (serial, seq) is the dedupe key. Deleted after the retention period.
CREATE TABLE readings (
    serial      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    vals        TEXT NOT NULL,   -- JSON object field -> number
    alarms      TEXT,            -- JSON array, NULL when the reading did not report alarms
    PRIMARY KEY (serial, seq)
) WITHOUT ROWID;
CREATE INDEX readings_by_time ON readings(serial, ts);
CREATE INDEX readings_ts ON readings(ts);

-- Hourly aggregates per device and field, by the device timestamp's hour.
CREATE TABLE rollups (
    serial   TEXT NOT NULL,
    hour     INTEGER NOT NULL,   -- start of the hour
    field    TEXT NOT NULL,
    count    INTEGER NOT NULL,
    sum      REAL NOT NULL,
    min      REAL NOT NULL,
    max      REAL NOT NULL,
    last     REAL NOT NULL,      -- value of the highest seq in the hour
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (serial, hour, field)
) WITHOUT ROWID;

-- An alarm code raised and later cleared; ended_at NULL while active.
CREATE TABLE alarm_episodes (
    id                     INTEGER PRIMARY KEY,
    serial                 TEXT NOT NULL REFERENCES devices(serial),
    code                   TEXT NOT NULL,
    severity               TEXT,
    started_at             INTEGER NOT NULL,
    started_seq            INTEGER NOT NULL,
    ended_at               INTEGER,
    ended_seq              INTEGER,
    duration_s             REAL,
    runtime_hours_at_start REAL
);
CREATE INDEX alarm_episodes_open ON alarm_episodes(serial, code) WHERE ended_at IS NULL;
CREATE INDEX alarm_episodes_by_serial ON alarm_episodes(serial, id);

-- Work orders. At most one active order per (serial, cause).
CREATE TABLE orders (
    id                INTEGER PRIMARY KEY,
    serial            TEXT NOT NULL REFERENCES devices(serial),
    cause             TEXT NOT NULL,
    kind              TEXT NOT NULL,
    priority          TEXT NOT NULL,   -- P1 (most urgent) … P4: text order = urgency order
    status            TEXT NOT NULL,
    title             TEXT NOT NULL,
    solution          TEXT NOT NULL,
    skills            TEXT NOT NULL,   -- JSON array
    parts             TEXT NOT NULL,   -- JSON array of {number, name, qty}
    labour_minutes    INTEGER NOT NULL,
    evidence          TEXT NOT NULL,   -- JSON
    respond_by        INTEGER NOT NULL,
    arrive_by         INTEGER NOT NULL,
    complete_by       INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    trigger_count     INTEGER NOT NULL,
    last_triggered_at INTEGER NOT NULL,
    version           INTEGER NOT NULL
);
CREATE UNIQUE INDEX orders_one_active ON orders(serial, cause)
    WHERE status IN ('open', 'acknowledged', 'assigned', 'in_progress');
CREATE INDEX orders_by_status ON orders(status, id);
CREATE INDEX orders_by_serial ON orders(serial, id);

-- Messages (or backlog elements) that were refused, with the reason.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    payload     BLOB NOT NULL
);
CREATE INDEX dead_letters_by_reason ON dead_letters(reason, id);
