-- The outbox is a queue: every row is deleted within moments of being written, and each claim
-- scans from the lowest id. Dead rows left for the default autovacuum thresholds made claims
-- scan ever more of them, so vacuum this table after a fixed number of deletions instead.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
