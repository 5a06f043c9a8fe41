"""`ledger doctor`'s rules: a Facts snapshot in, findings out, each with the command that fixes it.

Pure and deterministic (no I/O, no clock: the time is in the facts), so each rule is tested with a
planted problem. Every command a finding prints is one the `ledger` CLI has
(tests/unit/test_doctor_rules.py checks each against it).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from deploy.doctor.facts import Facts, LagFact, ProcessFact

Severity = Literal["critical", "warning", "info"]
SEVERITY_ORDER: Final[dict[str, int]] = {"critical": 0, "warning": 1, "info": 2}

# Stable codes: scripts and tests match on them.
UNREACHABLE: Final = "unreachable"
RECONCILE_VIOLATION: Final = "reconcile_violation"
CHAIN_BROKEN: Final = "chain_broken"
SAGA_PARKED: Final = "saga_parked"
SAGA_STUCK: Final = "saga_stuck"
CONSUMER_LAG: Final = "consumer_lag"
CONSUMER_STALLED: Final = "consumer_stalled"
OUTBOX_PARKED: Final = "outbox_parked"
OUTBOX_BACKLOG: Final = "outbox_backlog"
BREAKER_LATCHED: Final = "breaker_latched"
BREAKER_OPEN: Final = "breaker_open"
ALERT_FIRING: Final = "alert_firing"
PROCESS_DOWN: Final = "process_down"
SUPERVISOR_DOWN: Final = "supervisor_down"
CODES: Final = (
    UNREACHABLE,
    RECONCILE_VIOLATION,
    CHAIN_BROKEN,
    SAGA_PARKED,
    SAGA_STUCK,
    CONSUMER_LAG,
    CONSUMER_STALLED,
    OUTBOX_PARKED,
    OUTBOX_BACKLOG,
    BREAKER_LATCHED,
    BREAKER_OPEN,
    ALERT_FIRING,
    PROCESS_DOWN,
    SUPERVISOR_DOWN,
)


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    subject: str
    explanation: str
    """What is wrong and why it matters, in plain words."""
    fix: str
    """The exact command(s), one a line, in the order to run them."""
    detail: dict[str, Any] = field(default_factory=dict)

    def sort_key(self) -> tuple[int, str, str]:
        return SEVERITY_ORDER[self.severity], self.code, self.subject

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "subject": self.subject,
            "explanation": self.explanation,
            "fix": self.fix,
            "detail": self.detail,
        }


def diagnose(facts: Facts) -> list[Finding]:
    """Every finding of every rule: critical first, then by code and subject."""
    found = [finding for rule in RULES for finding in rule(facts)]
    return sorted(found, key=Finding.sort_key)


def needs_action(findings: Iterable[Finding]) -> bool:
    """Whether any finding is critical or a warning (`ledger doctor` then exits 1)."""
    return any(f.severity != "info" for f in findings)


# --- the commands a finding prints ----------------------------------------------------------------


def _restart_shard(facts: Facts, shard: int) -> str:
    if facts.local_stack:  # restarts whatever of the stack is down; harmless when all is up
        return "ledger dev up\nledger dev status"
    return f"ledger shard run --shard {shard}"


def _restart_coordinator(facts: Facts) -> str:
    return "ledger dev up\nledger dev status" if facts.local_stack else "ledger coordinator run"


def _restart_relay(facts: Facts, shard: int | None) -> str:
    if facts.local_stack:
        return "ledger dev up\nledger dev status"
    # A coordinator publishes its own outbox; a shard's is published by its worker or a relay.
    if shard is None:
        return "ledger coordinator run"
    # A worker publishes its own outbox unless it runs with --no-relay: then `ledger shard relay` does.
    return f"ledger shard run --shard {shard}"


def _shards_down(facts: Facts) -> set[int]:
    """Shards with no worker: a stalled group, or a local stack's dead shard process."""
    down = {lag.shard for lag in facts.lags or () if lag.shard is not None and lag.stalled}
    for p in facts.processes or ():
        number = p.name.removeprefix("shard-")
        if not p.alive and p.name.startswith("shard-") and number.isdigit():
            down.add(int(number))
    return down


# --- rules ----------------------------------------------------------------------------------------


def unreachable(facts: Facts) -> list[Finding]:
    fix = "ledger dev up\nledger dev status --check" if facts.local_stack else "ledger doctor"
    return [
        Finding(
            "critical",
            UNREACHABLE,
            u.what,
            f"cannot reach {u.what} at {u.where}: {u.error}. What the doctor reads there was not"
            " checked; "
            + (
                "`ledger dev up` restarts a local stack's engines."
                if facts.local_stack
                else "start it or fix the network, then run the doctor again."
            ),
            fix,
            {"where": u.where, "error": u.error},
        )
        for u in facts.unreachable
    ]


_SHARD_IN: Final = re.compile(r"shard (\d+)")


