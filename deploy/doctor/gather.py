"""`ledger doctor`'s eyes: read a ledger's PostgreSQL schemas, Kafka groups and topics, and the
local stack's state into one Facts snapshot (deploy/doctor/facts.py).

Read-only. A source that cannot be read becomes an Unreachable fact (the rules turn it into a
critical finding) and the parts that depend on it stay None (not checked), so the doctor always
reports instead of failing with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.doctor.facts import (
    AlertFact,
    BreakerFact,
    ChainFact,
    Facts,
    LagFact,
    OutboxFact,
    ProcessFact,
    SagaFact,
    Thresholds,
    Unreachable,
    ViolationFact,
)
from deploy.processes import ProcessRecord
from infra.config import LedgerConfig
from infra.outbox_parking import list_parked
from infra.postgres_control import PostgresControl
from infra.postgres_migrations import quoted_schema
from infra.postgres_pool import TRANSIENT_ERRORS, open_pool
from schemas.alerts import LiquidityAlert, decode_alert
from schemas.breaker import BreakerState, decode_breaker_state
from schemas.errors import LedgerError
from schemas.topics import Namespace
from shards.adapters.postgres_audit import verify_ledger

# What a read can fail with when its source is down, refuses us, or lacks a table: reported.
_POSTGRES_ERRORS = (*TRANSIENT_ERRORS, asyncpg.PostgresError, LedgerError)
_KAFKA_ERRORS = (KafkaError, OSError, TimeoutError, LedgerError)
_TIMEOUT_S = 15.0


def _where_pg(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


@dataclass
class _Found:
    """What the readers found so far (Facts is frozen: built once at the end)."""

    unreachable: list[Unreachable]
    shards: tuple[int, ...] = ()
    sagas: tuple[SagaFact, ...] | None = None
    violations: tuple[ViolationFact, ...] | None = None
    chains: tuple[ChainFact, ...] | None = None
    outboxes: tuple[OutboxFact, ...] | None = None
    lags: tuple[LagFact, ...] | None = None
    breakers: tuple[BreakerFact, ...] | None = None
    alerts: tuple[AlertFact, ...] | None = None


# --- PostgreSQL -----------------------------------------------------------------------------------

_SAGAS = """
    SELECT t.transfer_id, t.step, t.parked, t.reason,
           extract(epoch FROM now() - t.created_at)::float8 AS age_s,
           ARRAY(SELECT DISTINCT s.shard FROM saga_steps s
                 WHERE s.transfer_id = t.transfer_id AND s.outcome IS NULL ORDER BY s.shard) AS waiting
    FROM transfers t
    WHERE t.parked OR (t.status = 'in_flight' AND t.created_at < now() - $1 * interval '1 second')
    ORDER BY t.created_at, t.transfer_id LIMIT $2"""


async def _sagas(config: LedgerConfig, stuck_after_s: float, limit: int) -> tuple[SagaFact, ...]:
    pool = await open_pool(config.database_url, config.namespace.coordinator_schema, max_size=1)
    try:
        rows = await pool.fetch(_SAGAS, stuck_after_s, limit)
    finally:
        await pool.close()
    return tuple(
        SagaFact(r["transfer_id"], r["step"], r["parked"], r["age_s"], r["reason"], tuple(r["waiting"]))
        for r in rows
    )


async def _chains(config: LedgerConfig, shards: Sequence[int]) -> tuple[ChainFact, ...]:
    reports = await verify_ledger(config, shards)
    return tuple(
        ChainFact(r.shard, r.first_broken_seq, r.problem or "broken")
        for r in reports
        if r.first_broken_seq is not None
    )


_AGE = "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8"


async def _outbox(dsn: str, schema: str, shard: int | None) -> OutboxFact:
    conn = await asyncpg.connect(dsn, timeout=_TIMEOUT_S)
    try:
        table = f"{quoted_schema(schema)}.outbox"  # a quoted identifier of ours, no input
        row = await conn.fetchrow(f"SELECT count(*), {_AGE} FROM {table}")  # noqa: S608
        parked = await list_parked(conn, schema)
    finally:
        await conn.close()
    topics = tuple(sorted({p["topic"] for p in parked}))
    return OutboxFact(schema, shard, row[0], row[1], len(parked), topics)


async def _postgres(config: LedgerConfig, thresholds: Thresholds, found: _Found) -> None:
    ns = config.namespace
    try:
        pool = await open_pool(config.database_url, ns.control_schema, max_size=1)
        try:
            pmap = await PostgresControl(pool).load_partition_map()
        finally:
            await pool.close()
    except _POSTGRES_ERRORS as e:
        found.unreachable.append(Unreachable("postgres", _where_pg(config.database_url), _error(e)))
        return
    found.shards = shards = tuple(sorted(set(pmap.shards)))

    async def part(what: str, dsn: str, read: Any) -> Any:
        try:
            return await read
        except _POSTGRES_ERRORS as e:
            found.unreachable.append(Unreachable(what, _where_pg(dsn), _error(e)))
            return None

    found.sagas = await part(
        "coordinator schema", config.database_url, _sagas(config, thresholds.stuck_after_s, 100)
    )
    views = await part("journals (reconcile)", config.database_url, read_views(config, list(shards)))
    if views is not None:
        sagas, shard_views, _one_snapshot = views
        found.violations = tuple(
            ViolationFact(v.check, v.subject, v.detail) for v in reconcile(sagas, shard_views)
        )
    found.chains = await part("journals (verify)", config.database_url, _chains(config, shards))
    places = [(config.shard_database_url(s), ns.shard_schema(s), s) for s in shards]
    outboxes = []
    for dsn, schema, shard in [*places, (config.database_url, ns.coordinator_schema, None)]:
        box = await part(f"outbox of {schema}", dsn, _outbox(dsn, schema, shard))
        if box is not None:
            outboxes.append(box)
    found.outboxes = tuple(outboxes)


# --- Kafka ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A consumer group of the ledger, as its processes name it (coordinator/bootstrap.py,
    shards/bootstrap.py, monitor/adapters/faust_app.py), and the topics it reads."""

    name: str
    shard: int | None
    topics: tuple[str, ...]
    monitor: bool = False


