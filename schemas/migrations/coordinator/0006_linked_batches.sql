-- Linked batches. A batch's saga lives in its own row (batch_state: the legs and where each step
-- stands); each leg is a row of its own too (batch_id names its batch), so a leg's transfer id is
-- taken in the one namespace of transfer ids, reconciliation holds each leg's entries to it, and
-- its status follows the batch's.
ALTER TABLE transfers ADD COLUMN batch_state jsonb, ADD COLUMN batch_id text;
CREATE INDEX transfers_batch_legs ON transfers (batch_id) WHERE batch_id IS NOT NULL;
DROP INDEX transfers_due;
CREATE INDEX transfers_due ON transfers (partition, next_attempt_ms)
    WHERE status IN ('in_flight', 'pending') AND pending_id IS NULL AND batch_id IS NULL;
