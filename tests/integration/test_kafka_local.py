"""A single local broker serves real clients: topics, idempotent acks=all producer, manual commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def test_idempotent_producer_and_manual_commit_round_trip(
    kafka_args: dict[str, Any], new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic(partitions=3)
    producer = AIOKafkaProducer(**kafka_args, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(300):
            await producer.send(topic, key=f"k{i % 7}".encode(), value=f"{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, **kafka_args, group_id=f"g-{topic}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    try:
        received: dict[bytes, list[int]] = {}
        while sum(len(v) for v in received.values()) < 300:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no records within 10 s"
            for records in batch.values():
                for record in records:
                    assert record.key is not None
                    assert record.value is not None
                    received.setdefault(record.key, []).append(int(record.value))
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
    finally:
        await consumer.stop()

    # Per key, order is preserved (one key lands in one partition) and nothing is lost or doubled.
    assert sorted(v for vs in received.values() for v in vs) == list(range(300))
    for key, values in received.items():
        assert values == sorted(values), key
    assert sum(c or 0 for c in committed) == 300
