"""Publish after commit, from memory (issue 14, item 2): the writer hands its committed rows to its
relay, which sends them without reading them back and marks them sent lazily; rows nobody handed
over (a writer that crashed between its commit and the hand-over) are still found and sent.
Both relays: the shard's (one writer, a cursor) and the coordinators' (many writers, deleted rows).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from infra.outbox import Committed, OutboxMessage
from infra.outbox_relay import OutboxRelay, idempotent_producer
from infra.postgres_migrations import migrate
from tests.integration.test_outbox_parking import _consume


async def _write(pool: asyncpg.Pool, kind: str, topic: str, payloads: list[bytes]) -> list[Committed]:
    """Commit outbox rows as the writer would; return them as it hands them over."""
    async with pool.acquire() as c, c.transaction():
        if kind == "shard":
            head = await c.fetchval("SELECT coalesce(max(seq), 0) FROM outbox")
            seqs = list(range(head + 1, head + 1 + len(payloads)))
            await c.executemany(
                "INSERT INTO outbox (seq, topic, payload) VALUES ($1, $2, $3)",
                [(s, topic, p) for s, p in zip(seqs, payloads, strict=True)],
            )
        else:
            seqs = [
                await c.fetchval("INSERT INTO outbox (topic, payload) VALUES ($1, $2) RETURNING id", topic, p)
                for p in payloads
            ]
    return [Committed(s, OutboxMessage(topic, None, p, {})) for s, p in zip(seqs, payloads, strict=True)]


@asynccontextmanager
async def _relay(
    kind: str, kafka_args: dict[str, Any], pool: asyncpg.Pool, **options: Any
) -> AsyncIterator[OutboxRelay]:
    producer = idempotent_producer(kafka_args)
    await producer.start()
    relay = OutboxRelay(
        pool, producer, lock_name="relay:test" if kind == "shard" else None, in_process=True, **options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        for _ in range(100):  # its start: one read of the outbox, finding what is there
            if relay.recoveries and not relay._recovering:
                break
            await asyncio.sleep(0.05)
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await producer.stop()


@pytest.fixture
async def pool(
    database_url: str, db_schema: str, request: pytest.FixtureRequest
) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    await migrate(conn, db_schema, request.node.callspec.params["kind"])
    await conn.close()
    created = await asyncpg.create_pool(
        database_url, server_settings={"search_path": db_schema}, min_size=1, max_size=3
    )
    assert created is not None
    yield created
    await created.close()


async def _marked_sent(pool: asyncpg.Pool, kind: str, through: int) -> bool:
    if kind == "shard":
        return bool(await pool.fetchval("SELECT published_seq FROM relay_state") == through)
    return bool(await pool.fetchval("SELECT count(*) FROM outbox") == 0)


@pytest.mark.parametrize("kind", ["shard", "coordinator"])
async def test_handed_rows_go_out_without_being_read_back(
    kind: str, kafka_args: dict[str, Any], pool: asyncpg.Pool, new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic(1, 1)
    async with _relay(kind, kafka_args, pool, orphan_after_s=600) as relay:
        reads = relay.recoveries
        for batch in range(5):
            relay.hand_over(await _write(pool, kind, topic, [f"{batch}-{i}".encode() for i in range(20)]))
        got = await _consume(kafka_args, topic, 100, timeout_s=30)
        assert got == [f"{b}-{i}".encode() for b in range(5) for i in range(20)], "each row once, in order"
        assert relay.recoveries == reads, "sent from memory: the outbox was not read back"
        for _ in range(100):
            if await _marked_sent(pool, kind, 100):
                break
            await asyncio.sleep(0.05)
        assert await _marked_sent(pool, kind, 100), "marked sent soon after, in bulk"


@pytest.mark.parametrize("kind", ["shard", "coordinator"])
async def test_rows_committed_but_never_handed_over_are_sent(
    kind: str, kafka_args: dict[str, Any], pool: asyncpg.Pool, new_topic: Callable[..., Awaitable[str]]
) -> None:
    """The writer crashed after its commit, before the hand-over: its relay's start finds the rows;
    a row a crashed peer left (many writers) or one missing before handed ones (a gap in a shard's
    seq) is found too."""
    topic = await new_topic(1, 1)
    await _write(pool, kind, topic, [b"left-by-a-crash"])
    async with _relay(kind, kafka_args, pool, orphan_after_s=1.0) as relay:
        await _write(pool, kind, topic, [b"never-handed"])  # a peer's, or the one before a gap
        relay.hand_over(await _write(pool, kind, topic, [b"handed"]))
        got = await _consume(kafka_args, topic, 3, timeout_s=30)
        assert got[0] == b"left-by-a-crash"
        assert sorted(got[1:]) == [b"handed", b"never-handed"]
        if kind == "shard":
            assert got[1:] == [b"never-handed", b"handed"], "a shard's rows go out in seq order"
        for _ in range(100):
            if await _marked_sent(pool, kind, 3):
                break
            await asyncio.sleep(0.05)
        assert await _marked_sent(pool, kind, 3)
