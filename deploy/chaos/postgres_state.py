"""Reads the ledger's whole final state for the chaos checker: every saga, every shard's full
journal (with its hashes), operations, kept balances and limits. One snapshot when every schema
lives on one server (the local stack); otherwise one per shard, taken after the system is quiet.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import asyncpg

from coordinator.adapters.postgres_reconcile import read_snapshot
from coordinator.saga.reconciliation import OperationView, SagaView
from deploy.chaos.checker import LedgerState, Resolver, ShardState
from deploy.chaos.linked_checker import BatchRow
from infra.config import LedgerConfig
from infra.postgres_migrations import quoted_schema
from shards.adapters.postgres_shard_store import to_micros
from shards.domain.chain import ChainedEntry
from shards.domain.replay import Balance

OPEN_STATUSES = ("in_flight", "pending")


async def read_ledger(config: LedgerConfig, shards: list[int]) -> LedgerState:
    state, found, _ = await read_snapshot(config, shards, _coordinator, _shard)
    state.shards.update(found)
    return state


async def _coordinator(conn: asyncpg.Connection, schema: str) -> LedgerState:
    rows = await conn.fetch(
        "SELECT transfer_id, status, debit_account, credit_account, amount, currency, debit_shard,"
        " credit_shard, pending_timeout_ms IS NOT NULL OR batch_id IS NOT NULL, post_amount,"
        " batch_id IS NOT NULL, fingerprint, pending_id, batch_id, batch_state IS NOT NULL AS batch"
        f" FROM {schema}.transfers"
    )
    # A post or void of a pending transfer is a row of its own, not a saga: its effects are its
    # pending transfer's (reconciliation skips it likewise). A linked batch's row is no saga either
    # (no shards of its own); each of its legs is one, held and credited like a two-phase transfer
    # (as reconciliation reads them).
    sagas = {
        r[0]: SagaView(*r[:11]) for r in rows if r["debit_shard"] is not None and r["pending_id"] is None
    }
    resolvers = {
        r[0]: Resolver(r["pending_id"], r["status"], r["amount"])
        for r in rows
        if r["pending_id"] is not None and r["amount"] is not None
    }
    legs: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["batch_id"] is not None:
            legs[r["batch_id"]].add(r[0])
    batches = {r[0]: BatchRow(r["status"], frozenset(legs[r[0]])) for r in rows if r["batch"]}
    # A pending saga left pending after healing is as stuck as one in flight (its hold times out).
    unsettled = [r[0] for r in rows if r["status"] in OPEN_STATUSES]
    fingerprints = {r[0]: r["fingerprint"] for r in rows}
    return LedgerState(sagas, fingerprints, {}, unsettled, resolvers, batches)


async def _shard(conn: asyncpg.Connection, schema: str) -> ShardState:
    state = ShardState()
    journal = await conn.fetch(
        "SELECT seq, transfer_id, leg, kind, account_id, amount, currency, message_id, created_at,"
        f" prev_hash, hash FROM {schema}.journal ORDER BY seq"
    )
    state.journal = [
        ChainedEntry(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], to_micros(r[8]), bytes(r[9]), bytes(r[10])
        )
        for r in journal
    ]
    for r in await conn.fetch(
        f"SELECT transfer_id, kind, account_id, amount, state FROM {schema}.operations"
    ):
        state.operations[(r[0], r[1])] = OperationView(r[2], r[3], r[4])
    for r in await conn.fetch(
        "SELECT a.account_id, a.currency, a.overdraft_limit, b.posted, b.reserved, b.pending_credit"
        f" FROM {schema}.accounts a JOIN {schema}.balances b USING (account_id)"
    ):
        state.balances[r[0]] = Balance(r[3], r[4], r[5])
        state.currencies[r[0]] = r[1].strip()
        state.floors[r[0]] = -r[2]
    return state


async def wait_sagas_end(config: LedgerConfig, within_s: float) -> float | None:
    """Seconds until no saga is in flight or pending (every hold resolved), or None when the bound
    ran out."""
    schema = quoted_schema(config.namespace.coordinator_schema)
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        try:
            conn = await asyncpg.connect(config.database_url, timeout=5)
            try:
                left = await conn.fetchval(
                    f"SELECT count(*) FROM {schema}.transfers WHERE status = ANY($1::text[])",
                    list(OPEN_STATUSES),
                )
            finally:
                await conn.close()
            if left == 0:
                return time.monotonic() - start
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pass
        await asyncio.sleep(1.0)
    return None


async def stuck_sessions(config: LedgerConfig) -> list[dict[str, object]]:
    """Every session in a transaction for over 5 s, with the saga rows it locks: what holds up a
    saga that did not end after healing (a sweeper skips rows another transaction locked)."""
    schema = config.namespace.coordinator_schema
    conn = await asyncpg.connect(config.database_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event,"
            " extract(epoch FROM now() - a.xact_start)::int AS in_transaction_s, left(a.query, 200) AS query,"
            " (SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            "  JOIN pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE l.pid = a.pid AND n.nspname = $1 AND c.relname = 'transfers') AS transfers_locks"
            " FROM pg_stat_activity a WHERE a.xact_start < now() - interval '5 seconds'"
            " AND a.pid <> pg_backend_pid() ORDER BY a.xact_start",
            schema,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]
