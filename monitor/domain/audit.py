"""What the monitor's continuous audit found, judged: which shards diverged and which alerts to
fire or clear. Pure: an AuditReport and the time come in, decisions go out; the reading is the
Auditor's (monitor/service/ports.py), the breakers' and the publishing the service's.

Two kinds of finding, with two standards of proof:

- a broken hash chain is exact: a journal entry that does not match its hash, or a chain head
  published outside the shard that the journal no longer reaches, is not an artifact of when it
  was read. The shard diverged at the first audit that sees it.
- a reconciliation violation holds every shard's journal against every saga. On a live ledger
  those reads are not one snapshot across shards (shards may live on other servers, and a saga
  moves on between the reads), so a single sighting of, say, a credit leg without its hold may be
  a saga caught half-way. A violation counts only when the same one (check, subject) is seen by
  two consecutive audits, `every` seconds apart: longer than any saga step takes. Once confirmed,
  it stays open for as long as audits still see it (one sighting is enough to keep it).

A confirmed violation whose subject names a shard ("shard 1 EUR": that shard's journal does not
balance) is that shard's divergence; one about a transfer or a currency is attributed to no single
shard (either leg may be the wrong one): an alert, no breaker. A divergence is signalled once, when
its alert fires: the breaker it latches stays open until an operator closes it, and an operator
who closes it while the finding persists has decided to (the alert stays open meanwhile).

Alerts fire once and clear once, when an audit no longer finds them. A restarted monitor recalls
the alerts on ledger.alerts first (`recall`), so what is still open is neither fired nor signalled
again; only the two-sighting memory starts afresh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from schemas.ledger_alert import (
    DIVERGENCE,
    HASH_CHAIN,
    MAX_DETAIL,
    MAX_SUBJECT,
    VIOLATION,
    LedgerAlert,
    ledger_alert_id,
)

SEVERITY: Final = "critical"
"""Every confirmed finding is the ledger disagreeing with itself: someone should look now."""
_SHARD_SUBJECT: Final = re.compile(r"shard (\d+)(?:\s|$)")


@dataclass(frozen=True)
class ChainVerdict:
    """One shard's hash chain, recomputed from its first entry."""

    shard: int
    entries: int
    broken_seq: int | None = None
    """The first entry that does not link, or None when the chain is intact."""
    problem: str | None = None


@dataclass(frozen=True)
class Finding:
    """One reconciliation violation, as coordinator/saga/reconciliation.py words it."""

    check: str
    subject: str
    detail: str


@dataclass(frozen=True)
class AuditReport:
    """One audit of the whole ledger, and what it cost."""

    chains: tuple[ChainVerdict, ...]
    findings: tuple[Finding, ...]
    sagas: int
    """Sagas reconciled."""
    one_snapshot: bool
    """Whether the reconciliation read every schema in one snapshot (all on one server)."""
    chain_s: float
    """Seconds spent recomputing the chains."""
    reconcile_s: float
    """Seconds spent reading and reconciling."""

    @property
    def seconds(self) -> float:
        return self.chain_s + self.reconcile_s

    @property
    def broken(self) -> tuple[ChainVerdict, ...]:
        return tuple(c for c in self.chains if c.broken_seq is not None)

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.chains)


@dataclass(frozen=True)
class Divergence:
    """A shard found diverged: the detector is told, and the shard's breaker latches open."""

    shard: int
    detail: str


Identity = tuple[str, int | None, str, str]
"""(kind, shard, check, subject): what an alert is about."""


def shard_named(subject: str) -> int | None:
    """The shard a reconciliation subject names ("shard 1 EUR" -> 1), else None."""
    found = _SHARD_SUBJECT.match(subject)
    return int(found.group(1)) if found else None


class AuditJudge:
    """The open alerts and the last audit's sightings. Deterministic: time only comes in."""

    def __init__(self, shards: set[int] | frozenset[int]) -> None:
        self._shards = frozenset(shards)
        self._open: dict[Identity, LedgerAlert] = {}
        self._sighted: set[tuple[str, str]] = set()
        """(check, subject) of every reconciliation violation the last audit saw."""

    def recall(self, alert: LedgerAlert) -> None:
        """An alert from ledger.alerts, in topic order (before any audit): emits nothing."""
        if alert.state == "fired":
            self._open[alert.identity] = alert
        else:
            self._open.pop(alert.identity, None)

    def open_alerts(self) -> dict[Identity, LedgerAlert]:
        return dict(self._open)

    def judge(self, report: AuditReport, now_ms: int) -> tuple[list[Divergence], list[LedgerAlert]]:
        """The shards that diverged with this audit and the alerts it fires or clears (in a
        stable order: shard, then check and subject)."""
        found: dict[Identity, str] = {}
        for chain in report.broken:
            detail = f"hash chain broken at seq {chain.broken_seq}: {chain.problem}"
            found[self._identity(chain.shard, HASH_CHAIN, f"seq {chain.broken_seq}")] = detail
        sighted = {(f.check, f.subject) for f in report.findings}
        for f in report.findings:
            identity = self._identity(shard_named(f.subject), f.check, f.subject)
            if (f.check, f.subject) in self._sighted or identity in self._open:
                found[identity] = f.detail
        self._sighted = sighted

        divergences, alerts = [], []
        for identity, detail in sorted(found.items(), key=_order):
            if identity in self._open:
                continue
            alert = _alert(identity, "fired", detail, now_ms)
            self._open[identity] = alert
            alerts.append(alert)
            kind, shard, check, subject = identity
            if kind == DIVERGENCE and shard is not None:
                divergences.append(Divergence(shard, f"{check} {subject}: {detail}"[:MAX_DETAIL]))
        for identity, fired in sorted(self._open.items(), key=_order):
            if identity not in found:
                del self._open[identity]
                alerts.append(_alert(identity, "cleared", fired.detail, now_ms))
        return divergences, alerts

    def _identity(self, shard: int | None, check: str, subject: str) -> Identity:
        subject = subject[:MAX_SUBJECT] or "-"
        if shard is not None and shard in self._shards:
            return (DIVERGENCE, shard, check, subject)
        return (VIOLATION, None, check, subject)


def _order(item: tuple[Identity, object]) -> tuple[int, str, str, str]:
    kind, shard, check, subject = item[0]
    return (-1 if shard is None else shard, kind, check, subject)


def _alert(identity: Identity, state: str, detail: str, now_ms: int) -> LedgerAlert:
    kind, shard, check, subject = identity
    return LedgerAlert(
        ledger_alert_id(kind, shard, check, subject, state), kind, state, SEVERITY, shard, check, subject,
        detail[:MAX_DETAIL], now_ms,
    )  # fmt: skip
