"""The nemesis: injects each planned fault into a local stack, holds it, heals it, and records
when. Processes are found by their stack names (shard-N, coordinator-N, relay-N); Kafka nodes by
node id, the active controller from the quorum's own record."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

import asyncpg

from deploy.chaos.breakers import BreakerWatch
from deploy.chaos.corruption import DETECT_WITHIN_S, give_back, restore, tamper
from deploy.chaos.iptables import LoopbackCut
from deploy.chaos.schedule import CUT_KINDS, PlannedFault
from deploy.kafka_local import LocalKafka
from deploy.processes import ProcessRecord
from deploy.stack import LocalStack
from infra.config import LedgerConfig

log = logging.getLogger(__name__)
SESSION_TIMEOUT_S = 10.0  # the coordinators' consumer group session (coordinator/bootstrap.py)


@dataclass
class InjectedFault:
    kind: str
    target: int
    started_s: float
    healed_s: float | None = None
    """Seconds after the run's start."""
    error: str | None = None
    detail: str | None = None
    """What was hit, when the plan could not know it (which node was the active controller)."""


class Nemesis:
    def __init__(self, stack: LocalStack, config: LedgerConfig, watch: BreakerWatch) -> None:
        self.stack = stack
        self.config = config
        self.watch = watch
        """What the monitor said so far: a corrupted shard is given back once it agrees."""
        self.injected: list[InjectedFault] = []

    async def run(self, planned: list[PlannedFault], t0: float) -> None:
        """Inject every planned fault at its time; each is healed before the next one starts."""
        for fault in planned:
            await asyncio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
            record = InjectedFault(fault.kind, fault.target, time.monotonic() - t0)
            self.injected.append(record)
            log.warning("nemesis: %s %d", fault.kind, fault.target)
            try:
                if fault.kind == "corrupt_shard":
                    record.detail = await self._corrupt(fault, record, t0)
                else:
                    record.detail = await self._inject(fault)
            except Exception as e:  # a fault that could not be injected is reported, not fatal
                record.error = f"{type(e).__name__}: {e}"
                log.exception("nemesis: %s failed", fault.kind)
            if record.healed_s is None:
                record.healed_s = time.monotonic() - t0

    async def _inject(self, fault: PlannedFault) -> str | None:
        kind, target, hold = fault.kind, fault.target, fault.hold_s
        if kind in ("kill_shard", "kill_coordinator", "kill_relay"):
            name = {"kill_shard": "shard", "kill_coordinator": "coordinator", "kill_relay": "relay"}[kind]
            self.stack.process(f"{name}-{target}").stop(signal.SIGKILL)
            await asyncio.sleep(hold)
            self.stack.restart_process(f"{name}-{target}")
        elif kind in ("pause_shard", "pause_coordinator"):
            process = self.stack.process(f"{'shard' if kind == 'pause_shard' else 'coordinator'}-{target}")
            process.send(signal.SIGSTOP)
            try:
                # A paused coordinator must outlive its session, so that its partitions move.
                await asyncio.sleep(max(hold, SESSION_TIMEOUT_S + 2) if kind == "pause_coordinator" else hold)
            finally:
                process.send(signal.SIGCONT)
        elif kind == "slow_shard":
            await _slowed(self.stack.process(f"shard-{target}"), hold)
        elif kind in ("kill_broker", "kill_controller"):
            return await self._kill_broker(target, hold, controller=kind == "kill_controller")
        elif kind in CUT_KINDS:
            return await self._cut(kind, target, hold)
        elif kind.startswith("restart_postgres_"):
            postgres = self.stack.postgres
            assert postgres is not None, "the chaos stack starts its own PostgreSQL"
            await asyncio.to_thread(postgres.restart, kind.removeprefix("restart_postgres_"))
            await asyncio.sleep(hold)
        elif kind == "terminate_backends":
            end = time.monotonic() + hold
            while time.monotonic() < end:
                await self._terminate(self.config.namespace.shard_schema(target))
                await asyncio.sleep(1.0)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        return None

    async def _corrupt(self, fault: PlannedFault, record: InjectedFault, t0: float) -> str:
        """Healed when the row is restored (the report times the operator's close from then);
        the fault's window goes on until the breaker is closed. The row stays altered for the
        fault's hold, and longer until the monitor has caught it (at most DETECT_WITHIN_S): an
        audit's time grows with the ledger, and one caught only after the restore latches a
        breaker no operator is left to close (ledger chaos, seed 12, 900 s)."""
        tampering = await tamper(self.config, fault.target)
        try:
            await asyncio.sleep(fault.hold_s)
            for _ in range(int(max(0.0, DETECT_WITHIN_S - fault.hold_s) / 0.2)):
                if self.watch.isolated_since(fault.target, record.started_s):
                    break
                await asyncio.sleep(0.2)
        finally:
            await restore(self.config, tampering)
            record.healed_s = time.monotonic() - t0
        said = await give_back(self.config, fault.target, self.watch, record.started_s)
        return f"journal seq {tampering.seq} message_id altered, restored; {said}"

    async def _kill_broker(self, target: int, hold: float, *, controller: bool) -> str:
        kafka = self.stack.kafka
        assert kafka is not None, "the chaos stack starts its own brokers"
        leader = await _controller(kafka)
        if controller:
            node_id = leader
        else:
            others = [n.node_id for n in kafka.nodes if n.node_id != leader]
            node_id = others[target % len(others)]
        kafka.kill_node(node_id)
        await asyncio.sleep(hold)
        kafka.start_node(node_id, wait=False)
        await kafka.wait_ready()
        await kafka.wait_in_sync()  # healed means caught up, not just started
        led = "the active controller" if node_id == leader else f"node {leader} was the controller"
        return f"node {node_id} ({led})"

    async def _cut(self, kind: str, target: int, hold: float) -> str:
        shards = self.stack.settings.shards
        name = f"shard-{target}" if target < shards else f"coordinator-{target - shards}"
        if kind == "cut_kafka":
            assert self.stack.kafka is not None, "the chaos stack starts its own brokers"
            ports = [n.port for n in self.stack.kafka.nodes]
            # Longer than a consumer session, so that the group notices (as with a pause).
            hold = max(hold, SESSION_TIMEOUT_S + 2)
        else:
            assert self.stack.postgres is not None, "the chaos stack starts its own PostgreSQL"
            ports = [self.stack.postgres.port]
        with LoopbackCut(self.stack.process(name).pid, ports, name):
            await asyncio.sleep(hold)
        return f"{name} cut from {kind.removeprefix('cut_')} ports {ports}"

    async def _terminate(self, schema: str) -> None:
        conn = await asyncpg.connect(self.config.database_url, timeout=5)
        try:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                f"ledger {schema}",
            )
        finally:
            await conn.close()
        log.warning("nemesis: ended %s connections of %s", ended, schema)


async def _controller(kafka: LocalKafka, within_s: float = 30.0) -> int:
    """The active controller's node id, waiting out an election."""
    deadline = time.monotonic() + within_s
    while (leader := kafka.active_controller()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no active KRaft controller within {within_s:.0f}s")
        await asyncio.sleep(0.5)
    return leader


SLOW_STOPPED_S, SLOW_RUNNING_S = 0.6, 0.3
"""A slow shard's cycle: stopped for most of it, so every batch it takes waits, yet it is never
silent for long (its telemetry and heartbeats go on, late)."""


async def _slowed(process: ProcessRecord, hold: float) -> None:
    end = time.monotonic() + hold
    try:
        while time.monotonic() < end:
            process.send(signal.SIGSTOP)
            await asyncio.sleep(SLOW_STOPPED_S)
            process.send(signal.SIGCONT)
            await asyncio.sleep(SLOW_RUNNING_S)
    finally:
        process.send(signal.SIGCONT)
