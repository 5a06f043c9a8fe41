"""One shard's state in its PostgreSQL schema, read and written one batch transaction at a time.

Inside `PostgresShardStore.batch(epoch)` the worker: checks its fence, reads the replies already
given (inbox), loads and row-locks the accounts and operations the batch touches, and writes back
the journal entries, changed balances and operations, inbox rows and outbox rows, all with
set-based SQL in the same transaction. Either all of it commits or none of it does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import asyncpg
import orjson

from infra.outbox import OutboxMessage
from infra.postgres_pool import TRANSIENT_ERRORS, StoreUnavailable
from shards.domain.book import ShardBook
from shards.domain.model import Account, JournalEntry, Operation, transit_account
from shards.service.ports import FencedOut, Head, StoreRefused

# The errors and Head are the port's (shards/service/ports.py); importable here as before.
__all__ = [
    "FencedOut",
    "Head",
    "PostgresShardStore",
    "PostgresShardTransaction",
    "StoreRefused",
    "to_datetime",
    "to_micros",
]

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def to_datetime(micros: int) -> dt.datetime:
    return EPOCH + micros * _MICROSECOND


def to_micros(when: dt.datetime) -> int:
    return (when - EPOCH) // _MICROSECOND


class PostgresShardTransaction:
    """A ShardTransaction (shards/service/ports.py) on one connection. Made by `PostgresShardStore.batch`."""

    def __init__(self, conn: asyncpg.Connection, head: Head, epoch: int) -> None:
        self.conn = conn
        self.head = head
        self.epoch = epoch

    async def replies_for(self, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored reply (raw bytes) of every message id already processed."""
        rows = await self.conn.fetch(
            "SELECT i.message_id, i.reply FROM unnest($1::text[]) AS m(id)"
            " JOIN inbox i ON i.message_id = m.id",
            message_ids,
        )
        return {r["message_id"]: r["reply"] for r in rows}

    async def load(
        self, account_ids: Iterable[str], transfer_ids: Iterable[str], currencies: Iterable[str]
    ) -> tuple[list[Account], list[Operation]]:
        """Lock and read the accounts (with the transit accounts of `currencies` and of any hold
        found) and the operations a batch may touch. Locks are taken in account-id order."""
        op_rows = await self.conn.fetch(_LOAD_OPERATIONS, list(set(transfer_ids)))
        operations = [Operation(*r) for r in op_rows]
        wanted = set(account_ids) | {
            transit_account(c) for c in {*currencies, *(o.currency for o in operations)}
        }
        rows = await self.conn.fetch(_LOAD_ACCOUNTS, sorted(wanted))
        accounts = [Account(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]), r[7]) for r in rows]
        return accounts, operations

    async def write(
        self, book: ShardBook, inbox: Sequence[tuple[str, bytes]], outbox: Sequence[OutboxMessage]
    ) -> Head:
        """Write back everything `book` changed plus the inbox and outbox rows, and advance the
        heads: ONE statement (one round trip), whatever the batch holds."""
        change = book.changes()
        created, restated, changed = change.created, change.changed, change.operations
        moved = [*created, *restated]  # a new account's balance row comes with it
        journal = [_journal_row(e) for e in change.entries]
        first = self.head.outbox_seq + 1
        head = Head(book.last_seq, book.last_hash, self.head.outbox_seq + len(outbox))
        await self.conn.execute(
            _WRITE_BATCH,
            [a.account_id for a in created], [a.currency for a in created], [a.status for a in created],
            [a.overdraft_limit for a in created], [orjson.dumps(a.metadata).decode() for a in created],
            [a.account_id for a in moved], [a.posted for a in moved], [a.reserved for a in moved],
            [a.pending_credit for a in moved],
            [a.account_id for a in restated], [a.status for a in restated],
            [o.transfer_id for o in changed], [o.kind for o in changed], [o.account_id for o in changed],
            [o.amount for o in changed], [o.currency for o in changed], [o.state for o in changed],
            *(zip(*journal, strict=True) if journal else [()] * len(_JOURNAL_COLUMNS)),
            [m for m, _ in inbox], [r for _, r in inbox],
            range(first, first + len(outbox)), [m.topic for m in outbox], [m.key for m in outbox],
            [m.payload for m in outbox], [orjson.dumps(m.headers).decode() for m in outbox],
            head.journal_seq, head.journal_hash, head.outbox_seq, self.epoch,
        )  # fmt: skip
        return head


# Keys are looked up by joining unnest($1) rather than `key = ANY($1)`: for a batch of a thousand
# keys the planner priced `= ANY` as a sequential scan, which grew with the table (67 ms a batch on
# a 100k-row operations table in the benchmark); the join probes the primary key per id.
_LOAD_OPERATIONS = """
    SELECT o.transfer_id, o.kind, o.account_id, o.amount, o.currency, o.state
    FROM unnest($1::text[]) AS t(id) JOIN operations o ON o.transfer_id = t.id
    ORDER BY o.transfer_id, o.kind FOR UPDATE OF o"""
