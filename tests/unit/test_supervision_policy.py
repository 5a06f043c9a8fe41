"""The restart policy of `ledger dev up`'s supervisor (issue 13, item 3): pure, time passed in."""

from __future__ import annotations

import signal

from deploy.supervision import (
    Backoff,
    Child,
    Exited,
    Log,
    Start,
    Started,
    Tick,
    adopt,
    decide,
    describe_exit,
)

BACKOFF = Backoff(first_s=0.5, factor=2.0, cap_s=4.0, healthy_s=30.0)


def _started(name: str = "shard-0", now: float = 0.0) -> dict[str, Child]:
    state, actions = decide({name: Child(name)}, Tick(), now, BACKOFF)
    assert actions == [Start(name)]
    state, _ = decide(state, Started(name, 100), now, BACKOFF)
    return state


def _die(state: dict[str, Child], now: float, name: str = "shard-0") -> tuple[dict[str, Child], float]:
    """Kill it at `now`, then tick until it is started again; return the state and the delay."""
    state, _ = decide(state, Exited(name, "killed by SIGKILL"), now, BACKOFF)
    due = state[name].due_at
    assert due is not None
    state, early = decide(state, Tick(), due - 0.01, BACKOFF)
    assert early == [], "not started before its delay is over"
    state, actions = decide(state, Tick(), due, BACKOFF)
    assert actions == [Start(name)]
    state, _ = decide(state, Started(name, 200), due, BACKOFF)
    return state, due - now


def test_a_new_child_is_started_at_once_and_only_once() -> None:
    state, actions = decide({"a": Child("a")}, Tick(), 5.0, BACKOFF)
    assert actions == [Start("a")]
    _, again = decide(state, Tick(), 6.0, BACKOFF)
    assert again == [], "a start under way is not asked for twice"


def test_quick_deaths_double_the_delay_up_to_the_cap() -> None:
    state, now, delays = _started(), 0.0, []
    for _ in range(6):
        now += 1.0  # each run is short: never healthy
        state, delay = _die(state, now)
        now += delay
        delays.append(delay)
    assert [round(d, 6) for d in delays] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert state["shard-0"].restarts == 6


def test_a_healthy_run_resets_the_delay() -> None:
    state, now = _started(), 0.0
    for _ in range(3):
        now += 1.0
        state, delay = _die(state, now)
        now += delay
    assert delay == 2.0
    now += BACKOFF.healthy_s  # it then ran long enough to be forgiven
    state, delay = _die(state, now)
    assert delay == BACKOFF.first_s
    assert state["shard-0"].failures == 1


def test_a_restart_is_counted_when_started_with_its_time_and_logged() -> None:
    state = _started(now=10.0)
    assert state["shard-0"].restarts == 0
    assert state["shard-0"].last_restart_at is None
    state, actions = decide(state, Exited("shard-0", "exit 1"), 12.0, BACKOFF)
    assert not state["shard-0"].running
    assert state["shard-0"].last_exit == "exit 1"
    assert actions == [Log("shard-0", "exit 1 after 2.0s; next start in 0.5s")]
    state, _ = decide(state, Tick(), 12.5, BACKOFF)
    state, actions = decide(state, Started("shard-0", 4242), 12.5, BACKOFF)
    assert state["shard-0"].restarts == 1
    assert state["shard-0"].last_restart_at == 12.5
    assert state["shard-0"].running
    assert actions == [Log("shard-0", "restarted (restart 1), pid 4242")]


def test_a_failed_start_backs_off_like_a_death() -> None:
    state, _ = decide({"a": Child("a")}, Tick(), 0.0, BACKOFF)
    state, _ = decide(state, Exited("a", "could not start: no such file"), 0.0, BACKOFF)
    assert state["a"].due_at == 0.5
    state, _ = decide(state, Tick(), 0.5, BACKOFF)
    state, _ = decide(state, Exited("a", "could not start: no such file"), 0.5, BACKOFF)
    assert state["a"].due_at == 1.5


def test_only_the_child_that_died_is_touched() -> None:
    state = {**_started("a"), **_started("b")}
    state, _ = decide(state, Exited("a", "exit 3"), 1.0, BACKOFF)
    assert state["b"].running
    state, actions = decide(state, Tick(), 1.5, BACKOFF)
    assert actions == [Start("a")]


def test_an_adopted_child_keeps_its_restart_count_and_is_not_started() -> None:
    state = {"api": adopt("api", 50.0, restarts=2, last_restart_at=40.0)}
    _, actions = decide(state, Tick(), 60.0, BACKOFF)
    assert actions == []
    state, _ = decide(state, Exited("api", describe_exit(None)), 61.0, BACKOFF)
    state, _ = decide(state, Tick(), 61.5, BACKOFF)
    state, _ = decide(state, Started("api", 7), 61.5, BACKOFF)
    assert state["api"].restarts == 3


def test_exit_statuses_are_described() -> None:
    assert describe_exit(0) == "exit 0"
    assert describe_exit(2) == "exit 2"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert "unknown" in describe_exit(None)
