-- fleetpulse embedded store, schema version 11: components and history of any age.
-- Devices get a commissioning date, the meter at registration and the time their history
-- is complete from; failure events name their component and remember an alarm event's
-- code and mode from before a repair order upgraded it (as-of reads); maintenance records
-- name a component (a consumable record's consumable); imported alarm episodes and
-- telemetry backfill get idempotence keys; trained models record the as-of of their data;
-- imported meter history has its own table.

ALTER TABLE devices ADD COLUMN commissioned_at INTEGER;               -- entered service (NULL: unknown)
ALTER TABLE devices ADD COLUMN runtime_hours_at_registration REAL;   -- meter when registered (joined mid-life)
ALTER TABLE devices ADD COLUMN observed_from INTEGER;                -- failures/replacements complete from here
ALTER TABLE failure_events ADD COLUMN component TEXT;                -- NULL: resolved from the catalog by failure_mode
ALTER TABLE failure_events ADD COLUMN confirmed_at INTEGER;          -- when a repair order upgraded an alarm event
ALTER TABLE failure_events ADD COLUMN alarm_fault_code TEXT;         -- code/mode before that upgrade (as-of reads)
ALTER TABLE failure_events ADD COLUMN alarm_failure_mode TEXT;
CREATE INDEX failure_events_by_serial_at ON failure_events(serial, at);
ALTER TABLE maintenance_records ADD COLUMN component TEXT;
UPDATE maintenance_records SET component = consumable WHERE kind = 'consumable';
ALTER TABLE alarm_episodes ADD COLUMN import_key TEXT;
CREATE UNIQUE INDEX alarm_episodes_by_import_key ON alarm_episodes(import_key) WHERE import_key IS NOT NULL;
ALTER TABLE models ADD COLUMN as_of INTEGER;                          -- data as_of of the training run
CREATE TABLE meter_history (serial TEXT NOT NULL REFERENCES devices(serial), field TEXT NOT NULL,
  at INTEGER NOT NULL, value REAL NOT NULL, imported_at INTEGER NOT NULL, PRIMARY KEY (serial, field, at)) WITHOUT ROWID;
CREATE TABLE backfill_hours (serial TEXT NOT NULL, hour INTEGER NOT NULL, digest TEXT NOT NULL,
  imported_at INTEGER NOT NULL, PRIMARY KEY (serial, hour)) WITHOUT ROWID;   -- idempotence of telemetry backfill
-- the month fold now splits steps at month boundaries: refold every device-month once
INSERT OR IGNORE INTO exposure_dirty (month, serial) SELECT month, serial FROM exposure_months;