_LOAD_ACCOUNTS = """
    SELECT a.account_id, a.currency, a.status, a.overdraft_limit, b.posted, b.reserved, a.metadata,
        b.pending_credit
    FROM unnest($1::text[]) AS k(id) JOIN accounts a ON a.account_id = k.id
    JOIN balances b ON b.account_id = a.account_id
    ORDER BY a.account_id FOR UPDATE OF b"""
_JOURNAL_COLUMNS = [
    "seq", "transfer_id", "leg", "kind", "account_id", "amount", "currency",
    "message_id", "created_at", "prev_hash", "hash",
]  # fmt: skip
# Accounts, balances, operations, journal, inbox, outbox and the heads: one statement. Its
# data-modifying CTEs all run, to completion; the foreign keys are checked at its end, so a new
# account's balance row may come with the account.
_WRITE_BATCH = """
    WITH new_accounts AS (
        INSERT INTO accounts (account_id, currency, status, overdraft_limit, metadata)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[])),
    balances AS (
        INSERT INTO balances (account_id, posted, reserved, pending_credit)
        SELECT * FROM unnest($6::text[], $7::bigint[], $8::bigint[], $9::bigint[])
        ON CONFLICT (account_id) DO UPDATE SET posted = EXCLUDED.posted, reserved = EXCLUDED.reserved,
            pending_credit = EXCLUDED.pending_credit),
    statuses AS (
        UPDATE accounts SET status = u.status FROM unnest($10::text[], $11::text[]) AS u(id, status)
        WHERE accounts.account_id = u.id),
    operations AS (
        INSERT INTO operations (transfer_id, kind, account_id, amount, currency, state)
        SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::bigint[], $16::text[], $17::text[])
        ON CONFLICT (transfer_id, kind) DO UPDATE SET state = EXCLUDED.state, updated_at = now()),
    journal AS (
        INSERT INTO journal (seq, transfer_id, leg, kind, account_id, amount, currency, message_id,
                             created_at, prev_hash, hash)
        SELECT * FROM unnest($18::bigint[], $19::text[], $20::text[], $21::text[], $22::text[],
                             $23::bigint[], $24::text[], $25::text[], $26::timestamptz[], $27::bytea[],
                             $28::bytea[])),
    inbox AS (INSERT INTO inbox (message_id, reply) SELECT * FROM unnest($29::text[], $30::bytea[])),
    outbox AS (
        INSERT INTO outbox (seq, topic, key, payload, headers)
        SELECT s, t, k, p, h::jsonb
        FROM unnest($31::bigint[], $32::text[], $33::bytea[], $34::bytea[], $35::text[]) AS o(s, t, k, p, h))
    UPDATE worker_state SET journal_seq = $36, journal_hash = $37, outbox_seq = $38 WHERE epoch = $39"""


def _journal_row(e: JournalEntry) -> tuple[object, ...]:
    return (
        e.seq, e.transfer_id, e.leg, e.kind, e.account_id, e.amount, e.currency,
        e.message_id, to_datetime(e.created_us), e.prev_hash, e.hash,
    )  # fmt: skip


class PostgresShardStore:
    """A ShardStore (shards/service/ports.py): the shard's schema, through a pool whose connections
    have its search_path."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self) -> int:
        """Become the shard's only writer: a new epoch fences out any earlier worker."""
        try:
            epoch: int = await self.pool.fetchval(
                "UPDATE worker_state SET epoch = epoch + 1, heartbeat_at = now() RETURNING epoch"
            )
        except TRANSIENT_ERRORS as e:
            raise StoreUnavailable(f"cannot claim the shard: {e}") from e
        return epoch

    @asynccontextmanager
    async def batch(self, epoch: int) -> AsyncIterator[PostgresShardTransaction]:
        """A transaction holding the fence; commits when the block ends without an exception."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE worker_state SET heartbeat_at = now() WHERE epoch = $1"
                    " RETURNING journal_seq, journal_hash, outbox_seq",
                    epoch,
                )
                if row is None:
                    raise FencedOut(f"epoch {epoch} is no longer this shard's writer")
                yield PostgresShardTransaction(conn, Head(row[0], bytes(row[1]), row[2]), epoch)
        except TRANSIENT_ERRORS as e:
            raise StoreUnavailable(f"batch transaction failed: {type(e).__name__}: {e}") from e
        except (asyncpg.DataError, asyncpg.CheckViolationError) as e:
            raise StoreRefused(f"the database refuses the batch: {type(e).__name__}: {e}") from e
