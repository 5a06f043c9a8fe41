"""What the coordinator's service needs of its saga store, as Protocols and the values they carry.

The service talks to these only: the PostgreSQL adapter (coordinator/adapters/postgres_sagas.py)
implements them structurally, and tests/fakes.py implements them in memory, so the service's
dedupe, dead letters and retries are unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from coordinator.saga.batch_saga import BatchState
from coordinator.saga.transfer_saga import PENDING, SagaState, Transfer
from infra.outbox import Committed, OutboxMessage
from schemas.errors import LedgerError


class VersionConflict(LedgerError):
    """Another coordinator changed a saga since this batch read it: retry the batch."""

    retriable = True


class SagaStoreUnavailable(LedgerError):
    retriable = True


class SagaStoreRefused(LedgerError):
    """The store refuses what the batch writes (a value it cannot store, a check violated): the same
    every time, so the coordinator finds the record that causes it and dead-letters it."""

    retriable = False


@dataclass
class TransferRecord:
    """A transfers row. `state` is None for a command rejected before it could be routed."""

    transfer_id: str
    fingerprint: str
    partition: int
    state: SagaState | None
    status: str
    reason: str | None
    version: int  # as read; 0 for a row this batch creates
    traceparent: str | None = None  # W3C trace context of the transfer's trace
    pending_id: str | None = None
    """Set on a post or void of a pending transfer: that transfer's id. Such a row has no saga of
    its own (`state` None); it ends when the pending transfer's resolution does."""
    terms: Transfer | None = None
    """What its results show when `state` is None (a post's or void's accounts and amount; a leg's)."""
    batch: BatchState | None = None
    """A linked batch's saga (`state` is then None)."""
    batch_id: str | None = None
    """Set on a leg of a linked batch: the batch's id. Its status follows the batch's."""

    @property
    def terminal(self) -> bool:
        return self.status not in ("in_flight", PENDING)

    @property
    def shown(self) -> Transfer | None:
        """The accounts, amount and currency its results show."""
        return self.state.transfer if self.state is not None else self.terms


@dataclass(frozen=True)
class StepUpdate:
    transfer_id: str
    step: str
    shard: int
    command_id: str
    outcome: str | None = None  # set when this update records the step's answer
    reason: str | None = None


class SagaTransaction(Protocol):
    """One batch's transaction: everything read and written in it commits together or not at all."""

    outbox_written: list[Committed]
    """The outbox rows `write` committed, numbered by the store, to hand to the relay."""

    async def seen(self, message_ids: Sequence[str]) -> set[str]:
        """The ids among `message_ids` already in the inbox."""
        ...

    async def load(self, transfer_ids: Iterable[str]) -> dict[str, TransferRecord]:
        """The sagas of these ids that exist, locked for this transaction."""
        ...

    async def due(
        self,
        partitions: Sequence[int],
        now_ms: int,
        limit: int,
        *,
        answering: Sequence[int] = (),
        started_before_ms: int = 0,
    ) -> list[TransferRecord]:
        """In-flight sagas of these partitions whose current command is due to be sent again,
        except those waiting on an `answering` shard that started after `started_before_ms`."""
        ...

    async def write(
        self,
        changed: Sequence[TransferRecord],
        steps: Sequence[StepUpdate],
        inbox: Sequence[str],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        """Write what the batch decided. Raises VersionConflict if a saga changed since it was
        read (or another writer recorded the same inbox id or new transfer first)."""
        ...


class SagaStore(Protocol):
    def batch(self) -> AbstractAsyncContextManager[SagaTransaction]:
        """A transaction that commits when the block ends without an exception. Raises
        SagaStoreUnavailable (retry the batch) or SagaStoreRefused (the same every time)."""
        ...
