"""The naive baseline the ledger is compared with, in the same run and on the same servers.

What a competent team builds on day one: one PostgreSQL database, accounts with a balance column,
a journal table, and per transfer ONE transaction that locks both account rows in id order
(no deadlocks), checks the balance, updates both rows and inserts the two journal rows; N
concurrent connections; the same durability settings as the ledger (fsync, synchronous_commit).
"""

from __future__ import annotations

import uuid

import asyncpg

from deploy.bench.workload import Move
from infra.postgres_migrations import quoted_schema

_DDL = """
CREATE TABLE accounts (
    account_id text PRIMARY KEY,
    currency   char(3) NOT NULL,
    balance    bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE journal (
    id          bigserial PRIMARY KEY,
    transfer_id uuid NOT NULL,
    account_id  text NOT NULL REFERENCES accounts (account_id),
    amount      bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_account ON journal (account_id);
"""


async def create_baseline(dsn: str, schema: str, accounts: list[str], funding: int) -> None:
    """A fresh schema with every account funded (the issuance is one journal row each)."""
    name = quoted_schema(schema)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")
            await conn.execute(f"SET LOCAL search_path TO {name}")
            await conn.execute(_DDL)
            await conn.copy_records_to_table(
                "accounts",
                records=[(a, "EUR", funding) for a in accounts],
                columns=["account_id", "currency", "balance"],
            )
    finally:
        await conn.close()


async def transfer(conn: asyncpg.Connection, move: Move) -> str:
    """One transfer, one transaction: its outcome, worded as the ledger's results word it."""
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT account_id, balance FROM accounts WHERE account_id = ANY($1::text[])"
            " ORDER BY account_id FOR UPDATE",
            [move.debit, move.credit],
        )
        balance = {r[0]: r[1] for r in rows}
        if len(balance) < 2:
            return "rejected (account_not_found)"
        if balance[move.debit] < move.amount:
            return "rejected (insufficient_funds)"
        await conn.execute(
            "UPDATE accounts SET balance = balance + d.delta FROM (VALUES ($1::text, $3::bigint),"
            " ($2::text, -$3::bigint)) AS d(account_id, delta) WHERE accounts.account_id = d.account_id",
            move.credit, move.debit, move.amount,
        )  # fmt: skip
        transfer_id = uuid.uuid4()
        await conn.executemany(
            "INSERT INTO journal (transfer_id, account_id, amount) VALUES ($1, $2, $3)",
            [(transfer_id, move.debit, -move.amount), (transfer_id, move.credit, move.amount)],
        )
    return "completed"


async def total(dsn: str, schema: str) -> int:
    """Money in the baseline: must equal what was funded (its own correctness check)."""
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(f"SELECT sum(balance) FROM {quoted_schema(schema)}.accounts")  # noqa: S608
    finally:
        await conn.close()
    return int(value)
