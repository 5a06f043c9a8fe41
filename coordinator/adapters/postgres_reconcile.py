"""Reads what reconciliation needs, in one snapshot when every schema lives on one server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from coordinator.saga.reconciliation import EntryGroup, OperationView, SagaView, ShardView
from infra.config import LedgerConfig
from infra.postgres_migrations import quoted_schema

C = TypeVar("C")
S = TypeVar("S")


async def read_snapshot(
    config: LedgerConfig,
    shards: list[int],
    read_coordinator: Callable[[asyncpg.Connection, str], Awaitable[C]],
    read_shard: Callable[[asyncpg.Connection, str], Awaitable[S]],
) -> tuple[C, dict[int, S], bool]:
    """Read the coordinator's schema and each shard's (each reader gets a connection and the
    quoted schema), in one REPEATABLE READ snapshot when every schema lives on one server.
    Returns (coordinator's, shards', one_snapshot); without one, in-flight sagas may look torn."""
    ns = config.namespace
    one_server = all(config.shard_database_url(s) == config.database_url for s in shards)
    conn = await asyncpg.connect(config.database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            coordinator = await read_coordinator(conn, quoted_schema(ns.coordinator_schema))
            found = {}
            for shard in shards:
                schema = quoted_schema(ns.shard_schema(shard))
                if one_server:
                    found[shard] = await read_shard(conn, schema)
                    continue
                other = await asyncpg.connect(config.shard_database_url(shard))
                try:
                    found[shard] = await read_shard(other, schema)
                finally:
                    await other.close()
    finally:
        await conn.close()
    return coordinator, found, one_server


async def read_views(
    config: LedgerConfig, shards: list[int]
) -> tuple[dict[str, SagaView], dict[int, ShardView], bool]:
    """(sagas, shard views, one_snapshot): what reconciliation reads."""
    return await read_snapshot(config, shards, _sagas, _shard)


async def _sagas(conn: asyncpg.Connection, schema: str) -> dict[str, SagaView]:
    rows = await conn.fetch(
        "SELECT transfer_id, status, debit_account, credit_account, amount, currency, debit_shard,"
        " credit_shard, pending_timeout_ms IS NOT NULL OR batch_id IS NOT NULL, post_amount,"
        " batch_id IS NOT NULL"
        # a post or void of a pending transfer is no saga: its effects are its pending transfer's
        f" FROM {schema}.transfers WHERE debit_shard IS NOT NULL AND pending_id IS NULL"
    )
    return {r[0]: SagaView(*r) for r in rows}


async def _shard(conn: asyncpg.Connection, schema: str) -> ShardView:
    view = ShardView()
    # One pass over the journal: every entry, grouped by what it says (a legitimate group is one
    # entry), so that reconciliation can hold each against the saga it claims to belong to.
    for r in await conn.fetch(
        "SELECT transfer_id, kind, leg, account_id, currency, count(*), sum(amount)"
        f" FROM {schema}.journal GROUP BY transfer_id, kind, leg, account_id, currency"
    ):
        view.add_entries(EntryGroup(r[0], r[1], r[2], r[3], r[4].strip()), r[5], int(r[6]))
    for r in await conn.fetch(
        f"SELECT transfer_id, kind, account_id, amount, state FROM {schema}.operations"
    ):
        view.operations[(r[0], r[1])] = OperationView(r[2], r[3], r[4])
    for r in await conn.fetch(
        f"SELECT a.currency, b.posted FROM {schema}.accounts a JOIN {schema}.balances b USING (account_id)"
        " WHERE a.account_id LIKE 'transit:%'"
    ):
        view.transit[r[0].strip()] = r[1]
    return view
