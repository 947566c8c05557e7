-- The time-series sink's spool: a transactional outbox. A batch's new readings are
-- appended here, as line protocol, in the same transaction that stores them, so every
-- stored reading is spooled exactly once whatever crashes when. The sink worker sends
-- chunks in id order and deletes them once the time-series server has them.
CREATE TABLE sink_spool (
    id          INTEGER PRIMARY KEY,   -- delivery order
    created_at  INTEGER NOT NULL,      -- commit time, ms
    readings    INTEGER NOT NULL,      -- lines in body
    bytes       INTEGER NOT NULL,      -- length of body
    body        TEXT NOT NULL          -- line protocol, precision ms
);
