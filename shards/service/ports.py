"""What the shard worker needs of its store, its command source and the control schema.

The worker talks to these Protocols only: the PostgreSQL and Kafka adapters (shards/adapters/)
implement them structurally, and tests/fakes.py implements them in memory, so the worker's
dedupe, dead letters, replays and retries are unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from infra.outbox import OutboxMessage
from schemas.errors import LedgerError, StoreUnavailable
from shards.domain.book import ShardBook
from shards.domain.model import Account, Operation

if TYPE_CHECKING:  # inbound carries a trace Context: read-only tools load this module without tracing
    from shards.service.inbound import ShardInbound

__all__ = [
    "Checkpoints",
    "CommandSource",
    "FencedOut",
    "Head",
    "ShardStore",
    "ShardTransaction",
    "SourceUnavailable",
    "StoreRefused",
    "StoreUnavailable",
]


class StoreRefused(LedgerError):
    """The store refuses what the batch writes (a value it cannot store, a check violated): the same
    rows are refused every time, so the worker finds the record that causes it and dead-letters it."""

    retriable = False


class FencedOut(LedgerError):
    """Another worker has claimed this shard since we did: stop writing at once."""

    retriable = False


class SourceUnavailable(LedgerError):
    retriable = True


@dataclass(frozen=True)
class Head:
    """Where the shard's journal chain and outbox sequence stand."""

    journal_seq: int
    journal_hash: bytes
    outbox_seq: int


class ShardTransaction(Protocol):
    """What one batch may do inside its transaction; all of it commits together or not at all."""

    @property
    def head(self) -> Head:
        """The heads as this transaction found them."""
        ...

    async def replies_for(self, message_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored reply (raw bytes) of every message id already processed."""
        ...

    async def load(
        self, account_ids: Iterable[str], transfer_ids: Iterable[str], currencies: Iterable[str]
    ) -> tuple[list[Account], list[Operation]]:
        """Lock and read the accounts (with the transit accounts of `currencies` and of any hold
        found) and the operations a batch may touch."""
        ...

    async def write(
        self, book: ShardBook, inbox: Sequence[tuple[str, bytes]], outbox: Sequence[OutboxMessage]
    ) -> Head:
        """Write what `book` changed plus the inbox and outbox rows; the new heads."""
        ...


class ShardStore(Protocol):
    async def claim(self) -> int:
        """Become the shard's only writer: a new epoch fences out any earlier one."""
        ...

    def batch(self, epoch: int) -> AbstractAsyncContextManager[ShardTransaction]:
        """A transaction holding the fence (FencedOut if `epoch` is no longer the writer's); commits
        when the block ends without an exception. Raises StoreUnavailable or StoreRefused."""
        ...


class CommandSource(Protocol):
    async def poll(self, timeout_ms: int) -> list[ShardInbound]:
        """The next commands, decoded at the edge. Raises SourceUnavailable."""
        ...

    def commit(self, next_offset: int) -> None:
        """Records before `next_offset` are durably processed."""
        ...


class Checkpoints(Protocol):
    async def publish_checkpoint(self, shard: int, seq: int, chain_hash: bytes) -> None:
        """Publish a journal chain head where auditors read it."""
        ...
