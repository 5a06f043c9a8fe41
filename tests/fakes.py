"""In-memory implementations of the services' ports (coordinator/service/ports.py,
shards/service/ports.py), so unit tests drive Coordinator and ShardWorker in milliseconds.

They keep what the PostgreSQL adapters guarantee and the services rely on: a batch's writes become
visible only when its block ends without an exception; the inbox remembers across batches; a saga
row written under a stale version, or an inbox id or new transfer recorded twice, is a
VersionConflict; a stale shard epoch is fenced out. A test can make the next write fail
(`fail_next_write`) or have the store refuse what it cannot store (`refuse`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from coordinator.saga.transfer_saga import waiting_on
from coordinator.service.coordinator import Coordinator
from coordinator.service.inbound import Inbound
from coordinator.service.ports import SagaStoreRefused, StepUpdate, TransferRecord, VersionConflict
from infra.outbox import Committed, OutboxMessage
from schemas.errors import LedgerError
from shards.domain.book import ChangeSet, ShardBook
from shards.domain.model import GENESIS_HASH, Account, JournalEntry, Operation, transit_account
from shards.service.inbound import ShardInbound
from shards.service.ports import FencedOut, Head, StoreRefused

# --- the coordinator's saga store ------------------------------------------------------------------


class FakeSagaStore:
    """A SagaStore: the committed transfers, step history, inbox and outbox, in memory."""

    def __init__(
        self,
        records: Iterable[TransferRecord] = (),
        *,
        refuse: Callable[[TransferRecord], bool] | None = None,
    ) -> None:
        self.transfers = {r.transfer_id: replace(r) for r in records}
        self.refuse = refuse
        """Saga rows the store cannot hold: a batch writing one raises SagaStoreRefused."""
        self.changed: list[TransferRecord] = []  # every saga row committed, in commit order
        self.steps: list[StepUpdate] = []
        self.inbox: list[str] = []
        self.outbox: list[OutboxMessage] = []
        self.commits = 0
        self._outbox_ids = 0
        self._failures: list[LedgerError] = []

    def fail_next_write(self, *errors: LedgerError) -> None:
        """The next writes raise these, one each (as a conflict or an outage would)."""
        self._failures += errors

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[FakeSagaTransaction]:
        tx = FakeSagaTransaction(self)
        yield tx  # an exception out of the block skips the commit: nothing it wrote is kept
        assert not tx.failed, "a batch whose write failed must not commit (PostgreSQL keeps part of it)"
        self._commit(tx)

    def _commit(self, tx: FakeSagaTransaction) -> None:
        self.transfers.update(tx.written)
        self.changed += [replace(r) for r in tx.changed]
        self.steps += tx.steps
        self.inbox += tx.inbox
        self.outbox += tx.outbox
        self.commits += 1

    def next_outbox_id(self) -> int:
        self._outbox_ids += 1
        return self._outbox_ids


class FakeSagaTransaction:
    """A SagaTransaction: reads see what was committed plus this transaction's own writes."""

    def __init__(self, store: FakeSagaStore) -> None:
        self.store = store
        self.outbox_written: list[Committed] = []
        self.written: dict[str, TransferRecord] = {}  # rows as stored, version bumped
        self.changed: list[TransferRecord] = []
        self.steps: list[StepUpdate] = []
        self.inbox: list[str] = []
        self.outbox: list[OutboxMessage] = []
        self.failed = False

    def _row(self, transfer_id: str) -> TransferRecord | None:
        return self.written.get(transfer_id) or self.store.transfers.get(transfer_id)

    async def seen(self, message_ids: Sequence[str]) -> set[str]:
        return set(message_ids) & {*self.store.inbox, *self.inbox}

    async def load(self, transfer_ids: Iterable[str]) -> dict[str, TransferRecord]:
        rows = {t: self._row(t) for t in set(transfer_ids)}
        return {t: replace(r) for t, r in rows.items() if r is not None}  # copies, as read

    async def due(
        self,
        partitions: Sequence[int],
        now_ms: int,
        limit: int,
        *,
        answering: Sequence[int] = (),
        started_before_ms: int = 0,
    ) -> list[TransferRecord]:
        rows = [r for t in {*self.store.transfers, *self.written} if (r := self._row(t)) is not None]

        def is_due(r: TransferRecord) -> bool:
            s = r.state or r.batch
            if s is None or r.status not in ("in_flight", "pending") or r.partition not in partitions:
                return False
            if s.next_attempt_ms > now_ms:
                return False
            if r.state is None:  # a batch waits on several shards: its timer is not held back
                return True
            return (
                s.step == "held" or s.started_ms < started_before_ms or waiting_on(r.state) not in answering
            )

        due = sorted((r for r in rows if is_due(r)), key=lambda r: (r.state or r.batch).next_attempt_ms)  # type: ignore[union-attr]
        return [replace(r) for r in due[:limit]]

    async def write(
        self,
        changed: Sequence[TransferRecord],
        steps: Sequence[StepUpdate],
        inbox: Sequence[str],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        self.failed = True  # until it succeeds
        if self.store._failures:
            raise self.store._failures.pop(0)
        if self.store.refuse is not None and any(self.store.refuse(r) for r in changed):
            raise SagaStoreRefused("the database refuses the batch: CheckViolationError: (fake)")
        for rec in changed:
            row = self._row(rec.transfer_id)
            if (row.version if row else 0) != rec.version:
                raise VersionConflict(f"saga {rec.transfer_id} changed under this batch")
        if recorded := set(inbox) & {*self.store.inbox, *self.inbox}:
            raise VersionConflict(f"another coordinator recorded this first ({sorted(recorded)})")
        self.written.update({r.transfer_id: replace(r, version=r.version + 1) for r in changed})
        self.changed += changed
        self.steps += steps
        self.inbox += inbox
        self.outbox += outbox
        self.outbox_written += [Committed(self.store.next_outbox_id(), m) for m in outbox]
        self.failed = False


# --- the shard's store, command source and checkpoints ---------------------------------------------


def _copy(account: Account) -> Account:
    return replace(account, metadata=dict(account.metadata))


class FakeShardStore:
    """A ShardStore: one shard's accounts, operations, journal, inbox and outbox, in memory."""

    def __init__(
        self,
        accounts: Iterable[Account] = (),
        operations: Iterable[Operation] = (),
        *,
        refuse: Callable[[ChangeSet], bool] | None = None,
    ) -> None:
        self.accounts = {a.account_id: _copy(a) for a in accounts}
        self.operations = {o.key: replace(o) for o in operations}
        self.refuse = refuse
        """Change sets the store cannot hold: a batch writing one raises StoreRefused."""
        self.entries: list[JournalEntry] = []
        self.inbox: dict[str, bytes] = {}  # message id -> the reply given, in commit order
        self.outbox: list[OutboxMessage] = []
        self.head = Head(0, GENESIS_HASH, 0)
        self.epoch = 0
        self.commits = 0
        self._failures: list[LedgerError] = []

    def fail_next_write(self, *errors: LedgerError) -> None:
        """The next writes raise these, one each (StoreUnavailable: an outage)."""
        self._failures += errors

    async def claim(self) -> int:
        self.epoch += 1
        return self.epoch

    @asynccontextmanager
    async def batch(self, epoch: int) -> AsyncIterator[FakeShardTransaction]:
        if epoch != self.epoch:
            raise FencedOut(f"epoch {epoch} is no longer this shard's writer")
        tx = FakeShardTransaction(self)
        yield tx  # an exception out of the block skips the commit: nothing it wrote is kept
        if tx.written is not None:
            self._commit(tx.written)

    def _commit(self, written: _Written) -> None:
        change = written.change
        self.accounts.update((a.account_id, _copy(a)) for a in [*change.created, *change.changed])
        self.operations.update((o.key, replace(o)) for o in change.operations)
        self.entries += change.entries
        self.inbox.update(written.inbox)
        self.outbox += written.outbox
        self.head = written.head
        self.commits += 1


@dataclass
class _Written:
    change: ChangeSet
    inbox: Sequence[tuple[str, bytes]]
    outbox: Sequence[OutboxMessage]
    head: Head


class FakeShardTransaction:
    """A ShardTransaction: reads what was committed; its one write is kept if the batch commits."""

    def __init__(self, store: FakeShardStore) -> None:
        self.store = store
        self.head = store.head
        self.written: _Written | None = None

    async def replies_for(self, message_ids: Sequence[str]) -> dict[str, bytes]:
        return {m: self.store.inbox[m] for m in message_ids if m in self.store.inbox}

    async def load(
        self, account_ids: Iterable[str], transfer_ids: Iterable[str], currencies: Iterable[str]
    ) -> tuple[list[Account], list[Operation]]:
        transfers = set(transfer_ids)
        operations = [replace(o) for o in self.store.operations.values() if o.transfer_id in transfers]
        currencies = {*currencies, *(o.currency for o in operations)}
        wanted = {*account_ids, *(transit_account(c) for c in currencies)}
        return [_copy(a) for a in self.store.accounts.values() if a.account_id in wanted], operations

    async def write(
        self, book: ShardBook, inbox: Sequence[tuple[str, bytes]], outbox: Sequence[OutboxMessage]
    ) -> Head:
        if self.store._failures:
            raise self.store._failures.pop(0)
        assert self.written is None, "one write per batch transaction"
        change = book.changes()
        if self.store.refuse is not None and self.store.refuse(change):
            raise StoreRefused("the database refuses the batch: DataError: (fake)")
        # What PostgreSQL's keys would refuse outright: a bug in the worker, not a retriable error.
        again = {m for m, _ in inbox} & set(self.store.inbox)
        assert not again, f"inbox rows written twice: {sorted(again)}"
        seqs = [e.seq for e in change.entries]
        assert seqs == list(range(self.head.journal_seq + 1, book.last_seq + 1)), "journal gap or overlap"
        head = Head(book.last_seq, book.last_hash, self.head.outbox_seq + len(outbox))
        self.written = _Written(change, list(inbox), list(outbox), head)
        return head


class FakeCommandSource:
    """A CommandSource: hands out the given batches in order, then nothing (setting `drained`)."""

    def __init__(self, *batches: Sequence[ShardInbound]) -> None:
        self.batches = [list(b) for b in batches]
        self.committed = -1  # the next offset to read, once committed
        self.drained = asyncio.Event()

    async def poll(self, timeout_ms: int) -> list[ShardInbound]:
        if not self.batches:
            self.drained.set()
            await asyncio.sleep(0)
            return []
        return self.batches.pop(0)

    def commit(self, next_offset: int) -> None:
        self.committed = next_offset


@dataclass
class FakeCheckpoints:
    """Checkpoints: the chain heads published, in order."""

    published: list[tuple[int, int, bytes]] = field(default_factory=list)

    async def publish_checkpoint(self, shard: int, seq: int, chain_hash: bytes) -> None:
        self.published.append((shard, seq, chain_hash))


async def handle_batch(coordinator: Coordinator, store: FakeSagaStore, batch: Sequence[Inbound]) -> set[str]:
    """One polled batch through the coordinator in one store transaction (bootstrap._handle without
    retries or the relay)."""
    async with store.batch() as tx:
        return await coordinator.handle(tx, batch)
