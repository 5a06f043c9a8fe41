"""What reaches the coordinator's service: each Kafka record already decoded at the edge
(coordinator/adapters/kafka_records.py) into a typed message, a rejection to answer, or a refusal
to dead-letter, with where it came from and the trace it belongs to. No aiokafka type passes here.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.context import Context

from infra.records import Origin, Refused
from schemas.public import (
    CloseAccount,
    FreezeAccount,
    OpenAccountRequest,
    PostPendingTransfer,
    PublicRejection,
    TransferBatch,
    TransferFunds,
    UnfreezeAccount,
    VoidPendingTransfer,
)
from schemas.shard_messages import ShardReply

AccountCommand = OpenAccountRequest | FreezeAccount | UnfreezeAccount | CloseAccount


Message = (
    ShardReply
    | TransferFunds
    | PostPendingTransfer
    | VoidPendingTransfer
    | TransferBatch
    | AccountCommand
    | PublicRejection
    | Refused
)


@dataclass(frozen=True)
class Inbound:
    message: Message
    origin: Origin
    parent: Context | None = None
    """The trace context the record's headers carried, if any."""
