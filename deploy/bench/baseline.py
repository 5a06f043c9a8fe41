"""The naive baseline the ledger is compared with, in the same run and on the same servers.

What a competent team builds on day one: one PostgreSQL database, accounts with a balance column,
a journal table, and per transfer ONE transaction that locks both account rows in id order
(no deadlocks), checks the balance, updates both rows and inserts the two journal rows; N
concurrent connections; the same durability settings as the ledger (fsync, synchronous_commit).
Two-phase work the same way: a hold is one transaction that locks the debit row, checks what is
available (balance less reserved) and reserves; its post is one transaction that locks the hold
and both rows, moves the posted amount with its two journal rows and releases the whole hold; a
void one transaction that releases it.
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
    balance    bigint NOT NULL CHECK (balance >= 0),
    reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);
CREATE TABLE holds (
    transfer_id uuid PRIMARY KEY,
    debit       text NOT NULL REFERENCES accounts (account_id),
    credit      text NOT NULL REFERENCES accounts (account_id),
    amount      bigint NOT NULL,
    state       text NOT NULL DEFAULT 'pending'
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
        available = await _lock(conn, move)
        if len(available) < 2:
            return "rejected (account_not_found)"
        if available[move.debit] < move.amount:
            return "rejected (insufficient_funds)"
        await _move(conn, move, move.amount)
    return "completed"


async def hold(conn: asyncpg.Connection, move: Move) -> tuple[str, uuid.UUID]:
    """Reserve the amount on the debit account: `pending`, or why not; and the hold's id."""
    hold_id = uuid.uuid4()
    async with conn.transaction():
        available = await _lock(conn, move)
        if len(available) < 2:
            return "rejected (account_not_found)", hold_id
        if available[move.debit] < move.amount:
            return "rejected (insufficient_funds)", hold_id
        await conn.execute(
            "UPDATE accounts SET reserved = reserved + $2 WHERE account_id = $1", move.debit, move.amount
        )
        await conn.execute(
            "INSERT INTO holds VALUES ($1, $2, $3, $4)", hold_id, move.debit, move.credit, move.amount
        )
    return "pending", hold_id


async def settle(conn: asyncpg.Connection, hold_id: uuid.UUID, post_amount: int | None) -> str:
    """Post the hold (`post_amount`, the whole hold when None) or void it (`post_amount` 0)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT debit, credit, amount FROM holds WHERE transfer_id = $1 FOR UPDATE", hold_id
        )
        if row is None:
            return "rejected (pending_transfer_not_found)"
        move = Move(row[0], row[1], row[2], cross_shard=False, debit_shard=0)
        await _lock(conn, move)
        await conn.execute(
            "UPDATE accounts SET reserved = reserved - $2 WHERE account_id = $1", move.debit, move.amount
        )
        posted = move.amount if post_amount is None else post_amount
        if posted:
            await _move(conn, move, posted)
        await conn.execute(
            "UPDATE holds SET state = $2 WHERE transfer_id = $1", hold_id, "posted" if posted else "voided"
        )
    return "completed" if posted else "voided"


async def _lock(conn: asyncpg.Connection, move: Move) -> dict[str, int]:
    """Lock both rows in id order; what each has available (balance less reserved)."""
    rows = await conn.fetch(
        "SELECT account_id, balance - reserved FROM accounts WHERE account_id = ANY($1::text[])"
        " ORDER BY account_id FOR UPDATE",
        [move.debit, move.credit],
    )
    return {r[0]: r[1] for r in rows}


async def _move(conn: asyncpg.Connection, move: Move, amount: int) -> None:
    await conn.execute(
        "UPDATE accounts SET balance = balance + d.delta FROM (VALUES ($1::text, $3::bigint),"
        " ($2::text, -$3::bigint)) AS d(account_id, delta) WHERE accounts.account_id = d.account_id",
        move.credit, move.debit, amount,
    )  # fmt: skip
    transfer_id = uuid.uuid4()
    await conn.executemany(
        "INSERT INTO journal (transfer_id, account_id, amount) VALUES ($1, $2, $3)",
        [(transfer_id, move.debit, -amount), (transfer_id, move.credit, amount)],
    )


async def total(dsn: str, schema: str) -> tuple[int, int]:
    """Money in the baseline, and what is still reserved: the money must equal what was funded and
    nothing must stay reserved once every hold is settled (its own correctness check)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(f"SELECT sum(balance), sum(reserved) FROM {quoted_schema(schema)}.accounts")  # noqa: S608
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])
