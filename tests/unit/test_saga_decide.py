"""The transfer saga's `decide` for every (step, event) pair: replies, stale ones, timers, finished sagas."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from coordinator.saga.transfer_saga import (
    CANCELLING_CREDIT,
    COMMITTING,
    COMPENSATED,
    COMPLETED,
    CREDITING,
    DONE,
    IN_FLIGHT,
    POSTING,
    REJECTED,
    RELEASING,
    RESERVING,
    Effect,
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SagaState,
    SendToShard,
    TimerFired,
    Transfer,
    command_for,
    command_id,
    decide,
    start,
)
from schemas.shard_messages import (
    CancelCredit,
    CommitReservation,
    CreditFunds,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    ShardCommand,
    ShardReply,
    reply_id,
)

POLICY = SagaPolicy(max_forward_attempts=3, base_backoff_ms=100, max_backoff_ms=1_000, park_after_ms=10_000)
T0 = 1_700_000_000_000
CROSS = Transfer(str(uuid.UUID(int=1)), "acct-a", "acct-x", 250, "EUR", debit_shard=0, credit_shard=1)
SAME = Transfer(str(uuid.UUID(int=2)), "acct-a", "acct-b", 250, "EUR", debit_shard=0, credit_shard=0)
OTHER = Transfer(str(uuid.UUID(int=3)), "acct-c", "acct-y", 99, "EUR", debit_shard=0, credit_shard=1)

CROSS_STEPS = (RESERVING, CREDITING, CANCELLING_CREDIT, COMMITTING, RELEASING)
ALL_STEPS = (POSTING, *CROSS_STEPS)
# Every outcome a shard can report to a saga command, with a typical reason.
OUTCOMES: tuple[tuple[str, str | None], ...] = (
    ("transfer_posted", None),
    ("funds_reserved", None),
    ("funds_credited", None),
    ("credit_cancelled", None),
    ("reservation_committed", None),
    ("reservation_released", None),
    ("rejected", "insufficient_funds"),
    ("rejected", "credit_applied"),
    ("rejected", "reservation_released"),
)
# The reason a saga carries while it is in a step (the compensating steps know why they run).
STEP_REASON: dict[str, str | None] = {CANCELLING_CREDIT: "credit_timeout", RELEASING: "reserve_timeout"}
COMMAND_NAMES = {
    POSTING: "PostTransfer",
    RESERVING: "ReserveFunds",
    CREDITING: "CreditFunds",
    CANCELLING_CREDIT: "CancelCredit",
    COMMITTING: "CommitReservation",
    RELEASING: "ReleaseReservation",
}


def transfer_for(step: str) -> Transfer:
    return SAME if step == POSTING else CROSS


def at_step(step: str, *, reason: str | None = None, attempts: int = 1, parked: bool = False) -> SagaState:
    """A saga that has just sent its `step` command (at T0, when it also started)."""
    reason = reason if reason is not None else STEP_REASON.get(step)
    return SagaState(
        transfer_for(step), IN_FLIGHT, step, reason, attempts, T0 + POLICY.base_backoff_ms, T0, parked
    )


def reply_to(
    step: str, outcome: str, reason: str | None = None, transfer: Transfer | None = None
) -> ShardReply:
    """What a shard answers to the `step` command of `transfer`."""
    t = transfer or transfer_for(step)
    cid = command_id(t.transfer_id, step)
    return ShardReply(
        message_id=reply_id(cid),
        in_reply_to=cid,
        command=COMMAND_NAMES.get(step, "ReserveFunds"),
        shard=t.debit_shard,
        account_id=t.debit_account,
        transfer_id=t.transfer_id,
        outcome=outcome,
        reason=reason,
    )


def arrive(state: SagaState, reply: ShardReply, now: int = T0 + 10) -> tuple[SagaState, list[Effect]]:
    new, effects = decide(state, ReplyArrived(reply, now), POLICY)
    return new, list(effects)


def expected_send(transfer: Transfer, step: str) -> SendToShard:
    """The command of `step`, built here from the transfer rather than by `command_for`."""
    t, cid = transfer, command_id(transfer.transfer_id, step)
    commands: dict[str, tuple[int, ShardCommand]] = {
        POSTING: (
            t.debit_shard,
            PostTransfer(cid, t.transfer_id, t.debit_account, t.credit_account, t.amount, t.currency),
        ),
        RESERVING: (t.debit_shard, ReserveFunds(cid, t.transfer_id, t.debit_account, t.amount, t.currency)),
        CREDITING: (t.credit_shard, CreditFunds(cid, t.transfer_id, t.credit_account, t.amount, t.currency)),
        CANCELLING_CREDIT: (t.credit_shard, CancelCredit(cid, t.transfer_id, t.credit_account)),
        COMMITTING: (t.debit_shard, CommitReservation(cid, t.transfer_id, t.debit_account)),
        RELEASING: (t.debit_shard, ReleaseReservation(cid, t.transfer_id, t.debit_account)),
    }
    shard, command = commands[step]
    return SendToShard(shard, command)


# --- start ----------------------------------------------------------------------------------


def test_a_same_shard_transfer_starts_by_posting() -> None:
    state, effects = start(SAME, T0, POLICY)
    assert (state.status, state.step, state.reason, state.attempts) == (IN_FLIGHT, POSTING, None, 1)
    assert (state.started_ms, state.next_attempt_ms, state.parked) == (T0, T0 + 100, False)
    assert effects == [expected_send(SAME, POSTING)]


def test_a_cross_shard_transfer_starts_by_reserving_on_the_debit_shard() -> None:
    state, effects = start(CROSS, T0, POLICY)
    assert (state.status, state.step, state.attempts, state.next_attempt_ms) == (
        IN_FLIGHT,
        RESERVING,
        1,
        T0 + 100,
    )
    assert effects == [expected_send(CROSS, RESERVING)]


def test_command_ids_are_fixed_per_transfer_and_step() -> None:
    ids = {command_id(t.transfer_id, s) for t in (CROSS, OTHER) for s in ALL_STEPS}
    assert len(ids) == 2 * len(ALL_STEPS)
    assert command_id(CROSS.transfer_id, CREDITING) == command_id(CROSS.transfer_id, CREDITING)
    assert all(str(uuid.UUID(i)) == i for i in ids)


# --- replies each step accepts --------------------------------------------------------------

# (step, reply outcome, reply reason, reason the saga is in the step with) ->
# (status, step, reason after; the step whose command is sent next, or None when the saga finishes)
CANCEL = CANCELLING_CREDIT
ACCEPTED: list[tuple[str, str, str | None, str | None, str, str, str | None, str | None]] = [
    (POSTING, "transfer_posted", None, None, COMPLETED, DONE, None, None),
    (POSTING, "transfer_posted", "already_applied", None, COMPLETED, DONE, None, None),
    (POSTING, "rejected", "insufficient_funds", None, REJECTED, DONE, "insufficient_funds", None),
    (POSTING, "rejected", "account_frozen", None, REJECTED, DONE, "account_frozen", None),
    (RESERVING, "funds_reserved", None, None, IN_FLIGHT, CREDITING, None, CREDITING),
    (RESERVING, "funds_reserved", "already_applied", None, IN_FLIGHT, CREDITING, None, CREDITING),
    (RESERVING, "rejected", "insufficient_funds", None, REJECTED, DONE, "insufficient_funds", None),
    (RESERVING, "rejected", "account_closed", None, REJECTED, DONE, "account_closed", None),
    (CREDITING, "funds_credited", None, None, IN_FLIGHT, COMMITTING, None, COMMITTING),
    (CREDITING, "rejected", "account_frozen", None, IN_FLIGHT, RELEASING, "account_frozen", RELEASING),
    (CREDITING, "rejected", "account_closed", None, IN_FLIGHT, RELEASING, "account_closed", RELEASING),
    (CREDITING, "rejected", "currency_mismatch", None, IN_FLIGHT, RELEASING, "currency_mismatch", RELEASING),
    (CANCEL, "credit_cancelled", None, "credit_timeout", IN_FLIGHT, RELEASING, "credit_timeout", RELEASING),
    (CANCEL, "credit_cancelled", "already_applied", "credit_timeout", IN_FLIGHT, RELEASING, "credit_timeout",
     RELEASING),
    (CANCEL, "rejected", "credit_applied", "credit_timeout", IN_FLIGHT, COMMITTING, None, COMMITTING),
    (COMMITTING, "reservation_committed", None, None, COMPLETED, DONE, None, None),
    (COMMITTING, "reservation_committed", "already_applied", None, COMPLETED, DONE, None, None),
    (RELEASING, "reservation_released", None, "reserve_timeout", COMPENSATED, DONE, "reserve_timeout", None),
    (RELEASING, "reservation_released", "reservation_not_found", "reserve_timeout", COMPENSATED, DONE,
     "reserve_timeout", None),
    (RELEASING, "reservation_released", "already_applied", "account_frozen", COMPENSATED, DONE,
     "account_frozen", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("step", "outcome", "note", "reason_before", "status", "step_after", "reason_after", "sends"), ACCEPTED
)
def test_each_step_accepts_its_outcomes(
    step: str,
    outcome: str,
    note: str | None,
    reason_before: str | None,
    status: str,
    step_after: str,
    reason_after: str | None,
    sends: str | None,
) -> None:
    state = replace(at_step(step, reason=reason_before), attempts=2, next_attempt_ms=T0 + 300)
    now = T0 + 50
    new, effects = arrive(state, reply_to(step, outcome, note), now)
    assert (new.status, new.step, new.reason) == (status, step_after, reason_after)
    assert new.transfer == state.transfer
    assert new.started_ms == T0
    if sends is None:  # terminal: exactly one result, nothing sent
        assert new.terminal
        assert effects == [PublishResult(state.transfer.transfer_id, status, reason_after)]
    else:  # the next step's command, once, with a fresh attempt count and timer
        assert not new.terminal
        assert effects == [expected_send(state.transfer, sends)]
        assert (new.attempts, new.next_attempt_ms) == (1, now + POLICY.base_backoff_ms)


@pytest.mark.parametrize(("step", "outcome", "note"), [(s, o, n) for s, o, n, *_ in ACCEPTED])
def test_the_same_reply_again_after_the_step_moved_on_changes_nothing(
    step: str, outcome: str, note: str | None
) -> None:
    reply = reply_to(step, outcome, note)
    moved, _ = arrive(at_step(step), reply)
    for now in (T0 + 20, T0 + 10_000_000):
        again, effects = arrive(moved, reply, now)
        assert (again, effects) == (moved, [])


# --- replies a step cannot accept: the saga is parked for a person ------------------------------

REFUSED = [
    (COMMITTING, "rejected", "reservation_released"),
    (COMMITTING, "rejected", "reservation_not_found"),
    (COMMITTING, "rejected", "wrong_shard"),
    (RELEASING, "rejected", "reservation_committed"),
    (RELEASING, "rejected", "reservation_not_found"),
    (RELEASING, "rejected", "wrong_shard"),
    (CANCELLING_CREDIT, "rejected", "wrong_shard"),
]


@pytest.mark.parametrize(("step", "outcome", "note"), REFUSED)
def test_a_refused_commit_release_or_cancel_parks_the_saga(step: str, outcome: str, note: str) -> None:
    state = at_step(step)
    parked, effects = arrive(state, reply_to(step, outcome, note))
    assert effects == []
    assert parked == replace(state, parked=True)  # the reason the result will carry is kept
    assert not parked.terminal
    # It keeps re-sending the same command on its timer, and stays parked.
    resent, effects = decide(parked, TimerFired(state.next_attempt_ms), POLICY)
    assert effects == [expected_send(state.transfer, step)]
    assert (resent.step, resent.parked, resent.attempts) == (step, True, 2)


@pytest.mark.parametrize(
    ("step", "outcome"),
    [
        (RESERVING, "reservation_committed"),
        (CREDITING, "funds_reserved"),
        (COMMITTING, "funds_credited"),
        (RELEASING, "credit_cancelled"),
        (CANCELLING_CREDIT, "funds_credited"),
    ],
)
def test_an_outcome_that_does_not_belong_to_the_step_parks_it(step: str, outcome: str) -> None:
    state = at_step(step)
    parked, effects = arrive(state, reply_to(step, outcome))
    assert (parked, effects) == (replace(state, parked=True), [])


def test_a_parked_saga_that_is_answered_after_all_finishes_and_is_no_longer_parked() -> None:
    state = at_step(COMMITTING, parked=True)
    done, effects = arrive(state, reply_to(COMMITTING, "reservation_committed"))
    assert (done.status, done.parked) == (COMPLETED, False)
    assert effects == [PublishResult(CROSS.transfer_id, COMPLETED, None)]


# --- replies that are not an answer to the current step -------------------------------------


@pytest.mark.parametrize("step", ALL_STEPS)
def test_replies_to_another_steps_command_change_nothing(step: str) -> None:
    state = at_step(step)
    for other in ALL_STEPS:
        if other == step:
            continue
        for outcome, note in OUTCOMES:
            reply = reply_to(other, outcome, note, transfer=state.transfer)
            assert arrive(state, reply) == (state, []), (other, outcome, note)


@pytest.mark.parametrize("step", ALL_STEPS)
def test_replies_with_a_foreign_in_reply_to_change_nothing(step: str) -> None:
    state = at_step(step)
    foreign = [
        reply_to(step, "rejected", "insufficient_funds", transfer=OTHER),  # same step, other transfer
        replace(reply_to(step, "rejected", "x"), in_reply_to=str(uuid.UUID(int=99))),
        replace(reply_to(step, "rejected", "x"), in_reply_to=command_id(state.transfer.transfer_id, DONE)),
    ]
    for reply in foreign:
        for outcome, note in OUTCOMES:
            assert arrive(state, replace(reply, outcome=outcome, reason=note)) == (state, [])


# --- terminal states ------------------------------------------------------------------------

TERMINAL_STATES = [
    replace(at_step(step), status=status, step=DONE, reason=reason)
    for step, status, reason in [
        (POSTING, COMPLETED, None),
        (POSTING, REJECTED, "insufficient_funds"),
        (RESERVING, REJECTED, "account_frozen"),
        (COMMITTING, COMPLETED, None),
        (RELEASING, COMPENSATED, "reserve_timeout"),
    ]
]


@pytest.mark.parametrize("state", TERMINAL_STATES, ids=lambda s: f"{s.transfer.transfer_id[-1]}-{s.status}")
def test_no_event_changes_a_finished_saga(state: SagaState) -> None:
    assert state.terminal
    for now in (T0 - 1, T0, T0 + 10**9):
        assert decide(state, TimerFired(now), POLICY) == (state, [])
    for step in (*ALL_STEPS, DONE):
        for outcome, note in OUTCOMES:
            reply = reply_to(step, outcome, note, transfer=state.transfer)
            assert decide(state, ReplyArrived(reply, T0 + 5), POLICY) == (state, [])


# --- timers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", ALL_STEPS)
def test_a_timer_before_the_next_attempt_does_nothing(step: str) -> None:
    state = at_step(step)
    for now in (T0 - 5, T0, state.next_attempt_ms - 1):
        assert decide(state, TimerFired(now), POLICY) == (state, [])


@pytest.mark.parametrize("step", ALL_STEPS)
def test_a_timeout_re_sends_the_same_command(step: str) -> None:
    state = at_step(step)
    original = command_for(state)
    resent, effects = decide(state, TimerFired(state.next_attempt_ms), POLICY)
    assert effects == [original] == [expected_send(state.transfer, step)]
    assert (resent.step, resent.status, resent.reason) == (step, IN_FLIGHT, state.reason)
    assert (resent.attempts, resent.next_attempt_ms) == (
        2,
        state.next_attempt_ms + 2 * POLICY.base_backoff_ms,
    )


@pytest.mark.parametrize("step", [POSTING, COMMITTING, RELEASING, CANCELLING_CREDIT])
def test_backoff_doubles_up_to_the_cap_and_these_steps_never_give_up(step: str) -> None:
    state = at_step(step)
    original = command_for(state)
    waits = []
    for attempt in range(2, 14):
        fired_at = state.next_attempt_ms
        state, effects = decide(state, TimerFired(fired_at), POLICY)
        assert effects == [original], attempt
        assert (state.step, state.status, state.attempts) == (step, IN_FLIGHT, attempt)
        waits.append(state.next_attempt_ms - fired_at)
    assert waits == [200, 400, 800] + [1_000] * 9


def test_a_late_timer_waits_from_when_it_fired() -> None:
    state = at_step(COMMITTING)
    resent, _ = decide(state, TimerFired(T0 + 5_000), POLICY)
    assert resent.next_attempt_ms == T0 + 5_000 + 200


@pytest.mark.parametrize(
    ("step", "undo", "reason"),
    [(RESERVING, RELEASING, "reserve_timeout"), (CREDITING, CANCELLING_CREDIT, "credit_timeout")],
)
def test_reserve_and_credit_give_up_after_max_forward_attempts(step: str, undo: str, reason: str) -> None:
    state, sends = at_step(step), 1  # at_step has sent the command once
    while True:
        now = state.next_attempt_ms
        state, effects = decide(state, TimerFired(now), POLICY)
        if state.step != step:
            break
        sends += 1
        assert effects == [expected_send(CROSS, step)]
    assert sends == POLICY.max_forward_attempts
    assert (state.status, state.step, state.reason, state.attempts) == (IN_FLIGHT, undo, reason, 1)
    assert state.next_attempt_ms == now + POLICY.base_backoff_ms
    assert effects == [expected_send(CROSS, undo)]


@pytest.mark.parametrize("step", [POSTING, COMMITTING, RELEASING, CANCELLING_CREDIT])
def test_stuck_steps_are_parked_after_park_after_ms_and_keep_re_sending(step: str) -> None:
    threshold = T0 + POLICY.park_after_ms  # at_step started the saga at T0
    state = replace(at_step(step), attempts=7, next_attempt_ms=threshold - 1)
    original = command_for(state)
    # Just before the threshold: re-sent, not parked.
    before, effects = decide(state, TimerFired(threshold - 1), POLICY)
    assert (before.parked, before.step, effects) == (False, step, [original])
    # At the threshold: re-sent and parked, still the same step and status.
    state, effects = decide(state, TimerFired(threshold), POLICY)
    assert (state.parked, state.step, state.status, effects) == (True, step, IN_FLIGHT, [original])
    # And it keeps re-sending, parked, at the capped backoff.
    for _ in range(3):
        fired_at = state.next_attempt_ms
        state, effects = decide(state, TimerFired(fired_at), POLICY)
        assert (state.parked, state.step, effects) == (True, step, [original])
        assert state.next_attempt_ms - fired_at == POLICY.max_backoff_ms


def test_the_whole_happy_path_and_a_compensation_through_decide() -> None:
    state, effects = start(CROSS, T0, POLICY)
    published: list[Effect] = []
    for step, outcome in [(RESERVING, "funds_reserved"), (CREDITING, "funds_credited")]:
        state, effects = arrive(state, reply_to(step, outcome))
        assert all(isinstance(e, SendToShard) for e in effects)
    state, effects = arrive(state, reply_to(COMMITTING, "reservation_committed"))
    published += effects
    assert published == [PublishResult(CROSS.transfer_id, COMPLETED, None)]

    # The credit times out, the cancel finds it applied: forward to commit.
    state, _ = start(CROSS, T0, POLICY)
    state, _ = arrive(state, reply_to(RESERVING, "funds_reserved"))
    while state.step == CREDITING:
        state, effects = decide(state, TimerFired(state.next_attempt_ms), POLICY)
    assert (state.step, state.reason) == (CANCELLING_CREDIT, "credit_timeout")
    state, effects = arrive(state, reply_to(CANCELLING_CREDIT, "rejected", "credit_applied"))
    assert (state.step, state.reason, effects) == (COMMITTING, None, [expected_send(CROSS, COMMITTING)])

    # The reserve times out: release, and the result says why.
    state, _ = start(CROSS, T0, POLICY)
    while state.step == RESERVING:
        state, effects = decide(state, TimerFired(state.next_attempt_ms), POLICY)
    state, effects = arrive(state, reply_to(RELEASING, "reservation_released", "reservation_not_found"))
    assert effects == [PublishResult(CROSS.transfer_id, COMPENSATED, "reserve_timeout")]
