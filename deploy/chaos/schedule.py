"""The nemesis's schedule: fault and calm windows in turn, each fault drawn from the kinds asked
for. Pure and seeded: the same seed gives the same schedule."""

from __future__ import annotations

import random
from dataclasses import dataclass

FAULT_KINDS = (
    "kill_shard",  # SIGKILL a shard worker, restart it at the end of the window
    "kill_coordinator",
    "kill_relay",  # SIGKILL a shard's outbox relay process
    "pause_shard",  # SIGSTOP a shard worker for the window, then SIGCONT
    "slow_shard",  # a shard worker stopped and resumed in short cycles: slow, not dead
    "pause_coordinator",  # SIGSTOP longer than the group session timeout: its partitions move
    "kill_broker",  # SIGKILL a Kafka node that is not the active controller (in turn), restart it
    "kill_controller",  # SIGKILL the node that is the KRaft quorum's active controller, restart it
    "restart_postgres_fast",
    "restart_postgres_immediate",  # a crash: recovery from the WAL
    "terminate_backends",  # pg_terminate_backend on one shard's connections
    "cut_kafka",  # iptables drops what one worker (shard or coordinator) sends to every broker
    "cut_postgres",  # ... or to PostgreSQL
    "corrupt_shard",  # a shard's journal row altered behind its back, restored, its latch closed
)
CUT_KINDS = ("cut_kafka", "cut_postgres")


@dataclass(frozen=True)
class PlannedFault:
    at_s: float
    """Seconds after the start."""
    kind: str
    target: int
    """By kind: a shard, a coordinator, the n-th broker that is not the controller, or a worker
    (shards first, then coordinators); 0 where there is no choice."""
    hold_s: float
    """How long the fault lasts before it is healed."""


def plan(
    seed: int,
    duration_s: float,
    fault_s: float,
    calm_s: float,
    kinds: tuple[str, ...],
    targets: dict[str, int],
) -> list[PlannedFault]:
    """A calm window, then fault and calm windows in turn until `duration_s`. Every kind comes once
    (in a seeded order) before any comes twice. `targets[kind]` is how many targets it may hit."""
    rng = random.Random(seed)  # noqa: S311 - a schedule, not a secret
    faults: list[PlannedFault] = []
    at, bag = calm_s, list[str]()
    turn = 0
    while at + fault_s <= duration_s:
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        kind = bag.pop()
        count = max(1, targets.get(kind, 1))
        # Brokers in turn, so that each is killed.
        target = turn % count if kind == "kill_broker" else rng.randrange(count)
        turn += kind == "kill_broker"
        faults.append(PlannedFault(at, kind, target, fault_s))
        at += fault_s + calm_s
    return faults


def every_kind_once_s(kinds: int, fault_s: float, calm_s: float) -> float:
    """The shortest `duration_s` whose plan brings each of `kinds` kinds once: the first calm,
    then a fault window and a calm per kind, the last calm not needed."""
    return calm_s + kinds * (fault_s + calm_s) - calm_s
