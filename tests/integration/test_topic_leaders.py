"""Issue 13, item 5 (quiet start): `ledger init` returns only once every partition of every topic it
created has a leader, as every broker sees it, so no process started after it meets
NotLeaderForPartition / LEADER_NOT_AVAILABLE (the demo printed 52 such warnings while leaders
were still being elected)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from deploy import kafka_admin
from deploy.ledger_init import init_ledger, ledger_topics
from tests.ledger_harness import fresh_config


def _leaderless(topics: list[Any], expected: dict[str, int]) -> list[str]:
    seen = {t["topic"]: t for t in topics}
    missing = [name for name in expected if name not in seen or seen[name]["error_code"] != 0]
    for name, count in expected.items():
        partitions = {p["partition"]: p for p in seen.get(name, {}).get("partitions", [])}
        missing += [
            f"{name}[{p}]" for p in range(count) if p not in partitions or partitions[p]["leader"] < 0
        ]
    return missing


async def test_create_topics_returns_once_every_partition_has_a_leader(kafka_args: dict[str, Any]) -> None:
    # Straight after CreateTopics (init does more between creating topics and returning).
    specs = [kafka_admin.TopicSpec(f"test-led-{uuid.uuid4().hex[:10]}-{i}", 48) for i in range(3)]
    await kafka_admin.create_topics(kafka_args, specs)
    admin = AIOKafkaAdminClient(**kafka_args)
    await admin.start()
    try:
        described = await admin.describe_topics([s.name for s in specs])
    finally:
        await admin.close()
    assert _leaderless(described, {s.name: s.partitions for s in specs}) == []


async def test_a_producer_started_right_after_create_topics_sees_no_warning(
    kafka_args: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    specs = [kafka_admin.TopicSpec(f"test-led-{uuid.uuid4().hex[:10]}-{i}", 48) for i in range(3)]
    await kafka_admin.create_topics(kafka_args, specs)
    await _one_record_each(kafka_args, [(s.name, p) for s in specs for p in range(s.partitions)], caplog)


async def _one_record_each(
    kafka_args: dict[str, Any], partitions: list[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> None:
    """One record to each partition; not one aiokafka warning on the way."""
    caplog.set_level(logging.WARNING, logger="aiokafka")
    producer = AIOKafkaProducer(**kafka_args, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, b"{}", partition=p) for topic, p in partitions])
    finally:
        await producer.stop()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")] == []


async def test_every_partition_has_a_leader_when_init_returns(
    kafka_bootstrap: str, database_url: str
) -> None:
    # Many partitions: an election still running when init returns is then all but certain to show.
    config = dataclasses.replace(fresh_config(kafka_bootstrap, database_url), partitions=24)
    specs = ledger_topics(config, 4)
    await init_ledger(config, 4)
    admin = AIOKafkaAdminClient(**config.kafka_args())
    await admin.start()
    try:
        described = await admin.describe_topics([s.name for s in specs])
    finally:
        await admin.close()
    assert _leaderless(described, {s.name: s.partitions for s in specs}) == []


async def test_a_producer_started_right_after_init_meets_no_leader_election(
    kafka_bootstrap: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What a client started at once sees: one record to every partition of the public topics,
    and not one aiokafka warning (NotLeaderForPartitionError, LEADER_NOT_AVAILABLE) on the way."""
    config = dataclasses.replace(fresh_config(kafka_bootstrap, database_url), partitions=24)
    await init_ledger(config, 4)
    ns = config.namespace
    topics = (ns.transfers, ns.account_commands, ns.results)
    await _one_record_each(
        config.kafka_args(), [(t, p) for t in topics for p in range(config.partitions)], caplog
    )


async def test_a_consumer_group_joined_right_after_init_finds_its_coordinator_at_once(
    kafka_bootstrap: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first consumer group of a fresh cluster makes it create __consumer_offsets (50
    partitions); a coordinator that joined while they elected leaders logged "Marking the
    coordinator dead" six times in one demo. init waits for the ledger's groups' coordinators."""
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 1)
    caplog.set_level(logging.WARNING, logger="aiokafka")
    ns = config.namespace
    consumer = AIOKafkaConsumer(
        ns.shard_replies, **config.kafka_args(), group_id=f"{ns.prefix}ledger.coordinator",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=2000)  # joins the group
        assert consumer.assignment(), "the group was joined"
    finally:
        await consumer.stop()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")] == []
