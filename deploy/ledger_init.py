"""`ledger init`: everything a ledger needs before its processes start, created or checked."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from deploy.kafka_acls import apply_acls, ledger_acls
from deploy.kafka_admin import TopicSpec, align_topic_configs, create_topics, wait_for_group_coordinators
from deploy.postgres_roles import apply_database_roles
from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_migrations import migrate
from infra.postgres_pool import open_pool
from schemas.partitioning import PartitionMap


def ledger_topics(config: LedgerConfig, shard_count: int) -> list[TopicSpec]:
    """Every topic, each bounded by `max_message_bytes` (max.message.bytes): the public ones so that
    nobody can write a record the ledger cannot handle or dead-letter, the internal ones (shard
    commands and replies, well under 1 KiB each) alike, because the outbox relays write both kinds
    with one producer whose max_request_size and batch size must fit every topic it writes: a
    batch the broker refuses costs that producer its sequence numbers (see IdempotentProducer)."""
    ns, rf = config.namespace, config.replication_factor
    bounded = {"max.message.bytes": str(config.max_message_bytes)}
    return [
        *(TopicSpec(ns.shard_commands(s), 1, rf, bounded) for s in range(shard_count)),
        TopicSpec(ns.shard_replies, config.partitions, rf, bounded),
        TopicSpec(ns.transfers, config.partitions, rf, bounded),
        TopicSpec(ns.account_commands, config.partitions, rf, bounded),
        TopicSpec(ns.results, config.partitions, rf, bounded),
        # Keyed by account: compaction keeps each account's latest balance for a reader from the start.
        TopicSpec(ns.balances, config.partitions, rf, {**bounded, "cleanup.policy": "compact"}),
        TopicSpec(ns.dead_letters, 1, rf, bounded),
        # The monitor's, one partition each. Control is keyed by shard and compacted: each breaker's
        # latest state for a coordinator (or a restarted monitor) reading from the start. Alerts in
        # one order: a restarted monitor replays an episode's fired before its cleared. Telemetry:
        # one monitor sees every shard's figures (a fleet-wide event is told from one shard's
        # problem by comparing them). Commands apply in the order sent.
        TopicSpec(ns.control, 1, rf, {**bounded, "cleanup.policy": "compact"}),
        TopicSpec(ns.alerts, 1, rf, bounded),
        TopicSpec(ns.telemetry, 1, rf, {**bounded, "retention.ms": str(3_600_000)}),  # figures age fast
        TopicSpec(ns.monitor_commands, 1, rf, bounded),
    ]


async def init_ledger(
    config: LedgerConfig, shard_count: int, db_role_passwords: Mapping[str, str] | None = None
) -> PartitionMap:
    """Create (or check) the control schema, the partition map, every shard schema, the
    coordinator's schema, every topic and every topic's ACLs (as a Kafka super user). Safe to run
    again."""
    ns = config.namespace
    conn = await asyncpg.connect(config.database_url)
    try:
        await migrate(conn, ns.control_schema, "control")
    finally:
        await conn.close()
    pool = await open_pool(config.database_url, ns.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(pool).ensure_partition_map(shard_count)
    finally:
        await pool.close()
    for shard in range(shard_count):
        conn = await asyncpg.connect(config.shard_database_url(shard))
        try:
            await migrate(conn, ns.shard_schema(shard), "shard")
        finally:
            await conn.close()
    conn = await asyncpg.connect(config.database_url)
    try:
        await migrate(conn, ns.coordinator_schema, "coordinator")
    finally:
        await conn.close()
    # After the migrations, so that every table, new ones included, gets its grants. Without
    # passwords, roles that exist already are granted again; none are created.
    await apply_database_roles(config, shard_count, db_role_passwords or {})
    topics = ledger_topics(config, shard_count)
    await create_topics(config.kafka_args(), topics)
    await align_topic_configs(config.kafka_args(), topics)  # topics made before, or with another limit
    # Processes started next join these groups at once: their coordinators must be ready.
    groups = [
        f"{ns.prefix}ledger.coordinator",
        *(f"{ns.prefix}ledger.shard.{s:02d}" for s in range(shard_count)),
    ]
    await wait_for_group_coordinators(config.kafka_args(), groups)
    await apply_acls(config.kafka_args(), ledger_acls(ns, shard_count))
    return pmap


async def read_partition_map(config: LedgerConfig) -> PartitionMap:
    """The partition map of a ledger that is already initialised (by its admin): what a workload
    needs to place accounts, with no right to create anything."""
    pool = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        return await PostgresControl(pool).load_partition_map()
    finally:
        await pool.close()
