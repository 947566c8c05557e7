-- fleetpulse embedded store, schema version 6: indexes for the dispatchers' order filters
-- by region and model (GET /api/v1/orders?region=…&model=…), which select devices first.
CREATE INDEX devices_by_region ON devices(region, serial);
CREATE INDEX devices_by_model ON devices(model, serial);
