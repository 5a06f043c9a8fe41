"""What handling one polled batch (or one sweep) decides, gathered for one store transaction, and
the shape of the handlers that decide it, one registered per message type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coordinator.service.inbound import Message
from coordinator.service.ports import StepUpdate, TransferRecord
from infra.outbox import OutboxMessage
from infra.records import Origin
from infra.tracing import current_headers
from schemas.shard_messages import ShardCommand, encode


@dataclass
class BatchChanges:
    """What handling a batch decided, for the store to write in one transaction."""

    records: dict[str, TransferRecord]
    changed: dict[str, TransferRecord] = field(default_factory=dict)
    steps: list[StepUpdate] = field(default_factory=list)
    inbox: list[str] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    """Inbox ids already recorded: by an earlier batch (read from the store) or by this one."""
    decided: list[str] = field(default_factory=list)
    """Step commands sent (their ids), and replies read (shard, the command answered): timed by the
    coordinator's StepClock once written."""
    replied: list[tuple[int, str]] = field(default_factory=list)

    def first_time(self, message_id: str) -> bool:
        """Inbox dedupe: whether this is the first time the ledger handles `message_id` (it is
        recorded now, so a second copy, in this batch or a later one, changes nothing)."""
        if message_id in self.seen:
            return False
        self.seen.add(message_id)
        self.inbox.append(message_id)
        return True

    def send(self, topic: str, transfer_id: str, step: str, shard: int, command: ShardCommand) -> None:
        """A saga step's command onto its shard's topic through the outbox, keyed by its transfer
        (so its reply comes back to the saga's coordinator), and into the step history."""
        self.outbox.append(OutboxMessage(topic, transfer_id.encode(), encode(command), current_headers()))
        self.steps.append(StepUpdate(transfer_id, step, shard, command.message_id))
        self.decided.append(command.message_id)


M = TypeVar("M", bound=Message)
Handler = Callable[[BatchChanges, M, Origin, int], None]
"""What handles one message of a batch: (the batch's changes so far, the message, where it came
from, the batch's time in ms)."""


def handles(kind: type[M], handler: Handler[M]) -> tuple[type[Any], Handler[Any]]:
    """One row of a handler table; mypy checks that `handler` takes a `kind`."""
    return kind, handler
