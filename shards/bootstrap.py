"""Wiring for shard processes: pools, store, source, relay and worker, assembled once here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace

from aiokafka.errors import KafkaError

from infra.config import LedgerConfig
from infra.loop_lag import LoopLag
from infra.outbox_relay import OutboxRelay, idempotent_producer
from infra.postgres_control import PostgresControl
from infra.postgres_pool import close_pool, open_pool
from infra.telemetry import publish_telemetry
from schemas.message_auth import MessageAuthenticator, TopicSigner
from shards.adapters.kafka_source import KafkaCommandSource
from shards.adapters.otel_metrics import shard_metrics
from shards.adapters.postgres_shard_store import PostgresShardStore
from shards.service.worker import ShardWorker, WorkerSettings

log = logging.getLogger(__name__)
__all__ = ["RunningShard", "run_shard"]


@dataclass
class RunningShard:
    worker: ShardWorker
    relay: OutboxRelay | None


async def run_shard(
    config: LedgerConfig,
    settings: WorkerSettings,
    stop: asyncio.Event,
    *,
    with_relay: bool = True,
    started: asyncio.Queue[RunningShard] | None = None,
) -> None:
    """Run one shard's worker (and its outbox relay) until `stop` is set."""
    ns, shard = config.namespace, settings.shard
    settings = replace(
        settings, reply_partitions=config.partitions, max_message_bytes=config.max_message_bytes
    )
    authenticator = MessageAuthenticator(config.message_keys)  # none: refuse to start
    shard_pool = await open_pool(
        config.shard_database_url(shard), ns.shard_schema(shard), 3, settings.statement_timeout_s
    )
    control_pool = await open_pool(config.database_url, ns.control_schema, max_size=1)
    source = KafkaCommandSource(
        config.kafka_args(), ns.shard_commands(shard), f"{ns.prefix}ledger.shard.{shard:02d}",
        settings.batch_max, authenticator,
    )  # fmt: skip
    producer = (
        idempotent_producer(config.kafka_args(), max_message_bytes=config.max_message_bytes)
        if with_relay
        else None
    )
    try:
        control = PostgresControl(control_pool)
        pmap = await control.load_partition_map()
        await source.start()
        relay = None
        if producer is not None:
            await producer.start()
            relay = OutboxRelay(
                shard_pool, producer, lock_name=f"relay:{ns.shard_schema(shard)}",
                signer=TopicSigner(authenticator, ns.is_internal), in_process=True,
            )  # fmt: skip
        metered = shard_metrics()
        worker = ShardWorker(
            settings, ns, PostgresShardStore(shard_pool), source, control, pmap,
            on_commit=relay.hand_over if relay else (lambda rows: None), figures=metered.figures(shard),
        )  # fmt: skip
        metered.watch(shard, worker.stats, source.lag)
        if started is not None:
            started.put_nowait(RunningShard(worker, relay))
        loop_lag = LoopLag()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(worker.run(stop))
            tasks.create_task(loop_lag.run(stop))
            tasks.create_task(publish_telemetry(
                config.kafka_args(), ns.telemetry, f"shard-{shard:02d}",
                lambda over_s: worker.figures.read(over_s, source.lag(), loop_lag.read_ms()), stop,
            ))  # fmt: skip
            if relay is not None:
                tasks.create_task(relay.run(stop))
    finally:
        with contextlib.suppress(KafkaError, OSError):  # closing: nothing left to lose
            await source.stop()
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
        await close_pool(shard_pool)
        await close_pool(control_pool)
