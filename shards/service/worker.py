"""The shard worker: commands from Kafka, applied in batches, with exactly one effect each.

For every batch, in this order:
1. poll up to N records from the shard's command topic (offsets not committed yet);
2. in ONE PostgreSQL transaction: check the fence, read the inbox for these message ids, lock and
   load the rows they touch, apply the commands in offset order through the pure domain, then
   write journal entries, balances, operations, inbox rows and outbox rows (replies);
3. only after that commit, commit the Kafka offset and wake the outbox relay.
A crash before 3 redelivers the batch: every message finds its inbox row, its stored reply is
queued again, and nothing else changes. A crash inside 2 rolls everything back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.context import Context

from infra import envelopes
from infra.envelopes import key_partition
from infra.figures import Figures
from infra.outbox import Committed, OutboxMessage
from infra.records import Refused
from infra.tracing import child_span_headers
from schemas.balances import BalanceChanged, encode_balance
from schemas.dead_letters import DeadLetter
from schemas.envelopes import REPLIES
from schemas.errors import LedgerError, Stalled
from schemas.partitioning import PartitionMap
from schemas.shard_messages import (
    ApplyLegs,
    ShardCommand,
    ShardReply,
    accounts_of,
    decode_reply,
    encode,
)
from schemas.topics import Namespace
from shards.domain.book import ShardBook
from shards.domain.model import Account
from shards.service.inbound import ShardInbound
from shards.service.ports import (
    Checkpoints,
    CommandSource,
    Head,
    ShardStore,
    SourceUnavailable,
    StoreRefused,
    StoreUnavailable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    shard: int
    """The shard this worker owns."""
    batch_max: int = 5000
    """Most commands applied in one database transaction."""
    poll_timeout_ms: int = 20
    """How long a poll waits for the first record when the topic is idle."""
    checkpoint_every_s: float = 1.0
    """How often the journal chain head is published to the control schema."""
    max_backoff_s: float = 5.0
    """Longest wait between retries of a batch that failed for an infrastructure reason."""
    stall_after_s: float = 30.0
    """A batch still unfinished after this long is stalled: the process starts again."""
    publish_balances: bool = True
    """Publish each changed balance onto the balances topic (schemas/balances.py)."""
    statement_timeout_s: float = 10.0
    """Longest one statement may take, and then its cancel request: without this bound a batch
    cancelled at its stall bound over a link gone silent never ends (coordinator/bootstrap.py)."""
    reply_partitions: int = 8
    """Partitions of the replies topic (LEDGER_PARTITIONS): one reply envelope per partition."""
    max_message_bytes: int = 256 * 1024
    """The topics' max.message.bytes (LEDGER_MAX_MESSAGE_BYTES): no envelope is larger."""


@dataclass
class WorkerStats:
    batches: int = 0
    commands: int = 0
    dead_letters: int = 0
    retries: int = 0
    rejections: int = 0


