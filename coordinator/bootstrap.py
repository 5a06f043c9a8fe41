"""Wiring for a coordinator process: consumer, saga store, sweeper and outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from coordinator.adapters.kafka_control import follow_breakers
from coordinator.adapters.kafka_records import RecordDecoder
from coordinator.adapters.otel_metrics import coordinator_metrics
from coordinator.adapters.postgres_sagas import PostgresSagaStore
from coordinator.failpoints import Failpoints
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from coordinator.service.figures import FanOutFigures, ReplyTimes
from coordinator.service.inbound import Inbound
from coordinator.service.ports import SagaStore, SagaStoreRefused, SagaStoreUnavailable, VersionConflict
from infra.config import LedgerConfig
from infra.kafka_commits import CoalescedCommits
from infra.outbox import Committed
from infra.outbox_relay import OutboxRelay, idempotent_producer
from infra.postgres_control import PostgresControl
from infra.postgres_pool import close_pool, open_pool
from infra.records import Refused
from infra.telemetry import publish_telemetry
from schemas.errors import Stalled
from schemas.message_auth import MessageAuthenticator, TopicSigner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    batch_max: int = 2000
    """Most records handled in one transaction."""
    sweep_every_s: float = 0.2
    """How often overdue sagas are looked for."""
    max_backoff_s: float = 5.0
    instance_id: str | None = None
    """This instance's name in the consumer group (Kafka static membership), stable across
    restarts: one that comes back within the session timeout takes its partitions back without a
    rebalance, so the other instances never stop. None joins as a new member each time."""
    stall_after_s: float = 30.0
    """An attempt still unfinished after this long is stalled (a batch normally takes well under
    a second): the process starts again from fresh connections rather than wait forever."""
    statement_timeout_s: float = 10.0
    """Longest one statement may take, and then its cancel request. asyncpg bounds neither by
    default, and over a link gone silent an attempt cancelled at its stall bound then waits for
    the cancel forever (tests/integration/test_blackholed_postgres.py)."""
    failpoints: Failpoints = field(default_factory=Failpoints)
    """Crash tests only: where to die on purpose."""


async def run_coordinator(
    config: LedgerConfig,
    settings: CoordinatorSettings,
    stop: asyncio.Event,
    run: RunSettings | None = None,
) -> None:
    """Drive sagas until `stop` is set. Several instances may run: they share one consumer group."""
    run = run or RunSettings()
    ns = config.namespace
    settings = replace(settings, max_message_bytes=config.max_message_bytes)  # envelopes fit the topics
    authenticator = MessageAuthenticator(config.message_keys)  # none: refuse to start
    pool = await saga_pool(config.database_url, ns.coordinator_schema, run)
    control_pool = await open_pool(config.database_url, ns.control_schema, max_size=1)
    consumer = AIOKafkaConsumer(
        **config.kafka_args(), group_id=f"{ns.prefix}ledger.coordinator",
        enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
        max_poll_interval_ms=60_000, session_timeout_ms=10_000, heartbeat_interval_ms=2_000,
        group_instance_id=run.instance_id,
    )  # fmt: skip
    producer = idempotent_producer(config.kafka_args(), max_message_bytes=config.max_message_bytes)
    try:
        pmap = await PostgresControl(control_pool).load_partition_map()
        metered, replies = coordinator_metrics(), ReplyTimes()
        coordinator = Coordinator(
            settings, ns, pmap, clock_ms=lambda: time.time_ns() // 1_000_000,
            figures=FanOutFigures((metered, replies)),
        )  # fmt: skip
        metered.follow(lambda: coordinator.breakers.latest, pmap.shard_count)
        decoder = RecordDecoder(ns, authenticator, settings.max_transfer_amount)  # the edge
        store = PostgresSagaStore(pool)
        await producer.start()
        commits = CoalescedCommits(consumer, "coordinator")
        consumer.subscribe([ns.transfers, ns.account_commands, ns.shard_replies], listener=commits)
        await consumer.start()
        relay = OutboxRelay(
            pool, producer, lock_name=None, signer=TopicSigner(authenticator, ns.is_internal), in_process=True
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_consume(consumer, decoder, store, coordinator, relay, commits, stop, run))
            tasks.create_task(_sweep(consumer, store, coordinator, relay, ns.transfers, stop, run))
            tasks.create_task(relay.run(stop))
            tasks.create_task(follow_breakers(config.kafka_args(), ns.control, coordinator.breakers, stop))
            tasks.create_task(metered.count_open_sagas(pool, stop))
            tasks.create_task(publish_telemetry(
                config.kafka_args(), ns.telemetry, run.instance_id or f"coordinator-{uuid.uuid4().hex[:8]}",
                replies.read, stop,
            ))  # fmt: skip
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
        await close_pool(pool)
        await close_pool(control_pool)


async def saga_pool(dsn: str, schema: str, run: RunSettings) -> asyncpg.Pool:
    """The pool of the coordinator's saga store (and its relay)."""
    return await open_pool(dsn, schema, max_size=4, statement_timeout_s=run.statement_timeout_s)


