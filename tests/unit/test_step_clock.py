"""A coordinator times only the steps it decided itself, each once, in bounded memory."""

from __future__ import annotations

from coordinator.service.step_clock import StepClock


def test_a_reply_is_timed_from_the_first_decision_once() -> None:
    clock = StepClock()
    clock.decided(["a", "b"], 1_000)
    clock.decided(["a"], 3_000)  # sent again: timed from the first send
    assert clock.replied([(1, "a"), (2, "other-process"), (1, "a")], 4_500) == [(1, 3_500)]
    assert len(clock) == 1


def test_the_oldest_unanswered_are_forgotten_past_the_bound() -> None:
    clock = StepClock(bound=2)
    clock.decided(["a", "b", "c"], 1_000)
    assert clock.replied([(0, "a"), (0, "c")], 1_200) == [(0, 200)]
    assert len(clock) == 1
