-- fleetpulse embedded store, schema version 7: reliability data.
-- Failure events get their mode, the alarm episode they came from, the model and kind
-- of the device when they were recorded, retraction and an import key; orders remember
-- the alarm episode they were raised for; operating hours are consolidated per
-- (month, serial) from the hourly runtime_hours rollups; imported maintenance history.

-- One incident, one event: an alarm-sourced event is upgraded by its repair order
-- (source repair_order), or retracted (kept, excluded from statistics) when the order
-- found no fault.
ALTER TABLE failure_events ADD COLUMN failure_mode TEXT;
ALTER TABLE failure_events ADD COLUMN alarm_episode_id INTEGER REFERENCES alarm_episodes(id);
ALTER TABLE failure_events ADD COLUMN model TEXT;
ALTER TABLE failure_events ADD COLUMN kind TEXT;
ALTER TABLE failure_events ADD COLUMN retracted_at INTEGER;
ALTER TABLE failure_events ADD COLUMN retract_reason TEXT;
ALTER TABLE failure_events ADD COLUMN import_key TEXT;       -- imported rows: the row's content digest
ALTER TABLE failure_events ADD COLUMN updated_at INTEGER;
CREATE UNIQUE INDEX failure_events_by_episode ON failure_events(alarm_episode_id)
    WHERE alarm_episode_id IS NOT NULL;
CREATE UNIQUE INDEX failure_events_by_import_key ON failure_events(import_key)
    WHERE import_key IS NOT NULL;
CREATE INDEX failure_events_by_time ON failure_events(at);

-- The alarm episode a critical_alarm:<code> order was raised for (set when it is raised).
ALTER TABLE orders ADD COLUMN alarm_episode_id INTEGER REFERENCES alarm_episodes(id);
CREATE INDEX orders_by_created ON orders(created_at, id);
CREATE INDEX alarm_episodes_by_start ON alarm_episodes(started_at);

-- Operating hours per device and calendar month (UTC), folded from the hourly rollups of
-- runtime_hours. month first: the current month's rows are contiguous.
CREATE TABLE exposure_months (
    month          INTEGER NOT NULL,   -- first instant of the month
    serial         TEXT NOT NULL,
    hours          REAL NOT NULL,      -- operating hours accumulated in the month
    resets         INTEGER NOT NULL,   -- meter decreases seen in the month
    gaps           INTEGER NOT NULL,   -- silences longer than the gap threshold ending in the month
    gap_hours      REAL NOT NULL,      -- their length
    samples        INTEGER NOT NULL,   -- hours of the month with a meter value
    baseline_hour  INTEGER,            -- the meter's last hour before the month (NULL: none)
    baseline_value REAL,
    first_hour     INTEGER NOT NULL,
    first_value    REAL NOT NULL,
    last_hour      INTEGER NOT NULL,
    last_value     REAL NOT NULL,
    folded_at      INTEGER NOT NULL,
    PRIMARY KEY (month, serial)
) WITHOUT ROWID;
CREATE INDEX exposure_months_by_serial ON exposure_months(serial, month);

-- (month, serial) pairs whose runtime_hours rollups changed since their last fold.
-- Written by the ingest commit with INSERT OR IGNORE; emptied by the consolidation pass.
CREATE TABLE exposure_dirty (
    month  INTEGER NOT NULL,
    serial TEXT NOT NULL,
    PRIMARY KEY (month, serial)
) WITHOUT ROWID;

-- What the fold found in a (month, serial): meter resets, gaps, meter jumps. Replaced on
-- every refold of the pair.
CREATE TABLE exposure_findings (
    month  INTEGER NOT NULL,
    serial TEXT NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,              -- meter_reset, gap, meter_jump
    detail TEXT NOT NULL,
    PRIMARY KEY (month, serial, at, kind)
) WITHOUT ROWID;

-- Maintenance history (imported): preventive services and consumable replacements.
CREATE TABLE maintenance_records (
    id            INTEGER PRIMARY KEY,
    serial        TEXT NOT NULL REFERENCES devices(serial),
    at            INTEGER NOT NULL,
    runtime_hours REAL,
    kind          TEXT NOT NULL,       -- service, consumable
    consumable    TEXT,
    notes         TEXT,
    source        TEXT NOT NULL,       -- import
    import_key    TEXT UNIQUE
);
CREATE INDEX maintenance_records_by_serial ON maintenance_records(serial, at);
CREATE INDEX maintenance_records_by_time ON maintenance_records(at);
