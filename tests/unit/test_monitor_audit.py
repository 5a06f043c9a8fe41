"""The continuous audit in the monitor (issue 16, item 6, and the divergences of items 4 and 5),
with a fake Auditor and an in-memory publisher: a broken hash chain latches its shard's breaker at
once with one critical alert; a reconciliation violation counts only when two consecutive audits
see it; alerts clear once; a restarted monitor repeats nothing."""

from __future__ import annotations

import asyncio

from monitor.domain.audit import AuditJudge, AuditReport, ChainVerdict, Finding, shard_named
from monitor.service.auditing import audit_forever, pause_after
from monitor.service.monitor import MonitorService
from schemas.breaker import BY_MONITOR, OPEN
from schemas.errors import LedgerError
from schemas.ledger_alert import DIVERGENCE, HASH_CHAIN, VIOLATION, ledger_alert_id
from tests.unit.test_monitor_service import SETTINGS, FakePublisher

INTACT = (ChainVerdict(0, 40), ChainVerdict(1, 40))
BROKEN = (ChainVerdict(0, 40), ChainVerdict(1, 19, 20, "the entry's content does not match its hash"))
UNBALANCED = Finding("journal_balanced", "shard 1 EUR", "sums to 100")
TORN = Finding("saga_legs", "5b0c7e9e-2d4f-4a43-9f0e-8f4b2f6c1a11", "completed: credit leg 0, credited=False")


def report(chains: tuple[ChainVerdict, ...] = INTACT, *findings: Finding) -> AuditReport:
    return AuditReport(chains, tuple(findings), sagas=10, one_snapshot=True, chain_s=0.01, reconcile_s=0.02)


async def monitor(out: FakePublisher, on_duty: bool = True) -> MonitorService:
    service = MonitorService([0, 1], out, started_ms=0, settings=SETTINGS)
    if on_duty:  # the only monitor: it decides the breakers
        await service.take_duty(0, held_before=False)
    return service


async def test_a_broken_chain_latches_its_shard_open_at_once_with_one_critical_alert() -> None:
    out = FakePublisher()
    service = await monitor(out)
    await service.on_audit(report(BROKEN), 1_000)  # no telemetry at all: a divergence needs none
    (state,) = out.states
    assert (state.shard, state.state, state.latched, state.changed_by) == (1, OPEN, True, BY_MONITOR)
    assert "seq 20" in state.reason
    (alert,) = out.ledger_alerts
    assert (alert.kind, alert.state, alert.severity, alert.shard, alert.check, alert.subject) == (
        DIVERGENCE, "fired", "critical", 1, HASH_CHAIN, "seq 20",
    )  # fmt: skip
    assert alert.alert_id == ledger_alert_id(DIVERGENCE, 1, HASH_CHAIN, "seq 20", "fired")
    await service.on_audit(report(BROKEN), 31_000)  # still broken: nothing again
    await service.tick(32_000)
    assert (len(out.states), len(out.ledger_alerts)) == (1, 1)
    assert service.stats.alerts[(DIVERGENCE, "fired")] == 1


async def test_a_reconciliation_violation_seen_once_is_not_a_divergence_seen_twice_it_is() -> None:
    out = FakePublisher()
    service = await monitor(out)
    await service.on_audit(report(INTACT, UNBALANCED), 1_000)
    await service.on_audit(report(INTACT), 31_000)  # gone: a torn read, say
    await service.on_audit(report(INTACT, UNBALANCED), 61_000)
    assert (out.states, out.ledger_alerts) == ([], [])
    await service.on_audit(report(INTACT, UNBALANCED), 91_000)  # the same one, two audits running
    (state,) = out.states
    assert (state.shard, state.state, state.latched) == (1, OPEN, True)
    (alert,) = out.ledger_alerts
    assert (alert.kind, alert.shard, alert.check, alert.subject, alert.detail, alert.at_ms) == (
        DIVERGENCE, 1, "journal_balanced", "shard 1 EUR", "sums to 100", 91_000,
    )  # fmt: skip


async def test_a_violation_of_no_single_shard_alerts_and_opens_no_breaker() -> None:
    out = FakePublisher()
    service = await monitor(out)
    for at in (1_000, 31_000, 61_000):
        await service.on_audit(report(INTACT, TORN), at)
    assert out.states == []
    (alert,) = out.ledger_alerts
    assert (alert.kind, alert.shard, alert.check, alert.severity) == (
        VIOLATION,
        None,
        "saga_legs",
        "critical",
    )


