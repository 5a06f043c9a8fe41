"""A 3-node KRaft cluster survives a SIGKILLed broker (acks=all, min ISR 2), and the broker rejoins."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from deploy.kafka_admin import TopicSpec, create_topics
from deploy.kafka_local import LocalKafka


async def _partition_state(kafka: dict[str, Any], topic: str) -> dict[str, object]:
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partition = described["partitions"][0]
        return {"leader": partition["leader"], "replicas": partition["replicas"], "isr": partition["isr"]}
    finally:
        await admin.close()


async def _produce(kafka: dict[str, Any], topic: str, values: range) -> None:
    producer = AIOKafkaProducer(**kafka, enable_idempotence=True, acks="all", request_timeout_ms=30_000)
    await producer.start()
    try:
        for i in values:
            await producer.send_and_wait(topic, key=b"k", value=str(i).encode())
    finally:
        await producer.stop()


async def _consume_all(kafka: dict[str, Any], topic: str, expected: int) -> list[int]:
    consumer = AIOKafkaConsumer(
        topic, **kafka, group_id=f"g-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=2000)).values():
                seen += [int(r.value or 0) for r in records]
        return seen
    finally:
        await consumer.stop()


async def test_sigkill_one_broker_then_it_rejoins(kafka_cluster3: LocalKafka) -> None:
    bootstrap = kafka_cluster3.client_args()
    topic = f"rf3-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [TopicSpec(topic, partitions=1, replication_factor=3)])
    await _produce(bootstrap, topic, range(50))
    before = await _partition_state(bootstrap, topic)
    assert sorted(before["replicas"]) == [1, 2, 3]  # type: ignore[call-overload]

    # Crash the partition's leader: the worst broker to lose.
    victim = int(before["leader"])  # type: ignore[call-overload]
    kafka_cluster3.kill_node(victim)
    survivors = bootstrap | {
        "bootstrap_servers": ",".join(
            f"127.0.0.1:{n.port}" for n in kafka_cluster3.nodes if n.node_id != victim
        )
    }
    await _produce(survivors, topic, range(50, 100))  # acks=all with 2 of 3 in sync
    during = await _partition_state(survivors, topic)
    assert during["leader"] != victim
    assert await _consume_all(survivors, topic, 100) == list(range(100))

    kafka_cluster3.start_node(victim, wait=False)
    await kafka_cluster3.wait_ready()
    deadline = time.monotonic() + 60
    state = await _partition_state(bootstrap, topic)
    while sorted(state["isr"]) != [1, 2, 3] and time.monotonic() < deadline:  # type: ignore[call-overload]
        await asyncio.sleep(0.5)
        state = await _partition_state(bootstrap, topic)
    assert sorted(state["isr"]) == [1, 2, 3], f"broker {victim} did not rejoin the ISR: {state}"  # type: ignore[call-overload]
    await _produce(bootstrap, topic, range(100, 110))
    assert await _consume_all(bootstrap, topic, 110) == list(range(110))
