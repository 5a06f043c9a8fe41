"""The monitor's stream processing as a faust-streaming app: one agent per topic read, a timer
for the breakers. The agents decode at the edge (records.py) and hand typed inputs to the
MonitorService; the service publishes through its own producer (KafkaPublisher), awaited before
the record counts as processed, so faust commits an offset only after what it decided is written.

Faust is used for consuming, the group, offsets and the timer, and for nothing it would need more
rights or topics for: no tables (their changelog topics; the service's state is rebuilt from
ledger.alerts and ledger.control instead), no leader topic, no topic creation, no web server, and
at_least_once (its exactly-once is not relied on).

Breaker duty goes with partition 0 of ledger.telemetry. Faust's assignor gives topics of the same
partition count and the same subscribers together (copartitioned), so its holder also holds
ledger.monitor-commands (the operators' SetBreaker): one monitor judges the shards and obeys the
operators. On a rebalance faust revokes every partition first (the eager protocol), waits for the
agents' current records, then signals: duty is dropped there, before any other monitor can be given
it; the one that gets it reads ledger.control and ledger.alerts to their end (`caught_up`), then
takes it. Faust may resume the partitions meanwhile: balances and SetBreakers delivered that early
wait (MonitorService.hold_inputs), ticks and audits judge nothing until then. SetLiquidityRules
on the command topic are not this app's: every monitor reads them (kafka_follower.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
from faust.auth import SASLCredentials

from infra.config import KafkaSecurity, LedgerConfig
from monitor.adapters import records
from monitor.service.monitor import MonitorService
from schemas.breaker import SetBreaker
from schemas.errors import LedgerError

log = logging.getLogger(__name__)


def faust_credentials(security: KafkaSecurity) -> SASLCredentials | None:
    """The ledger's Kafka security as faust's broker_credentials: SCRAM over SASL_SSL (a real
    cluster, with its CA) or SASL_PLAINTEXT (a local stack); None for PLAINTEXT."""
    if security.protocol == "PLAINTEXT":
        return None
    args = security.client_args()  # the ssl_context, for SASL_SSL, built as every other client's
    return SASLCredentials(
        username=security.username, password=security.password, mechanism=security.mechanism,
        ssl_context=args.get("ssl_context"),
    )  # fmt: skip


def monitor_group(config: LedgerConfig) -> str:
    """The app id, which faust also uses as the consumer group (the ACLs grant this one)."""
    return f"{config.namespace.prefix}ledger.monitor"


def build_app(
    config: LedgerConfig,
    service: MonitorService,
    caught_up: Callable[[], Awaitable[None]],
    tick_s: float = 1.0,
    clock_ms: Callable[[], int] | None = None,
) -> faust.App:
    """`caught_up` returns once the service has heard everything on ledger.control and
    ledger.alerts written before the call (KafkaFollower.caught_up)."""
    now_ms = clock_ms or (lambda: int(time.time() * 1000))
    ns = config.namespace
    brokers = [f"kafka://{server.strip()}" for server in config.kafka_bootstrap_servers.split(",")]
    app = faust.App(
        monitor_group(config), broker=brokers, broker_credentials=faust_credentials(config.kafka_security),
        processing_guarantee="at_least_once", topic_allow_declare=False, topic_disable_leader=True,
        web_enabled=False, store="memory://", autodiscover=False, consumer_auto_offset_reset="earliest",
        producer_max_request_size=config.max_message_bytes,
    )  # fmt: skip

    def topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def events(stream: Any) -> AsyncIterator[tuple[bytes, int, int]]:
        """(value, timestamp in ms, offset) of each record with a value."""
        async for event in stream.events():
            message = event.message
            if message.value is not None:
                yield message.value, int(message.timestamp * 1000), message.offset

    @app.agent(topic(ns.balances), name="balances")
    async def balances(stream: Any) -> None:
        async for value, at_ms, _ in events(stream):
            try:
                observed = records.balance_observed(value, at_ms)
            except LedgerError as e:
                service.on_refused("balance", e)
                continue
            await service.on_balance(observed)

    @app.agent(topic(ns.telemetry), name="telemetry")
    async def telemetry(stream: Any) -> None:
        async for value, _, _ in events(stream):
            try:
                for sample in records.telemetry_samples(value):
                    service.on_telemetry(sample)
            except LedgerError as e:
                service.on_refused("telemetry", e)

    @app.agent(topic(ns.results), name="results")
    async def results(stream: Any) -> None:
        async for value, _, _ in events(stream):
            try:
                service.on_result(*records.result_summary(value))
            except LedgerError as e:
                service.on_refused("result", e)

    @app.agent(topic(ns.monitor_commands), name="commands")
    async def commands(stream: Any) -> None:
        async for value, at_ms, _ in events(stream):
            try:
                command = records.monitor_command(value)
            except LedgerError as e:
                service.on_refused("monitor command", e)
                continue
            if isinstance(command, SetBreaker):
                await service.on_set_breaker(command, at_ms)
            # A SetLiquidityRules: every monitor's follower applies it, this one too.

    async def tick() -> None:
        await service.tick(now_ms())

    app.timer(interval=tick_s)(tick)
    _hand_duty_over(app, service, (ns.telemetry, 0), caught_up, now_ms)
    del balances, telemetry, results, commands  # registered on the app by the decorators
    return app


def _hand_duty_over(
    app: faust.App,
    service: MonitorService,
    duty: tuple[str, int],
    caught_up: Callable[[], Awaitable[None]],
    now_ms: Callable[[], int],
) -> None:
    """Breaker duty follows the `duty` partition through rebalances (the module's docstring)."""
    held = [False]  # duty until the last revocation: kept again, nobody else had it meanwhile

    async def revoked(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        held[0] = duty in args[0] and service.on_duty
        if held[0]:
            await service.drop_duty()

    async def assigned(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        # Before any await: faust's recovery resumes the partitions in a task of its own.
        service.hold_inputs()
        try:
            # The breakers another monitor changed, and the episodes of accounts whose partitions
            # come here, as the previous holder left them.
            await caught_up()
            if duty in args[0] and not service.on_duty:
                await service.take_duty(now_ms(), held_before=held[0])
        finally:
            service.release_inputs()
            held[0] = False

    app.on_partitions_revoked.connect(revoked)
    app.on_partitions_assigned.connect(assigned)