def reconcile_violations(facts: Facts) -> list[Finding]:
    found = []
    for v in facts.violations or ():
        shard = _SHARD_IN.search(f"{v.subject} {v.detail}")
        look = (
            f"ledger replay --shard {shard.group(1)}" if shard else f"ledger status {shlex.quote(v.subject)}"
        )
        found.append(
            Finding(
                "critical",
                RECONCILE_VIOLATION,
                f"{v.check}: {v.subject}",
                f"a shard's journal and the sagas disagree ({v.check}): {v.detail}. Money may have"
                " been moved without a saga, or a saga's leg is missing. Do not change balances by"
                " hand: find the entry and where it came from first.",
                f"ledger reconcile --json\n{look}\nledger verify",
                {"check": v.check, "subject": v.subject, "detail": v.detail},
            )
        )
    return found


def chains_broken(facts: Facts) -> list[Finding]:
    return [
        Finding(
            "critical",
            CHAIN_BROKEN,
            f"shard {c.shard}",
            f"shard {c.shard}'s journal hash chain breaks at seq {c.first_broken_seq} ({c.problem}):"
            " its journal was changed behind the ledger's back. Keep the shard isolated and restore"
            " the rows from a backup or the published chain heads before it takes new transfers.",
            f"ledger verify --json\nledger replay --shard {c.shard}\n"
            f'ledger breaker open --shard {c.shard} --reason "hash chain broken at seq {c.first_broken_seq}"',
            {"shard": c.shard, "first_broken_seq": c.first_broken_seq, "problem": c.problem},
        )
        for c in facts.chains or ()
    ]


def _saga_fix(facts: Facts, transfer_id: str, waiting_on: tuple[int, ...]) -> str:
    lines = [f"ledger status {shlex.quote(transfer_id)}"]
    for shard in sorted(set(waiting_on) & _shards_down(facts)):
        lines.append(_restart_shard(facts, shard))
    return "\n".join(dict.fromkeys("\n".join(lines).splitlines()))


def _waiting(waiting_on: tuple[int, ...]) -> str:
    if not waiting_on:
        return "no shard's answer is outstanding"
    return "it waits for an answer from shard " + ", ".join(map(str, sorted(waiting_on)))


def sagas(facts: Facts) -> list[Finding]:
    found = []
    down = _shards_down(facts)
    for s in facts.sagas or ():
        blocked = sorted(set(s.waiting_on) & down)
        why = f"; shard {', '.join(map(str, blocked))} has no running worker" if blocked else ""
        detail = {
            "step": s.step,
            "age_s": round(s.age_s, 1),
            "waiting_on": list(s.waiting_on),
            "reason": s.reason,
        }
        if s.parked:
            found.append(
                Finding(
                    "warning",
                    SAGA_PARKED,
                    s.transfer_id,
                    f"transfer {s.transfer_id} needs attention: its saga is parked at step {s.step}"
                    f" after {s.age_s:.0f} s ({_waiting(s.waiting_on)}{why}). It keeps retrying; a person"
                    " must see why the shard refuses or does not answer.",
                    _saga_fix(facts, s.transfer_id, s.waiting_on),
                    detail,
                )
            )
        elif s.age_s >= facts.thresholds.stuck_after_s:
            found.append(
                Finding(
                    "warning",
                    SAGA_STUCK,
                    s.transfer_id,
                    f"transfer {s.transfer_id} has been in flight for {s.age_s:.0f} s at step {s.step}"
                    f" ({_waiting(s.waiting_on)}{why}). Its client has no answer yet.",
                    _saga_fix(facts, s.transfer_id, s.waiting_on),
                    detail,
                )
            )
    return found


def _group_name(lag: LagFact) -> str:
    if lag.monitor:
        return "the monitor"
    return "the coordinators" if lag.shard is None else f"shard {lag.shard}'s worker"


def _lag_subject_and_fix(facts: Facts, lag: LagFact) -> tuple[str, str]:
    if lag.monitor:  # a local stack runs none: started by hand there too
        return "monitor", "ledger monitor run"
    if lag.shard is None:
        return "coordinator", _restart_coordinator(facts)
    return f"shard {lag.shard}", _restart_shard(facts, lag.shard)


def lags(facts: Facts) -> list[Finding]:
    found = []
    for lag in facts.lags or ():
        subject, restart = _lag_subject_and_fix(facts, lag)
        detail = {"group": lag.group, "lag": lag.lag, "stalled": lag.stalled}
        if lag.stalled:
            found.append(
                Finding(
                    "warning",
                    CONSUMER_STALLED,
                    subject,
                    f"group {lag.group} is {lag.lag} records behind and did not move while the doctor"
                    f" watched: {_group_name(lag)} is not running, or is stuck. Transfers that need it"
                    " wait until it is back.",
                    restart,
                    detail,
                )
            )
        elif lag.lag > facts.thresholds.lag_warning:
            found.append(
                Finding(
                    "warning",
                    CONSUMER_LAG,
                    subject,
                    f"{_group_name(lag)} is {lag.lag} records behind (group {lag.group}): it is slow,"
                    " stalled or overloaded. If the lag keeps growing, restart it.",
                    restart,
                    detail,
                )
            )
    return found


