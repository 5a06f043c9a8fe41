"""What reaches a shard worker: each command record decoded at the edge
(shards/adapters/kafka_source.py) into a typed command or a refusal, with its origin and trace."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.context import Context

from infra.records import Origin, Refused
from schemas.shard_messages import ShardCommand


@dataclass(frozen=True)
class ShardInbound:
    message: ShardCommand | Refused
    origin: Origin
    parent: Context | None = None
    """The trace context the record's headers carried, if any."""
