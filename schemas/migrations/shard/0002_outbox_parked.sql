-- Outbox rows Kafka refused for good (too large for their topic, topic gone, not authorized): the
-- relay moves each here, with the error, in the transaction that moves its cursor past it, so the
-- rows behind it still go out. `ledger outbox parked` lists them.
CREATE TABLE outbox_parked (
    seq        bigint PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    payload    bytea NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    error      text NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now()
);
