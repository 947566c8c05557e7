-- fleetpulse embedded store, schema version 12: orders follow the device (policy
-- [resolution]). An order remembers when the device (or a prediction run) last showed the
-- condition behind its cause gone and what showed it, and when the system will cancel it
-- unless the condition returns first (an alarm that needs no visit).

ALTER TABLE orders ADD COLUMN condition_cleared_at INTEGER;   -- NULL: the condition holds
ALTER TABLE orders ADD COLUMN condition_evidence TEXT;        -- JSON: the reading or prediction
ALTER TABLE orders ADD COLUMN cancel_at INTEGER;              -- NULL: no cancel pending
-- what the periodic cancel looks for: only active orders with a pending cancel
CREATE INDEX orders_pending_cancel ON orders(cancel_at)
    WHERE cancel_at IS NOT NULL AND status IN ('open', 'acknowledged', 'assigned', 'in_progress');
