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
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from infra.outbox import Committed, OutboxMessage
from infra.outbox_parking import park, refused_for_good
from schemas.errors import LedgerError
from schemas.message_auth import TopicSigner

log = logging.getLogger(__name__)


class RelayUnavailable(LedgerError):
    retriable = True


DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024  # LedgerConfig.max_message_bytes's default
_MAX_HANDED = 100_000  # rows held in memory for sending at most; the outbox has them all anyway


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
    """Sends a schema's outbox rows to Kafka, in order, at least once.

    With `in_process=True` the writer in this process hands over every row it commits
    (`hand_over`), and the relay sends those from memory at once; it marks them sent lazily (a
    shard's cursor, a coordinator's deleted rows, at most every `settle_every_s`, without waiting for
    the WAL flush: a mark lost in a crash only re-sends rows, which every consumer dedupes). The
    outbox is read back only to recover: at start, after a failed send, and (many writers) for rows
    older than `orphan_after_s` that a crashed writer committed and never sent. Without it, the
    relay polls the outbox (a relay process of its own: `ledger shard relay`)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        lock_name: str | None,
        batch_size: int = 5000,
        idle_poll_s: float = 0.05,
        signer: TopicSigner | None = None,
        *,
        in_process: bool = False,
        settle_every_s: float = 0.1,
        orphan_after_s: float = 5.0,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.signer = signer  # signs at publish time: a rotated key applies to rows already queued
        self.lock_name = lock_name
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.in_process = in_process
        self.settle_every_s = settle_every_s
        self.orphan_after_s = orphan_after_s
        self.wake = asyncio.Event()  # set by an in-process writer after each commit
        self.published = 0
        self.parked = 0  # rows Kafka refused for good, moved to outbox_parked
        self.recoveries = 0  # reads of the outbox to catch up (start, failed sends, orphans)
        self._given = producer  # the caller stops it; a renewed one is the relay's to stop
        self._spoiled = False
        self._holding = lock_name is None  # a single writer's relay sends only once it holds the lock
        self._recovering = True  # the outbox may hold rows nobody handed over: read it first
        self._handed: list[Committed] = []
        self._sent_through = 0  # single writer: every row up to this seq is sent ...
        self._settled_through = 0  # ... and the cursor in the database says so up to here
        self._sent_ids: list[int] = []  # many writers: sent rows not deleted yet
        self._last_settle = 0.0
        self._last_orphan_scan = 0.0

    def hand_over(self, rows: Sequence[Committed]) -> None:
        """Rows the writer has just committed, in outbox order: sent at once."""
        if rows and self.in_process and self._holding:
            if len(self._handed) + len(rows) > _MAX_HANDED:  # Kafka is away: read them back later
                self._handed, self._recovering = [], True
            else:
                self._handed.extend(rows)
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, then publish what is already committed and return."""
        async with self.pool.acquire() as lock_conn:
            while self.lock_name is not None and not await lock_conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", self.lock_name
            ):
                log.info("another relay holds %s; waiting", self.lock_name)
                if await _wait(stop, 1.0):
                    return
            self._holding = True
            try:
                backoff = 0.1
                while not stop.is_set():
                    try:
                        sent = await self._step()
                    except RelayUnavailable as e:
                        self._recovering = True
                        log.warning("%s; retrying in %.1fs", e, backoff)
                        await _wait(stop, backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    backoff = 0.1
                    if sent == 0 and not self._handed:
                        await _wait(self.wake, self.idle_poll_s)
                        self.wake.clear()
                with contextlib.suppress(RelayUnavailable):  # best effort on the way out
                    while await self._step():
                        pass
                    await self._settle()
            finally:
                self._holding = self.lock_name is None
                if self.producer is not self._given:
                    with contextlib.suppress(KafkaError):
                        await self.producer.stop()
                if self.lock_name is not None:
                    await lock_conn.execute("SELECT pg_advisory_unlock(hashtext($1))", self.lock_name)

    async def _step(self) -> int:
        """Send what is waiting; return how many rows were settled."""
        if self._recovering or not self.in_process:
            await self._settle()  # the database's marks first, so the read skips what went out
            sent = await self.publish_once()
            self._recovering = self._recovering and sent > 0
            self._last_orphan_scan = time.monotonic()  # that read found any orphan too
            return sent
        if self._handed:
            return await self._publish_handed()
        if self.lock_name is None and time.monotonic() - self._last_orphan_scan >= self.orphan_after_s / 2:
            self._last_orphan_scan = time.monotonic()
            return await self.publish_once(older_than_s=self.orphan_after_s)
        if time.monotonic() - self._last_settle >= self.settle_every_s:
            await self._settle()
        return 0

    async def _publish_handed(self) -> int:
        rows, self._handed = self._handed, []
        if self.lock_name is not None:
            rows = [r for r in rows if r.seq > self._sent_through]
            if not rows:
                return 0
            if rows[0].seq != self._sent_through + 1:  # rows nobody handed over: read them back
                self._recovering = True
                return 0
        try:
            settled, refused = await self._send(rows)
        except KafkaError as e:
            raise RelayUnavailable(f"outbox relay: {type(e).__name__}: {e}") from e
        if refused is not None:  # the read-back path parks it, with the rows after it behind it
            settled = settled[:-1]
            self._recovering = True
        self._mark_sent(settled)
        if time.monotonic() - self._last_settle >= self.settle_every_s:
            await self._settle()
        return len(settled)

    def _mark_sent(self, rows: Sequence[Committed]) -> None:
        self.published += len(rows)
        if not rows:
            return
        if self.lock_name is not None:
            self._sent_through = max(self._sent_through, rows[-1].seq)
        else:
            self._sent_ids.extend(r.seq for r in rows)

    async def _settle(self) -> None:
        """Record in the database what was sent from memory. Not waiting for the WAL flush: a mark
        a crash loses means those rows are sent again, and every consumer dedupes them."""
        self._last_settle = time.monotonic()
        single = self.lock_name is not None
        if (single and self._sent_through <= self._settled_through) or (not single and not self._sent_ids):
            return
        through, ids = self._sent_through, self._sent_ids
        self._sent_ids = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO off")
                if single:
                    await conn.execute(_ADVANCE_CURSOR, through)
                else:
                    await conn.execute(_DELETE, ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            self._sent_ids = ids + self._sent_ids
            raise RelayUnavailable(f"outbox relay: marking rows sent: {type(e).__name__}: {e}") from e
        self._settled_through = max(self._settled_through, through)

    async def publish_once(self, older_than_s: float | None = None) -> int:
        """Read back and publish one batch of unsent rows; return how many were settled (sent, or
        parked). `older_than_s` (many writers): only rows committed at least that long ago."""
        if self._spoiled:
            await self._renew_producer()
        self.recoveries += 1
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if self.lock_name is not None:
                    found = await conn.fetch(_PAST_CURSOR, self.batch_size)
                elif older_than_s is not None:
                    found = await conn.fetch(_CLAIM_OLD, self.batch_size, older_than_s)
                else:
                    found = await conn.fetch(_CLAIM, self.batch_size)
                rows = [_committed(r) for r in found]
                if not rows:
                    if self.lock_name is not None:
                        cursor = await conn.fetchval("SELECT published_seq FROM relay_state")
                        self._sent_through = self._settled_through = max(self._sent_through, cursor)
                    return 0
                settled, refused = await self._send(rows)
                last = settled[-1]
                if refused is not None:
                    size = len(last.message.payload)
                    await park(conn, last.seq, last.message.topic, size, refused, self.lock_name is not None)
                if self.lock_name is not None:
                    await conn.execute("UPDATE relay_state SET published_seq = $1", last.seq)
                else:
                    await conn.execute(_DELETE, [r.seq for r in settled])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as e:
            raise RelayUnavailable(f"outbox relay: {type(e).__name__}: {e}") from e
        if self.lock_name is not None:
            self._sent_through = self._settled_through = max(self._sent_through, last.seq)
        self.parked += refused is not None
        self.published += len(settled) - (refused is not None)
        return len(settled)

    async def _send(self, rows: list[Committed]) -> tuple[list[Committed], BaseException | None]:
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
        topic = rows[i].message.topic
        if not await refused_for_good(error, self.producer, topic):
            raise error
        if i < len(pending):
            # The broker refuses a whole producer batch: sent alone, the row shows it is its own fault
            # (and the others of its batch were not), so no row is parked for a neighbour.
            await self._renew_producer()
            try:
                await (await self._send_one(rows[i]))
            except KafkaError as e:
                self._spoiled = True
                if not await refused_for_good(e, self.producer, topic):
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

    async def _send_one(self, row: Committed) -> asyncio.Future[Any]:
        m = row.message
        signed = self.signer.headers(m.topic, m.key, m.payload) if self.signer else []
        headers = [(k, v.encode()) for k, v in m.headers.items()] + signed
        future: asyncio.Future[Any] = await self.producer.send(m.topic, m.payload, key=m.key, headers=headers)
        return future


_PAST_CURSOR = """
    SELECT seq, topic, key, payload, headers FROM outbox
    WHERE seq > (SELECT published_seq FROM relay_state) ORDER BY seq LIMIT $1"""
# Locked, and deleted once settled: a row behind a parked one stays in the outbox for the next batch.
_CLAIM = """
    SELECT id AS seq, topic, key, payload, headers FROM outbox
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
_CLAIM_OLD = """
    SELECT id AS seq, topic, key, payload, headers FROM outbox
    WHERE created_at < now() - make_interval(secs => $2) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
_DELETE = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
_ADVANCE_CURSOR = "UPDATE relay_state SET published_seq = greatest(published_seq, $1)"


def _committed(row: asyncpg.Record) -> Committed:
    headers = orjson.loads(row["headers"]) if row["headers"] else {}
    return Committed(row["seq"], OutboxMessage(row["topic"], row["key"], row["payload"], headers))


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