def consumer_groups(ns: Namespace, shards: Sequence[int]) -> list[Group]:
    p = ns.prefix
    groups = [Group(f"{p}ledger.coordinator", None, (ns.transfers, ns.account_commands, ns.shard_replies))]
    groups += [Group(f"{p}ledger.shard.{s:02d}", s, (ns.shard_commands(s),)) for s in shards]
    monitor_topics = (ns.balances, ns.telemetry, ns.results, ns.monitor_commands)
    return [*groups, Group(f"{p}ledger.monitor", None, monitor_topics, monitor=True)]


@dataclass(frozen=True)
class _Position:
    lag: int
    committed: int
    """The sum of the committed offsets (counted from the log's start where there are none)."""
    ever_committed: bool


async def _positions(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str, partitions: list[TopicPartition]
) -> _Position:
    """Where `group` stands on `partitions`. A partition it never committed counts from the log's
    start, where the processes begin (auto_offset_reset earliest)."""
    committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    done = {tp: c.offset for tp, c in committed.items() if c.offset >= 0}
    at = {tp: done.get(tp, starts[tp]) for tp in partitions}
    return _Position(sum(max(0, ends[tp] - at[tp]) for tp in partitions), sum(at.values()), bool(done))


async def _topic_layout(admin: AIOKafkaAdminClient) -> dict[str, list[int]]:
    """Every topic's partition numbers. Asked for all topics: naming one that does not exist could
    have a broker that allows it create it."""
    return {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in await admin.describe_topics()
        if not t["error_code"]
    }


async def _lags(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    layout: Mapping[str, list[int]],
    ns: Namespace,
    shards: Sequence[int],
    probe_s: float,
) -> tuple[LagFact, ...]:
    """Each group's lag, sampled twice `probe_s` apart: a group behind whose commits did not move
    in between has nobody consuming (aiokafka 0.14 cannot decode Kafka 4's DescribeGroups answer,
    so members are not counted directly)."""
    groups = consumer_groups(ns, shards)
    partitions = {g: [TopicPartition(t, p) for t in g.topics for p in layout.get(t, ())] for g in groups}
    first = {g: await _positions(admin, consumer, g.name, parts) for g, parts in partitions.items() if parts}
    await asyncio.sleep(probe_s)
    lags = []
    for group, parts in partitions.items():
        if not parts:
            continue
        now = await _positions(admin, consumer, group.name, parts)
        if group.monitor and not now.ever_committed:
            continue  # no monitor was ever run here: nothing to be behind
        # faust commits every 2.8 s, longer than the probe: a monitor is judged by its lag alone.
        stalled = (
            not group.monitor
            and now.lag > 0
            and first[group].lag > 0
            and now.committed == first[group].committed
        )
        lags.append(LagFact(group.name, group.shard, now.lag, stalled, group.monitor))
    return tuple(lags)


