"""A row Kafka refuses for good is parked and the rows behind it go out (issue 12, "no poison row").

Against a real broker: a row larger than its topic's max.message.bytes (refused by the broker), one
larger than the producer's max_request_size (refused before it leaves), one for a topic that does
not exist; normal rows before, between and after them. Both relays: the shard's (cursor over a
gapless seq, pipelined sends) and the coordinators' (SKIP LOCKED, delete).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from infra.outbox_relay import OutboxRelay, idempotent_producer
from infra.postgres_migrations import migrate

TOPIC_LIMIT = 20_000


async def _consume(kafka_args: dict[str, Any], topic: str, want: int, timeout_s: float) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, **kafka_args, auto_offset_reset="earliest")
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return got


@pytest.mark.parametrize("kind", ["shard", "coordinator"])
async def test_a_refused_row_is_parked_and_the_rows_behind_it_go_out(
    kind: str,
    kafka_args: dict[str, Any],
    database_url: str,
    db_schema: str,
    new_topic: Callable[..., Awaitable[str]],
) -> None:
    topic = await new_topic(1, 1, **{"max.message.bytes": str(TOPIC_LIMIT)})
    gone = f"test-never-created-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    await migrate(conn, db_schema, kind)  # type: ignore[arg-type]
    await conn.close()
    pool = await asyncpg.create_pool(
        database_url, server_settings={"search_path": db_schema}, min_size=1, max_size=3
    )
    assert pool is not None
    rows: list[tuple[str, bytes]] = [(topic, b"normal-0"), (topic, b"normal-1")]
    rows.append((topic, b"x" * (TOPIC_LIMIT * 3)))  # the broker refuses it
    rows += [(topic, f"normal-{i}".encode()) for i in range(2, 6)]
    rows.append((topic, b"y" * 2_000_000))  # over the producer's max_request_size
    rows.append((gone, b"to nowhere"))
    rows += [(topic, f"normal-{i}".encode()) for i in range(6, 12)]
    async with pool.acquire() as c:
        for i, (t, payload) in enumerate(rows, 1):
            if kind == "shard":
                await c.execute("INSERT INTO outbox (seq, topic, payload) VALUES ($1, $2, $3)", i, t, payload)
            else:
                await c.execute("INSERT INTO outbox (topic, payload) VALUES ($1, $2)", t, payload)
    # a short metadata wait, so the missing topic is judged in seconds rather than 30
    producer = idempotent_producer(kafka_args, request_timeout_ms=3000)
    assert producer.settings["max_request_size"] == 256 * 1024, "the default topic limit"
    await producer.start()
    relay = OutboxRelay(
        pool, producer, lock_name=f"relay:{db_schema}" if kind == "shard" else None, batch_size=50
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        got = await _consume(kafka_args, topic, 12, timeout_s=60)
        assert got == [f"normal-{i}".encode() for i in range(12)], "every normal row, in order, once"
        for _ in range(100):
            if relay.parked == 3:
                break
            await asyncio.sleep(0.1)
        assert relay.parked == 3
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await producer.stop()
    async with pool.acquire() as c:
        parked = await c.fetch("SELECT * FROM outbox_parked ORDER BY 1")
        assert [(r["topic"], len(r["payload"])) for r in parked] == [
            (topic, TOPIC_LIMIT * 3), (topic, 2_000_000), (gone, len(b"to nowhere")),
        ]  # fmt: skip
        errors = [r["error"] for r in parked]
        assert "MessageSizeTooLarge" in errors[0], errors
        assert "MessageSizeTooLarge" in errors[1], errors
        assert "UnknownTopicOrPartition" in errors[2], errors
        if kind == "shard":
            assert await c.fetchval("SELECT published_seq FROM relay_state") == len(rows)
        else:
            assert await c.fetchval("SELECT count(*) FROM outbox") == 0
    await pool.close()


async def test_rows_for_a_topic_deleted_under_the_relay_are_parked(
    kafka_args: dict[str, Any], database_url: str, db_schema: str, new_topic: Callable[..., Awaitable[str]]
) -> None:
    """The producer knew the topic (its metadata cached), then the topic was deleted."""
    doomed, kept = await new_topic(1, 1), await new_topic(1, 1)
    conn = await asyncpg.connect(database_url)
    await migrate(conn, db_schema, "shard")
    await conn.close()
    pool = await asyncpg.create_pool(
        database_url, server_settings={"search_path": db_schema}, min_size=1, max_size=3
    )
    assert pool is not None
    producer = idempotent_producer(kafka_args, request_timeout_ms=3000)
    await producer.start()
    relay = OutboxRelay(pool, producer, lock_name=f"relay:{db_schema}", batch_size=50)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await pool.execute("INSERT INTO outbox (seq, topic, payload) VALUES (1, $1, 'first')", doomed)
        assert await _consume(kafka_args, doomed, 1, timeout_s=30) == [b"first"]
        admin = AIOKafkaAdminClient(**kafka_args)
        await admin.start()
        try:
            await admin.delete_topics([doomed])
        finally:
            await admin.close()
        await asyncio.sleep(2)
        await pool.execute(
            "INSERT INTO outbox (seq, topic, payload) VALUES (2, $1, 'lost'), (3, $2, 'after')", doomed, kept
        )
        assert await _consume(kafka_args, kept, 1, timeout_s=90) == [b"after"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await producer.stop()
    parked = await pool.fetch("SELECT seq, topic, error FROM outbox_parked")
    assert [(r["seq"], r["topic"]) for r in parked] == [(2, doomed)], parked
    await pool.close()
