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
from shards.adapters.outbox_parking import park, refused_for_good

log = logging.getLogger(__name__)


class RelayUnavailable(LedgerError):
    retriable = True


DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024  # LedgerConfig.max_message_bytes's default


def idempotent_producer(
    kafka_args: Mapping[str, Any], *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, **overrides: Any
) -> IdempotentProducer:
    """The producer every money-path message leaves through: idempotent, acks from all ISRs.
    `kafka_args`: bootstrap servers and this process's credentials (LedgerConfig.kafka_args()).

    `max_message_bytes` is the max.message.bytes of every topic it writes (`ledger init` sets it):
    a record or a batch over it is refused here, before it leaves, because one the broker refuses
    leaves a gap in the producer's sequence numbers that it never closes (see `renewed`)."""
    settings: dict[str, Any] = {
        **kafka_args,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,  # fills batches under load: the broker's CPU goes per request, not per message
        "max_batch_size": min(512 * 1024, max_message_bytes),
        "max_request_size": max_message_bytes,
        "request_timeout_ms": 30_000,
    }
    return IdempotentProducer(settings | overrides)


class IdempotentProducer(AIOKafkaProducer):
    """An AIOKafkaProducer that can make a fresh copy of itself.

    aiokafka numbers each partition's batches and never takes a number back: after the broker
    refuses a batch (too large, not authorized), every later batch to that partition fails with
    OutOfOrderSequenceNumber. Only a new producer (a new producer id) starts the numbering again."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(**settings)
        self.settings = dict(settings)

    async def renewed(self) -> IdempotentProducer:
        """A started copy of this producer; this one is stopped."""
        fresh = IdempotentProducer(self.settings)
        await fresh.start()
        with contextlib.suppress(KafkaError):
            await self.stop()
        return fresh


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
        self.parked = 0  # rows Kafka refused for good, moved to outbox_parked
        self._given = producer  # the caller stops it; a renewed one is the relay's to stop
        self._spoiled = False

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
                if self.producer is not self._given:
                    with contextlib.suppress(KafkaError):
                        await self.producer.stop()
                if self.lock_name is not None:
                    await lock_conn.execute("SELECT pg_advisory_unlock(hashtext($1))", self.lock_name)

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows; return how many were settled (sent, or parked)."""
        if self._spoiled:
            await self._renew_producer()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_PAST_CURSOR if self.lock_name else _CLAIM, self.batch_size)
                if not rows:
                    return 0
                settled, refused = await self._send(rows)
                if refused is not None:
                    await park(conn, settled[-1], refused, single_writer=self.lock_name is not None)
                if self.lock_name is not None:
                    await conn.execute("UPDATE relay_state SET published_seq = $1", settled[-1]["seq"])
                else:
                    await conn.execute(_DELETE, [r["seq"] for r in settled])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as e:
            raise RelayUnavailable(f"outbox relay: {type(e).__name__}: {e}") from e
        self.parked += refused is not None
        self.published += len(settled) - (refused is not None)
        return len(settled)

    async def _send(self, rows: list[asyncpg.Record]) -> tuple[list[asyncpg.Record], BaseException | None]:
        """Send `rows` in order, pipelined; return the rows settled, a prefix of `rows`: each one
        acknowledged, except the last when an error that refuses it for good comes with it. Any
        other error raises (nothing settled: the batch goes again, at least once)."""
        pending = []
        failed: tuple[int, BaseException] | None = None
        for i, row in enumerate(rows):
            try:
                pending.append(await self._send_one(row))
            except KafkaError as e:  # refused before it left: too large for max_request_size, no topic
                failed = (i, e)
                break
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        self._spoiled = any(isinstance(o, BaseException) for o in outcomes)
        first = next((i for i, o in enumerate(outcomes) if isinstance(o, BaseException)), None)
        if first is not None:
            failed = (first, outcomes[first])
        if failed is None:
            return rows, None
        i, error = failed
        if not await refused_for_good(error, self.producer, rows[i]["topic"]):
            raise error
        if i < len(pending):
            # The broker refuses a whole producer batch: sent alone, the row shows it is its own fault
            # (and the others of its batch were not), so no row is parked for a neighbour.
            await self._renew_producer()
            try:
                await (await self._send_one(rows[i]))
            except KafkaError as e:
                self._spoiled = True
                if not await refused_for_good(e, self.producer, rows[i]["topic"]):
                    raise
                return rows[: i + 1], e
            return rows[: i + 1], None
        return rows[: i + 1], error

    async def _renew_producer(self) -> None:
        """A batch the broker refused leaves the producer unable to send to that partition again
        (IdempotentProducer says why): continue with a fresh one."""
        if not isinstance(self.producer, IdempotentProducer):
            raise RelayUnavailable(
                "outbox relay: the broker refused a batch; this producer cannot be renewed"
            )
        try:
            self.producer = await self.producer.renewed()
        except KafkaError as e:
            raise RelayUnavailable(f"outbox relay: a fresh producer: {type(e).__name__}: {e}") from e
        self._spoiled = False
        log.warning("outbox relay: the broker refused a batch; continuing with a fresh producer")

    async def _send_one(self, row: asyncpg.Record) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.producer.send(
            row["topic"], row["payload"], key=row["key"], headers=self._headers_of(row)
        )
        return future

    def _headers_of(self, row: asyncpg.Record) -> list[tuple[str, bytes]]:
        signed = self.signer.headers(row["topic"], row["key"], row["payload"]) if self.signer else []
        return _headers(row["headers"]) + signed


_PAST_CURSOR = """
    SELECT seq, topic, key, payload, headers FROM outbox
    WHERE seq > (SELECT published_seq FROM relay_state) ORDER BY seq LIMIT $1"""
# Locked, and deleted once settled: a row behind a parked one stays in the outbox for the next batch.
_CLAIM = """
    SELECT id AS seq, topic, key, payload, headers FROM outbox
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
_DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"


def _headers(raw: str | None) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    return [(k, v.encode()) for k, v in orjson.loads(raw).items()]


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
