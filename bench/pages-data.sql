-- Fills the store made by `store/examples/overview_load.rs` (10 000 devices, 100 000
-- orders, 200 000 alarm episodes, 200 000 dead letters) with what the pages read besides:
-- run by bench/pages.sh as
--   sqlite3 DB ".parameter set @now NOW_MS" ".parameter set @sample N" ".read bench/pages-data.sql"
-- where NOW_MS is the current hour in milliseconds. Every value comes from fixed integer
-- hashes of the device number and the hour, so two runs fill the same store.
--
-- * models: the example's OC-5B and VT-200 become the catalog's HV-150 and HV-200 (OC-5A
--   and OC-10 stay, CP-1 stays a model the catalog does not know, a tenth have none), with
--   the catalog's kind, so failures resolve to components;
-- * a runtime-hour meter per device, linear in time: rate 0.35–0.94 operating hours per
--   hour, 2 000–22 000 h at registration (400 days ago);
-- * a year of hourly rollups of six fields (runtime_hours, filter_life_pct, o2_purity_pct,
--   flow_lpm, outlet_pressure_kpa, temperature_c) for a sample of @sample oxygen
--   concentrators at a customer, and their readings every 5 minutes over the last 7 days;
-- * hourly runtime_hours rollups of the current month (and the hour before it) for every
--   other device: the quality page folds the month it ends in from them at read time;
-- * exposure_months rows (what the consolidation folds from the rollups) for every device
--   and the 13 whole months before the current one, computed from the same meter; the
--   current month is marked dirty for every device, as ingest leaves it, and folded by
--   the server at the first reliability read;
-- * latest_state for every device;
-- * predictions for every device of a catalog model: filter depletion (due from 10 days
--   ago to 120 days ahead, ±3 days), service (due from 5 days ago to a year ahead, ±7
--   days) and failure risk per failure mode of its model (3.5 % above the 0.35 threshold);
-- * 5 000 failure events over the year (half alarm-sourced, half confirmed by a repair
--   order; the component left to the catalog), with their runtime-hour age;
-- * the example's closed orders get a start, a close and (completed ones) an outcome, so
--   MTTR and first-time fix have data.

PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
BEGIN;

UPDATE devices SET model = CASE model WHEN 'OC-5B' THEN 'HV-150' WHEN 'VT-200' THEN 'HV-200' ELSE model END;
UPDATE devices SET kind = CASE WHEN model LIKE 'OC-%' THEN 'oxygen_concentrator'
                               WHEN model LIKE 'HV-%' THEN 'ventilator' END,
                   commissioned_at = registered_at;

CREATE TEMP TABLE meter AS
SELECT serial, CAST(substr(serial, 5) AS INTEGER) AS n, model, registered_at AS t0,
       2000.0 + (CAST(substr(serial, 5) AS INTEGER) * 7919 % 20000) AS base,
       0.35 + (CAST(substr(serial, 5) AS INTEGER) * 37 % 60) / 100.0 AS rate,
       CASE model WHEN 'OC-10' THEN 1440.0 ELSE 2160.0 END AS filter_life
FROM devices;

CREATE TEMP TABLE sample AS
SELECT m.* FROM meter m JOIN devices d USING (serial)
WHERE d.model IN ('OC-5A', 'OC-10') AND d.status = 'at_customer'
ORDER BY serial LIMIT @sample;

-- the last hour of the year is the one before the current hour
CREATE TEMP TABLE hours AS
SELECT value AS k, @now - (8760 - value) * 3600000 AS hour FROM generate_series(0, 8759);

