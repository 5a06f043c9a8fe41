-- The coordinator's schema: every transfer it was asked for, its saga state, inbox and outbox.
-- Unqualified names: the runner sets search_path.

-- One row per transfer id ever seen: the idempotency record and the saga's state in one place.
-- A command rejected before it could be routed keeps NULL routing columns.
CREATE TABLE transfers (
    transfer_id     text PRIMARY KEY,
    fingerprint     text NOT NULL,                 -- sha256 of the request body: same id + other body = reuse
    debit_account   text,
    credit_account  text,
    amount          bigint CHECK (amount > 0),
    currency        char(3),
    debit_shard     integer,
    credit_shard    integer,
    status          text NOT NULL CHECK (status IN ('in_flight', 'completed', 'rejected', 'compensated')),
    step            text NOT NULL,
    reason          text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_ms bigint NOT NULL DEFAULT 0,     -- when the sweeper re-sends the current command
    started_ms      bigint NOT NULL,
    parked          boolean NOT NULL DEFAULT false, -- needs_attention
    version         integer NOT NULL,              -- optimistic concurrency between coordinators
    partition       integer NOT NULL,              -- the ledger.transfers partition that owns it
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX transfers_due ON transfers (partition, next_attempt_ms) WHERE status = 'in_flight';
CREATE INDEX transfers_parked ON transfers (transfer_id) WHERE parked;

-- What the status API shows: each step's command, where it went, and its answer.
CREATE TABLE saga_steps (
    transfer_id   text NOT NULL,
    step          text NOT NULL,
    shard         integer NOT NULL,
    command_id    text NOT NULL,
    sends         integer NOT NULL DEFAULT 1,
    first_sent_at timestamptz NOT NULL DEFAULT now(),
    last_sent_at  timestamptz NOT NULL DEFAULT now(),
    outcome       text,
    reason        text,
    answered_at   timestamptz,
    PRIMARY KEY (transfer_id, step)
);

CREATE TABLE inbox (
    message_id   text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Several coordinators write here at once, so rows are claimed (SKIP LOCKED) and deleted once
-- Kafka has acknowledged them, in one transaction.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    payload    bytea NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
