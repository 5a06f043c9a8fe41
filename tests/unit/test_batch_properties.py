"""Linked batches in the hostile network of test_saga_properties: drops, duplicates, reordering,
stalls and coordinator crashes, beside single and pending transfers. Every batch ends all legs or
none, published once; a pending batch is posted or voided whole, or expires."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from coordinator.saga import batch_saga
from coordinator.saga.batch_saga import Batch, BatchLeg, BatchState
from coordinator.saga.transfer_saga import COMPLETED, PENDING, TERMINAL, PublishResult
from coordinator.saga.two_phase import Refusal, post, void
from shards.domain.model import CREDIT, HELD, HOLD, RELEASED
from tests.unit.test_saga_properties import (
    _CROSS,
    _LOCAL,
    HOME,
    MAP,
    MAX_TRANSFERS,
    POLICY,
    SagaNetwork,
    amounts,
    parties,
)

# Mostly legs that can succeed (active EUR accounts, small amounts), sometimes any at all.
_good = st.lists(st.tuples(st.sampled_from(_CROSS + _LOCAL), st.integers(1, 50)), min_size=2, max_size=4)
legs = st.one_of(_good, _good, st.lists(st.tuples(parties, amounts), min_size=2, max_size=4))


class BatchNetwork(SagaNetwork):
    @precondition(lambda self: len(self.sagas) + len(self.batches) < MAX_TRANSFERS)
    @rule(parts=legs, pending=st.booleans())
    def start_batch(self, parts: list[tuple[tuple[str, str], int]], pending: bool) -> None:
        self._start_batch(parts, 3_000 if pending else None)

    def _start_batch(self, parts: list[tuple[tuple[str, str], int]], timeout: int | None) -> str:
        made = tuple(
            BatchLeg(self._new_id(), d, c, amount, HOME[d][0], MAP.shard_for(d), MAP.shard_for(c))
            for (d, c), amount in parts
        )
        batch = Batch(self._new_id(), made, timeout)
        self.batches[batch.batch_id], effects = batch_saga.start(batch, self.now, POLICY)
        self._emit(effects)
        return batch.batch_id

    @precondition(lambda self: any(b.status == PENDING for b in self.batches.values()))
    @rule(pick=st.integers(0, 10**6), how=st.sampled_from(["post", "void"]))
    def post_or_void_a_held_batch(self, pick: int, how: str) -> None:
        held = [b for _, b in sorted(self.batches.items()) if b.status == PENDING]
        state = held[pick % len(held)]
        request_id = self._new_id()
        if how == "post":
            decided = post(state, request_id, None, self.now, POLICY)
        else:
            decided = void(state, request_id, self.now, POLICY)
        if isinstance(decided, Refusal):
            self.batch_requests[request_id] = (state.batch.batch_id, how, decided.reason)
            self.results[request_id] = [PublishResult(request_id, "rejected", decided.reason)]
            if isinstance(decided.state, BatchState):
                self.batches[state.batch.batch_id] = decided.state
                self._emit(decided.effects)
            return
        self.batch_requests[request_id] = (state.batch.batch_id, how, None)
        self.batches[state.batch.batch_id], effects = decided
        self._emit(effects)

    @invariant()
    def a_batch_is_all_legs_or_none(self) -> None:
        for batch_id, state in self.batches.items():
            moved = [self._customer_legs(leg.transfer_id) for leg in state.batch.legs]
            for leg, legs_moved in zip(state.batch.legs, moved, strict=True):
                assert legs_moved[leg.debit_account, -leg.amount] <= 1, (leg, legs_moved)
            finals = [r for r in self.results.get(batch_id, []) if r.status != PENDING]
            if not state.terminal:
                assert finals == [], (state, finals)
                continue
            assert finals == [PublishResult(batch_id, state.status, state.reason)], finals
            for leg, legs_moved in zip(state.batch.legs, moved, strict=True):
                whole = Counter({(leg.debit_account, -leg.amount): 1, (leg.credit_account, leg.amount): 1})
                assert legs_moved == (whole if state.status == COMPLETED else Counter()), (
                    state,
                    leg,
                    legs_moved,
                )
                hold = self.books[leg.debit_shard].operations.get((leg.transfer_id, HOLD))
                credit = self.books[leg.credit_shard].operations.get((leg.transfer_id, CREDIT))
                if state.status != COMPLETED:  # nothing held, nothing pending, anywhere
                    assert hold is None or hold.state == RELEASED, (state, hold)
                    assert credit is None or credit.state == RELEASED, (state, credit)
                else:
                    assert hold is not None, leg
                    assert credit is not None, leg
                    assert HELD not in (hold.state, credit.state), (hold, credit)
            if state.failed_leg is not None:
                assert state.failed_leg in {leg.transfer_id for leg in state.batch.legs}
        winners = Counter(batch for batch, _, refusal in self.batch_requests.values() if refusal is None)
        assert all(n == 1 for n in winners.values()), winners  # one post or void wins a batch, at most

    @precondition(lambda self: len(self.sagas) + len(self.batches) < MAX_TRANSFERS)
    @rule(parts=_good, how=st.sampled_from(["post", "void"]))
    def batch_held_on_a_calm_network_then_resolved(
        self, parts: list[tuple[tuple[str, str], int]], how: str
    ) -> None:
        batch_id = self._start_batch(parts, 10_000)
        while self.network and self.batches[batch_id].status not in (PENDING, *TERMINAL):
            self.everything_in_flight_arrives()
        if self.batches[batch_id].status == PENDING:
            self.post_or_void_a_held_batch(
                sorted(b for b, s in self.batches.items() if s.status == PENDING).index(batch_id), how
            )


BatchNetwork.TestCase.settings = settings(
    max_examples=60, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBatchNetwork = BatchNetwork.TestCase
