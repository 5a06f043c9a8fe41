"""One benchmark run against one target: the load, then the report and the correctness gate."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from deploy.bench import postgres_statements
from deploy.bench.load import Recorder, Target, closed_loop, open_loop
from deploy.bench.meter import ProcessMeter
from deploy.bench.profiler import PySpy
from deploy.bench.report import RunReport
from deploy.bench.targets import BaselineTarget, LedgerTarget
from deploy.bench.workload import Workload, WorkloadSettings
from infra.config import LedgerConfig
from schemas.partitioning import PartitionMap


@dataclass(frozen=True)
class LoadSettings:
    mode: str = "open"
    """`open`: offer `rate`; `max`: a closed loop finds the highest sustained rate, then an open
    loop at `latency_at` of it measures latency under that load."""
    rate: float = 500.0
    """Offered transfers per second (open loop)."""
    clients: int = 2000
    """Closed loop: transfers kept outstanding at once."""
    latency_at: float = 0.7
    duration_s: float = 30.0
    warmup_s: float = 5.0
    drain_s: float = 120.0
    """How long to wait for the last results after the last command."""
    connections: int = 32
    """Baseline only: concurrent PostgreSQL connections."""
    profile_dir: Path | None = None
    """Where py-spy's recordings go (None: no profiling)."""


@dataclass
class Bench:
    """What every run of one benchmark shares: the servers, the workload and the meters."""

    config: LedgerConfig
    pmap: PartitionMap
    workload: WorkloadSettings
    load: LoadSettings
    meter: ProcessMeter
    python_processes: dict[str, int]
    """Profiled with py-spy when asked."""

    async def ledger(self) -> list[RunReport]:
        accounts = Workload(self.workload, self.pmap).accounts
        shards = sorted(set(self.pmap.shards))
        async with LedgerTarget(self.config, shards, accounts, self.workload.funding) as target:
            reports = await self._runs(target)
            violations = await target.violations()
        for report in reports:
            report.violations += violations
        return reports

    async def baseline(self) -> list[RunReport]:
        accounts = Workload(self.workload, self.pmap).accounts
        async with BaselineTarget(
            self.config.database_url, accounts, self.workload.funding, self.load.connections
        ) as target:
            reports = await self._runs(target)
            violations = await target.violations()
        for report in reports:
            report.violations += violations
        return reports

    async def _runs(self, target: Target) -> list[RunReport]:
        load = self.load
        if load.mode == "open":
            return [await self._run(target, load.rate)]
        flat_out = await self._run(target, None)
        return [flat_out, await self._run(target, max(1.0, flat_out.achieved_per_s * load.latency_at))]

    async def _run(self, target: Target, rate: float | None) -> RunReport:
        """An open loop at `rate`, or a closed loop when `rate` is None."""
        load = self.load
        seconds = load.warmup_s + load.duration_s
        workload = Workload(self.workload, self.pmap)  # the same seeded sequence for every target
        recorder = Recorder()
        await postgres_statements.reset(self.config.database_url)
        since = self.meter.snapshot()
        resent_before = await target.resends()
        profiler = self._profiler(target.name, rate)
        if profiler is not None:
            asyncio.get_running_loop().call_later(load.warmup_s, profiler.start)
        if rate is None:
            mode = f"closed, {load.clients} clients"
            t0 = await closed_loop(target, workload, load.clients, seconds, recorder)
        else:
            mode = f"open @ {rate:.0f}/s"
            t0 = await open_loop(target, workload, rate, seconds, recorder)
        missing = await recorder.drain(load.drain_s)
        report = RunReport.of(target.name, mode, rate, recorder, t0, load.warmup_s, load.duration_s, missing)
        report.processes = self.meter.usage(since)
        report.resent = await target.resends() - resent_before
        report.statements = await postgres_statements.top(self.config.database_url)
        if missing:
            report.violations.append(f"{missing} transfers got no result within {load.drain_s:.0f}s")
        if profiler is not None:
            report.profiles = profiler.finish()
        return report

    def _profiler(self, target: str, rate: float | None) -> PySpy | None:
        if self.load.profile_dir is None:
            return None
        label = f"{target.split(maxsplit=1)[0]}-{'max' if rate is None else f'{rate:.0f}'}"
        return PySpy(self.load.profile_dir, self.python_processes, self.load.duration_s, label)
