"""Every shard's hash chain verified against its published heads, read as `ledger verify`, the
monitor's continuous audit and `ledger doctor` all read it (one pool at a time, closed after)."""

from __future__ import annotations

from collections.abc import Sequence

from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool
from shards.service.audit import ChainReport, verify_chain


async def verify_ledger(config: LedgerConfig, shards: Sequence[int] | None = None) -> list[ChainReport]:
    """A ChainReport per shard (`shards`, or every shard of the partition map), in shard order."""
    ns = config.namespace
    pool = await open_pool(config.database_url, ns.control_schema, max_size=1)
    try:
        control = PostgresControl(pool)
        chosen = sorted(set(shards if shards is not None else (await control.load_partition_map()).shards))
        heads = {s: await control.checkpoints(s) for s in chosen}
    finally:
        await pool.close()
    reports = []
    for shard in chosen:
        shard_pool = await open_pool(config.shard_database_url(shard), ns.shard_schema(shard), max_size=1)
        try:
            reports.append(await verify_chain(shard_pool, shard, heads[shard]))
        finally:
            await shard_pool.close()
    return reports
