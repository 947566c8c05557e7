-- The ingest journal's applied position (migration 8): the last journal record
-- whose batch is committed here. Written in the same transaction as that batch, so at
-- start the journal is replayed from the record after it, and nothing is applied twice
-- or skipped. One row at most.
CREATE TABLE ingest_journal (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    applied_through INTEGER NOT NULL
);
