"""The corrupted shard (issue 16): one journal row altered behind the ledger's back, held, then
restored and the shard given back as an operator would: the chain verified whole again, the
monitor's alert seen cleared, the breaker the monitor latched closed by hand.

Which column: `message_id`. It is hashed into the chain (shards/domain/chain.py), so altering it
breaks the chain, yet nothing that computes money reads it back from the journal: a live worker
keeps its chain head in worker_state and its balances in balances and never re-reads journal rows
(not even on restart); replay and reconciliation (coordinator/adapters/postgres_reconcile.py) sum
amounts by transfer, leg, account and currency. So the alteration is seen by the hash chain and by
nothing else: no balance, saga or reconciliation moves while it holds. An altered `amount` would
also make reconciliation find violations, and `created_at` feeds point-in-time balances.

Which row: the newest at the onset (any row breaks the chain; this one is there on every shard that
has moved money, and the worker never reads it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg

from deploy.breaker_cli import read_breakers, set_breaker
from deploy.chaos.breakers import BreakerWatch
from infra.config import LedgerConfig
from infra.postgres_migrations import quoted_schema
from infra.postgres_pool import TRANSIENT_ERRORS
from schemas.breaker import OPEN, SetBreaker
from schemas.errors import LedgerError
from shards.adapters.postgres_audit import verify_ledger

MARK = " (altered by the chaos nemesis)"
CLOSE_REASON = "chaos: row restored, chain verified"
RESTORE_WITHIN_S = 60.0
"""A restore that meets PostgreSQL down (the next fault never overlaps, but a connection may
still fail) tries again for this long: the row must come back, or I6 fails the run."""
DETECT_WITHIN_S = 30.0
"""Longest the row stays altered waiting for the monitor to catch it; not caught by then fails D1."""
AGREE_WITHIN_S = 30.0
"""How long the operator waits for the chain to verify and for the monitor to clear its alert."""


class CorruptionFailed(LedgerError):
    """The nemesis could not alter, or could not restore, the row (the report says which)."""

    retriable = False


@dataclass(frozen=True)
class Tampering:
    shard: int
    schema: str
    """Quoted, for the SQL text (the values are always bind parameters)."""
    seq: int
    original: str
    """The row's message_id before: what the restore writes back, exactly."""

    @property
    def altered(self) -> str:
        return self.original + MARK


async def tamper(config: LedgerConfig, shard: int) -> Tampering:
    """Alter the newest journal row's message_id, past the append-only trigger (as the owner)."""
    schema = quoted_schema(config.namespace.shard_schema(shard))
    conn = await _connect(config, shard)
    try:
        row = await conn.fetchrow(f"SELECT seq, message_id FROM {schema}.journal ORDER BY seq DESC LIMIT 1")  # noqa: S608
        if row is None:
            raise CorruptionFailed(f"shard {shard}'s journal is empty: nothing to alter")
        tampering = Tampering(shard, schema, row["seq"], row["message_id"])
        await _set(conn, tampering, (tampering.original,), tampering.altered)
    finally:
        await conn.close()
    return tampering


async def restore(config: LedgerConfig, tampering: Tampering) -> None:
    """Write the original message_id back, retrying transient errors for RESTORE_WITHIN_S (a retry
    after a commit whose answer was lost finds the original there already: that is restored too)."""
    deadline = time.monotonic() + RESTORE_WITHIN_S
    while True:
        try:
            conn = await _connect(config, tampering.shard)
            try:
                await _set(conn, tampering, (tampering.altered, tampering.original), tampering.original)
            finally:
                await conn.close()
            return
        except TRANSIENT_ERRORS:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def give_back(config: LedgerConfig, shard: int, watch: BreakerWatch, onset_s: float) -> str:
    """The operator's part after the restore: wait until the shard's chain verifies whole and the
    monitor has cleared its hash_chain alert (when one fired: then no audit of the altered row is
    still to come), then close the shard's breaker if it is open. Says what was done."""
    started = time.monotonic()
    deadline = started + AGREE_WITHIN_S
    while not all(r.ok for r in await verify_ledger(config, [shard])):
        if time.monotonic() > deadline:
            raise CorruptionFailed(
                f"shard {shard}'s chain still broken {AGREE_WITHIN_S:.0f}s after the restore"
            )
        await asyncio.sleep(0.5)
    verified_s = time.monotonic() - started
    while watch.alert_since(shard, "fired", onset_s) and not watch.alert_since(shard, "cleared", onset_s):
        if time.monotonic() > deadline:
            break  # the report shows no clear; the breaker is closed all the same, as an operator would
        await asyncio.sleep(0.5)
    said = f"chain whole {verified_s:.1f}s after the restore"
    state = (await read_breakers(config)).get(shard)
    if state is None or state.state != OPEN:
        return f"{said}; breaker not open, nothing to close"
    command = SetBreaker(str(uuid.uuid4()), shard, "close", CLOSE_REASON, "chaos")
    closed = await set_breaker(config, command, wait_s=AGREE_WITHIN_S)
    if closed is None:
        raise CorruptionFailed(f"{said}; the monitor did not apply the close within {AGREE_WITHIN_S:.0f}s")
    return f"{said}; breaker closed by the operator {time.monotonic() - started:.1f}s after the restore"


async def _connect(config: LedgerConfig, shard: int) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        config.shard_database_url(shard), timeout=5, server_settings={"application_name": "chaos nemesis"}
    )
    return conn


async def _set(conn: asyncpg.Connection, tampering: Tampering, was: tuple[str, ...], now: str) -> None:
    """Set the row's message_id to `now`, if it is one of `was` (else someone else changed it)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # past the append-only trigger
        done = await conn.execute(
            f"UPDATE {tampering.schema}.journal SET message_id = $1 WHERE seq = $2 AND message_id = ANY($3)",  # noqa: S608
            now, tampering.seq, list(was),
        )  # fmt: skip
    if done != "UPDATE 1":
        raise CorruptionFailed(
            f"shard {tampering.shard} seq {tampering.seq}: {done}, message_id not in {was}"
        )
