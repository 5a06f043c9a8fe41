"""What a benchmark run reports: rates, outcomes, latency percentiles per path (HDR histograms)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, 600_000_000, 3)  # microseconds, up to 10 minutes, 3 significant digits


@dataclass
class RunReport:
    name: str
    offered_per_s: float
    duration_s: float
    sent: int = 0
    answered: int = 0
    missing: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    latency: dict[str, HdrHistogram] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    processes: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self, path: str, latency_s: float) -> None:
        micros = max(1, round(latency_s * 1_000_000))
        for key in (path, "all"):
            self.latency.setdefault(key, new_histogram()).record_value(micros)

    @property
    def achieved_per_s(self) -> float:
        return self.answered / self.duration_s if self.duration_s else 0.0

    @property
    def passed(self) -> bool:
        return self.missing == 0 and not self.violations

    def percentiles_ms(self, path: str = "all") -> dict[str, float]:
        h = self.latency.get(path)
        if h is None:
            return {}
        found = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        return found | {"max": h.get_max_value() / 1000}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "offered_per_s": self.offered_per_s,
            "achieved_per_s": round(self.achieved_per_s, 1),
            "duration_s": self.duration_s,
            "sent": self.sent,
            "answered": self.answered,
            "missing": self.missing,
            "outcomes": dict(self.outcomes),
            "latency_ms": {path: self.percentiles_ms(path) for path in sorted(self.latency)},
            "violations": self.violations,
            "processes": self.processes,
            "passed": self.passed,
        }

    def table(self) -> str:
        lines = [
            f"{self.name}: offered {self.offered_per_s:.0f}/s, achieved {self.achieved_per_s:.0f}/s "
            f"({self.answered} of {self.sent} measured transfers answered, {self.missing} missing)",
            "  outcomes: " + ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common()),
        ]
        for path in sorted(self.latency):
            cells = "  ".join(f"{k} {v:8.1f}" for k, v in self.percentiles_ms(path).items())
            lines.append(f"  latency ms {path:>11}: {cells}")
        for name, usage in sorted(self.processes.items()):
            lines.append(f"  {name:>12}: cpu {usage['cpu_s']:.1f}s, rss {usage['rss_mib']:.0f} MiB")
        lines.append(
            f"  correctness: {'PASSED' if self.passed else 'FAILED ' + '; '.join(self.violations[:5])}"
        )
        return "\n".join(lines)