class ShardWorker:
    def __init__(
        self,
        settings: WorkerSettings,
        namespace: Namespace,
        store: ShardStore,
        source: CommandSource,
        control: Checkpoints,
        partition_map: PartitionMap,
        *,
        on_commit: Callable[[Sequence[Committed]], None] = lambda rows: None,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        figures: Figures | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = namespace
        self.store = store
        self.source = source
        self.control = control
        self.partition_map = partition_map
        self.on_commit = on_commit  # gets the outbox rows of each committed batch (to send at once)
        self._committed: list[Committed] = []
        self.clock_us = clock_us
        self.stats = WorkerStats()
        # Read once a second for the telemetry topic (and, metered, by infra/metrics' endpoint).
        self.figures = figures or Figures(settings.shard)
        self.epoch = 0
        self.head: Head | None = None
        self._checkpointed_seq = 0
        self._last_checkpoint = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until `stop` is set; the batch in progress is finished first."""
        self.epoch = await self.store.claim()
        log.info("shard %d: claimed as epoch %d", self.settings.shard, self.epoch)
        while not stop.is_set():
            try:
                records = await self.source.poll(self.settings.poll_timeout_ms)
            except SourceUnavailable as e:
                log.warning("shard %d: %s", self.settings.shard, e)
                await asyncio.sleep(0.5)
                continue
            if records:
                await self.process(records, stop)
            await self._maybe_checkpoint(force=False)
        await self._maybe_checkpoint(force=True)

    async def process(self, records: Sequence[ShardInbound], stop: asyncio.Event) -> None:
        """Apply one polled batch, retrying it whole on infrastructure errors, then commit offsets.

        A batch the database refuses (StoreRefused: the same every time) is applied one record at a
        time, and a record refused alone is dead-lettered: one record must never stop the shard."""
        try:
            await self._apply_retrying(records, stop)
        except StoreRefused as e:
            log.warning("shard %d: %s; applying the batch one record at a time", self.settings.shard, e)
            for record in records:
                try:
                    await self._apply_retrying([record], stop)
                except StoreRefused as refused:
                    place = record.origin.dead_letter_id
                    log.error("shard %d: dead-lettering %s: %s", self.settings.shard, place, refused)
                    await self._apply_retrying([record], stop, refused={place: str(refused)})
        committed, self._committed = self._committed, []
        self.on_commit(committed)
        self.source.commit(records[-1].origin.offset + 1)

    async def _apply_retrying(
        self,
        records: Sequence[ShardInbound],
        stop: asyncio.Event,
        refused: dict[str, str] | None = None,
    ) -> None:
        backoff = 0.05
        while True:
            try:
                async with asyncio.timeout(self.settings.stall_after_s):
                    await self._apply(records, refused or {})
                return
            except TimeoutError as e:  # a wedged connection: start again from fresh ones
                raise Stalled(f"shard {self.settings.shard}: a batch made no progress in "
                              f"{self.settings.stall_after_s:.0f}s") from e  # fmt: skip
            except StoreUnavailable as e:
                if stop.is_set():
                    raise  # uncommitted: the next worker gets the batch again
                self.stats.retries += 1
                self.figures.errors += 1
                log.warning("shard %d: batch failed (%s); retrying in %.2fs", self.settings.shard, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.max_backoff_s)

    async def _apply(self, records: Sequence[ShardInbound], refused: dict[str, str]) -> None:
        started, rejections = time.monotonic(), 0
        commands, dead, parents = self._decode(records, refused)
        async with self.store.batch(self.epoch) as tx:
            stored = await tx.replies_for([c.message_id for c in commands] + [d.inbox_id for d in dead])
            earlier = {
                c.message_id: decode_reply(stored[c.message_id]) for c in commands if c.message_id in stored
            }
            accounts, operations = await tx.load(*_touched(commands))
            book = ShardBook(
                self.settings.shard, self.partition_map, accounts, operations,
                tx.head.journal_seq, tx.head.journal_hash, self.clock_us(),
            )  # fmt: skip
            inbox: list[tuple[str, bytes]] = []
            outbox: list[OutboxMessage] = []
            for reply, first_time in book.apply_batch(commands, earlier):
                rejections += reply.outcome == "rejected"
                payload = encode(reply)
                if first_time:
                    inbox.append((reply.in_reply_to, payload))
                key = (reply.transfer_id or reply.account_id).encode()
                outbox.append(
                    OutboxMessage(self.namespace.shard_replies, key, payload, self._traced(reply, parents))
                )
            if self.settings.publish_balances:
                outbox += self._balances(book)
            for letter in dead:
                if letter.inbox_id not in stored:
                    inbox.append((letter.inbox_id, letter.encode()))
                    outbox.append(OutboxMessage(self.namespace.dead_letters, None, letter.encode(), {}))
            outbox = self._enveloped(outbox)
            head = await tx.write(book, inbox, outbox)
        self.head = head
        self.figures.batch_done(len(commands), rejections, (time.monotonic() - started) * 1000)
        first = head.outbox_seq - len(outbox) + 1
        self._committed += [Committed(first + i, m) for i, m in enumerate(outbox)]
        self.stats.batches += 1
        self.stats.commands += len(commands)
        self.stats.rejections += rejections
        self.stats.dead_letters += len(dead)

    def _decode(
        self, records: Sequence[ShardInbound], refused: dict[str, str]
    ) -> tuple[list[ShardCommand], list[DeadLetter], dict[str, Context]]:
        """Commands, dead letters (`refused`: messages the database refused, by dead-letter id, with
        why), and the trace context of each command that carries one."""
        commands: list[ShardCommand] = []
        dead: list[DeadLetter] = []
        parents: dict[str, Context] = {}
        for item in records:
            o, message = item.origin, item.message
            if (why := refused.get(o.dead_letter_id)) is not None:
                message = Refused("invalid_field", f"valid, but the database refuses it: {why}")
            if isinstance(message, Refused):
                dead.append(o.dead_letter(message.reason, message.detail))
                continue
            commands.append(message)
            if item.parent is not None:
                parents[message.message_id] = item.parent
        return commands, dead, parents

    def _balances(self, book: ShardBook) -> list[OutboxMessage]:
        """Each account the batch changed, as the batch left it (transit accounts are the ledger's
        own): one record per account per batch, however many transfers touched it."""
        change, seq, shard = book.changes(), book.last_seq, self.settings.shard
        return [
            OutboxMessage(self.namespace.balances, a.account_id.encode(), _balance(a, seq, shard), {})
            for a in (*change.created, *change.changed)
            if not a.is_transit
        ]

    def _enveloped(self, outbox: list[OutboxMessage]) -> list[OutboxMessage]:
        """Replies packed into one envelope per partition of the replies topic (infra/envelopes.py)."""
        replies, partitions = self.namespace.shard_replies, self.settings.reply_partitions
        return envelopes.pack(
            outbox, REPLIES,
            lambda m: key_partition(m.key, partitions) if m.topic == replies else None,
            self.settings.max_message_bytes,
        )  # fmt: skip

    def _traced(self, reply: ShardReply, parents: dict[str, Context]) -> dict[str, str]:
        """The reply's headers: a span of the command's trace, when the command carried one."""
        parent = parents.get(reply.in_reply_to)
        if parent is None:
            return {}  # untraced commands cost nothing here
        attributes: dict[str, str | int] = {
            "ledger.shard": self.settings.shard,
            "ledger.outcome": reply.outcome,
            "ledger.reason": reply.reason or "",
        }
        return child_span_headers(f"ledger.shard.{reply.command}", parent, attributes)

    async def _maybe_checkpoint(self, *, force: bool) -> None:
        head = self.head
        if head is None or head.journal_seq == self._checkpointed_seq:
            return
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self.settings.checkpoint_every_s:
            return
        try:
            await self.control.publish_checkpoint(self.settings.shard, head.journal_seq, head.journal_hash)
        except (OSError, LedgerError) as e:
            log.warning("shard %d: chain checkpoint not published yet: %s", self.settings.shard, e)
            return
        self._checkpointed_seq, self._last_checkpoint = head.journal_seq, now


def _touched(commands: Sequence[ShardCommand]) -> tuple[set[str], set[str], set[str]]:
    """Account ids, transfer ids and currencies a batch may read or change."""
    accounts: set[str] = set()
    transfers: set[str] = set()
    currencies: set[str] = set()
    for c in commands:
        accounts.update(accounts_of(c))
        if isinstance(c, ApplyLegs):  # each leg is a transfer of its own to the shard
            transfers.update(leg.transfer_id for leg in c.legs)
            currencies.update(leg.currency for leg in c.legs)
        if (transfer_id := getattr(c, "transfer_id", None)) is not None:
            transfers.add(transfer_id)
        if (currency := getattr(c, "currency", None)) is not None:
            currencies.add(currency)
    return accounts, transfers, currencies


def _balance(a: Account, journal_seq: int, shard: int) -> bytes:
    return encode_balance(BalanceChanged(
        a.account_id, a.currency, a.status, a.posted, a.reserved, a.pending_credit, a.available,
        journal_seq, shard,
    ))  # fmt: skip
