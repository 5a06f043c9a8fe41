"""The monitor process: rebuild its state from the topics, then run the faust app until stopped.

`run_monitor` is what `ledger monitor run` runs (deploy/monitor_cli.py reads the configuration)
and what tests run in-process. Steps, in order:

1. the shards, from the partition map (PostgreSQL, read-only);
2. every alert on ledger.alerts recalled (liquidity episodes and the audit's open findings) and
   every BreakerState on ledger.control resumed, so a restart neither repeats alerts nor resets
   breakers;
3. the rules in force: the latest SetLiquidityRules on ledger.monitor-commands, else the rules file;
4. the faust app: agents over balances, telemetry, results and commands, the breakers' tick;
5. beside it, the same three topics followed as they grow (monitor/adapters/kafka_follower.py:
   what other monitors wrote, and rule changes), and, when an Auditor is given and
   `audit_every_s` > 0, the continuous audit (monitor/service/auditing.py), run while on duty.

Several monitors share the work through faust's group: each takes a share of the balances and
results partitions; the one given ledger.telemetry's partition decides the breakers
(monitor/adapters/faust_app.py). One that stops hands its partitions to the others at the next
rebalance; the new holder of the duty catches up on ledger.control first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool
from monitor.adapters import records
from monitor.adapters.faust_app import build_app
from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.kafka_follower import KafkaFollower
from monitor.adapters.otel_metrics import monitor_metrics
from monitor.service.auditing import audit_forever
from monitor.service.monitor import MonitorService, MonitorSettings, MonitorStats
from monitor.service.ports import Auditor
from schemas.breaker import decode_breaker_state
from schemas.errors import LedgerError
from schemas.ledger_alert import decode_any_alert
from schemas.liquidity_rules import LiquidityRule, SetLiquidityRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorRun:
    """What `ledger monitor run` was given."""

    rules: tuple[LiquidityRule, ...] = ()
    """The rules file's (`--rules`, LEDGER_LIQUIDITY_RULES): in force until a SetLiquidityRules."""
    tick_s: float = 1.0
    """How often the shards are assessed and the breakers fed."""
    settings: MonitorSettings = field(default_factory=MonitorSettings)
    audit_every_s: float = 30.0
    """Seconds between audits of the whole ledger (`--audit-every`, LEDGER_AUDIT_EVERY_S); 0: none."""
    stats: MonitorStats = field(default_factory=MonitorStats)
    """What the monitor counts: made at the entry point, which may also serve it as metrics."""


class MonitorCrashed(LedgerError):
    """The stream processing stopped by itself; the process supervisor starts it again."""

    retriable = True


def _now_ms() -> int:
    return int(time.time() * 1000)


async def ledger_shards(config: LedgerConfig) -> list[int]:
    pool = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(pool).load_partition_map()
    finally:
        await pool.close()
    return sorted(set(pmap.shards))


async def rebuild(
    config: LedgerConfig,
    service: MonitorService,
    follower: KafkaFollower,
    file_rules: Sequence[LiquidityRule],
) -> None:
    """Steps 2 and 3 of the module's docstring."""
    ns = config.namespace
    got = await follower.read_to_now()
    for record in (r for r in got if r.topic == ns.alerts):
        try:
            service.recall(decode_any_alert(record.value or b""))
        except LedgerError as e:
            service.on_refused("alert", e)
    for record in (r for r in got if r.topic == ns.control):
        try:
            service.resume(decode_breaker_state(record.value or b""))
        except LedgerError as e:
            service.on_refused("breaker state", e)
    rules, offset = tuple(file_rules), -1
    for record in (r for r in got if r.topic == ns.monitor_commands):
        with contextlib.suppress(LedgerError):  # counted when the agent meets it again
            command = records.monitor_command(record.value or b"")
            if isinstance(command, SetLiquidityRules):
                rules, offset = command.rules, record.offset
    await service.begin(rules, _now_ms(), offset)
    source = "file" if offset < 0 else f"command @{offset}"
    episodes = len(service.liquidity.open_episodes())
    findings = len(service.audit.open_alerts())
    breakers = {s: b.state for s, b in service.breakers.items()}
    log.info(
        "monitor: %d rules (%s), %d episodes open, %d audit findings open, breakers %s",
        len(rules), source, episodes, findings, breakers,
    )  # fmt: skip


async def run_monitor(
    config: LedgerConfig, run: MonitorRun, stop: asyncio.Event, auditor: Auditor | None = None
) -> None:
    """Until `stop` is set; `auditor` (deploy/ledger_audit.py at the entry point) reads the ledger
    for the continuous audit, none without one."""
    shards = await ledger_shards(config)
    producer = AIOKafkaProducer(
        **config.kafka_args(), enable_idempotence=True, acks="all", max_request_size=config.max_message_bytes
    )
    await producer.start()
    follower = KafkaFollower(config.kafka_args(), config.namespace)
    try:
        await follower.start()
        publisher = KafkaPublisher(producer, config.namespace)
        service = MonitorService(shards, publisher, _now_ms(), run.settings, run.stats)
        monitor_metrics().watch(service.stats)  # no-op unless the entry point serves metrics
        await rebuild(config, service, follower, run.rules)
        following = asyncio.create_task(follower.follow(service, stop))
        app = build_app(config, service, follower.caught_up, run.tick_s)
        await app.start()
        auditing: asyncio.Task[None] | None = None
        if auditor is not None and run.audit_every_s > 0:
            auditing = asyncio.create_task(audit_forever(service, auditor, run.audit_every_s, stop, _now_ms))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if app.crashed:
                    raise MonitorCrashed(f"the stream processing stopped: {app.crash_reason!r}")
                if auditing is not None and auditing.done() and not stop.is_set():
                    raise MonitorCrashed(f"the audit stopped: {auditing.exception()!r}")
                if following.done() and not stop.is_set():
                    raise MonitorCrashed(f"following the control topics stopped: {following.exception()!r}")
        finally:
            for task in (auditing, following):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)  # its error, if any, is raised above
            await app.stop()
    finally:
        await follower.stop()
        await producer.stop()
