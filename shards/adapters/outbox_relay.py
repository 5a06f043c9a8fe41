"""Publishes a schema's outbox to Kafka: at least once, in outbox order, and never lost.

Rows are sent with an idempotent producer (acks=all), and only when every send is acknowledged
are they marked sent, in the same transaction that claimed them. A crash in between re-sends them;
every consumer dedupes by message id. Two ways to claim rows:
- single writer (a shard): rows past the relay's cursor; the gapless seq makes the cursor exact.
  One relay per schema holds an advisory lock; others wait.
- many writers (coordinators): rows locked with SKIP LOCKED and deleted once acknowledged, so
  several relays share the work and a row committed late is never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.errors import LedgerError
from schemas.message_auth import TopicSigner

log = logging.getLogger(__name__)


class RelayUnavailable(LedgerError):
    retriable = True


def idempotent_producer(kafka_args: Mapping[str, Any], **overrides: Any) -> AIOKafkaProducer:
    """The producer every money-path message leaves through: idempotent, acks from all ISRs.
    `kafka_args`: bootstrap servers and this process's credentials (LedgerConfig.kafka_args())."""
    settings: dict[str, Any] = {
        **kafka_args,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,  # fills batches under load: the broker's CPU goes per request, not per message
        "max_batch_size": 512 * 1024,
        "request_timeout_ms": 30_000,
    }
    return AIOKafkaProducer(**(settings | overrides))


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        lock_name: str | None,
        batch_size: int = 5000,
        idle_poll_s: float = 0.05,
        signer: TopicSigner | None = None,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.signer = signer  # signs at publish time: a rotated key applies to rows already queued
        self.lock_name = lock_name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.wake = asyncio.Event()  # set by an in-process writer after each commit
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, then publish what is already committed and return."""
        async with self.pool.acquire() as lock_conn:
            while self.lock_name is not None and not await lock_conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", self.lock_name
            ):
                log.info("another relay holds %s; waiting", self.lock_name)
                if await _wait(stop, 1.0):
                    return
            try:
                backoff = 0.1
                while not stop.is_set():
                    try:
                        sent = await self.publish_once()
                    except RelayUnavailable as e:
                        log.warning("%s; retrying in %.1fs", e, backoff)
                        await _wait(stop, backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    backoff = 0.1
                    if sent == 0:
                        await _wait(self.wake, self.idle_poll_s)
                        self.wake.clear()
                with contextlib.suppress(RelayUnavailable):  # best effort on the way out
                    while await self.publish_once():
                        pass
            finally:
                if self.lock_name is not None:
                    await lock_conn.execute("SELECT pg_advisory_unlock(hashtext($1))", self.lock_name)

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows; return how many."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if self.lock_name is None:
                    rows = sorted(
                        await conn.fetch(_CLAIM_AND_DELETE, self.batch_size), key=lambda r: r["seq"]
                    )
                else:
                    rows = await conn.fetch(_PAST_CURSOR, self.batch_size)
                if not rows:
                    return 0
                pending = [
                    await self.producer.send(
                        r["topic"], r["payload"], key=r["key"], headers=self._headers_of(r)
                    )
                    for r in rows
                ]
                await asyncio.gather(*pending)
                if self.lock_name is not None:
                    await conn.execute("UPDATE relay_state SET published_seq = $1", rows[-1]["seq"])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as e:
            raise RelayUnavailable(f"outbox relay: {type(e).__name__}: {e}") from e
        self.published += len(rows)
        return len(rows)

    def _headers_of(self, row: asyncpg.Record) -> list[tuple[str, bytes]]:
        signed = self.signer.headers(row["topic"], row["key"], row["payload"]) if self.signer else []
        return _headers(row["headers"]) + signed


_PAST_CURSOR = """
    SELECT seq, topic, key, payload, headers FROM outbox
    WHERE seq > (SELECT published_seq FROM relay_state) ORDER BY seq LIMIT $1"""
_CLAIM_AND_DELETE = """
    DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING id AS seq, topic, key, payload, headers"""


def _headers(raw: str | None) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    return [(k, v.encode()) for k, v in orjson.loads(raw).items()]


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
