"""What a worker counts between two reads of its figures, for the telemetry topic
(infra/telemetry.py sends them). No I/O here: services count into it."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.telemetry import LOOP_LAG_MS, Sample

MIN_COMMANDS_FOR_SHARE = 20
"""A share of fewer commands is noise (1 of 3 is 33 %): under ledger chaos (seed 3), a half-open
shard's trickle gave such shares, which reopened its breaker again and again."""
MAX_DURATIONS = 10_000
"""Batch durations kept between two reads: a second of the busiest worker's batches, and a bound."""


@dataclass
class Figures:
    """What a worker did since its figures were last read; `read` turns them into samples."""

    shard: int | None = None
    batches: int = 0
    commands: int = 0
    rejections: int = 0
    errors: int = 0
    durations_ms: list[float] = field(default_factory=list)

    def batch_done(self, commands: int, rejections: int, took_ms: float) -> None:
        self.batches += 1
        self.commands += commands
        self.rejections += rejections
        if len(self.durations_ms) < MAX_DURATIONS:
            self.durations_ms.append(took_ms)

    def read(self, over_s: float, lag: int | None = None, loop_lag_ms: float | None = None) -> list[Sample]:
        """Rates over the last `over_s` seconds, the p99 of its batch durations, its consumer lag
        and event loop lag when known, then reset."""
        per_s = 1 / over_s if over_s > 0 else 0.0
        samples = [
            Sample("commands_per_s", self.commands * per_s, self.shard),
            Sample("rejections_per_s", self.rejections * per_s, self.shard),
            Sample("errors_per_s", self.errors * per_s, self.shard),
        ]
        if self.commands >= MIN_COMMANDS_FOR_SHARE:  # judged by the monitor, unlike the rates
            samples.append(Sample("rejection_pct", 100 * self.rejections / self.commands, self.shard))
        if self.durations_ms:
            samples.append(Sample("step_p99_ms", p99(self.durations_ms), self.shard))
            samples.append(Sample("batch_size", self.commands / self.batches, self.shard))
        if lag is not None:
            samples.append(Sample("consumer_lag", float(lag), self.shard))
        if loop_lag_ms is not None:
            samples.append(Sample(LOOP_LAG_MS, loop_lag_ms, self.shard))
        self.batches = self.commands = self.rejections = self.errors = 0
        self.durations_ms = []
        return samples


def p99(values: list[float]) -> float:
    """The 99th percentile of `values` (not empty): the nearest rank, no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]
