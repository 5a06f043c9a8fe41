"""A shard worker's OpenTelemetry metrics (served on /metrics by infra/metrics.py).

Nothing is counted twice: the counters are observed from what the worker already counts
(`worker.stats`, cumulative) when a scrape asks, so a command costs the worker nothing more. Only
the batch duration is recorded as it happens, once per batch, by the worker's telemetry figures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from infra.figures import Figures
from infra.metrics import LATENCY_BUCKETS_S
from shards.service.worker import WorkerStats


class MeteredFigures(Figures):
    """The telemetry topic's figures, each batch's duration also recorded in a histogram."""

    def __init__(self, shard: int, record: Callable[[float, dict[str, int]], None]) -> None:
        super().__init__(shard)
        self._record = record
        self._labels = {"shard": shard}  # built once: a batch allocates nothing for its label

    def batch_done(self, commands: int, rejections: int, took_ms: float) -> None:
        super().batch_done(commands, rejections, took_ms)
        self._record(took_ms / 1000, self._labels)


@dataclass
class _Watched:
    stats: WorkerStats
    lag: Callable[[], int | None]


class ShardMetrics:
    """The instruments of every shard worker in this process, made once (a worker started again
    after a failure replaces its predecessor's entry: an instrument is never made twice)."""

    def __init__(self, meter: Meter) -> None:
        self.workers: dict[int, _Watched] = {}
        self.batch_duration = meter.create_histogram(
            "ledger.shard.batch.duration", unit="s", description="Time to apply one batch of commands",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_S),
        )  # fmt: skip
        meter.create_observable_counter(
            "ledger.shard.commands", [self._commands], unit="{command}",
            description="Commands applied, by outcome: applied, rejected (a business rejection), "
                        "dead_lettered",
        )  # fmt: skip
        meter.create_observable_counter(
            "ledger.shard.batches", [self._count("batches")], unit="{batch}",
            description="Batches committed",
        )  # fmt: skip
        meter.create_observable_counter(
            "ledger.shard.retries", [self._count("retries")], unit="{retry}",
            description="Batches tried again after an infrastructure error",
        )  # fmt: skip
        meter.create_observable_gauge(
            "ledger.shard.consumer.lag", [self._lag], unit="{record}",
            description="Records on the shard's command topic not yet fetched",
        )  # fmt: skip

    def figures(self, shard: int) -> MeteredFigures:
        """The figures the worker of `shard` counts into: they also time its batches."""
        return MeteredFigures(shard, self.batch_duration.record)

    def watch(self, shard: int, stats: WorkerStats, lag: Callable[[], int | None]) -> None:
        """Observe the worker of `shard` from now on (its predecessor's entry is replaced)."""
        self.workers[shard] = _Watched(stats, lag)

    def _commands(self, options: CallbackOptions) -> Iterable[Observation]:
        for shard, w in list(self.workers.items()):
            s = w.stats
            yield Observation(s.commands - s.rejections, {"shard": shard, "outcome": "applied"})
            yield Observation(s.rejections, {"shard": shard, "outcome": "rejected"})
            yield Observation(s.dead_letters, {"shard": shard, "outcome": "dead_lettered"})

    def _count(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(w.stats, name), {"shard": s}) for s, w in list(self.workers.items())]

        return observe

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        for shard, w in list(self.workers.items()):
            if (lag := w.lag()) is not None:
                yield Observation(lag, {"shard": shard})


@functools.cache
def shard_metrics() -> ShardMetrics:
    """This process's shard instruments, on the global meter (a no-op one when metrics are off)."""
    return ShardMetrics(metrics.get_meter("ledger.shard"))
