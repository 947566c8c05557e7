-- fleetpulse embedded store, schema version 9: predictions and the orders they raise.
-- How a device's last connection ended; the latest prediction per (serial, kind,
-- target) and the history of runs; trained failure-risk models; orders get a due date
-- and bundled tasks; the storm-control queue of predicted orders held back.

-- How the last connection ended: graceful (DISCONNECT, or the device's own `offline`)
-- or lost (last will, keepalive timeout). NULL: no connection has ended yet.
ALTER TABLE devices ADD COLUMN disconnected_at INTEGER;
ALTER TABLE devices ADD COLUMN disconnect_graceful INTEGER;

-- When the work is due (predicted date minus the policy's lead); NULL for orders
-- without a forecast date (critical alarms, manual orders).
ALTER TABLE orders ADD COLUMN due_at INTEGER;
CREATE INDEX orders_by_origin_created ON orders(origin, created_at);

-- The newest prediction per (serial, kind, target), replaced by every run.
CREATE TABLE predictions (
    serial        TEXT NOT NULL,
    kind          TEXT NOT NULL,      -- consumable_depletion, service_interval, failure_risk, silent
    target        TEXT NOT NULL,      -- consumable id, service, failure mode, connectivity
    run_id        INTEGER NOT NULL REFERENCES prediction_runs(id),
    as_of         INTEGER NOT NULL,
    due_at        INTEGER,
    probability   REAL,
    model_version TEXT NOT NULL,
    body          TEXT NOT NULL,      -- JSON: the whole Prediction
    order_id      INTEGER REFERENCES orders(id),  -- the order (or the order holding its task) it raised
    PRIMARY KEY (serial, kind, target)
) WITHOUT ROWID;
CREATE INDEX predictions_by_kind ON predictions(kind, serial, target);

-- Every run of the predictors: when, over what, and what it did to orders.
CREATE TABLE prediction_runs (
    id          INTEGER PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    as_of       INTEGER NOT NULL,
    trigger     TEXT NOT NULL,        -- schedule, api, cli
    devices     INTEGER NOT NULL,
    predictions INTEGER NOT NULL,
    report      TEXT NOT NULL         -- JSON: orders raised, updated, bundled, held, released
);

-- Trained failure-risk models. At most one deployed per failure mode.
CREATE TABLE models (
    version      TEXT PRIMARY KEY,
    failure_mode TEXT NOT NULL,
    trained_at   INTEGER NOT NULL,
    deployed     INTEGER NOT NULL,
    report       TEXT NOT NULL,       -- JSON ModelReport
    parameters   TEXT NOT NULL        -- JSON, what the implementation scores with
) WITHOUT ROWID;
CREATE UNIQUE INDEX models_one_deployed ON models(failure_mode) WHERE deployed = 1;

-- Work bundled into one visit: a task rides on an active order of the same device.
-- One task per (order, cause); the order's own cause is not repeated here.
CREATE TABLE order_tasks (
    id             INTEGER PRIMARY KEY,
    order_id       INTEGER NOT NULL REFERENCES orders(id),
    cause          TEXT NOT NULL,
    title          TEXT NOT NULL,
    skills         TEXT NOT NULL,     -- JSON array
    parts          TEXT NOT NULL,     -- JSON array of {number, name, qty}
    labour_minutes INTEGER NOT NULL,
    due_at         INTEGER,
    evidence       TEXT NOT NULL,     -- JSON
    added_at       INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (order_id, cause)
);

-- Predicted orders held back by storm control, released in priority then FIFO order as
-- the hourly limits free up. One held entry per (serial, cause).
CREATE TABLE order_queue (
    id        INTEGER PRIMARY KEY,
    serial    TEXT NOT NULL,
    cause     TEXT NOT NULL,
    priority  TEXT NOT NULL,
    region    TEXT,
    due_at    INTEGER,
    intent    TEXT NOT NULL,          -- JSON OrderIntent
    held_at   INTEGER NOT NULL,
    reason    TEXT NOT NULL,          -- fleet_limit, region_limit
    UNIQUE (serial, cause)
);
CREATE INDEX order_queue_release ON order_queue(priority, id);
