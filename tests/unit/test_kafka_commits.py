"""Offset commits off the processing path, and never racing a rebalance.

Regression for what `ledger chaos` (seed 12) found: a commit refused during a rebalance was kept
and retried every 200 ms, each retry refused again and making aiokafka rejoin, so two
coordinators rebalanced every 2 s for over a minute and sagas stalled. The consumer here is a
stand-in that records commits and refuses them on demand: what is tested is our policy."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, GroupCoordinatorNotAvailableError

from infra.kafka_commits import CoalescedCommits

A, B = TopicPartition("ledger.transfers", 0), TopicPartition("ledger.transfers", 1)


class Consumer:
    def __init__(self) -> None:
        self.committed: list[dict[TopicPartition, int]] = []
        self.refuse: list[Exception] = []
        self.owned = {A, B}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            raise self.refuse.pop(0)
        self.committed.append(dict(offsets))

    def assignment(self) -> set[TopicPartition]:
        return self.owned


def commits_on(consumer: Consumer) -> CoalescedCommits:
    return CoalescedCommits(cast(AIOKafkaConsumer, cast(Any, consumer)), "test", interval_s=0.01)


async def test_chaos_seed_12_a_commit_the_group_refused_is_dropped_not_retried() -> None:
    consumer = Consumer()
    commits = commits_on(consumer)
    consumer.refuse.append(CommitFailedError("the group has already rebalanced"))
    commits.advance({A: 10})
    await asyncio.sleep(0.1)
    assert consumer.committed == []  # not retried: a retry would race the next rebalance
    assert commits.pending == {}
    assert commits.failures == 1
    commits.advance({A: 12})  # later work commits as usual
    await asyncio.sleep(0.05)
    assert consumer.committed == [{A: 12}]


async def test_a_commit_that_failed_for_a_passing_reason_is_retried() -> None:
    consumer = Consumer()
    commits = commits_on(consumer)
    consumer.refuse.append(GroupCoordinatorNotAvailableError())
    commits.advance({A: 10})
    await asyncio.sleep(0.1)
    assert consumer.committed == [{A: 10}]


async def test_no_commit_is_sent_between_a_revocation_and_the_next_assignment() -> None:
    consumer = Consumer()
    commits = commits_on(consumer)
    commits.advance({A: 5, B: 7})
    await commits.on_partitions_revoked({A, B})
    assert consumer.committed[-1] == {A: 5, B: 7}  # flushed while the generation still counts
    sent = len(consumer.committed)
    commits.advance({A: 9, B: 11})  # a batch that finished during the rebalance
    await asyncio.sleep(0.05)
    assert len(consumer.committed) == sent
    consumer.owned = {B}
    await commits.on_partitions_assigned({B})
    await asyncio.sleep(0.05)
    assert consumer.committed[-1] == {B: 11}  # A is another member's to commit now
    await commits.flush()
