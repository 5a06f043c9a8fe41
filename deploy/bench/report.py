"""What a benchmark run reports: rates, outcomes, latency percentiles per path and per shard (HDR
histograms), a per-second timeline, and what each process spent. The paths: `same_shard` and
`cross_shard` one-shot transfers, `pending` two-phase ones (hold, then post or void), and `linked`
batches (all legs or none, one result), kept apart so that their extra round trips do not blur the
one-shot figures; `all` has every transfer. A linked batch is one transfer in the rates and
percentiles, and its N legs in `legs_per_s` and in CPU per transfer (it moves money N times)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from deploy.bench.load import Recorder, Sample
from deploy.bench.meter import GENERATOR, MACHINE

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, 600_000_000, 3)  # microseconds, up to 10 minutes, 3 significant digits


@dataclass
class RunReport:
    name: str
    mode: str
    """`open @ RATE/s` or `closed, N clients`."""
    offered_per_s: float | None
    duration_s: float
    sent: int = 0
    """Every transfer sent, warm-up included: each must get exactly one terminal result."""
    legs_sent: int = 0
    """The same, a linked batch counting each of its legs (0 when not counted: as `sent`)."""
    measured: int = 0
    """Those due (or sent) in the measured window: their latency is what the percentiles show."""
    finished_in_window: int = 0
    legs_finished_in_window: int = 0
    missing: int = 0
    resent: int = 0
    """Saga commands the coordinators sent again because their answer was late."""
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: dict[str, HdrHistogram] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    processes: dict[str, dict[str, float]] = field(default_factory=dict)
    statements: list[dict[str, object]] = field(default_factory=list)
    """PostgreSQL's heaviest statements during the run (pg_stat_statements), when available."""
    profiles: dict[str, list[str]] = field(default_factory=dict)
    """py-spy: each process's hottest functions, when profiled."""

    @classmethod
    def of(
        cls, name: str, mode: str, offered: float | None, recorder: Recorder, t0: float, warmup_s: float,
        duration_s: float, missing: int,
    ) -> RunReport:  # fmt: skip
        report = cls(
            name, mode, offered, duration_s, sent=recorder.submitted, legs_sent=recorder.legs_submitted,
            missing=missing,
        )  # fmt: skip
        start, end = t0 + warmup_s, t0 + warmup_s + duration_s
        for s in recorder.samples:
            report.outcomes[s.outcome] += 1
            in_window = start <= s.finished < end
            report.finished_in_window += in_window
            report.legs_finished_in_window += s.legs * in_window
            if start <= s.started < end:
                report.measured += 1
                report._record(s)
        report.timeline = _timeline(recorder.samples, t0)
        report.violations += [f"load generator: {e}" for e in recorder.errors[:5]]
        return report

    def _record(self, s: Sample) -> None:
        micros = max(1, round((s.finished - s.started) * 1_000_000))
        for key in ("all", path_of(s), f"shard {s.shard}"):
            self.latency.setdefault(key, new_histogram()).record_value(micros)
        self.latencies_ms.append(micros / 1000)

    @property
    def achieved_per_s(self) -> float:
        """Answers that arrived inside the measured window, per second."""
        return self.finished_in_window / self.duration_s if self.duration_s else 0.0

    @property
    def legs_per_s(self) -> float:
        """Transfers answered in the measured window per second, a linked batch counting its legs."""
        return self.legs_finished_in_window / self.duration_s if self.duration_s else 0.0

    @property
    def batched(self) -> bool:
        """Whether linked batches were sent (then legs and transfers sent differ)."""
        return self.legs_sent > self.sent

    @property
    def passed(self) -> bool:
        return self.missing == 0 and not self.violations

    def percentiles_ms(self, path: str = "all") -> dict[str, float]:
        h = self.latency.get(path)
        if h is None:
            return {}
        found = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        return found | {"max": h.get_max_value() / 1000}

    def cpu_per_transfer_ms(self) -> dict[str, float]:
        """CPU per transfer sent, the steadiest figure on a noisy box: the whole machine's, and the
        ledger's (the machine's less the load generator's own). A linked batch counts as its legs:
        a batch of 3 moves money 3 times."""
        machine = self.processes.get(MACHINE, {}).get("cpu_s")
        transfers = self.legs_sent or self.sent
        if machine is None or not transfers:
            return {}
        generator = self.processes.get(GENERATOR, {}).get("cpu_s", 0.0)
        return {
            "machine": round(1000 * machine / transfers, 3),
            "ledger": round(1000 * (machine - generator) / transfers, 3),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "mode": self.mode, "offered_per_s": self.offered_per_s,
            "achieved_per_s": round(self.achieved_per_s, 1), "duration_s": self.duration_s,
            "legs_per_s": round(self.legs_per_s, 1), "sent": self.sent,
            "legs_sent": self.legs_sent or self.sent, "measured": self.measured, "missing": self.missing,
            "resent": self.resent,
            "outcomes": dict(self.outcomes),
            "latency_ms": {path: self.percentiles_ms(path) for path in sorted(self.latency)},
            "timeline": self.timeline, "violations": self.violations, "processes": self.processes,
            "statements": self.statements, "profiles": self.profiles, "passed": self.passed,
            "cpu_per_transfer_ms": self.cpu_per_transfer_ms(),
        }  # fmt: skip

    def table(self) -> str:
        offered = f"offered {self.offered_per_s:.0f}/s, " if self.offered_per_s else ""
        legs = f", {self.legs_sent} legs ({self.legs_per_s:.0f} legs/s)" if self.batched else ""
        lines = [
            f"{self.name} [{self.mode}]: {offered}achieved {self.achieved_per_s:.0f}/s"
            f" over {self.duration_s:.0f}s"
            f" ({self.sent} sent{legs}, {self.missing} without a result)",
            "  outcomes: "
            + ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common())
            + f"; saga commands re-sent: {self.resent}",
            "  latency ms       " + "".join(f"{k:>9}" for k in (*(f"p{p:g}" for p in PERCENTILES), "max")),
        ]
        for path in sorted(self.latency, key=lambda p: (p.startswith("shard"), p)):
            cells = "".join(f"{v:9.1f}" for v in self.percentiles_ms(path).values())
            lines.append(f"  {path:>15} {cells}   n={self.latency[path].get_total_count()}")
        for name, usage in sorted(self.processes.items()):
            if name == MACHINE:
                lines.append(
                    f"  {name:>15}: cpu {usage['cpu_s']:6.1f}s ({usage['cpu_pct']:3.0f}% busy, 100% a core)"
                )
                if per := self.cpu_per_transfer_ms():
                    lines.append(
                        f"  cpu per transfer: {per['machine']:.2f} ms the machine,"
                        f" {per['ledger']:.2f} ms without the load generator"
                        + (" (a linked batch counts as its legs)" if self.batched else "")
                    )
                continue
            lines.append(
                f"  {name:>15}: cpu {usage['cpu_s']:6.1f}s ({usage['cpu_pct']:3.0f}% of a core),"
                f" rss {usage['rss_mib']:.0f} MiB"
            )
        for st in self.statements[:5]:
            lines.append(f"  sql {st['total_ms']:>9.0f} ms {st['calls']:>7} calls  {str(st['query'])[:70]}")
        verdict = "PASSED" if self.passed else "FAILED: " + "; ".join(self.violations[:5])
        lines.append(f"  correctness gate (reconciliation, every transfer answered): {verdict}")
        return "\n".join(lines)


def path_of(s: Sample) -> str:
    """The latency path a transfer is reported under (besides `all` and its debit shard's)."""
    if s.legs > 1:
        return "linked"
    if s.two_phase:
        return "pending"
    return "cross_shard" if s.cross_shard else "same_shard"


def _timeline(samples: list[Sample], t0: float) -> list[dict[str, float]]:
    """Per second since the start: answers that arrived, and their p50/p99 latency."""
    by_second: dict[int, HdrHistogram] = {}
    for s in samples:
        second = int(s.finished - t0)
        if second >= 0:
            micros = max(1, round((s.finished - s.started) * 1_000_000))
            by_second.setdefault(second, new_histogram()).record_value(micros)
    return [
        {"t": second, "answered": h.get_total_count(),
         "p50_ms": h.get_value_at_percentile(50) / 1000, "p99_ms": h.get_value_at_percentile(99) / 1000}
        for second, h in sorted(by_second.items())
    ]  # fmt: skip
