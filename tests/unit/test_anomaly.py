"""The anomaly detector tells one shard's problem from jitter and from a fleet-wide event."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from monitor.domain.anomaly import (
    CONSUMER_LAG,
    DIVERGED,
    FLEET_WIDE,
    HEALTHY,
    JITTER,
    SICK,
    STALE,
    STEP_P99_MS,
    AnomalyDetector,
    AnomalyPolicy,
    Baseline,
    TelemetrySample,
    observe,
)
from schemas.telemetry import LOOP_LAG_MS, REPLY_P99_MS

SHARDS = (0, 1, 2, 3)
POLICY = AnomalyPolicy()
Level = Callable[[int, int], float]  # (shard, second) -> value


def calm(seed: int = 7) -> Level:
    rng = random.Random(seed)
    return lambda shard, t: 10.0 + rng.uniform(-2.0, 2.0)


def with_rise(base: Level, shards: tuple[int, ...], start: int, end: int, to: float = 40.0) -> Level:
    return lambda shard, t: to if shard in shards and start <= t < end else base(shard, t)


def run(
    detector: AnomalyDetector,
    start: int,
    end: int,
    level: Level,
    metric: str = STEP_P99_MS,
    shards: tuple[int, ...] = SHARDS,
) -> dict[int, dict[int, str]]:
    """Samples once a second from `start` to `end` (exclusive); second -> shard -> verdict."""
    seen: dict[int, dict[int, str]] = {}
    for t in range(start, end):
        for shard in shards:
            detector.observe(
                TelemetrySample(f"shard-worker-{shard}", shard, metric, level(shard, t), t * 1000)
            )
        seen[t] = {shard: v.status for shard, v in detector.assess(t * 1000).items()}
    return seen


def warmed(level: Level | None = None) -> AnomalyDetector:
    detector = AnomalyDetector(SHARDS, 0, POLICY)
    run(detector, 0, 60, level or calm())
    return detector


def test_a_calm_fleet_is_healthy() -> None:
    detector = AnomalyDetector(SHARDS, 0, POLICY)
    seen = run(detector, 0, 300, calm())
    assert {v for verdicts in seen.values() for v in verdicts.values()} == {HEALTHY}


def test_a_short_spike_on_one_shard_is_jitter() -> None:
    detector = warmed()
    seen = run(detector, 60, 80, with_rise(calm(), (2,), 61, 63, to=80.0))
    # The spike's last sample is at 62 s: its episode ends with the first calm sample clear_ms later.
    assert {seen[t][2] for t in range(61, 62 + POLICY.clear_ms // 1000)} == {JITTER}
    assert {seen[t][2] for t in range(62 + POLICY.clear_ms // 1000, 80)} == {HEALTHY}
    assert all(seen[t][s] == HEALTHY for t in seen for s in (0, 1, 3))


def test_a_sustained_rise_on_one_shard_is_sick_within_the_sustain_window() -> None:
    detector = warmed()
    seen = run(detector, 60, 90, with_rise(calm(), (2,), 70, 200))
    first_sick = min(t for t in seen if seen[t][2] == SICK)
    assert first_sick - 70 == POLICY.sustain_ms // 1000
    assert {seen[t][2] for t in range(70, first_sick)} == {JITTER}
    assert all(seen[t][s] == HEALTHY for t in seen for s in (0, 1, 3))
    verdict = detector.assess(89_000)[2]
    assert verdict.metrics == (STEP_P99_MS,)
    assert "step_p99_ms 40" in verdict.detail


def test_the_same_rise_on_every_shard_is_fleet_wide() -> None:
    detector = warmed()
    seen = run(detector, 60, 120, with_rise(calm(), SHARDS, 70, 100))
    assert {seen[t][s] for t in range(70, 100) for s in SHARDS} == {FLEET_WIDE}
    assert {seen[t][s] for t in range(104, 120) for s in SHARDS} == {HEALTHY}


def test_half_the_shards_is_the_fleet_but_one_of_two_is_not() -> None:
    detector = warmed()
    seen = run(detector, 60, 80, with_rise(calm(), (0, 1), 62, 200))
    assert seen[79][0] == FLEET_WIDE
    pair = AnomalyDetector((0, 1), 0, POLICY)
    run(pair, 0, 60, calm(), shards=(0, 1))
    seen = run(pair, 60, 80, with_rise(calm(), (1,), 62, 200), shards=(0, 1))
    assert seen[79] == {0: HEALTHY, 1: SICK}


def test_the_tail_of_a_fleet_wide_event_is_not_one_shards_problem() -> None:
    # A broker restart: every shard slow for 20 s, shard 3 recovering 4 s after the others.
    detector = warmed()
    level = with_rise(with_rise(calm(), SHARDS, 70, 90), (3,), 90, 94)
    seen = run(detector, 60, 110, level)
    assert all(seen[t][3] != SICK for t in seen)
    # ...but a shard still slow a whole sustain window after the fleet recovered is sick.
    detector = warmed()
    level = with_rise(with_rise(calm(), SHARDS, 70, 90), (3,), 90, 200)
    seen = run(detector, 60, 110, level)
    # The fleet's episodes end clear_ms after their last slow sample (89 s): shard 3's own sustain
    # window starts then.
    first_sick = min(t for t in seen if seen[t][3] == SICK)
    assert 90 + POLICY.sustain_ms // 1000 <= first_sick <= 89 + (POLICY.clear_ms + POLICY.sustain_ms) // 1000


def test_the_baseline_does_not_absorb_a_sustained_problem() -> None:
    detector = warmed()
    seen = run(detector, 60, 660, with_rise(calm(), (2,), 70, 10_000))
    assert {seen[t][2] for t in range(80, 660)} == {SICK}
    baseline = detector.baseline("shard-worker-2", 2, STEP_P99_MS)
    assert baseline is not None
    assert 8 < baseline.level < 12


def test_recovery_returns_to_healthy_after_clear_ms() -> None:
    detector = warmed()
    seen = run(detector, 60, 120, with_rise(calm(), (2,), 70, 100))
    healthy_again = min(t for t in seen if t >= 100 and seen[t][2] == HEALTHY)
    assert healthy_again == 99 + POLICY.clear_ms // 1000  # the last slow sample is at 99 s
    assert all(seen[t][2] == HEALTHY for t in range(healthy_again, 120))


def test_a_silent_shard_is_stale_and_a_silent_fleet_is_fleet_wide() -> None:
    detector = warmed()
    seen = run(detector, 60, 80, calm(), shards=(0, 1, 3))
    assert seen[64][2] == HEALTHY  # the last sample at 59 s: stale_ms of silence at 65 s
    assert seen[65][2] == STALE
    assert detector.assess(80_000)[2].detail == "no sample for 21 s"
    detector = warmed()
    assert {v.status for v in detector.assess(70_000).values()} == {FLEET_WIDE}


def test_a_shard_never_heard_of_is_stale() -> None:
    detector = AnomalyDetector(SHARDS, 1_000, POLICY)
    seen = run(detector, 0, 10, calm(), shards=(0, 1, 2))
    assert seen[9][3] == STALE


def test_a_divergence_is_reported_once() -> None:
    detector = warmed()
    detector.divergence(1, "chain mismatch at journal seq 41", at_ms=61_500)
    assert detector.assess(61_000)[1].status == HEALTHY
    verdict = detector.assess(62_000)[1]
    assert (verdict.status, verdict.detail) == (DIVERGED, "chain mismatch at journal seq 41")
    assert detector.assess(63_000)[1].status == HEALTHY
    with pytest.raises(ValueError, match="shard 9"):
        detector.divergence(9, "x", 0)


def test_a_growing_consumer_lag_is_sick() -> None:
    detector = warmed()
    rng = random.Random(3)
    run(detector, 0, 60, lambda s, t: float(rng.randint(0, 20)), metric=CONSUMER_LAG)
    # The worker of shard 1 stops: its lag grows by 30 records a second; the others keep up.
    lag: Level = lambda s, t: 30.0 * (t - 60) if s == 1 else float(rng.randint(0, 20))  # noqa: E731
    seen = run(detector, 60, 80, lag, metric=CONSUMER_LAG)
    assert seen[79][1] == SICK
    assert min(t for t in seen if seen[t][1] == SICK) <= 60 + 10
    assert all(seen[t][s] == HEALTHY for t in seen for s in (0, 2, 3))


def test_a_lag_that_grows_and_falls_is_not_growing() -> None:
    baseline = Baseline()
    for t, value in enumerate([0, 50, 90, 40, 120, 60, 150, 80, 160, 70] * 3):
        baseline = observe(baseline, TelemetrySample("w", 0, CONSUMER_LAG, float(value), t * 1000), POLICY)
    assert baseline.onset_ms is None


def test_redelivered_and_late_samples_change_nothing() -> None:
    baseline = Baseline()
    for t in range(20):
        baseline = observe(baseline, TelemetrySample("w", 0, STEP_P99_MS, 10.0, t * 1000), POLICY)
    again = observe(baseline, TelemetrySample("w", 0, STEP_P99_MS, 500.0, 19_000), POLICY)
    late = observe(baseline, TelemetrySample("w", 0, STEP_P99_MS, 500.0, 5_000), POLICY)
    nan = observe(baseline, TelemetrySample("w", 0, STEP_P99_MS, float("nan"), 25_000), POLICY)
    assert again == late == nan == baseline


def test_a_new_series_learns_before_it_judges() -> None:
    baseline = Baseline()
    for t, value in enumerate([10.0, 300.0, 12.0] + [10.0] * 6):
        baseline = observe(baseline, TelemetrySample("w", 0, STEP_P99_MS, value, t * 1000), POLICY)
        assert baseline.onset_ms is None


def test_a_backlog_draining_is_recovery_not_a_problem() -> None:
    baseline = Baseline()
    lags = [10.0] * 20 + [2000.0] + [2000.0 - 100 * i for i in range(1, 20)]
    onsets = []
    for t, value in enumerate(lags):
        baseline = observe(baseline, TelemetrySample("w", 0, CONSUMER_LAG, value, t * 1000), POLICY)
        onsets.append(baseline.onset_ms)
    assert onsets[20] == 20_000  # the jump
    assert onsets[20 + POLICY.clear_ms // 1000] is None  # draining, though still far above normal
    assert baseline.level < 11  # and never learnt


def test_a_shard_catching_up_is_not_sick() -> None:
    """Regression, ledger chaos (seed 3): after a PostgreSQL restart shard 0 applied its backlog at
    26 commands/s against a level of 3, and a burst of rejections came with it; both opened its
    breaker while it recovered. Throughput and rejection rates are kept, not judged."""
    detector = AnomalyDetector(SHARDS, 0, POLICY)
    for metric in ("commands_per_s", "rejections_per_s"):
        run(detector, 0, 60, calm(), metric=metric)
        seen = run(detector, 60, 80, with_rise(calm(), (0,), 60, 80, to=260.0), metric=metric)
        assert seen[79][0] == HEALTHY, metric


def test_a_shard_refusing_everything_is_sick_where_the_share_is_judged() -> None:
    detector = AnomalyDetector(SHARDS, 0, replace(POLICY, judged=POLICY.judged | {"rejection_pct"}))
    share = lambda shard, t: 15.0 + (t % 3)  # noqa: E731 - the usual 15-17 % refused
    run(detector, 0, 60, share, metric="rejection_pct")
    seen = run(detector, 60, 70, with_rise(share, (2,), 60, 70, to=100.0), metric="rejection_pct")
    assert seen[69][2] == SICK
    assert {seen[69][s] for s in (0, 1, 3)} == {HEALTHY}


def test_an_episode_ends_when_its_series_goes_quiet() -> None:
    """Regression, ledger chaos (seed 3): shard 3's breaker opened on a figure that then stopped
    coming (an open breaker sends the shard no new transfers), and stayed open to the end."""
    detector = warmed()
    run(detector, 60, 70, with_rise(calm(), (3,), 60, 70))
    assert detector.assess(69_000)[3].status == SICK
    run(detector, 70, 80, calm(), shards=(0, 1, 2))  # shard 3 sends other figures, not this one
    detector.observe(TelemetrySample("shard-worker-3", 3, "commands_per_s", 0.0, 79_000))
    assert detector.assess(79_000)[3].status == HEALTHY


def test_a_shard_slow_to_answer_the_coordinators_is_sick_though_its_own_figures_are_calm() -> None:
    """Regression, ledger chaos (seed 3): a shard worker stopped and resumed in short cycles opened
    no breaker. Its own batches stay quick (it measures them while it runs); only the coordinators
    waiting on it see the wait, in their per-shard reply times."""
    detector = AnomalyDetector(SHARDS, 0, POLICY)
    rng = random.Random(3)

    def second(t: int, slow: bool) -> dict[int, str]:
        for shard in SHARDS:
            detector.observe(
                TelemetrySample(f"shard-{shard}", shard, STEP_P99_MS, rng.uniform(8, 12), t * 1000)
            )
            took = rng.uniform(600, 900) if slow and shard == 1 else rng.uniform(20, 60)
            detector.observe(TelemetrySample("coordinator-1", shard, REPLY_P99_MS, took, t * 1000))
        return {shard: v.status for shard, v in detector.assess(t * 1000).items()}

    assert {s for t in range(60) for s in second(t, slow=False).values()} == {HEALTHY}
    seen = {t: second(t, slow=True) for t in range(60, 70)}
    assert seen[60 + POLICY.sustain_ms // 1000][1] == SICK
    assert {seen[69][s] for s in (0, 2, 3)} == {HEALTHY}


def test_a_shard_whose_event_loop_keeps_stopping_is_sick() -> None:
    """Regression, ledger chaos (seed 5): a shard worker stopped and resumed in 0.6 s / 0.3 s cycles
    opened no breaker: its batches and its replies stayed within the noise of a ledger under
    faults. Its own loop lag does not: it wakes late by up to 0.6 s every second."""
    detector = AnomalyDetector(SHARDS, 0, POLICY)
    rng = random.Random(5)

    def second(t: int, stopping: bool) -> dict[int, str]:
        for shard in SHARDS:
            late = rng.uniform(450, 600) if stopping and shard == 2 else rng.uniform(1, 30)
            detector.observe(TelemetrySample(f"shard-{shard}", shard, LOOP_LAG_MS, late, t * 1000))
        return {shard: v.status for shard, v in detector.assess(t * 1000).items()}

    assert {s for t in range(60) for s in second(t, stopping=False).values()} == {HEALTHY}
    seen = {t: second(t, stopping=True) for t in range(60, 70)}
    assert seen[60 + POLICY.sustain_ms // 1000][2] == SICK
    assert {seen[69][s] for s in (0, 1, 3)} == {HEALTHY}


def test_a_busy_machine_s_loop_lag_spikes_on_one_shard_are_not_sick() -> None:
    """Regression, ledger chaos (seed 3, 150 s): shard 2's breaker opened on its loop lag while a
    relay process restarted beside it (Python starting up on a 2-core machine): spikes of tens of
    ms, against a level of 7 ms, every second or two. A stopped shard wakes hundreds of ms late."""
    detector = AnomalyDetector(SHARDS, 0, POLICY)
    rng = random.Random(11)

    def second(t: int, busy: bool) -> dict[int, str]:
        for shard in SHARDS:
            late = rng.uniform(2, 12)
            if busy and shard == 2 and t % 2 == 0:
                late = rng.uniform(60, 150)
            detector.observe(TelemetrySample(f"shard-{shard}", shard, LOOP_LAG_MS, late, t * 1000))
        return {shard: v.status for shard, v in detector.assess(t * 1000).items()}

    for t in range(60):
        second(t, busy=False)
    assert {second(t, busy=True)[2] for t in range(60, 75)} <= {HEALTHY, JITTER}
