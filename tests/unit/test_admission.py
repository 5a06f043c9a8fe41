"""Admission of new transfers by the shards' breakers: closed admits, open refuses at once with
shard_unavailable, half-open lets a deterministic trickle through."""

from __future__ import annotations

from coordinator.saga.admission import (
    SHARD_UNAVAILABLE,
    AdmissionPolicy,
    Admitted,
    Gate,
    Refused,
    admit,
    remember,
)
from schemas.breaker import BY_MONITOR, CLOSED, HALF_OPEN, OPEN, BreakerState

POLICY = AdmissionPolicy(trickle_per_s=5, burst=1)


def state(shard: int, kind: str, seq: int = 1) -> BreakerState:
    return BreakerState(shard, kind, False, "", BY_MONITOR, seq, 0)


def test_closed_or_unknown_shards_admit() -> None:
    gate = Gate()
    assert admit(gate, {1: state(1, CLOSED)}, [1, 2], 0, POLICY) == (gate, Admitted())
    assert admit(gate, {}, [0], 0, POLICY) == (gate, Admitted())


def test_an_open_shard_refuses_with_shard_unavailable() -> None:
    breakers = {1: state(1, OPEN), 3: state(3, HALF_OPEN)}
    gate, decision = admit(Gate(), breakers, [0, 1, 3], 0, POLICY)
    assert decision == Refused(SHARD_UNAVAILABLE, (1,))
    assert gate == Gate()  # a half-open shard beside an open one gives up no token


def test_half_open_admits_a_trickle() -> None:
    breakers = {2: state(2, HALF_OPEN)}
    gate, decisions = Gate(), []
    for now in range(0, 2000, 10):  # a new transfer every 10 ms for 2 s
        gate, decision = admit(gate, breakers, [2], now, POLICY)
        decisions.append((now, decision))
    admitted = [now for now, decision in decisions if decision == Admitted()]
    # The first at once (a full bucket), then one every 200 ms (5 a second).
    assert admitted == [0, 200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800]
    assert {d for _, d in decisions if d != Admitted()} == {Refused(SHARD_UNAVAILABLE, (2,))}


def test_a_transfer_across_two_half_open_shards_takes_a_token_from_each_or_none() -> None:
    breakers = {1: state(1, HALF_OPEN), 2: state(2, HALF_OPEN)}
    gate, decision = admit(Gate(), breakers, [2], 0, POLICY)
    assert decision == Admitted()
    gate, decision = admit(gate, breakers, [1, 2], 100, POLICY)
    assert decision == Refused(SHARD_UNAVAILABLE, (2,))
    assert gate.buckets[1].milli_tokens == 1000  # shard 1 kept its token
    gate, decision = admit(gate, breakers, [1, 2], 200, POLICY)
    assert decision == Admitted()
    assert (gate.buckets[1].milli_tokens, gate.buckets[2].milli_tokens) == (0, 0)


def test_a_new_half_open_episode_starts_with_a_full_bucket() -> None:
    gate, _ = admit(Gate(), {2: state(2, HALF_OPEN, seq=2)}, [2], 0, POLICY)
    assert admit(gate, {2: state(2, HALF_OPEN, seq=2)}, [2], 1, POLICY)[1] != Admitted()
    assert admit(gate, {2: state(2, HALF_OPEN, seq=4)}, [2], 1, POLICY)[1] == Admitted()


def test_a_clock_stepping_back_refills_nothing() -> None:
    breakers = {2: state(2, HALF_OPEN)}
    gate, _ = admit(Gate(), breakers, [2], 10_000, POLICY)
    gate, decision = admit(gate, breakers, [2], 5_000, POLICY)
    assert decision != Admitted()
    assert admit(gate, breakers, [2], 10_200, POLICY)[1] == Admitted()


def test_the_latest_state_wins_whatever_the_order_it_arrives_in() -> None:
    latest = remember({}, state(2, OPEN, seq=3))
    assert remember(latest, state(2, CLOSED, seq=2)) == latest  # a stale record is ignored
    assert remember(latest, state(2, HALF_OPEN, seq=4))[2].state == HALF_OPEN
    assert remember(latest, state(1, OPEN, seq=1)).keys() == {1, 2}
