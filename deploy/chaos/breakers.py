"""The breakers under chaos (issue 16): every BreakerState the monitor published during a run,
and, for each fault, what the breakers did about it.

A fault on one shard (its worker killed, paused, slowed, cut off, or its connections ended) should
open that shard's breaker within 10 s of its onset and close it within 30 s of the heal; a fault
of the whole fleet (a broker or the controller killed, PostgreSQL restarted) should open none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from infra.config import LedgerConfig
from schemas.breaker import CLOSED, OPEN, decode_breaker_state
from schemas.errors import LedgerError

log = logging.getLogger(__name__)
ONE_SHARD = ("kill_shard", "pause_shard", "slow_shard", "terminate_backends")
"""Kinds whose target is a shard (cuts target a shard only below the shard count)."""
FLEET = ("kill_broker", "kill_controller", "restart_postgres_fast", "restart_postgres_immediate")
OPEN_WITHIN_S, CLOSE_WITHIN_S = 10.0, 30.0


@dataclass(frozen=True)
class Change:
    at_s: float
    """Seconds after the run's start, when this watcher read it."""
    shard: int
    state: str
    reason: str
    changed_by: str


class BreakerWatch:
    """Reads ledger.control from its start for the whole run, timing each change."""

    def __init__(self, config: LedgerConfig, t0: float) -> None:
        self.config, self.t0 = config, t0
        self.changes: list[Change] = []

    async def run(self, stop: asyncio.Event) -> None:
        topic = self.config.namespace.control
        consumer = AIOKafkaConsumer(
            topic, **self.config.kafka_args(), group_id=None, auto_offset_reset="earliest",
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
                            s = decode_breaker_state(r.value or b"")
                            self.changes.append(
                                Change(round(now, 2), s.shard, s.state, s.reason, s.changed_by)
                            )
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()


def timeline(changes: list[Change], faults: list[dict[str, Any]], shards: int) -> dict[str, Any]:
    """Per fault, the breaker changes it caused: for a one-shard fault, how long until its shard's
    breaker opened (from the onset) and closed again (from the heal); for a fleet fault, any open."""
    per_fault = []
    for i, f in enumerate(faults):
        start, healed = f["started_s"], f["healed_s"]
        shard = shard_of_fault(f, shards)
        later = [g["started_s"] for g in faults[i + 1 :] if shard_of_fault(g, shards) == shard]
        until = later[0] if later else float("inf")  # the next fault on the same shard
        if shard is not None:
            opened = _first(changes, shard, OPEN, start, healed + OPEN_WITHIN_S)
            closed = _first(changes, shard, CLOSED, healed, until) if opened is not None else None
            per_fault.append({
                "kind": f["kind"], "shard": shard, "started_s": start, "healed_s": healed,
                "opened_after_s": None if opened is None else round(opened - start, 2),
                "closed_after_heal_s": None if closed is None else round(closed - healed, 2),
            })  # fmt: skip
        elif f["kind"] in FLEET:
            opens = [c for c in changes if c.state == OPEN and start <= c.at_s <= healed + OPEN_WITHIN_S]
            per_fault.append({
                "kind": f["kind"], "started_s": start, "healed_s": healed,
                "opened": sorted({c.shard for c in opens}),
            })  # fmt: skip
    shard_faults = [p for p in per_fault if "shard" in p]
    return {
        "changes": [c.__dict__ for c in changes],
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
        },
    }


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