async def _consume(
    consumer: AIOKafkaConsumer,
    decoder: RecordDecoder,
    store: SagaStore,
    coordinator: Coordinator,
    relay: OutboxRelay,
    commits: CoalescedCommits,
    stop: asyncio.Event,
    run: RunSettings,
) -> None:
    try:
        await _consume_until(consumer, decoder, store, coordinator, relay, commits, stop, run)
    finally:
        await commits.flush()


async def _consume_until(
    consumer: AIOKafkaConsumer,
    decoder: RecordDecoder,
    store: SagaStore,
    coordinator: Coordinator,
    relay: OutboxRelay,
    commits: CoalescedCommits,
    stop: asyncio.Event,
    run: RunSettings,
) -> None:
    while not stop.is_set():
        try:
            batch = await consumer.getmany(timeout_ms=50, max_records=run.batch_max)
        except KafkaError as e:
            log.warning("coordinator poll failed: %s", e)
            await asyncio.sleep(0.5)
            continue
        records = [r for rs in batch.values() for r in rs]
        if not records:
            continue
        decoded = [m for r in records for m in decoder.decode(r)]
        await _handle_isolating(store, coordinator, relay.hand_over, decoded, stop, run)
        # A redelivery is absorbed by the inbox and the fingerprints, so commits need not be awaited.
        commits.advance({tp: rs[-1].offset + 1 for tp, rs in batch.items()})


async def _handle_isolating(
    store: SagaStore,
    coordinator: Coordinator,
    hand_over: Callable[[Sequence[Committed]], None],
    batch: list[Inbound],
    stop: asyncio.Event,
    run: RunSettings,
) -> None:
    """Handle a polled batch. One the database refuses (the same every time) is handled a record at a
    time, and a record refused alone is dead-lettered: one record must never stop a partition."""
    try:
        await _with_retries(
            functools.partial(_handle, store, coordinator, batch, run.failpoints, hand_over), stop, run
        )
        return
    except SagaStoreRefused as e:
        log.warning("%s; handling the batch one record at a time", e)
    for item in batch:
        try:
            await _with_retries(
                functools.partial(_handle, store, coordinator, [item], run.failpoints, hand_over), stop, run
            )
        except SagaStoreRefused as e:
            o = item.origin
            log.error("dead-lettering %s[%d]@%d: %s", o.topic, o.partition, o.offset, e)
            refusal = Refused("invalid_field", f"valid, but the database refuses it: {e}")
            refused = [Inbound(refusal, o, item.parent)]
            await _with_retries(
                functools.partial(_handle, store, coordinator, refused, run.failpoints, hand_over), stop, run
            )


async def _handle(
    store: SagaStore,
    coordinator: Coordinator,
    batch: list[Inbound],
    failpoints: Failpoints,
    hand_over: Callable[[Sequence[Committed]], None],
) -> None:
    async with store.batch() as tx:
        steps = await coordinator.handle(tx, batch)
        failpoints.hit("before_commit", steps)
    failpoints.hit("after_commit", steps)  # committed, not sent: the relay's read-back recovers it
    hand_over(tx.outbox_written)


async def _sweep(
    consumer: AIOKafkaConsumer,
    store: SagaStore,
    coordinator: Coordinator,
    relay: OutboxRelay,
    transfers_topic: str,
    stop: asyncio.Event,
    run: RunSettings,
) -> None:
    """Time out overdue steps of the sagas whose transfers partition this instance owns."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), run.sweep_every_s)
        owned = sorted(tp.partition for tp in consumer.assignment() if tp.topic == transfers_topic)
        if not owned or stop.is_set():
            continue

        async def once(partitions: list[int] = owned) -> None:
            async with store.batch() as tx:
                await coordinator.sweep(tx, partitions)
            relay.hand_over(tx.outbox_written)

        await _with_retries(once, stop, run)


async def _with_retries(work: Callable[[], Awaitable[None]], stop: asyncio.Event, run: RunSettings) -> None:
    """Run `work()` until it commits; infrastructure errors and version conflicts retry it whole."""
    backoff = 0.05
    while True:
        try:
            async with asyncio.timeout(run.stall_after_s):
                await work()
            return
        except TimeoutError as e:
            # Seen under ledger chaos (seed 12): after a PostgreSQL restart one coordinator's batch
            # never returned, its partitions stayed assigned to it, and their sagas waited 90 s.
            raise Stalled(f"a coordinator batch made no progress in {run.stall_after_s:.0f}s") from e
        except (SagaStoreUnavailable, VersionConflict) as e:
            if stop.is_set():
                raise
            log.warning("coordinator batch failed (%s); retrying in %.2fs", e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, run.max_backoff_s)
