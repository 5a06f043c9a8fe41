"""What a coordinator tells its figures, once a batch's writes are accepted by the store: the
transfers it finished and how long shards took to answer. Two readers: its metrics
(coordinator/adapters/otel_metrics.py) and its telemetry (`ReplyTimes`, sent once a second by
infra/telemetry.py), from which the monitor tells a slow shard: a shard worker that runs in short
bursts (stopped, resumed) looks fine from inside, each of its batches quick; only the sagas waiting
on it see the wait."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol

from infra.figures import p99
from schemas.telemetry import REPLY_P99_MS, Sample

MAX_REPLY_TIMES: Final = 10_000
"""Reply times kept per shard between two reads: a bound, far above a second's replies."""


class SagaFigures(Protocol):
    def finished(self, state: str, reason: str | None, count: int = 1) -> None:
        """`count` transfers of a batch reached this final state (completed, rejected, ...)."""

    def answered(self, shard: int, took_ms: int) -> None:
        """A shard answered a saga step's command `took_ms` after this process decided it
        (coordinator/service/step_clock.py: another process's steps are not timed)."""


class NoFigures:
    """Metrics off, or a test that does not look at them."""

    def finished(self, state: str, reason: str | None, count: int = 1) -> None:
        pass

    def answered(self, shard: int, took_ms: int) -> None:
        pass


class ReplyTimes:
    """Each shard's reply times since the last `read`, for the telemetry topic."""

    def __init__(self) -> None:
        self._took_ms: dict[int, list[float]] = {}

    def finished(self, state: str, reason: str | None, count: int = 1) -> None:
        pass  # the results topic carries these to the monitor already

    def answered(self, shard: int, took_ms: int) -> None:
        times = self._took_ms.setdefault(shard, [])
        if len(times) < MAX_REPLY_TIMES:
            times.append(float(max(took_ms, 0)))

    def read(self, over_s: float) -> list[Sample]:
        """One `reply_p99_ms` per shard that answered since the last read (a shard nobody waited
        on says nothing: no sample, not a zero), then reset."""
        samples = [Sample(REPLY_P99_MS, p99(times), shard) for shard, times in sorted(self._took_ms.items())]
        self._took_ms = {}
        return samples


class FanOutFigures:
    """Figures told to several readers (metrics and telemetry)."""

    def __init__(self, readers: Iterable[SagaFigures]) -> None:
        self._readers = tuple(readers)

    def finished(self, state: str, reason: str | None, count: int = 1) -> None:
        for reader in self._readers:
            reader.finished(state, reason, count)

    def answered(self, shard: int, took_ms: int) -> None:
        for reader in self._readers:
            reader.answered(shard, took_ms)
