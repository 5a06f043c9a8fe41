"""Kafka offset commits taken off the processing path.

Processing hands offsets over only after PostgreSQL has committed their batch; they are committed
here in the background at most every `interval_s`, with later offsets folded into the next commit.
Two measured reasons (benchmark machine, Kafka 4.1): an awaited commit cost each batch a broker
round trip of about 8 ms on every hop, and a commit per batch made offset commits the broker's
main CPU cost (one producer/consumer pair at 1,000 messages/s: 99% of a core with a commit per
batch, 38% without). A commit that is late or lost only means a redelivery after a restart,
which the inbox absorbs.

In a consumer group, a commit must not race a rebalance. One sent with the old generation while
the member rejoins is refused (IllegalGeneration), and aiokafka then resets the member and rejoins
again, which starts the next rebalance. Retried every interval, such a commit kept a two-member
group rebalancing every 2 s for over a minute (found by `ledger chaos`, seed 12). So, as the
group's rebalance listener, commits are flushed when partitions are revoked (the generation is
still valid then) and held until the new assignment; and a commit the group refused is dropped,
never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

log = logging.getLogger(__name__)


class CoalescedCommits(ConsumerRebalanceListener):
    """Pass it as the listener when subscribing (`consumer.subscribe(topics, listener=commits)`);
    with manually assigned partitions there is no rebalance to race."""

    def __init__(self, consumer: AIOKafkaConsumer, label: str, interval_s: float = 0.2) -> None:
        self.consumer = consumer
        self.interval_s = interval_s
        self.label = label
        self.pending: dict[TopicPartition, int] = {}
        self.commits = 0
        self.failures = 0
        self.rebalancing = False
        self._task: asyncio.Task[None] | None = None

    def advance(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets (next to read) whose records are durably processed; committed soon."""
        self.pending.update(offsets)
        if not self.rebalancing and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._paced())

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """A rebalance begins: commit what is processed while this generation still counts."""
        self.rebalancing = True
        await self.flush()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """It ended: offsets of partitions now another's are theirs to commit."""
        self.pending = {tp: offset for tp, offset in self.pending.items() if tp in assigned}
        self.rebalancing = False
        if self.pending:
            self.advance({})

    async def _paced(self) -> None:
        while self.pending and not self.rebalancing:
            await self._drain()
            await asyncio.sleep(self.interval_s)

    async def flush(self) -> None:
        """Commit whatever is pending (on the way out)."""
        if self._task is not None:
            self._task.cancel()  # it may be sleeping out its interval
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drain()

    async def _drain(self) -> None:
        if not self.pending:
            return
        offsets, self.pending = self.pending, {}
        try:
            await self.consumer.commit(offsets)
            self.commits += 1
        except asyncio.CancelledError:
            self._keep(offsets, self.consumer.assignment())
            raise
        except CommitFailedError as e:
            # The group has moved on: retrying would only race the next rebalance (see above).
            self.failures += 1
            log.warning("%s: offset commit refused by the group, dropped (a redelivery is absorbed): %s",
                        self.label, e)  # fmt: skip
        except KafkaError as e:
            self.failures += 1
            # A partition this consumer lost is another's to commit now.
            self._keep(offsets, self.consumer.assignment())
            log.warning("%s: offset commit failed (the inbox absorbs a redelivery): %s", self.label, e)

    def _keep(self, offsets: dict[TopicPartition, int], owned: set[TopicPartition]) -> None:
        """Put offsets back for the next commit, unless newer ones came meanwhile."""
        for tp, offset in offsets.items():
            if tp in owned:
                self.pending.setdefault(tp, offset)
