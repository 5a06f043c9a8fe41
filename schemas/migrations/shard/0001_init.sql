-- One shard's schema. Unqualified names: the runner sets search_path to the shard's schema.
-- Amounts are BIGINT minor units, signed in the journal (credit +, debit -).

CREATE TABLE accounts (
    account_id      text PRIMARY KEY,
    currency        char(3) NOT NULL,
    status          text NOT NULL CHECK (status IN ('active', 'frozen', 'closed')),
    overdraft_limit bigint NOT NULL CHECK (overdraft_limit >= 0),
    metadata        jsonb NOT NULL DEFAULT '{}',
    opened_at       timestamptz NOT NULL DEFAULT now()
);

-- A cache of the journal (posted) and of open holds (reserved), updated in the same transaction.
-- `ledger replay` recomputes it from the journal and reports any difference.
CREATE TABLE balances (
    account_id text PRIMARY KEY REFERENCES accounts (account_id),
    posted     bigint NOT NULL DEFAULT 0,
    reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);

-- What this shard did for a transfer: a hold (held -> committed | released), a credit, or a local
-- transfer. The key makes a second effect for the same transfer impossible.
CREATE TABLE operations (
    transfer_id text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('hold', 'credit', 'transfer')),
    account_id  text NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    currency    char(3) NOT NULL,
    state       text NOT NULL CHECK (state IN ('held', 'committed', 'released')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transfer_id, kind)
);
CREATE INDEX operations_open_holds ON operations (account_id) WHERE kind = 'hold' AND state = 'held';

-- The source of truth. Each entry's hash covers the previous entry's hash and all its fields.
CREATE TABLE journal (
    seq         bigint PRIMARY KEY CHECK (seq >= 1),
    transfer_id text NOT NULL,
    leg         text NOT NULL CHECK (leg IN ('debit', 'credit')),
    kind        text NOT NULL,
    account_id  text NOT NULL,
    amount      bigint NOT NULL CHECK (amount <> 0),
    currency    char(3) NOT NULL,
    message_id  text NOT NULL,
    created_at  timestamptz NOT NULL,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX journal_account_seq ON journal (account_id, seq);
CREATE INDEX journal_transfer ON journal (transfer_id);

CREATE FUNCTION journal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the journal is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION journal_refuse_change();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change();

-- Messages already processed, with the reply each got: a redelivery gets the same reply again.
CREATE TABLE inbox (
    message_id   text PRIMARY KEY,
    reply        bytea NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Messages to publish, written with the effects that caused them. seq is gapless and assigned by
-- the one fenced writer, so the relay's cursor (relay_state) marks everything up to it as sent.
CREATE TABLE outbox (
    seq        bigint PRIMARY KEY CHECK (seq >= 1),
    topic      text NOT NULL,
    key        bytea,
    payload    bytea NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The single writer's fence and the heads of the journal chain and of the outbox.
CREATE TABLE worker_state (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch        bigint NOT NULL,
    journal_seq  bigint NOT NULL,
    journal_hash bytea NOT NULL,
    outbox_seq   bigint NOT NULL,
    heartbeat_at timestamptz
);
INSERT INTO worker_state (epoch, journal_seq, journal_hash, outbox_seq)
    VALUES (0, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0);

CREATE TABLE relay_state (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    published_seq bigint NOT NULL
);
INSERT INTO relay_state (published_seq) VALUES (0);
