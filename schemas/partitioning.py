"""Account -> virtual partition -> shard. Every component routes through `PartitionMap.shard_for`.

The hash is stable across processes, machines and Python versions (not `hash()`), and the map from
virtual partitions to shards is data with a version, so partitions can later move between shards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

VIRTUAL_PARTITIONS: Final = 1024


def virtual_partition(account_id: str) -> int:
    digest = hashlib.blake2b(account_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % VIRTUAL_PARTITIONS


@dataclass(frozen=True)
class PartitionMap:
    """Version `version` of the assignment: `shards[vp]` owns virtual partition `vp`."""

    version: int
    shards: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.shards) != VIRTUAL_PARTITIONS:
            raise ValueError(
                f"a partition map covers {VIRTUAL_PARTITIONS} partitions, not {len(self.shards)}"
            )

    @classmethod
    def initial(cls, shard_count: int) -> PartitionMap:
        """Contiguous ranges of virtual partitions, one per shard: the version-1 map."""
        if not 1 <= shard_count <= VIRTUAL_PARTITIONS:
            raise ValueError(f"shard count must be 1..{VIRTUAL_PARTITIONS}, not {shard_count}")
        return cls(1, tuple(vp * shard_count // VIRTUAL_PARTITIONS for vp in range(VIRTUAL_PARTITIONS)))

    @classmethod
    def from_rows(cls, version: int, rows: Sequence[tuple[int, int]]) -> PartitionMap:
        """Build from (virtual partition, shard) rows as stored."""
        shards = [-1] * VIRTUAL_PARTITIONS
        for vp, shard in rows:
            shards[vp] = shard
        if -1 in shards:
            raise ValueError(f"partition map version {version} leaves partition {shards.index(-1)} unowned")
        return cls(version, tuple(shards))

    @property
    def shard_count(self) -> int:
        return len(set(self.shards))

    def shard_for(self, account_id: str) -> int:
        return self.shards[virtual_partition(account_id)]
