"""Two-phase transfers in the pure saga: the hold, then exactly one of post, void or expiry."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from coordinator.saga.transfer_saga import (
    CANCELLING_CREDIT,
    COMPENSATED,
    COMPLETED,
    DONE,
    EXPIRED,
    HELD,
    HOLDING,
    HOLDING_CREDIT,
    IN_FLIGHT,
    PENDING,
    POSTING_HOLD,
    POSTING_PENDING,
    RELEASING,
    SETTLING_CREDIT,
    VOIDED,
    VOIDING,
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SagaState,
    SendToShard,
    TimerFired,
    Transfer,
    command_id,
    decide,
    start,
)
from coordinator.saga.two_phase import Refusal, post, void
from schemas.shard_messages import (
    CancelCredit,
    HoldCredit,
    HoldTransfer,
    PostHold,
    PostPending,
    ReleaseReservation,
    SettleCredit,
    ShardReply,
    VoidPending,
    reply_id,
)

POLICY = SagaPolicy(max_forward_attempts=3, base_backoff_ms=100, max_backoff_ms=1_000, park_after_ms=10_000)
T0 = 1_700_000_000_000
TIMEOUT = 30_000
SAME = Transfer(str(uuid.UUID(int=11)), "acct-a", "acct-b", 500, "EUR", 0, 0, pending_timeout_ms=TIMEOUT)
CROSS = Transfer(str(uuid.UUID(int=12)), "acct-a", "acct-x", 500, "EUR", 0, 1, pending_timeout_ms=TIMEOUT)
POST_ID, VOID_ID = str(uuid.UUID(int=21)), str(uuid.UUID(int=22))


def answer(
    state: SagaState, outcome: str, reason: str | None = None, now: int = T0 + 10
) -> tuple[SagaState, list]:  # type: ignore[type-arg]
    t, cid = state.transfer, command_id(state.transfer.transfer_id, state.step)
    reply = ShardReply(reply_id(cid), cid, "X", 0, t.debit_account, t.transfer_id, outcome, reason)
    return decide(state, ReplyArrived(reply, now), POLICY)


def held(transfer: Transfer) -> SagaState:
    state, _ = start(transfer, T0, POLICY)
    if transfer.cross_shard:
        state, _ = answer(state, "funds_reserved")
        state, _ = answer(state, "credit_held")
    else:
        state, _ = answer(state, "funds_held")
    return state


def test_a_same_shard_pending_transfer_holds_in_one_command() -> None:
    state, effects = start(SAME, T0, POLICY)
    cid = command_id(SAME.transfer_id, HOLDING)
    assert (state.step, effects) == (
        HOLDING,
        [SendToShard(0, HoldTransfer(cid, SAME.transfer_id, "acct-a", "acct-b", 500, "EUR"))],
    )
    state, effects = answer(state, "funds_held")
    assert (state.status, state.step, state.expires_ms) == (PENDING, HELD, T0 + TIMEOUT)
    assert state.next_attempt_ms == T0 + TIMEOUT  # the sweeper wakes it to expire, nothing sooner
    assert effects == [PublishResult(SAME.transfer_id, PENDING, None)]
    assert not state.terminal


def test_a_cross_shard_pending_transfer_reserves_then_holds_the_credit() -> None:
    state, _ = start(CROSS, T0, POLICY)
    state, effects = answer(state, "funds_reserved")
    cid = command_id(CROSS.transfer_id, HOLDING_CREDIT)
    assert effects == [SendToShard(1, HoldCredit(cid, CROSS.transfer_id, "acct-x", 500, "EUR"))]
    state, effects = answer(state, "credit_held")
    assert (state.status, effects) == (PENDING, [PublishResult(CROSS.transfer_id, PENDING, None)])


def test_a_refused_pending_credit_releases_the_hold_and_compensates() -> None:
    state, _ = start(CROSS, T0, POLICY)
    state, _ = answer(state, "funds_reserved")
    state, _ = answer(state, "rejected", "account_frozen")
    assert (state.step, state.reason) == (RELEASING, "account_frozen")
    state, _ = answer(state, "reservation_released")
    assert (state.status, state.reason) == (COMPENSATED, "account_frozen")


def test_an_unanswered_pending_credit_is_cancelled_after_its_attempts() -> None:
    state, _ = start(CROSS, T0, POLICY)
    state, _ = answer(state, "funds_reserved")
    now = T0
    while state.step == HOLDING_CREDIT:
        now = state.next_attempt_ms
        state, _effects = decide(state, TimerFired(now), POLICY)
    assert (state.step, state.reason) == (CANCELLING_CREDIT, "credit_timeout")


def test_a_pending_transfer_rejected_by_its_shard_is_rejected() -> None:
    state, _ = start(SAME, T0, POLICY)
    state, effects = answer(state, "rejected", "insufficient_funds")
    assert (state.status, effects) == (
        "rejected",
        [PublishResult(SAME.transfer_id, "rejected", "insufficient_funds")],
    )


def test_posting_less_than_a_same_shard_hold() -> None:
    state = held(SAME)
    decided = post(state, POST_ID, 120, T0 + 1_000, POLICY)
    assert not isinstance(decided, Refusal)
    state, effects = decided
    cid = command_id(SAME.transfer_id, POSTING_PENDING)
    assert (state.status, state.step, state.resolved_by, state.post_amount) == (
        IN_FLIGHT,
        POSTING_PENDING,
        POST_ID,
        120,
    )
    assert effects == [SendToShard(0, PostPending(cid, SAME.transfer_id, "acct-a", "acct-b", 120))]
    state, effects = answer(state, "pending_posted", now=T0 + 1_100)
    assert (state.status, state.step) == (COMPLETED, DONE)
    assert effects == [
        PublishResult(SAME.transfer_id, COMPLETED, None),
        PublishResult(POST_ID, COMPLETED, None),
    ]


def test_posting_a_cross_shard_hold_settles_the_credit_then_posts_the_debit() -> None:
    state = held(CROSS)
    decided = post(state, POST_ID, None, T0 + 1_000, POLICY)  # no amount: the whole hold
    assert not isinstance(decided, Refusal)
    state, effects = decided
    settle = command_id(CROSS.transfer_id, SETTLING_CREDIT)
    assert effects == [SendToShard(1, SettleCredit(settle, CROSS.transfer_id, "acct-x", 500))]
    state, effects = answer(state, "credit_settled")
    debit = command_id(CROSS.transfer_id, POSTING_HOLD)
    assert effects == [SendToShard(0, PostHold(debit, CROSS.transfer_id, "acct-a", 500))]
    state, effects = answer(state, "hold_posted")
    assert state.status == COMPLETED
    assert PublishResult(POST_ID, COMPLETED, None) in effects


@pytest.mark.parametrize("transfer", [SAME, CROSS], ids=["same-shard", "cross-shard"])
def test_voiding_releases_both_sides(transfer: Transfer) -> None:
    state = held(transfer)
    decided = void(state, VOID_ID, T0 + 1_000, POLICY)
    assert not isinstance(decided, Refusal)
    state, effects = decided
    tid = transfer.transfer_id
    if transfer.cross_shard:
        assert effects == [SendToShard(1, CancelCredit(command_id(tid, CANCELLING_CREDIT), tid, "acct-x"))]
        state, effects = answer(state, "credit_cancelled")
        assert effects == [SendToShard(0, ReleaseReservation(command_id(tid, RELEASING), tid, "acct-a"))]
        state, effects = answer(state, "reservation_released")
    else:
        assert effects == [SendToShard(0, VoidPending(command_id(tid, VOIDING), tid, "acct-a", "acct-b"))]
        state, effects = answer(state, "pending_voided")
    assert (state.status, state.reason) == (VOIDED, None)
    assert effects == [PublishResult(tid, VOIDED, None), PublishResult(VOID_ID, VOIDED, None)]


@pytest.mark.parametrize("transfer", [SAME, CROSS], ids=["same-shard", "cross-shard"])
def test_a_hold_left_alone_expires_at_its_timeout(transfer: Transfer) -> None:
    state = held(transfer)
    assert decide(state, TimerFired(T0 + TIMEOUT - 1), POLICY) == (state, [])
    state, effects = decide(state, TimerFired(T0 + TIMEOUT), POLICY)
    assert state.step == (CANCELLING_CREDIT if transfer.cross_shard else VOIDING)
    assert state.resolution == "expire"
    if transfer.cross_shard:
        state, _ = answer(state, "credit_cancelled", now=T0 + TIMEOUT + 5)
        state, effects = answer(state, "reservation_released", now=T0 + TIMEOUT + 9)
    else:
        state, effects = answer(state, "pending_voided", now=T0 + TIMEOUT + 5)
    assert (state.status, effects) == (EXPIRED, [PublishResult(transfer.transfer_id, EXPIRED, None)])


def test_a_post_at_or_after_the_timeout_loses_to_the_expiry_and_starts_it() -> None:
    state = held(SAME)
    decided = post(state, POST_ID, 10, T0 + TIMEOUT, POLICY)
    assert isinstance(decided, Refusal)
    assert decided.reason == "pending_transfer_expired"
    assert decided.state is not None
    assert decided.state.resolution == "expire"
    assert decided.effects == [
        SendToShard(
            0, VoidPending(command_id(SAME.transfer_id, VOIDING), SAME.transfer_id, "acct-a", "acct-b")
        )
    ]


def test_a_post_just_before_the_timeout_wins_and_the_timer_then_changes_nothing() -> None:
    state = held(SAME)
    decided = post(state, POST_ID, 10, T0 + TIMEOUT - 1, POLICY)
    assert not isinstance(decided, Refusal)
    state, _ = decided
    late = replace(state, next_attempt_ms=T0 + TIMEOUT)
    moved, effects = decide(late, TimerFired(T0 + TIMEOUT), POLICY)
    assert moved.resolution == "post"  # the timer only re-sends the post
    assert [type(e.command) for e in effects if isinstance(e, SendToShard)] == [PostPending]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda s: post(s, POST_ID, 1, T0 + 1, POLICY), "pending_transfer_already_posted"),
        (lambda s: void(s, VOID_ID, T0 + 1, POLICY), "pending_transfer_already_voided"),
        (lambda s: decide(s, TimerFired(T0 + TIMEOUT), POLICY), "pending_transfer_expired"),
    ],
    ids=["posted", "voided", "expired"],
)
def test_the_loser_of_a_race_gets_a_clear_reason(setup: object, reason: str) -> None:
    state = held(SAME)
    first = setup(state)  # type: ignore[operator]
    assert not isinstance(first, Refusal)
    resolved, _ = first
    for second in (
        post(resolved, str(uuid.uuid4()), 1, T0 + 2, POLICY),
        void(resolved, str(uuid.uuid4()), T0 + 2, POLICY),
    ):
        assert isinstance(second, Refusal)
        assert (second.reason, second.state) == (reason, None)


def test_post_and_void_refuse_what_is_not_a_hold_in_place() -> None:
    plain = Transfer(str(uuid.UUID(int=13)), "acct-a", "acct-b", 5, "EUR", 0, 0)
    state, _ = start(plain, T0, POLICY)
    assert post(state, POST_ID, None, T0, POLICY) == Refusal("pending_transfer_not_pending")
    placing, _ = start(SAME, T0, POLICY)
    assert void(placing, VOID_ID, T0, POLICY) == Refusal("pending_transfer_in_flight")
    refused, _ = answer(placing, "rejected", "insufficient_funds")
    assert void(refused, VOID_ID, T0, POLICY) == Refusal("pending_transfer_not_pending")
    assert post(held(SAME), POST_ID, 501, T0, POLICY) == Refusal("amount_exceeds_pending")


def test_a_resolution_is_parked_after_the_policy_counted_from_the_decision_not_the_hold() -> None:
    state = held(SAME)
    decided = post(state, POST_ID, None, T0 + 20_000, POLICY)  # 20 s after the hold: past park_after
    assert not isinstance(decided, Refusal)
    state, _ = decided
    state, _ = decide(state, TimerFired(state.next_attempt_ms), POLICY)
    assert not state.parked