async def test_a_finding_clears_once_when_an_audit_no_longer_finds_it_and_a_failed_audit_clears_nothing() -> (
    None
):
    out = FakePublisher()
    service = await monitor(out)
    await service.on_audit(report(BROKEN), 1_000)
    service.on_audit_failed(Flaky("database unreachable"))
    await service.on_audit(report(INTACT), 31_000)
    await service.on_audit(report(INTACT), 61_000)
    assert [(a.state, a.subject, a.at_ms) for a in out.ledger_alerts] == [
        ("fired", "seq 20", 1_000),
        ("cleared", "seq 20", 31_000),
    ]
    fired, cleared = out.ledger_alerts
    assert (
        cleared.alert_id == ledger_alert_id(DIVERGENCE, 1, HASH_CHAIN, "seq 20", "cleared") != fired.alert_id
    )
    assert out.states[-1].latched  # only an operator closes a latched breaker
    assert dict(service.stats.audits) == {"ok": 3, "failed": 1}


async def test_a_restarted_monitor_recalls_open_findings_and_fires_nothing_again() -> None:
    first = FakePublisher()
    before = await monitor(first)
    for at in (1_000, 31_000):
        await before.on_audit(report(BROKEN, UNBALANCED, TORN), at)
    assert len(first.ledger_alerts) == 3  # the chain at once, the two violations at their second sighting
    out = FakePublisher()
    after = await monitor(out, on_duty=False)
    for alert in first.ledger_alerts:  # as rebuild reads them back from ledger.alerts
        after.recall(alert)
    for state in first.states:
        after.resume(state)
    await after.take_duty(61_000, held_before=False)
    await after.on_audit(report(BROKEN, UNBALANCED, TORN), 61_000)  # one sighting keeps an open one open
    assert (out.states, out.ledger_alerts) == ([], [])
    await after.on_audit(report(BROKEN), 91_000)
    assert sorted((a.state, a.check) for a in out.ledger_alerts) == [
        ("cleared", "journal_balanced"),
        ("cleared", "saga_legs"),
    ]


def test_only_a_subject_that_names_a_watched_shard_is_a_divergence() -> None:
    subjects = ("shard 1 EUR", "shard 12", "shards 1", "EUR")
    assert [shard_named(s) for s in subjects] == [1, 12, None, None]
    judge = AuditJudge({0, 1})
    for at in (1, 2):
        divergences, alerts = judge.judge(report(INTACT, Finding("journal_balanced", "shard 7 EUR", "x")), at)
    assert divergences == []
    assert [(a.kind, a.shard) for a in alerts] == [(VIOLATION, None)]


class Flaky(LedgerError):
    retriable = True


class FakeAuditor:
    """Reports in turn; a LedgerError among them is raised instead; the stop is set after the last."""

    def __init__(self, stop: asyncio.Event, *outcomes: AuditReport | LedgerError) -> None:
        self.stop, self.outcomes, self.calls = stop, list(outcomes), 0

    async def audit(self) -> AuditReport:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if not self.outcomes:
            self.stop.set()
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome


async def test_the_audit_loop_audits_until_stopped_and_survives_an_audit_that_cannot_read() -> None:
    out = FakePublisher()
    service = await monitor(out)
    stop = asyncio.Event()
    auditor = FakeAuditor(
        stop, report(INTACT, UNBALANCED), Flaky("connection refused"), report(INTACT, UNBALANCED)
    )
    await asyncio.wait_for(audit_forever(service, auditor, 0.01, stop, lambda: 5_000), 5)
    assert auditor.calls == 3
    assert dict(service.stats.audits) == {"ok": 2, "failed": 1}
    assert [a.check for a in out.ledger_alerts] == [
        "journal_balanced"
    ]  # the failure in between erased nothing


async def test_the_audit_figures_are_metrics() -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from monitor.adapters.otel_metrics import MonitorMetrics  # noqa: PLC0415

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    service = await monitor(FakePublisher())
    MonitorMetrics(provider.get_meter("test")).watch(service.stats)
    await service.on_audit(report(BROKEN, UNBALANCED), 1_000)

    def value(name: str, **labels: str) -> float:
        (found,) = [
            s.value
            for family in registry.collect()
            for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()
        ]
        return found

    assert value("ledger_monitor_audit_violations", source="hash_chain") == 1
    assert value("ledger_monitor_audit_violations", source="reconciliation") == 1
    assert value("ledger_monitor_audit_seconds", part="chains") == 0.01
    assert value("ledger_monitor_audits_total", outcome="ok") == 1
    assert value("ledger_monitor_alerts_total", kind="divergence", state="fired") == 1


def test_audits_take_at_most_a_third_of_the_monitors_time() -> None:
    """Regression, ledger chaos (seed 12, 900 s, audits every 2 s): on a grown ledger an audit took
    2-3.5 s, so they ran back to back on the monitor's event loop, its telemetry went unread for
    40 s (every shard stale, fleet-wide) and a paused shard went unseen."""
    assert pause_after(every_s=30.0, took_s=1.0) == 29.0, "the period, as long as audits are short"
    assert pause_after(every_s=2.0, took_s=0.5) == 1.5
    assert pause_after(every_s=2.0, took_s=3.0) == 6.0, "twice the audit's time: a third of the time auditing"