async def _read_whole(
    consumer: AIOKafkaConsumer, layout: Mapping[str, list[int]], topic: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` now, from its start (none when it does not exist)."""
    partitions = [TopicPartition(topic, p) for p in layout.get(topic, ())]
    if not partitions:
        return []
    ends = await consumer.end_offsets(partitions)
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + _TIMEOUT_S
    while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} not read to its end within {_TIMEOUT_S:.0f} s")
        for batch in (await consumer.getmany(*partitions, timeout_ms=500)).values():
            records += batch
    return records


def latest_breakers(states: Sequence[BreakerState]) -> tuple[BreakerFact, ...]:
    """Each shard's latest breaker (highest seq), as a fact."""
    latest: dict[int, BreakerState] = {}
    for s in states:
        if s.newer_than(latest.get(s.shard)):
            latest[s.shard] = s
    return tuple(
        BreakerFact(s.shard, s.state, s.latched, s.reason, s.changed_by, s.since_ms)
        for s in sorted(latest.values(), key=lambda s: s.shard)
    )


def firing_alerts(alerts: Sequence[LiquidityAlert]) -> tuple[AlertFact, ...]:
    """The alerts whose latest word for their rule and subject is `fired` (alerts are keyed by id,
    so spread over partitions: the order is the alert's time, then its journal seq)."""
    latest: dict[tuple[str, str, str], LiquidityAlert] = {}
    for a in sorted(alerts, key=lambda a: (a.at_ms, a.journal_seq, a.state == "cleared")):
        latest[(a.rule_id, a.account_id, a.currency)] = a
    return tuple(
        AlertFact(a.rule_id, a.severity, a.account_id, a.currency, a.kind, a.observed, a.threshold, a.at_ms)
        for _key, a in sorted(latest.items())
        if a.state == "fired"
    )


def _decoded(records: Sequence[ConsumerRecord[bytes, bytes]], decode: Any) -> list[Any]:
    out = []
    for r in records:
        with contextlib.suppress(LedgerError):  # another kind of message on the topic, or junk
            out.append(decode(r.value or b""))
    return out


async def _kafka(config: LedgerConfig, shards: Sequence[int], probe_s: float, found: _Found) -> None:
    args = config.kafka_args()
    consumer = AIOKafkaConsumer(
        **args, group_id=None, enable_auto_commit=False, request_timeout_ms=10_000,
        isolation_level="read_committed",
    )  # fmt: skip
    admin = AIOKafkaAdminClient(**args, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(consumer.start(), _TIMEOUT_S)
        await asyncio.wait_for(admin.start(), _TIMEOUT_S)
        ns = config.namespace
        layout = await asyncio.wait_for(_topic_layout(admin), _TIMEOUT_S)
        found.lags = await asyncio.wait_for(
            _lags(admin, consumer, layout, ns, shards, probe_s), 4 * _TIMEOUT_S
        )
        found.breakers = latest_breakers(
            _decoded(await _read_whole(consumer, layout, ns.control), decode_breaker_state)
        )
        found.alerts = firing_alerts(_decoded(await _read_whole(consumer, layout, ns.alerts), decode_alert))
    except _KAFKA_ERRORS as e:
        found.unreachable.append(Unreachable("kafka", config.kafka_bootstrap_servers, _error(e)))
    finally:
        with contextlib.suppress(*_KAFKA_ERRORS):
            await consumer.stop()
        with contextlib.suppress(*_KAFKA_ERRORS):
            await admin.close()


# --- the local stack ------------------------------------------------------------------------------


def stack_processes(state: Mapping[str, Any]) -> tuple[tuple[ProcessFact, ...], bool | None]:
    """The recorded stack's processes (alive or not) and whether its supervisor runs (None: the
    stack has none, e.g. `dev up --no-workers`)."""
    restarts: Mapping[str, Any] = state.get("restarts", {})
    facts = []
    for raw in state.get("processes", []):
        p = ProcessRecord.from_json(raw)
        done = restarts.get(p.name, {})
        facts.append(
            ProcessFact(p.name, p.alive(), int(done.get("restarts", 0)), done.get("last_exit"), p.log_path)
        )
    supervisor = state.get("supervisor")
    if supervisor:
        return tuple(facts), ProcessRecord.from_json(supervisor).alive()
    return tuple(facts), False if state.get("supervised") else None


# --- all of it ------------------------------------------------------------------------------------


async def gather(
    db: LedgerConfig,
    kafka: LedgerConfig,
    stack: Mapping[str, Any] | None,
    thresholds: Thresholds,
    probe_s: float = 1.5,
) -> Facts:
    """The facts about the ledger `db` (read as the database reader) and `kafka` (a principal that
    may describe its groups and read its control and alerts topics) name; `stack` is the recorded
    local stack's state when the ledger is that stack."""
    found = _Found([])
    await _postgres(db, thresholds, found)
    await _kafka(kafka, found.shards, probe_s, found)
    processes, supervisor = stack_processes(stack) if stack is not None else (None, None)
    return Facts(
        now_ms=time.time_ns() // 1_000_000, local_stack=stack is not None, shards=found.shards,
        unreachable=tuple(found.unreachable), sagas=found.sagas, violations=found.violations,
        chains=found.chains, lags=found.lags, outboxes=found.outboxes, breakers=found.breakers,
        alerts=found.alerts, processes=processes, supervisor_alive=supervisor, thresholds=thresholds,
    )  # fmt: skip
