-- Two-phase transfers. A pending transfer's saga waits in status 'pending' (its timer is the
-- expiry) until a post, a void or the expiry resolves it; the command that resolved it is a row of
-- its own (pending_id names the pending transfer) whose result is published with it.
ALTER TABLE transfers DROP CONSTRAINT transfers_status_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_status_check CHECK (
    status IN ('in_flight', 'pending', 'completed', 'rejected', 'compensated', 'voided', 'expired'));
ALTER TABLE transfers
    ADD COLUMN pending_timeout_ms bigint CHECK (pending_timeout_ms > 0),
    ADD COLUMN expires_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN resolution text CHECK (resolution IN ('post', 'void', 'expire')),
    ADD COLUMN post_amount bigint CHECK (post_amount > 0),
    ADD COLUMN resolved_by text,
    ADD COLUMN pending_id text;
-- The sweeper's index now also finds the holds that are due to expire.
DROP INDEX transfers_due;
CREATE INDEX transfers_due ON transfers (partition, next_attempt_ms)
    WHERE status IN ('in_flight', 'pending') AND pending_id IS NULL;
