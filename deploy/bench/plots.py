"""The benchmark's pictures: one run (throughput and latency over time, latency histogram) and a
sweep (rate and latency across the swept values)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt

from deploy.bench.report import RunReport


def plot_runs(reports: Sequence[RunReport], path: Path) -> None:
    figure, (rate, latency, histogram) = plt.subplots(3, 1, figsize=(10, 11))
    for report in reports:
        label = f"{report.name} [{report.mode}]"
        seconds = [p["t"] for p in report.timeline]
        rate.plot(seconds, [p["answered"] for p in report.timeline], label=label)
        latency.plot(seconds, [p["p99_ms"] for p in report.timeline], label=f"{label} p99")
        latency.plot(seconds, [p["p50_ms"] for p in report.timeline], "--", label=f"{label} p50")
        if report.latencies_ms:
            low, high = max(0.1, min(report.latencies_ms)), max(report.latencies_ms) * 1.01
            bins = [low * (high / low) ** (i / 80) for i in range(81)]
            histogram.hist(report.latencies_ms, bins=bins, histtype="step", label=label)
    rate.set(title="answers per second", xlabel="seconds since start", ylabel="transfers/s")
    latency.set(title="latency over time (by second answered)", xlabel="seconds since start",
                ylabel="ms (log)", yscale="log")  # fmt: skip
    histogram.set(title="latency histogram (measured window)", xlabel="ms (log)", ylabel="transfers",
                  xscale="log")  # fmt: skip
    for axes in (rate, latency, histogram):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_sweep(parameter: str, rows: Sequence[dict[str, object]], path: Path) -> None:
    """`rows`: one per swept value, as `sweep_row` makes them."""
    values = [str(r["value"]) for r in rows]
    figure, (rate, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in (("ledger_per_s", "ledger"), ("baseline_per_s", "baseline")):
        if any(r.get(key) for r in rows):
            rate.plot(values, [r.get(key) or 0 for r in rows], "o-", label=label)
    for key, label in (("p99_same_ms", "ledger p99 same-shard"), ("p99_cross_ms", "ledger p99 cross-shard"),
                       ("baseline_p99_ms", "baseline p99")):  # fmt: skip
        points = [(v, r[key]) for v, r in zip(values, rows, strict=True) if r.get(key) is not None]
        if points:
            latency.plot(*zip(*points, strict=True), "o-", label=label)
    rate.set(title=f"throughput by {parameter}", xlabel=parameter, ylabel="transfers/s")
    latency.set(title=f"p99 latency by {parameter}", xlabel=parameter, ylabel="ms (log)", yscale="log")
    for axes in (rate, latency):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
