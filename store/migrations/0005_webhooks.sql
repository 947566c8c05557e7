-- fleetpulse embedded store, schema version 5: webhook subscriptions and their deliveries.
-- The outbox is order_events (written in the transaction of every order change); the
-- delivery worker fans each event out into one delivery row per subscription.

CREATE TABLE webhooks (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,        -- HMAC-SHA256 key, shared with the receiver
    created_at   INTEGER NOT NULL,
    disabled_at  INTEGER,
    cursor       INTEGER NOT NULL      -- last order_events.id fanned out
);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    webhook_id       INTEGER NOT NULL REFERENCES webhooks(id),
    event_id         INTEGER NOT NULL REFERENCES order_events(id),
    order_id         INTEGER NOT NULL,
    state            TEXT NOT NULL,    -- pending, delivered, dead
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    last_status      INTEGER,          -- HTTP status of the last attempt, NULL: no answer
    last_error       TEXT,
    delivered_at     INTEGER,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries(webhook_id, order_id, event_id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook_id, id);
