"""The monitor service: decoded inputs in, the pure cores decide, the Publisher port writes.

Inputs come from the adapters already decoded (monitor/adapters/records.py); time comes in with
them (a record's timestamp, or the tick's clock). Everything here runs on one event loop; the
breakers are decided under a lock because a tick and an operator's command may interleave at an
`await`.

At least once, never lost. What the cores decided is queued and the queue is published before the
handler returns: a publish that fails is retried (the record is not acknowledged meanwhile, so its
offset is not committed), and what was decided but not yet sent is sent first next time. Alert ids
are stable and BreakerStates carry a seq per shard, so a repeat is harmless to readers.

Restart. `recall` (every alert on ledger.alerts) and `resume` (every BreakerState on ledger.control)
rebuild the state before `begin` installs the rules in force; only then are records consumed.
Commands are replayed safely: a SetLiquidityRules at or before the offset of the one in force is
skipped (a replay of older rules would clear and fire alerts for nothing), and a SetBreaker no newer
than its breaker's last change is skipped (a redelivered close must not close a breaker the monitor
opened again since).

Breaker duty. Several monitors may run; one decides the breakers: the one on duty, which the
adapter makes the holder of ledger.telemetry's partition (`take_duty`, `drop_duty`). Only it
judges the shards, obeys SetBreaker, audits and publishes the clears a rule change implies, so
each shard's BreakerStates come from one writer at a time and their seqs keep rising. Every
monitor follows ledger.control and ledger.alerts as they grow (`resume`, `recall`), and one takes
duty only once it has read them to their end: its next change follows the last one written,
whoever wrote it.

Breakers are judged only once some telemetry has arrived since duty was taken: with none at all
(no process publishes it yet), every shard would be stale and opened by a monitor that sees
nothing. A divergence found by the continuous audit (`on_audit`, monitor/domain/audit.py) needs
none: its shard's breaker latches at once, beside the critical alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from monitor.domain import breaker
from monitor.domain.anomaly import AnomalyDetector, AnomalyPolicy, TelemetrySample
from monitor.domain.audit import AuditJudge, AuditReport
from monitor.domain.breaker import Breaker, BreakerPolicy, HealthObserved, OperatorClosed, OperatorOpened
from monitor.domain.liquidity import BalanceObserved, LiquidityMonitor
from monitor.service.ports import Publisher
from schemas.alerts import LiquidityAlert
from schemas.breaker import BreakerState, SetBreaker
from schemas.errors import LedgerError
from schemas.ledger_alert import Alert, LedgerAlert
from schemas.liquidity_rules import InvalidLiquidityMessage, LiquidityRule, SetLiquidityRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    """How the monitor judges and retries, chosen at the entry point."""

    breaker_policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    anomaly_policy: AnomalyPolicy = field(default_factory=AnomalyPolicy)
    retry_pause_s: float = 0.5
    """Pause before publishing again after the broker refused (it retried already inside)."""
    max_retry_pause_s: float = 10.0
    remembered_commands: int = 10_000
    """SetBreaker command ids kept to drop a redelivery at once (the seq rule covers older ones)."""


@dataclass
class MonitorStats:
    """What the monitor counts, for people (its log) and for /metrics
    (monitor/adapters/otel_metrics.py, which reads these from a scrape's thread: plain numbers)."""

    audits: Counter[str] = field(default_factory=Counter)
    """Audits by outcome: ok, failed."""
    last_audit: AuditReport | None = None
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Alerts published, by (kind: liquidity, divergence or violation; fired or cleared)."""


class MonitorService:
    def __init__(
        self,
        shards: Iterable[int],
        publisher: Publisher,
        started_ms: int,
        settings: MonitorSettings | None = None,
        stats: MonitorStats | None = None,
    ) -> None:
        self.settings = settings or MonitorSettings()
        self.stats = stats or MonitorStats()
        self._publisher = publisher
        self._shards = sorted(set(shards))
        self.on_duty = False
        """Whether this monitor decides the breakers (see the module's docstring)."""
        self._inputs_open = asyncio.Event()
        self._inputs_open.set()
        self.liquidity = LiquidityMonitor()
        self.detector = AnomalyDetector(self._shards, started_ms, self.settings.anomaly_policy)
        self.audit = AuditJudge(set(self._shards))
        self.breakers: dict[int, Breaker] = {s: breaker.start(s) for s in self._shards}
        self.results: Counter[tuple[str, str | None]] = Counter()
        """Results seen, by (state or outcome, reason): a rough count, redeliveries included."""
        self.refused: Counter[str] = Counter()
        """Records that were not what their topic carries, by topic kind."""
        self._rules_offset = -1
        self._seen_commands: OrderedDict[str, None] = OrderedDict()
        self._telemetry_seen = False
        self._verdicts: dict[int, str] = {}
        self._unsent_alerts: list[Alert] = []
        self._unsent_states: list[BreakerState] = []
        self._rule_clears: dict[str, LiquidityAlert] = {}
        """Clears a rule change implied while off duty, by alert id: the monitor on duty publishes
        them; one that takes duty publishes those it has not seen on ledger.alerts by then."""
        self._breaker_lock = asyncio.Lock()
        # One publisher at a time: the agents, the tick and the audit all flush, and two flushes
        # of the same queue would each send it.
        self._publish_lock = asyncio.Lock()

    # --- rebuilding, then following ledger.alerts and ledger.control -----------------------------

    def recall(self, alert: Alert) -> None:
        if isinstance(alert, LedgerAlert):
            if not self.on_duty:  # on duty, this monitor is the only auditor: its judge is ahead
                self.audit.recall(alert)
        else:
            self._rule_clears.pop(alert.alert_id, None)
            self.liquidity.recall(alert)

    def resume(self, state: BreakerState) -> None:
        known = self.breakers.get(state.shard)
        if known is not None and state.newer_than(known.published):
            self.breakers[state.shard] = breaker.resume(state)

    async def begin(self, rules: Sequence[LiquidityRule], now_ms: int, rules_offset: int = -1) -> None:
        """Install the rules in force: the file's, or those of the latest SetLiquidityRules on the
        command topic (at `rules_offset`); clears the recalled episodes of rules gone meanwhile."""
        self._rules_offset = rules_offset
        await self._publish_alerts(self.liquidity.replace_rules(rules, now_ms))

    # --- duty -------------------------------------------------------------------------------------

    async def take_duty(self, now_ms: int, held_before: bool) -> None:
        """Decide the breakers from now on; the caller has read ledger.control and ledger.alerts to
        their end. `held_before`: this monitor had duty until the rebalance that gave it again, so
        nobody else changed a breaker meanwhile and its baselines and healing clocks still hold;
        otherwise both start afresh (what it knew of the shards may be minutes old)."""
        async with self._breaker_lock:
            if not held_before:
                self.detector = AnomalyDetector(self._shards, now_ms, self.settings.anomaly_policy)
                self.breakers = {s: breaker.resume(b.published) for s, b in self.breakers.items()}
            self._telemetry_seen = False  # the partition was paused: judge once its figures flow again
            self.on_duty = True
            clears, self._rule_clears = list(self._rule_clears.values()), {}
        log.info("monitor: on breaker duty (%s)", "again" if held_before else "taken over")
        await self._publish_alerts(clears)

    def hold_inputs(self) -> None:
        """Partitions were just assigned: balances and SetBreakers wait (faust may resume the
        partitions at once) until `release_inputs`, once what other monitors wrote is heard of
        and the duty, if it came, taken: an episode carries on where its last monitor left it,
        an operator's command lands on the breakers as they are."""
        self._inputs_open.clear()

    def release_inputs(self) -> None:
        self._inputs_open.set()

    async def drop_duty(self) -> None:
        """Stop deciding the breakers: once a decision under way is written (the lock), nothing
        more; the next monitor on duty reads it on ledger.control."""
        async with self._breaker_lock:
            self.on_duty = False
        log.info("monitor: off breaker duty")

    # --- inputs ----------------------------------------------------------------------------------

    async def on_balance(self, observed: BalanceObserved) -> None:
        await self._inputs_open.wait()
        await self._publish_alerts(self.liquidity.observe(observed))

    def on_telemetry(self, sample: TelemetrySample) -> None:
        self._telemetry_seen = True
        self.detector.observe(sample)

    def on_result(self, state: str, reason: str | None) -> None:
        self.results[(state, reason)] += 1

    def on_refused(self, kind: str, error: LedgerError) -> None:
        self.refused[kind] += 1
        log.warning("monitor: a %s record refused: %s", kind, error)

    async def on_set_rules(self, command: SetLiquidityRules, offset: int, at_ms: int) -> None:
        if offset <= self._rules_offset:
            return  # this one or a newer one is in force already
        try:
            alerts = self.liquidity.replace_rules(command.rules, at_ms)
        except InvalidLiquidityMessage as e:  # a check the decoder shares; a refusal all the same
            self.on_refused("monitor command", e)
            return
        self._rules_offset = offset
        log.info("monitor: %d liquidity rules in force (command %s)", len(command.rules), command.command_id)
        if self.on_duty:
            await self._publish_alerts(alerts)
        else:
            self._rule_clears.update((a.alert_id, a) for a in alerts)

    async def on_set_breaker(self, command: SetBreaker, at_ms: int) -> None:
        if command.command_id in self._seen_commands:
            return
        await self._inputs_open.wait()
        async with self._breaker_lock:
            if not self.on_duty:  # faust gives the command partition with the duty: not met
                log.error("monitor: SetBreaker %s reached a monitor off duty, left", command.command_id)
                return
            current = self.breakers.get(command.shard)
            if current is None:
                log.warning("monitor: SetBreaker for shard %d, not one of the ledger's", command.shard)
                return
            if at_ms <= current.published.since_ms:
                return  # older than the breaker's last change: a redelivery, or overtaken
            event: OperatorOpened | OperatorClosed = (
                OperatorOpened(command.operator, command.reason, at_ms)
                if command.action == "open"
                else OperatorClosed(command.operator, command.reason, at_ms)
            )
            await self._decide(command.shard, event)
        self._remember(command.command_id)

    async def tick(self, now_ms: int) -> None:
        """Once a second: assess every shard and feed its breaker (see the module's docstring)."""
        await self._flush()  # whatever a failed publish left behind, whether or not judged below
        async with self._breaker_lock:
            if not (self.on_duty and self._telemetry_seen):
                return
            verdicts = self.detector.assess(now_ms)
            for shard, verdict in verdicts.items():
                if self._verdicts.get(shard) != verdict.status:  # why a breaker did (not) move, later
                    log.info("monitor: shard %d %s %s", shard, verdict.status, verdict.detail)
                    self._verdicts[shard] = verdict.status
                await self._decide(shard, HealthObserved(verdict.status, verdict.detail, now_ms))

    async def on_audit(self, report: AuditReport, now_ms: int) -> None:
        """An audit's report: each shard newly diverged latches its breaker, then the alerts.
        Judged on duty only, under the breakers' lock: a monitor losing duty meanwhile finishes
        this judgement (its alerts written) before the next one takes over."""
        async with self._breaker_lock:
            if not self.on_duty:
                return
            self.stats.audits["ok"] += 1
            self.stats.last_audit = report
            log.info(
                "monitor: audit in %.3f s: %d shards' chains (%d entries) in %.3f s, %d broken; %d sagas"
                " reconciled in %.3f s (%s), %d violations",
                report.seconds, len(report.chains), report.entries, report.chain_s, len(report.broken),
                report.sagas, report.reconcile_s,
                "one snapshot" if report.one_snapshot else "several snapshots", len(report.findings),
            )  # fmt: skip
            divergences, alerts = self.audit.judge(report, now_ms)
            for diverged in divergences:
                self.detector.divergence(diverged.shard, diverged.detail, now_ms)
            if divergences:
                for shard, verdict in self.detector.take_divergences(now_ms).items():
                    await self._decide(shard, HealthObserved(verdict.status, verdict.detail, now_ms))
            await self._publish_alerts(alerts)

    def on_audit_failed(self, error: LedgerError) -> None:
        """An audit that could not read the ledger: nothing is judged (nothing fires or clears)."""
        self.stats.audits["failed"] += 1
        log.warning("monitor: the audit could not run, again at the next: %s", error)

    # --- the parts -------------------------------------------------------------------------------

    async def _decide(self, shard: int, event: breaker.Event) -> None:
        updated, changes = breaker.decide(self.breakers[shard], event, self.settings.breaker_policy)
        self.breakers[shard] = updated
        for state in changes:
            log.info("monitor: shard %d breaker %s (%s)", shard, state.state, state.reason)
        self._unsent_states += changes
        await self._flush()

    async def _publish_alerts(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            if isinstance(alert, LiquidityAlert):
                log.info(
                    "monitor: liquidity %s %s on %s %s",
                    alert.rule_id,
                    alert.state,
                    alert.account_id,
                    alert.currency,
                )
            else:
                log.log(
                    logging.CRITICAL if alert.state == "fired" else logging.INFO,
                    "monitor: %s %s: %s %s %s: %s",
                    alert.kind, alert.state, "ledger" if alert.shard is None else f"shard {alert.shard}",
                    alert.check, alert.subject, alert.detail,
                )  # fmt: skip
        self._unsent_alerts += alerts
        await self._flush()

    async def _flush(self) -> None:
        async with self._publish_lock:
            await self._flush_queues()

    async def _flush_queues(self) -> None:
        pause = self.settings.retry_pause_s
        while self._unsent_alerts or self._unsent_states:
            try:
                # What was queued as the send began: a handler may queue more during the await.
                if alerts := list(self._unsent_alerts):
                    await self._publisher.publish_alerts(alerts)
                    del self._unsent_alerts[: len(alerts)]
                    for alert in alerts:
                        kind = alert.kind if isinstance(alert, LedgerAlert) else "liquidity"
                        self.stats.alerts[(kind, alert.state)] += 1
                if states := list(self._unsent_states):
                    await self._publisher.publish_breakers(states)
                    del self._unsent_states[: len(states)]
            except LedgerError as e:
                if not e.retriable:
                    raise
                log.warning("monitor: publishing failed, again in %.1f s: %s", pause, e)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.settings.max_retry_pause_s)

    def _remember(self, command_id: str) -> None:
        self._seen_commands[command_id] = None
        while len(self._seen_commands) > self.settings.remembered_commands:
            self._seen_commands.popitem(last=False)
