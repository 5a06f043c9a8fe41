"""One chaos run: the workload against a local stack while the nemesis injects faults, then
heal, wait until quiet (bounded), read everything and check every invariant."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from deploy.chaos.breakers import DETECTIONS, BreakerWatch, detections, shard_of_fault, timeline
from deploy.chaos.checker import INVARIANTS, PENDING, REUSED, History, Observed, check
from deploy.chaos.iptables import sweep_stale, unavailable_reason
from deploy.chaos.latency import FaultWindow, latency_by_window
from deploy.chaos.nemesis import Nemesis
from deploy.chaos.postgres_state import read_ledger, stuck_sessions, wait_sagas_end
from deploy.chaos.schedule import CUT_KINDS, FAULT_KINDS, plan
from deploy.chaos.workload import ChaosClient, ChaosWorkloadSettings
from deploy.kafka_principals import OPERATOR
from deploy.ledger_init import init_ledger
from deploy.stack import LocalStack


@dataclass(frozen=True)
class ChaosSettings:
    duration_s: float = 120.0
    fault_s: float = 8.0
    calm_s: float = 6.0
    rate: float = 30.0
    """Transfers per second the workload sends (duplicates and reused ids on top)."""
    settle_s: float = 180.0
    """After healing: the bound within which every transfer must be answered and every saga end."""
    seed: int = 1
    kinds: tuple[str, ...] = FAULT_KINDS
    workload: ChaosWorkloadSettings = field(default_factory=ChaosWorkloadSettings)


RELAY_PROCESSES = 2
"""Shards (from 0) whose outbox relay runs as a process of its own, for `kill_relay`."""
AUDIT_EVERY_S = 2.0
"""The monitor's audit period under chaos (`--audit-every`): a corrupted shard must be caught well
within a fault window (5 s in CI's short run); it was, 1.5-3.1 s after the onset. The cost: an
audit re-reads every journal, 0.4-0.5 s at the end of a 150 s run (10.5k entries, 5k sagas) once
the load is gone, 0.7-3.3 s (mean 1.2 s) while the workload and the faults share the 2 cores, so
audits then run nearly back to back. Longer runs grow it linearly."""

CLOSE_WITHIN_S = 30.0
"""After the final heal, how long the run waits for every breaker to close (the issue's bound), so
the last fault's close is timed too; one still open then is reported as not closed."""


async def run_chaos(stack: LocalStack, settings: ChaosSettings) -> dict[str, Any]:
    config = stack.ledger_config(OPERATOR)
    shards = stack.settings.shards
    pmap = await init_ledger(stack.ledger_config(), shards)  # as admin: it applies the ACLs
    coordinators = sum(p.name.startswith("coordinator") for p in stack.extra_processes)
    targets = {
        **dict.fromkeys(
            ("kill_shard", "pause_shard", "slow_shard", "terminate_backends", "corrupt_shard"), shards
        ),
        "kill_relay": RELAY_PROCESSES,  # shards 0 and 1 have one; 2 and 3 publish in process
        **dict.fromkeys(("kill_coordinator", "pause_coordinator"), coordinators),
        **dict.fromkeys(CUT_KINDS, shards + coordinators),
        "kill_broker": stack.settings.brokers - 1,  # those that are not the controller
    }
    skipped = _skipped(settings.kinds)
    kinds = tuple(k for k in settings.kinds if k not in skipped)
    planned = plan(settings.seed, settings.duration_s, settings.fault_s, settings.calm_s, kinds, targets)
    sweep_stale()
    workload = replace(settings.workload, seed=settings.seed)
    async with ChaosClient(config, pmap, workload) as client:
        await client.prepare()
        t0 = time.monotonic()
        watch, watching = BreakerWatch(config, t0), asyncio.Event()
        watcher = asyncio.create_task(watch.run(watching))
        nemesis = Nemesis(stack, config, watch)
        faults = asyncio.create_task(nemesis.run(planned, t0))
        sent, next_read, next_freeze = 0, t0, t0
        every = settings.workload.freeze_every_s
        while (elapsed := time.monotonic() - t0) < settings.duration_s:
            while sent < int(elapsed * settings.rate) + 1:
                client.start_next()
                sent += 1
            if time.monotonic() >= next_read:
                client.start_reads()
                next_read += 1.0
            if every and time.monotonic() >= next_freeze:
                client.start_freeze_rotation()
                next_freeze += every
            await asyncio.sleep(0.01)
        await client.drain()
        await client.unfreeze()
        await faults  # the last fault is healed when this returns
        healed = time.monotonic()
        answered = await client.wait_settled(settings.settle_s)
        left_s = max(1.0, settings.settle_s - (time.monotonic() - healed))
        quiet_s = await wait_sagas_end(config, left_s)
        stuck = [] if quiet_s is not None else await stuck_sessions(config)
        with contextlib.suppress(TimeoutError):  # the last fault's breaker gets its chance to close
            await asyncio.wait_for(watch.closed.wait(), max(0.0, healed + CLOSE_WITHIN_S - time.monotonic()))
        watching.set()
        await watcher
        history = client.history()
        ledger = await read_ledger(config, list(range(shards)))
        violations = check(history, ledger)
        injected = [
            asdict(f) | recovery(client.sent_at, client.answered_at, client.completed_at, t0 + f.healed_s)
            for f in nemesis.injected if f.healed_s is not None
        ]  # fmt: skip
        breakers = timeline(watch.changes, injected, shards, watch.alerts)
        missed = detections(breakers)
        return {
            "seed": settings.seed, "duration_s": settings.duration_s, "settings": asdict(settings),
            "faults": injected,
            "breakers": breakers,
            "faults_by_kind": {k: sum(f.kind == k for f in nemesis.injected) for k in kinds},
            "skipped_kinds": skipped,
            "transfers": _counts(history, answered) | {
                "account_freezes": client.freezes,
                "duplicates_absorbed": _absorbed(history, violations["I5"]),
                "linked": _linked_counts(history, client.dooms),
            },
            "settled_after_heal_s": round(time.monotonic() - healed, 1) if quiet_s is not None else None,
            "stuck_sessions": stuck,  # when sagas were left open: the transactions PostgreSQL still had
            "violations": {k: {"invariant": INVARIANTS[k], "count": len(v), "examples": v[:5]}
                           for k, v in violations.items()},
            # The monitor's, beside the ledger's invariants: a run fails on these too.
            "detections": {k: {"check": DETECTIONS[k], "count": len(v), "examples": v[:5]}
                           for k, v in missed.items()},
            "latency_ms": _latency(client, t0, nemesis, shards),
            "completed_per_s": _per_second([at - t0 for at in client.completed_at]),
            "passed": not any(violations.values()) and not any(missed.values()),
        }  # fmt: skip


def _skipped(kinds: tuple[str, ...]) -> dict[str, str]:
    """The kinds asked for that this machine cannot inject, each with the reason."""
    reason = unavailable_reason() if set(kinds) & set(CUT_KINDS) else None
    return {k: reason for k in kinds if k in CUT_KINDS and reason is not None}


def recovery(
    sent_at: Mapping[str, float], answered_at: Mapping[str, float], completed_at: list[float], healed: float
) -> dict[str, float | None]:
    """Seconds from a fault's heal to the first transfer completed after it, and until every
    transfer sent before the heal had its result (the backlog it left had settled); None for
    never. Times are monotonic; each transfer id's first send and first result."""
    first = min((at for at in completed_at if at >= healed), default=None)
    before = [answered_at.get(tid) for tid, at in sent_at.items() if at < healed]
    settled = None if None in before else max([healed, *(a for a in before if a is not None)])
    return {
        "recovered_s": None if first is None else round(first - healed, 2),
        "settled_s": None if settled is None else round(settled - healed, 2),
    }


def _absorbed(history: History, idempotence_violations: list[str]) -> int:
    """Transfer ids sent more than once (duplicates, reused ids) that I5 found nothing wrong with."""
    again = {s.transfer_id for s in history.sent if s.kind != "original"}
    return sum(not any(t in v for v in idempotence_violations) for t in again)


def _counts(history: History, answered: bool) -> dict[str, Any]:
    firsts: dict[str, Observed] = {}  # each transfer's first final result (a hold's `pending` is not)
    for r in history.results:
        if r.reason != REUSED and r.state != PENDING:
            firsts.setdefault(r.transfer_id, r)
    states = Counter(r.state for r in firsts.values())
    reasons = Counter(f"{r.state} ({r.reason})" for r in firsts.values() if r.reason is not None)
    return {
        "sent": sum(s.kind == "original" for s in history.sent),
        "duplicates_sent": sum(s.kind == "duplicate" for s in history.sent),
        "reused_ids_sent": sum(s.kind == "reused" for s in history.sent),
        "balance_reads": len(history.reads),
        "by_state": dict(states),
        "by_reason": dict(reasons.most_common()),
        "all_answered_within_bound": answered,
        "pending": _pending_counts(history, firsts),
    }


def _pending_counts(history: History, finals: Mapping[str, Observed]) -> dict[str, Any]:
    """Two-phase transfers: how the holds ended, and what became of the posts and voids sent."""
    held = {r.transfer_id for r in history.results if r.state == PENDING}
    commands = {
        s.transfer_id: "post_less" if s.command == "post" and s.amount is not None else s.command
        for s in history.sent
        if s.kind == "original"
    }

    def said(r: Observed | None) -> str:
        return "unanswered" if r is None else r.state + (f" ({r.reason})" if r.reason else "")

    ids = {k: [t for t, c in commands.items() if c == k] for k in ("pending", "post", "post_less", "void")}
    return {
        "sent": len(ids["pending"]),
        "held": len(held),
        "by_end_state": dict(Counter(said(finals.get(t)) for t in ids["pending"]).most_common()),
        "posts_in_full": dict(Counter(said(finals.get(t)) for t in ids["post"]).most_common()),
        "posts_for_less": dict(Counter(said(finals.get(t)) for t in ids["post_less"]).most_common()),
        "voids": dict(Counter(said(finals.get(t)) for t in ids["void"]).most_common()),
        "resolutions_duplicated": sum(
            s.kind == "duplicate" and s.command in ("post", "void") for s in history.sent
        ),
    }


def _linked_counts(history: History, dooms: Mapping[str, str | None]) -> dict[str, Any]:
    """Linked batches: how they ended (each batch's first final result), by how they were doomed."""
    batches = {s.transfer_id: s for s in history.sent if s.command == "batch" and s.kind == "original"}
    ends: dict[str, Observed] = {}
    for r in history.results:
        if r.transfer_id in batches and r.reason != REUSED and r.state != PENDING:
            ends.setdefault(r.transfer_id, r)

    def said(b: str) -> str:
        r = ends.get(b)
        return "unanswered" if r is None else r.state + (f" ({r.reason})" if r.reason else "")

    return {
        "sent": len(batches),
        "legs": sum(len(s.legs) for s in batches.values()),
        "sent_twice": sum(s.command == "batch" and s.kind == "duplicate" for s in history.sent),
        "by_end_state": dict(Counter(said(b) for b in batches).most_common()),
        "by_doom": {
            doom or "not doomed": dict(Counter(said(b) for b in batches if dooms.get(b) == doom))
            for doom in sorted({dooms.get(b) for b in batches}, key=str)
        },
        "failed_legs_named": sum(r.failed_leg is not None for r in ends.values()),
    }


def _per_second(times: list[float]) -> list[int]:
    """How many of `times` (seconds from the start) fell in each second: stalls show as zeros."""
    counts = Counter(int(t) for t in times if t >= 0)
    return [counts.get(second, 0) for second in range(max(counts, default=-1) + 1)]


def _latency(client: ChaosClient, t0: float, nemesis: Nemesis, shards: int) -> dict[str, dict[str, int]]:
    windows = [
        FaultWindow(
            f.started_s,
            f.healed_s or f.started_s,
            shard_of_fault({"kind": f.kind, "target": f.target}, shards),
        )
        for f in nemesis.injected
    ]
    took = {
        t: round((client.answered_at[t] - sent) * 1000)
        for t, sent in client.sent_at.items()
        if t in client.answered_at
    }
    return latency_by_window({t: s - t0 for t, s in client.sent_at.items()}, took, client.shards_of, windows)
