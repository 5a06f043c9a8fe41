"""A linked batch's saga: every leg or none, one ApplyLegs per shard per step."""

from __future__ import annotations

import uuid

from coordinator.saga.batch_saga import (
    Batch,
    BatchLeg,
    BatchState,
    command_id,
    decide,
    start,
)
from coordinator.saga.transfer_saga import (
    CANCELLING_CREDIT,
    COMPENSATED,
    COMPLETED,
    HELD,
    HOLDING_CREDIT,
    PENDING,
    POSTING_HOLD,
    REJECTED,
    RELEASING,
    SETTLING_CREDIT,
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SendToShard,
    TimerFired,
)
from schemas.shard_messages import ApplyLegs, ShardReply, reply_id

POLICY = SagaPolicy(max_forward_attempts=2, base_backoff_ms=100, max_backoff_ms=400, park_after_ms=10_000)
T0 = 1_700_000_000_000
L1, L2, L3 = (str(uuid.UUID(int=100 + i)) for i in range(3))
# A card payment split three ways: customer@0 pays merchant@1, fee@0 and network@2.
SPLIT = Batch(
    str(uuid.UUID(int=99)),
    (
        BatchLeg(L1, "customer", "merchant", 9_000, "EUR", 0, 1),
        BatchLeg(L2, "customer", "fee", 700, "EUR", 0, 0),
        BatchLeg(L3, "customer", "network", 300, "EUR", 0, 2),
    ),
)


def answer(state: BatchState, shard: int, outcome: str = "legs_applied", reason: str | None = None,
           leg: str | None = None) -> tuple[BatchState, list]:  # type: ignore[type-arg]  # fmt: skip
    cid = command_id(state.batch.batch_id, state.step, shard)
    reply = ShardReply(
        reply_id(cid), cid, "ApplyLegs", shard, "x", state.batch.batch_id, outcome, reason, None, leg
    )
    return decide(state, ReplyArrived(reply, T0 + 10), POLICY)


def sent(effects: list) -> dict[int, tuple[str, list[tuple[str, str, int]]]]:  # type: ignore[type-arg]
    """shard -> (ApplyLegs step, [(leg, account, amount)])."""
    out = {}
    for e in effects:
        assert isinstance(e, SendToShard)
        assert isinstance(e.command, ApplyLegs)
        out[e.shard] = (
            e.command.step,
            [(leg.transfer_id, leg.account_id, leg.amount) for leg in e.command.legs],
        )
    return out


def all_answer(state: BatchState) -> tuple[BatchState, list]:  # type: ignore[type-arg]
    effects: list = []  # type: ignore[type-arg]
    for shard in sorted(state.waiting):
        state, effects = answer(state, shard)
    return state, effects


def test_a_split_payment_holds_every_leg_then_posts_them_all() -> None:
    state, effects = start(SPLIT, T0, POLICY)
    assert sent(effects) == {
        0: ("reserve", [(L1, "customer", 9_000), (L2, "customer", 700), (L3, "customer", 300)])
    }
    state, effects = all_answer(state)
    assert state.step == HOLDING_CREDIT
    assert sent(effects) == {
        0: ("hold_credit", [(L2, "fee", 700)]),
        1: ("hold_credit", [(L1, "merchant", 9_000)]),
        2: ("hold_credit", [(L3, "network", 300)]),
    }
    state, effects = answer(state, 2)
    assert (state.step, effects) == (HOLDING_CREDIT, [])  # still waiting for shards 0 and 1
    state, effects = answer(state, 2)  # a duplicate changes nothing
    assert state.waiting == frozenset({0, 1})
    state, _ = answer(state, 0)
    state, effects = answer(state, 1)
    assert state.step == SETTLING_CREDIT
    assert {shard: step for shard, (step, _) in sent(effects).items()} == {
        0: "settle",
        1: "settle",
        2: "settle",
    }
    state, effects = all_answer(state)
    assert (state.step, sent(effects)[0][0]) == (POSTING_HOLD, "post_hold")
    state, effects = all_answer(state)
    assert (state.status, effects) == (COMPLETED, [PublishResult(SPLIT.batch_id, COMPLETED, None)])


def test_a_refused_hold_releases_every_debit_shard_and_rejects_naming_the_leg() -> None:
    two_payers = Batch(SPLIT.batch_id, (SPLIT.legs[0], BatchLeg(L2, "other", "fee", 5, "EUR", 2, 0)))
    state, _ = start(two_payers, T0, POLICY)
    state, _ = answer(state, 0)
    state, effects = answer(state, 2, "rejected", "insufficient_funds", L2)
    assert (state.step, state.failed_leg, state.reason) == (RELEASING, L2, "insufficient_funds")
    assert set(sent(effects)) == {0, 2}  # shard 2 too: a late reserve there finds a tombstone
    state, effects = all_answer(state)
    assert (state.status, state.reason) == (REJECTED, "insufficient_funds")
    assert effects == [PublishResult(SPLIT.batch_id, REJECTED, "insufficient_funds")]


def test_a_refused_pending_credit_cancels_every_credit_then_releases_every_hold() -> None:
    state, _ = start(SPLIT, T0, POLICY)
    state, _ = all_answer(state)
    state, _ = answer(state, 0)
    state, effects = answer(state, 1, "rejected", "account_frozen", L1)
    assert state.step == CANCELLING_CREDIT
    assert set(sent(effects)) == {0, 1, 2}
    state, effects = all_answer(state)
    assert (state.step, set(sent(effects))) == (RELEASING, {0})
    state, effects = all_answer(state)
    assert (state.status, state.reason, state.failed_leg) == (COMPENSATED, "account_frozen", L1)


def test_an_unanswered_hold_gives_up_after_its_attempts_and_compensates() -> None:
    state, _ = start(SPLIT, T0, POLICY)
    state, effects = decide(state, TimerFired(state.next_attempt_ms), POLICY)
    assert (state.attempts, sent(effects)[0][0]) == (2, "reserve")  # re-sent to the silent shard
    state, effects = decide(state, TimerFired(state.next_attempt_ms), POLICY)
    assert (state.step, state.reason) == (RELEASING, "reserve_timeout")
    state, _ = all_answer(state)
    assert (state.status, state.reason) == (COMPENSATED, "reserve_timeout")


def test_a_reply_from_a_shard_not_awaited_or_to_another_step_changes_nothing() -> None:
    state, _ = start(SPLIT, T0, POLICY)
    assert answer(state, 1) == (state, [])  # shard 1 holds no debit leg
    stale = ShardReply(
        "r",
        command_id(SPLIT.batch_id, HOLDING_CREDIT, 0),
        "ApplyLegs",
        0,
        "x",
        SPLIT.batch_id,
        "legs_applied",
    )
    assert decide(state, ReplyArrived(stale, T0), POLICY) == (state, [])


def test_a_pending_batch_waits_with_every_hold_in_place() -> None:
    held = Batch(SPLIT.batch_id, SPLIT.legs, pending_timeout_ms=60_000)
    state, _ = start(held, T0, POLICY)
    state, _ = all_answer(state)
    state, effects = all_answer(state)
    assert (state.status, state.step, effects) == (
        PENDING,
        HELD,
        [PublishResult(SPLIT.batch_id, PENDING, None)],
    )
    state, effects = decide(state, TimerFired(T0 + 60_000), POLICY)
    assert (state.step, state.resolution) == (CANCELLING_CREDIT, "expire")
    state, _ = all_answer(state)
    state, effects = all_answer(state)
    assert effects == [PublishResult(SPLIT.batch_id, "expired", None)]
