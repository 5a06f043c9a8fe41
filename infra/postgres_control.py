"""The control schema: the partition map (versioned data) and published journal chain heads."""

from __future__ import annotations

import asyncpg

from infra.postgres_pool import StoreUnavailable
from schemas.errors import ConfigurationError
from schemas.partitioning import VIRTUAL_PARTITIONS, PartitionMap


class PostgresControl:
    """Reached through a pool whose connections have the control schema as search_path."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load_partition_map(self) -> PartitionMap:
        async with self.pool.acquire() as conn:
            version = await conn.fetchval("SELECT max(version) FROM partition_maps")
            if version is None:
                raise ConfigurationError("no partition map: run `ledger init --shards N` first")
            rows = await conn.fetch(
                "SELECT vpartition, shard FROM partition_assignments WHERE version = $1", version
            )
        return PartitionMap.from_rows(version, [(r[0], r[1]) for r in rows])

    async def ensure_partition_map(self, shard_count: int) -> PartitionMap:
        """Create version 1 for `shard_count` shards, or check the existing map agrees."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE partition_maps IN EXCLUSIVE MODE")
            existing = await conn.fetchval("SELECT max(version) FROM partition_maps")
            if existing is None:
                pmap = PartitionMap.initial(shard_count)
                await conn.execute(
                    "INSERT INTO partition_maps (version, shard_count) VALUES ($1, $2)",
                    pmap.version,
                    shard_count,
                )
                await conn.copy_records_to_table(
                    "partition_assignments",
                    records=[(pmap.version, vp, pmap.shards[vp]) for vp in range(VIRTUAL_PARTITIONS)],
                    columns=["version", "vpartition", "shard"],
                )
                return pmap
        pmap = await self.load_partition_map()
        if pmap.shard_count != shard_count:
            raise ConfigurationError(
                f"the ledger already has {pmap.shard_count} shards "
                f"(partition map v{pmap.version}), not {shard_count}"
            )
        return pmap

    async def publish_checkpoint(self, shard: int, seq: int, chain_hash: bytes) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO chain_checkpoints (shard, seq, hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                shard, seq, chain_hash,
            )  # fmt: skip
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreUnavailable(f"publishing shard {shard}'s chain head: {e}") from e

    async def checkpoints(self, shard: int) -> list[tuple[int, bytes]]:
        rows = await self.pool.fetch(
            "SELECT seq, hash FROM chain_checkpoints WHERE shard = $1 ORDER BY seq", shard
        )
        return [(r[0], bytes(r[1])) for r in rows]
