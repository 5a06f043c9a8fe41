"""Kafka topic names: the one place they are spelled."""

from __future__ import annotations

from typing import Final

SHARD_REPLIES: Final = "ledger.shard-replies"
SHARD_DEAD_LETTERS: Final = "ledger.shard-dead-letters"


def shard_commands(shard: int) -> str:
    """Each shard consumes one single-partition topic: a total order of its commands."""
    return f"ledger.shard.{shard:02d}.commands"


def shard_schema(shard: int) -> str:
    """The PostgreSQL schema a shard owns (from its number, never from message content)."""
    return f"shard_{shard:02d}"
