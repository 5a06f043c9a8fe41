"""The breakers under chaos (issue 16): every BreakerState the monitor published during a run,
and, for each fault, what the breakers did about it.

A fault on one shard (its worker killed, paused, slowed, cut off, its connections ended, or its
relay killed) should open that shard's breaker within 10 s of its onset and close it within 30 s
of the heal; a fault of the whole fleet (a broker or the controller killed, PostgreSQL
restarted) should open none. A corrupted shard (a journal row altered) must be isolated and
alerted while it is corrupted: its breaker latched open and a critical hash_chain alert fired
before the row is restored (D1, a detection the run fails without); the operator closes the
latch after the heal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from infra.config import LedgerConfig
from schemas.breaker import BY_MONITOR, CLOSED, OPEN, decode_breaker_state
from schemas.errors import LedgerError
from schemas.ledger_alert import HASH_CHAIN, LedgerAlert, decode_any_alert

log = logging.getLogger(__name__)
ONE_SHARD = ("kill_shard", "pause_shard", "slow_shard", "terminate_backends", "corrupt_shard", "kill_relay")
"""Kinds whose target is a shard (cuts target a shard only below the shard count; relay N is shard
N's outbox relay: killed, that shard's replies cannot get out)."""
FLEET = ("kill_broker", "kill_controller", "restart_postgres_fast", "restart_postgres_immediate")
OPEN_WITHIN_S, CLOSE_WITHIN_S = 10.0, 30.0
CORRUPT = "corrupt_shard"
DETECTIONS = {
    "D1": "a corrupted shard is isolated and alerted while corrupted: its breaker latched open and a"
    " critical hash_chain alert fired between the alteration and the restore"
}


@dataclass(frozen=True)
class Change:
    at_s: float
    """Seconds after the run's start, when this watcher read it."""
    shard: int
    state: str
    reason: str
    changed_by: str
    latched: bool = False


@dataclass(frozen=True)
class AlertChange:
    """A LedgerAlert (the monitor's audit) fired or cleared; liquidity alerts are not kept."""

    at_s: float
    shard: int | None
    kind: str
    check: str
    state: str
    severity: str
    subject: str


class BreakerWatch:
    """Reads ledger.control and ledger.alerts from their start for the whole run, timing each
    breaker change and each ledger alert."""

    def __init__(self, config: LedgerConfig, t0: float) -> None:
        self.config, self.t0 = config, t0
        self.changes: list[Change] = []
        self.alerts: list[AlertChange] = []
        self.closed = asyncio.Event()
        """Set while every breaker seen so far is closed."""
        self.closed.set()

    def alert_since(self, shard: int, state: str, after_s: float) -> bool:
        """Whether a hash_chain alert on `shard` reached `state` at or after `after_s` (as timed)."""
        return any(
            a.shard == shard and a.check == HASH_CHAIN and a.state == state and a.at_s >= after_s
            for a in self.alerts
        )

    def isolated_since(self, shard: int, onset_s: float) -> bool:
        """Whether, since `onset_s`, `shard`'s breaker latched open and a critical hash_chain alert
        on it fired (a corrupted shard caught)."""
        latched = any(
            c.shard == shard and c.state == OPEN and c.latched and c.at_s >= onset_s for c in self.changes
        )
        alerted = any(
            a.shard == shard and a.check == HASH_CHAIN and a.state == "fired" and a.severity == "critical"
            and a.at_s >= onset_s
            for a in self.alerts
        )  # fmt: skip
        return latched and alerted

    def all_closed(self) -> bool:
        """Whether every breaker seen so far is closed now (its latest change)."""
        latest = {c.shard: c.state for c in self.changes}
        return all(state == CLOSED for state in latest.values())

    async def run(self, stop: asyncio.Event) -> None:
        control, alerts = self.config.namespace.control, self.config.namespace.alerts
        consumer = AIOKafkaConsumer(
            control, alerts, **self.config.kafka_args(), group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False,
        )  # fmt: skip
        await consumer.start()
        try:
            while not stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=200)
                except KafkaError as e:  # a broker down: the nemesis's doing, read on after it
                    log.info("breaker watch: %s", e)
                    await asyncio.sleep(0.5)
                    continue
                now = time.monotonic() - self.t0
                for records in batch.values():
                    for r in records:
                        with contextlib.suppress(LedgerError):
                            self._read(r.topic == control, r.value or b"", round(now, 2))
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()

    def _read(self, is_control: bool, raw: bytes, at_s: float) -> None:
        if is_control:
            s = decode_breaker_state(raw)
            self.changes.append(Change(at_s, s.shard, s.state, s.reason, s.changed_by, s.latched))
            if self.all_closed():
                self.closed.set()
            else:
                self.closed.clear()
        elif isinstance(a := decode_any_alert(raw), LedgerAlert):
            self.alerts.append(AlertChange(at_s, a.shard, a.kind, a.check, a.state, a.severity, a.subject))


