"""What reaches the coordinator's service: each Kafka record already decoded at the edge
(coordinator/adapters/kafka_records.py) into a typed message, a rejection to answer, or a refusal
to dead-letter, with where it came from and the trace it belongs to. No aiokafka type passes here.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.context import Context

from schemas.public import (
    CloseAccount,
    FreezeAccount,
    OpenAccountRequest,
    PublicRejection,
    TransferFunds,
    UnfreezeAccount,
)
from schemas.shard_messages import ShardReply

AccountCommand = OpenAccountRequest | FreezeAccount | UnfreezeAccount | CloseAccount


@dataclass(frozen=True)
class Refused:
    """A record no result can answer (no readable id): it is dead-lettered with this reason."""

    reason: str
    detail: str


Message = ShardReply | TransferFunds | AccountCommand | PublicRejection | Refused


@dataclass(frozen=True)
class Origin:
    """Where a message came from: its place in Kafka, and its bytes (a dead letter quotes them; a
    rejected transfer's fingerprint is their hash)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def dead_letter_id(self) -> str:
        """The inbox id of this record's dead letter: one per record, however often it comes."""
        return f"dlq:{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Inbound:
    message: Message
    origin: Origin
    parent: Context | None = None
    """The trace context the record's headers carried, if any."""
