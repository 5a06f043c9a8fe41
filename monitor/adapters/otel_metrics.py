"""The monitor's OpenTelemetry metrics (served on /metrics by infra/metrics.py when the entry point
asks for it): observed from what the service already counts (MonitorStats) when a scrape asks, on
the scrape's thread, which only reads plain numbers.

    ledger_monitor_audits_total{outcome}            audits done (ok) or unable to read (failed)
    ledger_monitor_audit_seconds{part}              the last audit's duration: chains, reconciliation
    ledger_monitor_audit_violations{source}         the last audit's findings: hash_chain (broken
                                                    chains), reconciliation (violations, confirmed or not)
    ledger_monitor_alerts_total{kind,state}         alerts published: liquidity, divergence, violation
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from monitor.service.monitor import MonitorStats


class MonitorMetrics:
    """The instruments, made once per process; `watch` points them at a monitor's stats (a
    monitor started again replaces its predecessor's)."""

    def __init__(self, meter: Meter) -> None:
        self.stats = MonitorStats()
        meter.create_observable_counter(
            "ledger.monitor.audits", [self._audits], unit="{audit}",
            description="Audits of the whole ledger, by outcome: ok, failed (could not read it)",
        )  # fmt: skip
        meter.create_observable_gauge(
            "ledger.monitor.audit", [self._seconds], unit="s",
            description="How long the last audit took, by part: chains, reconciliation",
        )  # fmt: skip
        meter.create_observable_gauge(
            "ledger.monitor.audit.violations", [self._violations], unit="{violation}",
            description="What the last audit found, by source: hash_chain (shards whose chain is "
                        "broken), reconciliation (violations, a first sighting included)",
        )  # fmt: skip
        meter.create_observable_counter(
            "ledger.monitor.alerts", [self._alerts], unit="{alert}",
            description="Alerts published on ledger.alerts, by kind (liquidity, divergence, "
                        "violation) and state (fired, cleared)",
        )  # fmt: skip

    def watch(self, stats: MonitorStats) -> None:
        self.stats = stats

    def _audits(self, options: CallbackOptions) -> Iterable[Observation]:
        audits = dict(self.stats.audits)
        return [Observation(audits.get(outcome, 0), {"outcome": outcome}) for outcome in ("ok", "failed")]

    def _seconds(self, options: CallbackOptions) -> Iterable[Observation]:
        last = self.stats.last_audit
        if last is None:
            return []
        return [
            Observation(last.chain_s, {"part": "chains"}),
            Observation(last.reconcile_s, {"part": "reconciliation"}),
        ]

    def _violations(self, options: CallbackOptions) -> Iterable[Observation]:
        last = self.stats.last_audit
        if last is None:
            return []
        return [
            Observation(len(last.broken), {"source": "hash_chain"}),
            Observation(len(last.findings), {"source": "reconciliation"}),
        ]

    def _alerts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"kind": kind, "state": state})
            for (kind, state), count in list(self.stats.alerts.items())
        ]


@functools.cache
def monitor_metrics() -> MonitorMetrics:
    """This process's monitor instruments, on the global meter (a no-op one when metrics are off)."""
    return MonitorMetrics(metrics.get_meter("ledger.monitor"))
