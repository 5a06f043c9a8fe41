-- The W3C trace context of the span that started a transfer, so the sweeper's re-sends of a
-- saga's commands continue the same trace.
ALTER TABLE transfers ADD COLUMN traceparent text;
