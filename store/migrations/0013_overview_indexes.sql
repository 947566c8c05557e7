-- fleetpulse embedded store, schema version 13: indexes for the overview page's counts
-- (Store::fleet_overview, Store::order_counts_by_day), so that each is a walk of a small
-- index instead of a read of every row (10 000 devices, 100 000 orders: a few ms).
-- None holds a column that ingest rewrites on every report (last_seen_at, connection).

-- dead letters received in the last 24 hours, by reason: per reason, the day's entries
-- only, counted in index order
CREATE INDEX dead_letters_by_reason_received ON dead_letters(reason, received_at);

-- devices by criticality (status, model and region have theirs)
CREATE INDEX devices_by_criticality ON devices(criticality);

-- open alarm episodes by severity, without reading each episode's row
CREATE INDEX alarm_episodes_open_by_severity ON alarm_episodes(severity) WHERE ended_at IS NULL;

-- active orders with what their SLA state and the calendar read: counted per (status,
-- priority) in index order, never touching the rows (closed orders leave the index)
CREATE INDEX orders_active_sla ON orders(status, priority, complete_by, respond_by, arrive_by, created_at, labour_minutes)
    WHERE status IN ('open', 'acknowledged', 'assigned', 'in_progress');
