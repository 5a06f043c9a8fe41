"""The naive baseline the ledger is compared with, in the same run and on the same servers.

What a competent team builds on day one: one PostgreSQL database, accounts with a balance column,
a journal table, and per transfer ONE transaction that locks both account rows in id order
(no deadlocks), checks the balance, updates both rows and inserts the two journal rows; N
concurrent connections; the same durability settings as the ledger (fsync, synchronous_commit).
Two-phase work the same way: a hold is one transaction that locks the debit row, checks what is
available (balance less reserved) and reserves; its post is one transaction that locks the hold
and both rows, moves the posted amount with its two journal rows and releases the whole hold; a
void one transaction that releases it. A linked batch is one transaction too: it locks every
account its legs touch in id order, checks the legs in order against what each has available as the
earlier legs leave it, and either moves every leg (two journal rows each) or, at the first leg that
cannot be paid, nothing: all or none, the way one database does it.
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


async def batch(conn: asyncpg.Connection, legs: tuple[Move, ...]) -> str:
    """A linked batch, one transaction: every leg or none, worded as the ledger's results word it."""
    async with conn.transaction():
        available = await _lock_all(conn, {a for leg in legs for a in (leg.debit, leg.credit)})
        for leg in legs:
            if leg.debit not in available or leg.credit not in available:
                return "rejected (account_not_found)"
            if available[leg.debit] < leg.amount:
                return "rejected (insufficient_funds)"  # nothing written: the transaction moves nothing
            available[leg.debit] -= leg.amount
            available[leg.credit] += leg.amount
        await _move_all(conn, legs)
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
    return await _lock_all(conn, {move.debit, move.credit})


async def _lock_all(conn: asyncpg.Connection, accounts: set[str]) -> dict[str, int]:
    """Lock the accounts' rows in id order (no deadlocks); what each has available."""
    rows = await conn.fetch(
        "SELECT account_id, balance - reserved FROM accounts WHERE account_id = ANY($1::text[])"
        " ORDER BY account_id FOR UPDATE",
        sorted(accounts),
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


async def _move_all(conn: asyncpg.Connection, legs: tuple[Move, ...]) -> None:
    """Every leg of a batch: one update of each account's balance by its net change, and two
    journal rows per leg under the leg's own id."""
    delta: dict[str, int] = {}
    for leg in legs:
        delta[leg.debit] = delta.get(leg.debit, 0) - leg.amount
        delta[leg.credit] = delta.get(leg.credit, 0) + leg.amount
    await conn.execute(
        "UPDATE accounts SET balance = balance + d.delta FROM unnest($1::text[], $2::bigint[])"
        " AS d(account_id, delta) WHERE accounts.account_id = d.account_id",
        list(delta), list(delta.values()),
    )  # fmt: skip
    rows = []
    for leg in legs:
        leg_id = uuid.uuid4()
        rows += [(leg_id, leg.debit, -leg.amount), (leg_id, leg.credit, leg.amount)]
    await conn.executemany("INSERT INTO journal (transfer_id, account_id, amount) VALUES ($1, $2, $3)", rows)


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