-- a year of hourly rollups of six fields for the sample (12 readings an hour)
INSERT INTO rollups (serial, hour, field, count, sum, min, max, last, last_seq)
SELECT serial, hour, field, 12, 12 * mean, mean - spread, mean + spread, mean, k * 12 + 11
FROM (
  SELECT s.serial, h.hour, h.k, f.field,
    CASE f.field
      WHEN 'runtime_hours' THEN s.base + s.rate * ((h.hour - s.t0) / 3600000.0 + 55 / 60.0)
      WHEN 'filter_life_pct' THEN 100.0 - 100.0 * ((s.rate * (h.hour - s.t0) / 3600000.0)
            - s.filter_life * CAST(s.rate * (h.hour - s.t0) / 3600000.0 / s.filter_life AS INTEGER)) / s.filter_life
      WHEN 'o2_purity_pct' THEN 93.0 + ((s.n * 40503 + h.k * 2654435761) % 2000) / 1000.0
      WHEN 'flow_lpm' THEN 1.0 + (s.n % 9) * 0.5 + ((h.k * 97 + s.n) % 11 - 5) / 100.0
      WHEN 'outlet_pressure_kpa' THEN 45.0 + (s.n % 10) + ((h.k * 2654435761 + s.n) % 200) / 100.0
      ELSE 38.0 + (s.n % 5) + ((h.k * 40503 + s.n * 7) % 300) / 100.0
    END AS mean,
    CASE f.field WHEN 'runtime_hours' THEN s.rate / 2 WHEN 'filter_life_pct' THEN 0.02 ELSE 0.4 END AS spread
  FROM sample s CROSS JOIN hours h
  CROSS JOIN (SELECT 'filter_life_pct' AS field UNION ALL SELECT 'flow_lpm' UNION ALL SELECT 'o2_purity_pct'
              UNION ALL SELECT 'outlet_pressure_kpa' UNION ALL SELECT 'runtime_hours' UNION ALL SELECT 'temperature_c') f
  ORDER BY s.serial, h.hour, f.field
);

-- readings every 5 minutes over the last 7 days for the sample
INSERT INTO readings (serial, seq, ts, received_at, vals, alarms)
SELECT s.serial, 1000000 + g.value, @now - 7 * 86400000 + g.value * 300000, @now - 7 * 86400000 + g.value * 300000 + 200,
  json_object(
    'filter_life_pct', round(100.0 - 100.0 * ((s.rate * (@now - 7 * 86400000 + g.value * 300000 - s.t0) / 3600000.0)
        - s.filter_life * CAST(s.rate * (@now - 7 * 86400000 + g.value * 300000 - s.t0) / 3600000.0 / s.filter_life AS INTEGER)) / s.filter_life, 1),
    'flow_lpm', 1.0 + (s.n % 9) * 0.5 + ((g.value * 97 + s.n) % 11 - 5) / 100.0,
    'o2_purity_pct', 93.0 + ((s.n * 40503 + g.value * 2654435761) % 2000) / 1000.0,
    'outlet_pressure_kpa', 45.0 + (s.n % 10) + ((g.value * 2654435761 + s.n) % 200) / 100.0,
    'runtime_hours', round(s.base + s.rate * (@now - 7 * 86400000 + g.value * 300000 - s.t0) / 3600000.0, 2),
    'temperature_c', 38.0 + (s.n % 5) + ((g.value * 40503 + s.n * 7) % 300) / 100.0),
  NULL
FROM sample s CROSS JOIN generate_series(0, 7 * 288 - 1) g
ORDER BY s.serial, g.value;

