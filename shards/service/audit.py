"""Checks that need no stop of the system: replay a shard's balances, verify its hash chain.

Each check reads one consistent snapshot (REPEATABLE READ, read only), so a worker committing
meanwhile cannot cause a false alarm.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shards.adapters.postgres_shard_store import to_micros
from shards.domain.chain import ChainedEntry, broken_link
from shards.domain.model import GENESIS_HASH
from shards.domain.replay import Balance, Difference, differences, replay


@asynccontextmanager
async def snapshot(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        yield conn


@dataclass
class ReplayReport:
    shard: int
    accounts: int
    entries: int
    differences: list[Difference]
    unbalanced_currencies: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.differences and not self.unbalanced_currencies


async def replay_shard(pool: asyncpg.Pool, shard: int) -> ReplayReport:
    """Rebuild balances from the journal and open holds; compare with the cached balances."""
    async with snapshot(pool) as conn:
        posted = await conn.fetch("SELECT account_id, sum(amount) FROM journal GROUP BY account_id")
        held = await conn.fetch(
            "SELECT account_id, sum(amount) FROM operations WHERE kind = 'hold' AND state = 'held'"
            " GROUP BY account_id"
        )
        pending = await conn.fetch(
            "SELECT account_id, sum(amount) FROM operations WHERE kind = 'credit' AND state = 'held'"
            " GROUP BY account_id"
        )
        cached_rows = await conn.fetch("SELECT account_id, posted, reserved, pending_credit FROM balances")
        by_currency = await conn.fetch("SELECT currency, sum(amount) FROM journal GROUP BY currency")
        entries = await conn.fetchval("SELECT count(*) FROM journal")
    # sum() of BIGINT is NUMERIC (exact, decoded as Decimal): int() keeps it exact.
    replayed = replay(
        ((r[0], int(r[1])) for r in posted),
        ((r[0], int(r[1])) for r in held),
        ((r[0], int(r[1])) for r in pending),
    )
    cached = {r[0]: Balance(r[1], r[2], r[3]) for r in cached_rows}
    unbalanced = {r[0]: int(r[1]) for r in by_currency if int(r[1]) != 0}
    return ReplayReport(shard, len(cached), entries, differences(cached, replayed), unbalanced)


@dataclass
class ChainReport:
    shard: int
    entries: int
    first_broken_seq: int | None = None
    problem: str | None = None
    checkpoints_checked: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_broken_seq is None


async def verify_chain(
    pool: asyncpg.Pool, shard: int, checkpoints: list[tuple[int, bytes]], page: int = 10_000
) -> ChainReport:
    """Recompute every entry's hash in seq order; report the first broken link.

    `checkpoints` are chain heads published outside the shard's schema: an entry rewritten with
    its hashes recomputed still disagrees with what was published before the rewrite.
    """
    published = dict(checkpoints)
    report = ChainReport(shard, 0)
    prev, expected_seq = GENESIS_HASH, 1
    async with snapshot(pool) as conn:
        head_seq = await conn.fetchval("SELECT journal_seq FROM worker_state")
        cursor = conn.cursor(
            "SELECT seq, transfer_id, leg, kind, account_id, amount, currency, message_id, created_at,"
            " prev_hash, hash FROM journal ORDER BY seq",
            prefetch=page,
        )
        async for r in cursor:
            problem = _check_entry(r, prev, expected_seq)
            if problem is None and r["seq"] in published and published[r["seq"]] != bytes(r["hash"]):
                problem = "differs from the chain head published for this seq"
            if problem is not None:
                report.first_broken_seq, report.problem = r["seq"], problem
                return report
            report.checkpoints_checked += r["seq"] in published
            prev, expected_seq = bytes(r["hash"]), r["seq"] + 1
            report.entries += 1
    if head_seq != expected_seq - 1:
        report.first_broken_seq = expected_seq
        report.problem = f"the journal ends at seq {expected_seq - 1} but the writer's head says {head_seq}"
    elif published and max(published) > head_seq:
        report.first_broken_seq = head_seq + 1
        report.problem = f"a chain head was published for seq {max(published)}, past the journal's end"
    return report


def _check_entry(r: asyncpg.Record, prev: bytes, expected_seq: int) -> str | None:
    entry = ChainedEntry(
        r["seq"], r["transfer_id"], r["leg"], r["kind"], r["account_id"], r["amount"], r["currency"],
        r["message_id"], to_micros(r["created_at"]), bytes(r["prev_hash"]), bytes(r["hash"]),
    )  # fmt: skip
    return broken_link(entry, prev, expected_seq)


@dataclass(frozen=True)
class PointInTimeBalance:
    account_id: str
    posted: int
    as_of_seq: int | None


async def balance_at(
    pool: asyncpg.Pool, account_id: str, *, seq: int | None = None, at: dt.datetime | None = None
) -> PointInTimeBalance:
    """The posted balance of an account as of a journal seq or a time (both inclusive)."""
    row = await pool.fetchrow(
        "SELECT coalesce(sum(amount), 0), max(seq) FROM journal WHERE account_id = $1"
        " AND ($2::bigint IS NULL OR seq <= $2) AND ($3::timestamptz IS NULL OR created_at <= $3)",
        account_id, seq, at,
    )  # fmt: skip
    assert row is not None
    return PointInTimeBalance(account_id, int(row[0]), row[1])


async def account_balance(shard_pool: asyncpg.Pool, account_id: str) -> dict[str, Any] | None:
    """The cached balance of an account now: posted, pending debits (`reserved`, also as
    `pending_debits`), pending credits, available, currency, status."""
    row = await shard_pool.fetchrow(
        "SELECT a.account_id, a.currency, a.status, a.overdraft_limit, b.posted, b.reserved,"
        " b.reserved AS pending_debits, b.pending_credit AS pending_credits,"
        " b.posted - b.reserved + a.overdraft_limit AS available"
        " FROM accounts a JOIN balances b USING (account_id) WHERE a.account_id = $1",
        account_id,
    )
    return dict(row) if row else None
