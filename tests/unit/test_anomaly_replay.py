"""Replays a synthetic telemetry series through the detector and the breakers, and measures them.

The series is built from the fault schedule of a recorded chaos run (data/chaos-faults-seed12.json:
64 faults in 15 minutes, 4 shards), each fault given the effect it would have on the per-shard
metrics. Those effects are assumptions (no run has recorded per-shard telemetry yet), written down
in EFFECTS below; replace the series with a recorded one once `ledger.telemetry` exists.

Ground truth: a fault on ONE shard that lasts 8 s or more is genuine and should open that shard's
breaker (pause_shard, kill_shard, cut_kafka/cut_postgres of a shard, terminate_backends); a fault
of shared infrastructure (brokers, PostgreSQL restarts) is fleet-wide and should open nothing;
coordinator and relay faults leave the shards' metrics alone. Measured: detection delay (onset to
open), heal to closed, missed genuine faults, false opens.

    python -m tests.unit.test_anomaly_replay     # compares settings: one line per setting
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from monitor.domain.anomaly import (
    CONSUMER_LAG,
    ERRORS_PER_S,
    STEP_P99_MS,
    AnomalyDetector,
    AnomalyPolicy,
    TelemetrySample,
)
from monitor.domain.breaker import Breaker, BreakerPolicy, HealthObserved, decide, start
from schemas.breaker import CLOSED, OPEN

SCHEDULE = json.loads((Path(__file__).parent / "data" / "chaos-faults-seed12.json").read_text())
SHARDS: int = SCHEDULE["shards"]
GENUINE = frozenset({"pause_shard", "kill_shard", "cut_kafka", "cut_postgres", "terminate_backends"})
FLEET = frozenset({"kill_broker", "kill_controller", "restart_postgres_fast", "restart_postgres_immediate"})
LEAD_S = 120
"""Calm seconds before the first fault: the baselines warm up."""


@dataclass(frozen=True)
class Fault:
    kind: str
    target: int
    start: int  # whole seconds of the replay
    end: int

    @property
    def genuine(self) -> bool:
        return self.kind in GENUINE and self.target < SHARDS

    @property
    def fleet(self) -> bool:
        return self.kind in FLEET


def faults() -> list[Fault]:
    return [
        Fault(f["kind"], f["target"], LEAD_S + math.floor(f["started_s"]), LEAD_S + math.ceil(f["healed_s"]))
        for f in SCHEDULE["faults"]
    ]


@dataclass
class _Shard:
    lag: float = 0.0


def series(seed: int = 12, tail_s: int = 3) -> Iterator[tuple[int, list[TelemetrySample]]]:
    """(second, samples) once a second. EFFECTS, per fault:
    - a shard paused, killed or cut from Kafka publishes nothing while it lasts, then is slow
      (p99 x3) for 3 s and drains its backlog;
    - a shard cut from PostgreSQL stalls: p99 at the 10 s statement bound, lag +30 a second,
      1 error a second; a shard whose connections are terminated: p99 x4, 5 errors a second;
    - a broker or PostgreSQL fault slows every shard (p99 x3-8, lag +20 a second), each starting
      0-2 s apart and recovering up to `tail_s` s after the fault healed;
    - coordinator and relay faults: none.
    Calm: p99 15 ms with log-normal noise (sigma 0.25), lag 0-30, an error now and then."""
    rng = random.Random(seed)
    plan = faults()
    shards = [_Shard() for _ in range(SHARDS)]
    fleet_shift = {
        (i, s): (rng.randint(0, 2), rng.randint(0, tail_s)) for i in range(len(plan)) for s in range(SHARDS)
    }
    end = max(f.end for f in plan) + 60
    for t in range(end):
        samples = []
        for s, shard in enumerate(shards):
            p99 = 15.0 * math.exp(rng.gauss(0, 0.25))
            errors = 1.0 if rng.random() < 0.02 else 0.0
            lag, silent = float(rng.randint(0, 30)), False
            for i, f in enumerate(plan):
                if f.target == s and f.genuine:
                    if f.kind in ("pause_shard", "kill_shard", "cut_kafka") and f.start <= t < f.end:
                        silent = True
                    elif f.kind in ("pause_shard", "kill_shard", "cut_kafka") and f.end <= t < f.end + 3:
                        p99 *= 3
                    elif f.kind == "cut_postgres" and f.start <= t < f.end:
                        p99, errors, lag = 10_000.0, 1.0, shard.lag + 30
                    elif f.kind == "terminate_backends" and f.start <= t < f.end:
                        p99, errors = p99 * 4, 5.0
                if f.fleet:
                    onset, tail = fleet_shift[(i, s)]
                    if f.start + onset <= t < f.end + tail:
                        p99 *= 3 + 5 * rng.random()
                        lag = shard.lag + 20
            if lag < shard.lag:  # a backlog drains at 100 a second
                lag = max(lag, shard.lag - 100)
            shard.lag = lag
            if not silent:
                samples += [
                    TelemetrySample(f"shard-{s}", s, STEP_P99_MS, p99, t * 1000),
                    TelemetrySample(f"shard-{s}", s, ERRORS_PER_S, errors, t * 1000),
                    TelemetrySample(f"shard-{s}", s, CONSUMER_LAG, lag, t * 1000),
                ]
        yield t, samples


@dataclass
class Measured:
    delays_s: list[int] = field(default_factory=list)
    """Onset to open (0: it was open already), per genuine fault that found its breaker open."""
    closed_after_s: list[int] = field(default_factory=list)
    """Heal to closed (999: not within 60 s), per genuine fault followed by 30 s with no other
    fault on its shard and no fleet-wide one."""
    missed: list[Fault] = field(default_factory=list)
    false_opens: list[tuple[int, int]] = field(default_factory=list)
    """(second, shard) of opens during no genuine fault of that shard (nor within 3 s after one)."""
    genuine: int = 0

    def line(self) -> str:
        def stats(xs: list[int]) -> str:
            return f"median {sorted(xs)[len(xs) // 2]} max {max(xs)}" if xs else "-"

        return (
            f"genuine {self.genuine} opened {len(self.delays_s)} (delay s {stats(self.delays_s)}), "
            f"timed closes {len(self.closed_after_s)} (after heal s {stats(self.closed_after_s)}), "
            f"missed {len(self.missed)}, false opens {len(self.false_opens)}"
        )


def replay(policy: AnomalyPolicy, breaker_policy: BreakerPolicy | None = None, tail_s: int = 3) -> Measured:
    breaker_policy = breaker_policy or BreakerPolicy()
    detector = AnomalyDetector(range(SHARDS), 0, policy)
    breakers: dict[int, Breaker] = {s: start(s) for s in range(SHARDS)}
    states: dict[int, list[str]] = {s: [] for s in range(SHARDS)}  # shard -> its state each second
    for t, samples in series(tail_s=tail_s):
        for sample in samples:
            detector.observe(sample)
        for s, verdict in detector.assess(t * 1000).items():
            breakers[s], _ = decide(breakers[s], HealthObserved(verdict.status, "", t * 1000), breaker_policy)
            states[s].append(breakers[s].state)
    return _judge(states)


def _judge(states: dict[int, list[str]]) -> Measured:
    measured = Measured()
    plan = faults()
    for s, state in states.items():
        mine = [f for f in plan if f.genuine and f.target == s]
        for t in range(1, len(state)):
            opens = state[t] == OPEN and state[t - 1] != OPEN
            if opens and not any(f.start <= t < f.end + 3 for f in mine):
                measured.false_opens.append((t, s))
        for f in mine:
            measured.genuine += 1
            opened = [t for t in range(f.start, f.end + 3) if state[t] == OPEN]
            if not opened:
                measured.missed.append(f)
                continue
            measured.delays_s.append(opened[0] - f.start)
            # Closing is timed only when nothing else troubles the shard for 30 s after the heal.
            troubled = any(
                g is not f and (g.fleet or g in mine) and g.start < f.end + 30 and g.end > f.end for g in plan
            )
            if not troubled:
                closed = [t for t in range(max(f.end, opened[0]), f.end + 60) if state[t] == CLOSED]
                measured.closed_after_s.append(closed[0] - f.end if closed else 999)
    return measured


def test_the_defaults_on_the_replayed_chaos_run() -> None:
    measured = replay(AnomalyPolicy())
    assert measured.genuine == 26
    # Two faults start while a fleet-wide event is still going on (a backlog draining on every
    # shard): masked by it, as the rules say. No other is missed.
    assert len(measured.missed) <= 2
    assert max(measured.delays_s) <= 10  # the issue: opened within 10 s of the onset
    assert measured.false_opens == []  # no broker or PostgreSQL fault opened a breaker
    assert measured.closed_after_s
    assert max(measured.closed_after_s) <= 30  # the issue: closed within 30 s of the heal


def test_shards_recovering_apart_after_a_fleet_wide_fault_open_nothing() -> None:
    measured = replay(AnomalyPolicy(), tail_s=8)
    assert measured.false_opens == []
    assert max(measured.delays_s) <= 10


if __name__ == "__main__":
    settings = {
        "defaults": AnomalyPolicy(),
        "threshold 4": AnomalyPolicy(threshold=4.0),
        "threshold 9": AnomalyPolicy(threshold=9.0),
        "alpha 0.02": AnomalyPolicy(alpha=0.02),
        "alpha 0.2": AnomalyPolicy(alpha=0.2),
        "floor 0.05": AnomalyPolicy(min_spread_fraction=0.05),
        "floor 0.3": AnomalyPolicy(min_spread_fraction=0.3),
        "sustain 3 s": AnomalyPolicy(sustain_ms=3_000),
        "sustain 8 s": AnomalyPolicy(sustain_ms=8_000),
        "no freeze (alpha while anomalous)": AnomalyPolicy(anomalous_alpha=0.05),
    }
    for tail in (3, 8):
        print(f"-- fleet-wide faults recover up to {tail} s apart")
        for name, policy in settings.items():
            print(f"{name:36} {replay(policy, tail_s=tail).line()}")