def outboxes(facts: Facts) -> list[Finding]:
    found = []
    for box in facts.outboxes or ():
        detail = {
            "schema": box.schema,
            "shard": box.shard,
            "waiting": box.waiting,
            "oldest_s": round(box.oldest_s, 1),
            "parked": box.parked,
        }
        if box.parked:
            found.append(
                Finding(
                    "warning",
                    OUTBOX_PARKED,
                    box.schema,
                    f"{box.parked} outbox row(s) of {box.schema} were refused by Kafka for good"
                    f" (topics: {', '.join(box.parked_topics) or '?'}) and set aside: the messages in them"
                    " (results, commands or dead letters) were never published.",
                    "ledger outbox parked",
                    detail | {"topics": list(box.parked_topics)},
                )
            )
        if box.waiting and box.oldest_s > facts.thresholds.outbox_oldest_s:
            found.append(
                Finding(
                    "warning",
                    OUTBOX_BACKLOG,
                    box.schema,
                    f"{box.waiting} outbox row(s) of {box.schema} are waiting, the oldest for"
                    f" {box.oldest_s:.0f} s: nothing is publishing them, so their replies and results are"
                    " late (a worker run with --no-relay leaves them to `ledger shard relay`).",
                    _restart_relay(facts, box.shard),
                    detail,
                )
            )
    return found


def breakers(facts: Facts) -> list[Finding]:
    found = []
    for b in facts.breakers or ():
        detail = {
            "state": b.state,
            "latched": b.latched,
            "reason": b.reason,
            "changed_by": b.changed_by,
            "since_ms": b.since_ms,
        }
        since = max(0, facts.now_ms - b.since_ms) // 1000
        if b.latched:
            found.append(
                Finding(
                    "critical",
                    BREAKER_LATCHED,
                    f"shard {b.shard}",
                    f"shard {b.shard}'s breaker has been open for {since} s and stays open until an"
                    f" operator closes it ({b.changed_by}: {b.reason or 'no reason given'}): every new"
                    f" transfer touching shard {b.shard} is declined with shard_unavailable. Close it only"
                    " after `ledger verify` and `ledger reconcile` come back clean.",
                    "ledger verify\nledger reconcile\n"
                    f'ledger breaker close --shard {b.shard} --reason "verify and reconcile clean"',
                    detail,
                )
            )
        elif b.state != "closed":
            found.append(
                Finding(
                    "warning",
                    BREAKER_OPEN,
                    f"shard {b.shard}",
                    f"shard {b.shard}'s breaker is {b.state.replace('_', '-')} since {since} s"
                    f" ({b.reason or 'no reason given'}): new transfers touching it are declined or"
                    " trickled. It closes by itself once the shard is healthy again; check its worker.",
                    f"ledger breaker status --shard {b.shard}\n{_restart_shard(facts, b.shard)}",
                    detail,
                )
            )
    return found


def alerts(facts: Facts) -> list[Finding]:
    return [
        Finding(
            "warning",
            ALERT_FIRING,
            f"{a.rule_id}: {a.account_id}",
            f"liquidity rule {a.rule_id} ({a.kind}, {a.severity}) has fired for account {a.account_id}"
            f" in {a.currency} and not cleared: observed {a.observed} against {a.threshold} (minor"
            " units). Fund the account or change the rule.",
            f"ledger balance {shlex.quote(a.account_id)}",
            {
                "rule_id": a.rule_id,
                "kind": a.kind,
                "severity": a.severity,
                "account_id": a.account_id,
                "currency": a.currency,
                "observed": a.observed,
                "threshold": a.threshold,
                "at_ms": a.at_ms,
            },
        )
        for a in facts.alerts or ()
    ]


def _process_fix(p: ProcessFact, supervised: bool) -> str:
    if not supervised:
        return "ledger dev up\nledger dev status"
    return "ledger dev status" + (f"\ntail -n 50 {shlex.quote(p.log)}" if p.log else "")


def processes(facts: Facts) -> list[Finding]:
    if facts.processes is None:
        return []
    supervised = bool(facts.supervisor_alive)
    found = [
        Finding(
            "warning",
            PROCESS_DOWN,
            p.name,
            f"{p.name} of the local stack is not running (restarted {p.restarts} times; last exit:"
            f" {p.last_exit or 'unknown'}). "
            + (
                "Its supervisor restarts it with backoff; if it keeps dying, its log says why."
                if supervised
                else "No supervisor is running to restart it: `ledger dev up` starts one."
            ),
            _process_fix(p, supervised),
            {"restarts": p.restarts, "last_exit": p.last_exit, "log": p.log},
        )
        for p in facts.processes
        if not p.alive
    ]
    if facts.supervisor_alive is False:
        found.append(
            Finding(
                "warning",
                SUPERVISOR_DOWN,
                "supervisor",
                "the local stack's supervisor is not running: a process that dies now stays down.",
                "ledger dev up\nledger dev status",
                {},
            )
        )
    return found


RULES: Final[tuple[Callable[[Facts], list[Finding]], ...]] = (
    unreachable,
    reconcile_violations,
    chains_broken,
    sagas,
    lags,
    outboxes,
    breakers,
    alerts,
    processes,
)