-- the current month's runtime_hours rollups (and the hour before it) for the other devices
INSERT INTO rollups (serial, hour, field, count, sum, min, max, last, last_seq)
SELECT serial, hour, 'runtime_hours', 12, 12 * v, v - rate / 2, v + rate / 2, v, k * 12 + 11
FROM (
  SELECT m.serial, m.rate, h.hour, h.k, m.base + m.rate * ((h.hour - m.t0) / 3600000.0 + 55 / 60.0) AS v
  FROM meter m CROSS JOIN hours h
  WHERE m.serial NOT IN (SELECT serial FROM sample)
    AND h.hour >= CAST(strftime('%s', @now / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000 - 3600000
  ORDER BY m.serial, h.hour
);

-- the consolidated operating hours of the 13 whole months before the current one, for
-- every device: the meter's increase over the month (the steps are all inside it or
-- split at its boundaries, and the meter is linear), every hour sampled
CREATE TEMP TABLE months AS
SELECT CAST(strftime('%s', @now / 1000, 'unixepoch', 'start of month', '-' || value || ' months') AS INTEGER) * 1000 AS m0,
       CAST(strftime('%s', @now / 1000, 'unixepoch', 'start of month', '-' || (value - 1) || ' months') AS INTEGER) * 1000 AS m1
FROM generate_series(1, 13);
INSERT INTO exposure_months (month, serial, hours, resets, gaps, gap_hours, samples, baseline_hour, baseline_value,
                             first_hour, first_value, last_hour, last_value, folded_at)
SELECT mo.m0, m.serial, m.rate * (mo.m1 - mo.m0) / 3600000.0, 0, 0, 0.0, (mo.m1 - mo.m0) / 3600000,
       mo.m0 - 3600000, m.base + m.rate * ((mo.m0 - 3600000 - m.t0) / 3600000.0 + 55 / 60.0),
       mo.m0, m.base + m.rate * ((mo.m0 - m.t0) / 3600000.0 + 55 / 60.0),
       mo.m1 - 3600000, m.base + m.rate * ((mo.m1 - 3600000 - m.t0) / 3600000.0 + 55 / 60.0),
       mo.m1 + 900000
FROM months mo CROSS JOIN meter m
ORDER BY mo.m0, m.serial;

-- the current month is folded by the server itself: every device's (month, serial) is
-- marked dirty as ingest leaves it, and the first reliability read (the warm-up) folds it
INSERT INTO exposure_dirty (month, serial)
SELECT CAST(strftime('%s', @now / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000, serial FROM devices;

-- the latest state of every device: its meter and the sample's fields at its last reading
INSERT OR REPLACE INTO latest_state (serial, seq, ts, received_at, vals, alarms, firmware)
SELECT m.serial, 1000000 + 7 * 288, d.last_seen_at, d.last_seen_at,
  CASE WHEN m.model LIKE 'OC-%' THEN json_object('filter_life_pct', 50.0, 'flow_lpm', 1.0 + (m.n % 9) * 0.5,
         'o2_purity_pct', 94.0, 'outlet_pressure_kpa', 50.0,
         'runtime_hours', round(m.base + m.rate * (d.last_seen_at - m.t0) / 3600000.0, 2), 'temperature_c', 40.0)
       ELSE json_object('runtime_hours', round(m.base + m.rate * (d.last_seen_at - m.t0) / 3600000.0, 2)) END,
  '[]', '2.4.1'
FROM meter m JOIN devices d USING (serial) WHERE d.last_seen_at IS NOT NULL;

-- one prediction run, and its predictions
INSERT INTO prediction_runs (id, started_at, as_of, trigger, devices, predictions, report)
VALUES (1, @now - 600000, @now - 3600000, 'schedule', 10000, 0, '{}');

CREATE TEMP TABLE modes (model TEXT, mode TEXT, code TEXT, i INTEGER);
INSERT INTO modes VALUES
  ('OC-5A', 'compressor', 'E101', 0), ('OC-5A', 'sieve_bed', 'E102', 1), ('OC-5A', 'cooling', 'E103', 2),
  ('OC-10', 'compressor', 'E101', 0), ('OC-10', 'sieve_bed', 'E102', 1), ('OC-10', 'rotary_valve', 'E104', 2),
  ('HV-200', 'blower', 'V101', 0), ('HV-200', 'battery', 'V102', 1), ('HV-200', 'pressure_sensor', 'V103', 2),
  ('HV-150', 'blower', 'V101', 0), ('HV-150', 'battery', 'V102', 1);

CREATE TEMP TABLE pred AS
-- filter depletion: due from 10 days ago to 120 days ahead
SELECT serial, 'consumable_depletion' AS kind, 'filter' AS target,
       @now - 10 * 86400000 + (n * 7919 % 130) * 86400000 + (n * 31 % 24) * 3600000 AS due,
       3 * 86400000 AS spread, NULL AS p, NULL AS horizon, NULL AS threshold, 'depletion-v1' AS version
FROM meter WHERE model IN ('OC-5A', 'OC-10', 'HV-200', 'HV-150')
UNION ALL
-- service: due from 5 days ago to a year ahead
SELECT serial, 'service_interval', 'service',
       @now - 5 * 86400000 + (n * 104729 % 370) * 86400000 + (n * 17 % 24) * 3600000,
       7 * 86400000, NULL, NULL, NULL, 'service-v1'
FROM meter WHERE model IN ('OC-5A', 'OC-10', 'HV-200', 'HV-150')
UNION ALL
-- failure risk per mode: 0.5 x^10 with x uniform, 3.5 % at or above 0.35
SELECT m.serial, 'failure_risk', mo.mode, NULL, NULL,
       0.5 * power(((m.n * 2654435761 + mo.i * 40503) % 10007) / 10007.0, 10), 30.0, 0.35,
       'risk-' || mo.mode || '-20261201T000000Z'
FROM meter m JOIN modes mo ON mo.model = m.model;

INSERT INTO predictions (serial, kind, target, run_id, as_of, due_at, probability, model_version, body, order_id)
SELECT serial, kind, target, 1, @now - 3600000, due, p, version,
  json_object(
    'serial', serial, 'kind', kind, 'target', target,
    'as_of', strftime('%Y-%m-%dT%H:%M:%SZ', (@now - 3600000) / 1000, 'unixepoch'),
    'due_at', CASE WHEN due IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%SZ', due / 1000, 'unixepoch') END,
    'due_low', CASE WHEN due IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%SZ', (due - spread) / 1000, 'unixepoch') END,
    'due_high', CASE WHEN due IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%SZ', (due + spread) / 1000, 'unixepoch') END,
    'probability', p, 'horizon_days', horizon, 'threshold', threshold, 'model_version', version,
    'top_features', CASE WHEN p IS NULL THEN json('[]') ELSE json_array(
        json_object('feature', 'o2_purity_pct_slope_7d', 'value', -0.12, 'contribution', 0.8),
        json_object('feature', 'alarms_30d', 'value', 2.0, 'contribution', 0.4),
        json_object('feature', 'runtime_hours', 'value', 9000.0, 'contribution', 0.2)) END,
    'evidence', CASE WHEN p IS NULL THEN json_object('rate_per_hour', 0.04, 'last_value', 40.0) ELSE json_object() END),
  NULL
FROM pred ORDER BY serial, kind, target;

-- 5 000 failure events over the year, half alarm-sourced, half confirmed by a repair order
INSERT INTO failure_events (serial, at, runtime_hours, source, fault_code, failure_mode, model, kind, updated_at)
SELECT m.serial, f.at, m.base + m.rate * (f.at - m.t0) / 3600000.0,
       CASE WHEN f.value % 2 = 0 THEN 'alarm' ELSE 'repair_order' END,
       mo.code, mo.mode, m.model, d.kind, f.at
FROM (SELECT value, @now - 365 * 86400000 + (value * 2654435761 % 31536000) * 1000 AS at,
             value * 7919 % 10000 AS n FROM generate_series(1, 5000)) f
JOIN meter m ON m.n = f.n
JOIN devices d ON d.serial = m.serial
LEFT JOIN modes mo ON mo.model = m.model AND mo.i = f.value % (CASE WHEN m.model = 'HV-150' THEN 2 ELSE 3 END);

-- closed orders: started and closed within 1 to 72 hours of their creation (before now);
-- completed ones with an outcome (a fifth of them no fault found)
UPDATE orders SET
  closed_at = min(@now - 60000, created_at + (1 + id * 7919 % 72) * 3600000),
  started_at = min(@now - 60000, created_at + (1 + id * 7919 % 72) * 3600000) - 5400000
WHERE status IN ('completed', 'cancelled');
UPDATE orders SET outcome = json_object('failure_confirmed', json(CASE WHEN id % 5 = 0 THEN 'false' ELSE 'true' END),
                                        'fault_code', 'E101', 'labour_minutes', labour_minutes)
WHERE status = 'completed';

COMMIT;

