-- Two-phase transfers: a pending transfer's credit is shown on the account it will credit, and is
-- not spendable there until posted. Cached like `reserved` (the pending debits), derived from the
-- `credit` operations still `held`; `ledger replay` recomputes both.
ALTER TABLE balances ADD COLUMN pending_credit bigint NOT NULL DEFAULT 0 CHECK (pending_credit >= 0);
CREATE INDEX operations_pending_credits ON operations (account_id) WHERE kind = 'credit' AND state = 'held';
