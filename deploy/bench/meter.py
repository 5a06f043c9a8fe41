"""CPU and memory of each process of a run (brokers, PostgreSQL, workers, coordinator, the load
generator itself), read from the OS. PostgreSQL's CPU includes its backends (its children); its
memory is the postmaster's own, since each backend maps the same shared buffers."""

from __future__ import annotations

import time

import psutil

MACHINE = "(whole machine)"
GENERATOR = "load generator"  # the benchmark's own process: its CPU is not the ledger's
"""Every core's busy time, so a run shows how close it came to the machine's limit."""


def _busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _cpu_and_rss(name: str, pid: int) -> tuple[float, float]:
    proc = psutil.Process(pid)
    cpu = sum(proc.cpu_times()[:2])
    if name == "postgres":
        for backend in proc.children():
            try:
                cpu += sum(backend.cpu_times()[:2])
            except psutil.NoSuchProcess:  # a backend that ended between the listing and the read
                continue
    return cpu, proc.memory_info().rss / 2**20


class ProcessMeter:
    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        """Name -> pid."""

    def snapshot(self) -> tuple[float, dict[str, float]]:
        """(wall clock, CPU seconds per process) now; MACHINE: every core's busy seconds."""
        cpu = {MACHINE: _busy()}
        for name, pid in self.processes.items():
            try:
                cpu[name] = _cpu_and_rss(name, pid)[0]
            except psutil.NoSuchProcess:
                continue
        return time.monotonic(), cpu

    def usage(self, since: tuple[float, dict[str, float]]) -> dict[str, dict[str, float]]:
        """CPU seconds (and % of one core) each process spent since `since`, and its RSS now."""
        wall = time.monotonic() - since[0]
        busy = _busy() - since[1][MACHINE]
        usage = {MACHINE: {"cpu_s": round(busy, 1), "cpu_pct": round(100 * busy / wall), "rss_mib": 0.0}}
        for name, pid in self.processes.items():
            try:
                cpu, rss = _cpu_and_rss(name, pid)
            except psutil.NoSuchProcess:
                continue
            spent = cpu - since[1].get(name, 0.0)
            usage[name] = {
                "cpu_s": round(spent, 1),
                "cpu_pct": round(100 * spent / wall),
                "rss_mib": round(rss),
            }
        return usage
