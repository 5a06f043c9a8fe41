"""The coordinator's schema: transfers with their saga state, step history, inbox and outbox.

A batch locks the transfer rows it touches (in id order, so coordinators never deadlock), and
writes them back with an optimistic version check: a row another coordinator changed since it
was read fails the batch, which is then retried from a fresh read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import asyncpg
import orjson

from coordinator.adapters import batch_rows
from coordinator.saga.batch_saga import BatchState
from coordinator.saga.transfer_saga import CREDIT_SIDE, SagaState, Transfer
from coordinator.service.ports import (
    SagaStoreRefused,
    SagaStoreUnavailable,
    StepUpdate,
    TransferRecord,
    VersionConflict,
)
from infra.outbox import Committed, OutboxMessage
from infra.postgres_pool import TRANSIENT_ERRORS

# The errors and values are the port's (coordinator/service/ports.py); importable here as before.
__all__ = [
    "PostgresSagaStore",
    "PostgresSagaTransaction",
    "SagaStoreRefused",
    "SagaStoreUnavailable",
    "StepUpdate",
    "TransferRecord",
    "VersionConflict",
]


_COLUMNS = """transfer_id, fingerprint, partition, debit_account, credit_account, amount, currency,
    debit_shard, credit_shard, status, step, reason, attempts, next_attempt_ms, started_ms, parked, version,
    traceparent, pending_timeout_ms, expires_ms, resolution, post_amount, resolved_by, pending_id,
    batch_state, batch_id"""


def _record(r: asyncpg.Record) -> TransferRecord:
    terms = state = None
    if r["debit_shard"] is not None:
        terms = Transfer(
            r["transfer_id"], r["debit_account"], r["credit_account"], r["amount"], r["currency"],
            r["debit_shard"], r["credit_shard"], r["pending_timeout_ms"],
        )  # fmt: skip
    if r["batch_state"] is not None:  # a linked batch's saga
        batch = batch_rows.from_json(r["batch_state"])
        return TransferRecord(
            r["transfer_id"], r["fingerprint"], r["partition"], None, r["status"], r["reason"], r["version"],
            r["traceparent"], batch=batch,
        )  # fmt: skip
    if terms is not None and r["pending_id"] is None and r["batch_id"] is None:
        state = SagaState(
            terms, r["status"], r["step"], r["reason"], r["attempts"], r["next_attempt_ms"],
            r["started_ms"], r["parked"], r["expires_ms"], r["resolution"], r["post_amount"],
            r["resolved_by"],
        )  # fmt: skip
    return TransferRecord(
        r["transfer_id"], r["fingerprint"], r["partition"], state, r["status"], r["reason"], r["version"],
        r["traceparent"], r["pending_id"], terms if state is None else None, batch_id=r["batch_id"],
    )  # fmt: skip


def _row(rec: TransferRecord) -> tuple[object, ...]:
    t = rec.shown
    s: SagaState | BatchState | None = rec.state or rec.batch
    return (
        rec.transfer_id, rec.fingerprint, rec.partition,
        t.debit_account if t else None, t.credit_account if t else None, t.amount if t else None,
        t.currency if t else None, t.debit_shard if t else None, t.credit_shard if t else None,
        rec.status, s.step if s else "done", rec.reason, s.attempts if s else 0,
        s.next_attempt_ms if s else 0, s.started_ms if s else 0, s.parked if s else False, rec.version + 1,
        rec.traceparent,
        t.pending_timeout_ms if t else rec.batch.batch.pending_timeout_ms if rec.batch else None,
        s.expires_ms if s else 0, s.resolution if s else None,
        rec.state.post_amount if rec.state else None, s.resolved_by if s else None, rec.pending_id,
        batch_rows.to_json(rec.batch) if rec.batch else None, rec.batch_id,
    )  # fmt: skip


class PostgresSagaTransaction:
    """A SagaTransaction (coordinator/service/ports.py) on one connection's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.outbox_written: list[Committed] = []  # to hand to the relay once committed

    async def seen(self, message_ids: Sequence[str]) -> set[str]:
        rows = await self.conn.fetch(
            "SELECT i.message_id FROM unnest($1::text[]) AS m(id) JOIN inbox i ON i.message_id = m.id",
            message_ids,
        )
        return {r[0] for r in rows}

    async def load(self, transfer_ids: Iterable[str]) -> dict[str, TransferRecord]:
        rows = await self.conn.fetch(_LOAD, sorted(set(transfer_ids)))
        return {r["transfer_id"]: _record(r) for r in rows}

    async def due(
        self,
        partitions: Sequence[int],
        now_ms: int,
        limit: int,
        *,
        answering: Sequence[int] = (),
        started_before_ms: int = 0,
    ) -> list[TransferRecord]:
        """In-flight sagas of these partitions whose current command is due to be sent again,
        except those waiting on an `answering` shard that started after `started_before_ms`."""
        rows = await self.conn.fetch(
            _DUE, list(partitions), now_ms, limit, list(answering), started_before_ms, sorted(CREDIT_SIDE)
        )
        return [_record(r) for r in rows]

    async def write(
        self,
        changed: Sequence[TransferRecord],
        steps: Sequence[StepUpdate],
        inbox: Sequence[str],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        try:
            await self._write(changed, steps, inbox, outbox)
        except asyncpg.UniqueViolationError as e:
            # Two coordinators can hold the same records for a moment: one resumed from a pause,
            # or not yet told it lost the partition, and its successor. Whoever commits second
            # finds the first's inbox entry or new transfer here; a retry then sees them and skips.
            # Seen under ledger chaos (seed 12): raised as is, it restarted the coordinator.
            raise VersionConflict(f"another coordinator recorded this first ({e.constraint_name})") from e

    async def _write(
        self,
        changed: Sequence[TransferRecord],
        steps: Sequence[StepUpdate],
        inbox: Sequence[str],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        """Everything the batch decided, in ONE statement (one round trip, whatever its size)."""
        if not (changed or steps or inbox or outbox):
            return
        rows = [(*_row(r), r.version == 0) for r in changed]
        columns: list[Sequence[object]] = list(zip(*rows, strict=True)) if rows else [()] * (len(_TYPES) + 1)
        result = await self.conn.fetchrow(
            _WRITE_BATCH,
            *columns,
            [s.transfer_id for s in steps], [s.step for s in steps], [s.shard for s in steps],
            [s.command_id for s in steps], [s.outcome for s in steps], [s.reason for s in steps],
            list(inbox),
            [m.topic for m in outbox], [m.key for m in outbox], [m.payload for m in outbox],
            [orjson.dumps(m.headers).decode() for m in outbox],
        )  # fmt: skip
        assert result is not None
        old = sum(1 for r in changed if r.version > 0)
        if result["updated"] != old:
            raise VersionConflict(f"{old - result['updated']} sagas changed under this batch")
        # ids come from one sequence in row order, so in order they pair with the messages.
        self.outbox_written += map(Committed, result["outbox_ids"], outbox)


# Locked in id order, so that two coordinators touching the same sagas never deadlock.
# unnest + join, not `= ANY`: see postgres_shard_store (the planner chose sequential scans).
_LOAD = f"""
    SELECT {", ".join(f"t.{c.strip()}" for c in _COLUMNS.split(","))}
    FROM unnest($1::text[]) AS k(id) JOIN transfers t ON t.transfer_id = k.id
    ORDER BY t.transfer_id FOR UPDATE OF t"""
_DUE = f"""
    SELECT {_COLUMNS} FROM transfers
    WHERE status IN ('in_flight', 'pending') AND pending_id IS NULL AND batch_id IS NULL
    AND partition = ANY($1::int[])
    AND next_attempt_ms <= $2
    AND (step = 'held' OR batch_state IS NOT NULL OR started_ms < $5
         OR CASE WHEN step = ANY($6::text[]) THEN credit_shard ELSE debit_shard END <> ALL($4::int[]))
    ORDER BY next_attempt_ms LIMIT $3 FOR UPDATE SKIP LOCKED"""
_TYPES = ["text", "text", "int", "text", "text", "bigint", "text", "int", "int", "text", "text", "text",
          "int", "bigint", "bigint", "bool", "int", "text", "bigint", "bigint", "text", "bigint", "text",
          "text", "jsonb", "text"]  # fmt: skip
_ARRAYS = ", ".join(f"${i}::{t}[]" for i, t in enumerate([*_TYPES, "bool"], 1))
_N = len(_TYPES) + 1  # the parameters after the transfer columns (and is_new) are numbered from here
# Saga rows (new ones inserted, the others updated under their version), step history, inbox and
# outbox: one statement. Data-modifying CTEs all run, to completion, whether the SELECT reads them.
_WRITE_BATCH = f"""
    WITH u AS (SELECT * FROM unnest({_ARRAYS}) AS u({_COLUMNS}, is_new)),
    inserted AS (INSERT INTO transfers ({_COLUMNS}) SELECT {_COLUMNS} FROM u WHERE is_new),
    updated AS (
        UPDATE transfers t SET status = u.status, step = u.step, reason = u.reason,
            attempts = u.attempts, next_attempt_ms = u.next_attempt_ms, parked = u.parked,
            version = u.version, started_ms = u.started_ms, expires_ms = u.expires_ms,
            resolution = u.resolution, post_amount = u.post_amount, resolved_by = u.resolved_by,
            batch_state = u.batch_state,
            finished_at = CASE WHEN u.status NOT IN ('in_flight', 'pending')
                THEN coalesce(t.finished_at, now()) END
        FROM u WHERE NOT u.is_new AND t.transfer_id = u.transfer_id AND t.version = u.version - 1
        RETURNING 1),
    steps AS (
        INSERT INTO saga_steps AS s (transfer_id, step, shard, command_id, outcome, reason, answered_at)
        SELECT v.*, CASE WHEN v.outcome IS NULL THEN NULL ELSE now() END
        FROM unnest(${_N + 1}::text[], ${_N + 2}::text[], ${_N + 3}::int[], ${_N + 4}::text[],
                    ${_N + 5}::text[], ${_N + 6}::text[])
            AS v(transfer_id, step, shard, command_id, outcome, reason)
        ON CONFLICT (transfer_id, step) DO UPDATE SET
            sends = s.sends + CASE WHEN EXCLUDED.outcome IS NULL THEN 1 ELSE 0 END,
            last_sent_at = CASE WHEN EXCLUDED.outcome IS NULL THEN now() ELSE s.last_sent_at END,
            outcome = coalesce(EXCLUDED.outcome, s.outcome), reason = coalesce(EXCLUDED.reason, s.reason),
            answered_at = coalesce(s.answered_at, EXCLUDED.answered_at)),
    inbox AS (INSERT INTO inbox (message_id) SELECT unnest(${_N + 7}::text[])),
    outbox AS (
        INSERT INTO outbox (topic, key, payload, headers)
        SELECT t, k, p, h::jsonb
        FROM unnest(${_N + 8}::text[], ${_N + 9}::bytea[], ${_N + 10}::bytea[], ${_N + 11}::text[])
            AS o(t, k, p, h)
        RETURNING id)
    SELECT (SELECT count(*) FROM updated) AS updated,
        ARRAY(SELECT id FROM outbox ORDER BY id) AS outbox_ids"""


class PostgresSagaStore:
    """A SagaStore (coordinator/service/ports.py): one transaction per batch from the pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[PostgresSagaTransaction]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield PostgresSagaTransaction(conn)
        except TRANSIENT_ERRORS as e:
            raise SagaStoreUnavailable(f"coordinator transaction failed: {type(e).__name__}: {e}") from e
        except (asyncpg.DataError, asyncpg.CheckViolationError) as e:
            raise SagaStoreRefused(f"the database refuses the batch: {type(e).__name__}: {e}") from e