def timeline(
    changes: list[Change], faults: list[dict[str, Any]], shards: int, alerts: Sequence[AlertChange] = ()
) -> dict[str, Any]:
    """Per fault, the breaker changes it caused: for a one-shard fault, how long until its shard's
    breaker opened (from the onset) and closed again (from the heal); for a fleet fault, any open.
    A corrupted shard counts only a latched open, and adds its hash_chain alert's timing."""
    per_fault = []
    for i, f in enumerate(faults):
        start, healed = f["started_s"], f["healed_s"]
        shard = shard_of_fault(f, shards)
        later = [g["started_s"] for g in faults[i + 1 :] if shard_of_fault(g, shards) == shard]
        until = later[0] if later else float("inf")  # the next fault on the same shard
        if shard is not None:
            opens = (
                [c for c in changes if c.latched and c.changed_by == BY_MONITOR]
                if f["kind"] == CORRUPT
                else changes
            )
            opened = _first(opens, shard, OPEN, start, healed + OPEN_WITHIN_S)
            closed = _first(changes, shard, CLOSED, healed, until) if opened is not None else None
            entry = {
                "kind": f["kind"], "shard": shard, "started_s": start, "healed_s": healed,
                "opened_after_s": None if opened is None else round(opened - start, 2),
                "closed_after_heal_s": None if closed is None else round(closed - healed, 2),
            }  # fmt: skip
            if f["kind"] == CORRUPT:
                entry |= _corruption(alerts, shard, start, healed, until, opened)
            per_fault.append(entry)
        elif f["kind"] in FLEET:
            opens = [
                c for c in changes
                if c.state == OPEN and start <= c.at_s <= healed + OPEN_WITHIN_S
                and not _explained(c, faults, shards)
            ]  # fmt: skip
            per_fault.append({
                "kind": f["kind"], "started_s": start, "healed_s": healed,
                "opened": sorted({c.shard for c in opens}),
            })  # fmt: skip
    shard_faults = [p for p in per_fault if "shard" in p]
    corrupted = [p for p in per_fault if p["kind"] == CORRUPT]
    return {
        "changes": [c.__dict__ for c in changes],
        "alerts": [a.__dict__ for a in alerts],
        "per_fault": per_fault,
        "summary": {
            "shard_faults": len(shard_faults),
            "opened": sum(p["opened_after_s"] is not None for p in shard_faults),
            "opened_within_10s": sum((p["opened_after_s"] or 1e9) <= OPEN_WITHIN_S for p in shard_faults),
            "closed_within_30s_of_heal": sum(
                (p["closed_after_heal_s"] if p["closed_after_heal_s"] is not None else 1e9) <= CLOSE_WITHIN_S
                for p in shard_faults
            ),
            "fleet_faults": sum("opened" in p for p in per_fault),
            "fleet_faults_that_opened_a_breaker": sum(bool(p.get("opened")) for p in per_fault),
            "corrupted": len(corrupted),
            "corrupted_isolated_and_alerted": sum(p["isolated_and_alerted"] for p in corrupted),
        },
    }


def detections(breakers: dict[str, Any]) -> dict[str, list[str]]:
    """D1's failures, one line each: a corrupted shard not isolated and alerted while corrupted."""
    return {
        "D1": [
            f"shard {p['shard']} corrupted {p['started_s']} s to {p['healed_s']} s: breaker latched after"
            f" {p['opened_after_s']} s, hash_chain alert fired after {p['alert_fired_after_s']} s"
            for p in breakers["per_fault"]
            if p["kind"] == CORRUPT and not p["isolated_and_alerted"]
        ]
    }


def _corruption(
    alerts: Sequence[AlertChange], shard: int, start: float, healed: float, until: float, opened: float | None
) -> dict[str, Any]:
    chain = [a for a in alerts if a.shard == shard and a.check == HASH_CHAIN]
    fired = next((a.at_s for a in chain if a.state == "fired" and a.severity == "critical"
                  and start <= a.at_s <= healed + OPEN_WITHIN_S), None)  # fmt: skip
    cleared = next((a.at_s for a in chain if a.state == "cleared" and healed <= a.at_s <= until), None)
    return {
        "alert_fired_after_s": None if fired is None else round(fired - start, 2),
        "alert_cleared_after_heal_s": None if cleared is None else round(cleared - healed, 2),
        # while corrupted: detected after the restore is too late to have isolated anything
        "isolated_and_alerted": opened is not None
        and opened <= healed
        and fired is not None
        and fired <= healed,
    }


def _explained(change: Change, faults: list[dict[str, Any]], shards: int) -> bool:
    """Whether a fault on that one shard, before or after a fleet fault, accounts for this change
    (it came within that fault's own window): a fleet fault is not charged with it."""
    return any(
        shard_of_fault(f, shards) == change.shard
        and f["started_s"] <= change.at_s <= f["healed_s"] + OPEN_WITHIN_S
        for f in faults
    )


def shard_of_fault(fault: dict[str, Any], shards: int) -> int | None:
    if fault["kind"] in ONE_SHARD:
        return int(fault["target"])
    if fault["kind"] in ("cut_kafka", "cut_postgres") and int(fault["target"]) < shards:
        return int(fault["target"])
    return None


def _first(changes: list[Change], shard: int, state: str, after: float, before: float) -> float | None:
    return next(
        (c.at_s for c in changes if c.shard == shard and c.state == state and after <= c.at_s <= before), None
    )
