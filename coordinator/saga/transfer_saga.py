"""The transfer saga as a pure state machine: `decide(state, event, policy) -> (state, effects)`.

Same-shard transfer:  posting --transfer_posted--> completed   (or rejected, with the shard's reason)
Cross-shard transfer:
    reserving  --funds_reserved-->        crediting --funds_credited--> committing --committed--> completed
    reserving  --rejected-->              rejected  (nothing was held)
    reserving  --timed out N times-->     releasing                       (reason reserve_timeout)
    crediting  --rejected-->              releasing                       (reason: the credit shard's)
    crediting  --timed out N times-->     cancelling_credit               (reason credit_timeout)
    cancelling_credit --credit_cancelled--> releasing
    cancelling_credit --credit_applied-->   committing                    (too late to undo: go forward)
    releasing  --reservation_released-->  compensated

Pending (two-phase) transfer: the hold is placed, the saga waits in `pending`, then exactly one of
post, void or expiry resolves it (two_phase.py decides which, in one place):
    same shard:  holding --funds_held--> pending
    cross-shard: reserving --funds_reserved--> holding_credit --credit_held--> pending
                 (holding_credit refused or timed out: cancelling_credit / releasing -> compensated)
    post:        posting_pending --pending_posted--> completed                        (same shard)
                 settling_credit --credit_settled--> posting_hold --hold_posted--> completed
    void/expiry: voiding --pending_voided--> voided | expired                         (same shard)
                 cancelling_credit --credit_cancelled--> releasing --released--> voided | expired

Every step's command has a fixed id (derived from transfer id and step), so a re-sent command is
deduplicated by the shard, and a reply counts only if it answers the current step's command: a
stale or duplicate reply changes nothing. Forward steps that can be undone (reserve, credit) give
up after `max_forward_attempts`; the others (post, commit, release, cancel) retry until answered,
and a saga unfinished after `park_after_ms` is flagged `needs_attention` while it keeps retrying.
Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from schemas.ids import url_uuid5
from schemas.shard_messages import (
    CancelCredit,
    CommitReservation,
    CreditFunds,
    HoldCredit,
    HoldTransfer,
    PostHold,
    PostPending,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    SettleCredit,
    ShardCommand,
    ShardReply,
    VoidPending,
)

# Saga states: one of these until terminal.
IN_FLIGHT: Final = "in_flight"
COMPLETED: Final = "completed"
REJECTED: Final = "rejected"
COMPENSATED: Final = "compensated"
PENDING: Final = "pending"  # a two-phase transfer's hold is in place: waiting for post, void or expiry
VOIDED: Final = "voided"
EXPIRED: Final = "expired"
TERMINAL: Final = frozenset({COMPLETED, REJECTED, COMPENSATED, VOIDED, EXPIRED})

# Steps.
POSTING: Final = "posting"
RESERVING: Final = "reserving"
CREDITING: Final = "crediting"
CANCELLING_CREDIT: Final = "cancelling_credit"
COMMITTING: Final = "committing"
RELEASING: Final = "releasing"
HOLDING: Final = "holding"
HOLDING_CREDIT: Final = "holding_credit"
HELD: Final = "held"  # pending: no command out, the timer is the expiry
POSTING_PENDING: Final = "posting_pending"
SETTLING_CREDIT: Final = "settling_credit"
POSTING_HOLD: Final = "posting_hold"
VOIDING: Final = "voiding"
DONE: Final = "done"

# Steps whose command goes to the credit shard; every other step's goes to the debit shard.
CREDIT_SIDE: Final = frozenset({CREDITING, CANCELLING_CREDIT, HOLDING_CREDIT, SETTLING_CREDIT})

# Forward steps that may give up, how they are undone, and the reason the result will carry.
_UNDO: Final = {
    RESERVING: (RELEASING, "reserve_timeout"),
    CREDITING: (CANCELLING_CREDIT, "credit_timeout"),
    HOLDING_CREDIT: (CANCELLING_CREDIT, "credit_timeout"),
}

# How a pending transfer is being resolved, and the status it ends in.
POST, VOID, EXPIRE = "post", "void", "expire"
RESOLVED_AS: Final = {POST: COMPLETED, VOID: VOIDED, EXPIRE: EXPIRED}


@dataclass(frozen=True)
class SagaPolicy:
    """Retry and escalation rules, chosen at the entry point."""

    max_forward_attempts: int = 5
    """Sends of ReserveFunds or CreditFunds before the saga compensates instead."""
    base_backoff_ms: int = 1_000
    """Wait before the first re-send of an unanswered command; doubles each time."""
    max_backoff_ms: int = 30_000
    park_after_ms: int = 120_000
    """A saga not finished this long after it started is flagged needs_attention."""
    answering_within_ms: int = 2_000
    """A shard that answered any command this recently is busy, not gone: a saga waiting on it is
    not re-sent (see shard_progress)..."""
    busy_patience_ms: int = 30_000
    """...unless the saga started longer ago than this: then it is re-sent whatever the shard does."""


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    debit_shard: int
    credit_shard: int
    pending_timeout_ms: int | None = None
    """Set for a two-phase transfer: how long the hold stays before it expires."""

    @property
    def cross_shard(self) -> bool:
        return self.debit_shard != self.credit_shard

    @property
    def pending(self) -> bool:
        return self.pending_timeout_ms is not None


@dataclass(frozen=True)
class SagaState:
    transfer: Transfer
    status: str
    step: str
    reason: str | None
    attempts: int  # sends of the current step's command
    next_attempt_ms: int  # when an unanswered command is sent again
    started_ms: int  # when the saga started, or when a pending transfer's resolution was decided
    parked: bool = False  # needs_attention: stuck past the policy's threshold
    # Two-phase transfers only:
    expires_ms: int = 0  # when an unresolved hold expires
    resolution: str | None = None  # POST, VOID or EXPIRE, once decided
    post_amount: int | None = None  # what a post moves (at most the hold)
    resolved_by: str | None = None  # the transfer id of the post or void command

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def pending(self) -> bool:
        return self.transfer.pending


@dataclass(frozen=True)
class ReplyArrived:
    reply: ShardReply
    now_ms: int


@dataclass(frozen=True)
class TimerFired:
    now_ms: int


Event = ReplyArrived | TimerFired


@dataclass(frozen=True)
class SendToShard:
    shard: int
    command: ShardCommand


@dataclass(frozen=True)
class PublishResult:
    transfer_id: str
    status: str
    reason: str | None


Effect = SendToShard | PublishResult


def command_id(transfer_id: str, step: str) -> str:
    """The one id of a step's command: every re-send of it carries the same id."""
    return url_uuid5(f"ledger:saga:{transfer_id}:{step}")


def start(transfer: Transfer, now_ms: int, policy: SagaPolicy) -> tuple[SagaState, list[Effect]]:
    step = RESERVING if transfer.cross_shard else HOLDING if transfer.pending else POSTING
    state = SagaState(transfer, IN_FLIGHT, step, None, 1, now_ms + policy.base_backoff_ms, now_ms)
    if transfer.pending_timeout_ms is not None:
        state = replace(state, expires_ms=now_ms + transfer.pending_timeout_ms)
    return state, [command_for(state)]


def decide(state: SagaState, event: Event, policy: SagaPolicy) -> tuple[SagaState, list[Effect]]:
    """The next state and what to send. Events for a finished saga change nothing."""
    if state.terminal:
        return state, []
    match event:
        case ReplyArrived(reply=reply, now_ms=now):
            if reply.in_reply_to != command_id(state.transfer.transfer_id, state.step):
                return state, []  # stale, duplicate or foreign: not an answer to the current step
            return _on_reply(state, reply, now, policy)
        case TimerFired(now_ms=now):
            if now < state.next_attempt_ms:
                return state, []
            return _on_timeout(state, now, policy)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover - the match is exhaustive


def waiting_on(state: SagaState) -> int:
    """The shard whose answer the saga waits for (the one its current command goes to)."""
    t = state.transfer
    return t.credit_shard if state.step in CREDIT_SIDE else t.debit_shard


def command_for(state: SagaState) -> SendToShard:
    """The command of the saga's current step (the same every time it is sent)."""
    t, step = state.transfer, state.step
    cid, shard = command_id(t.transfer_id, step), waiting_on(state)
    if step == POSTING:
        return SendToShard(
            shard,
            PostTransfer(cid, t.transfer_id, t.debit_account, t.credit_account, t.amount, t.currency),
        )
    if step == RESERVING:
        return SendToShard(shard, ReserveFunds(cid, t.transfer_id, t.debit_account, t.amount, t.currency))
    if step == CREDITING:
        return SendToShard(shard, CreditFunds(cid, t.transfer_id, t.credit_account, t.amount, t.currency))
    if step == CANCELLING_CREDIT:
        return SendToShard(shard, CancelCredit(cid, t.transfer_id, t.credit_account))
    if step == COMMITTING:
        return SendToShard(shard, CommitReservation(cid, t.transfer_id, t.debit_account))
    if step == RELEASING:
        return SendToShard(shard, ReleaseReservation(cid, t.transfer_id, t.debit_account))
    return SendToShard(shard, _two_phase_command(state, cid))


def _two_phase_command(state: SagaState, cid: str) -> ShardCommand:
    t, step, amount = state.transfer, state.step, state.post_amount or state.transfer.amount
    if step == HOLDING:
        return HoldTransfer(cid, t.transfer_id, t.debit_account, t.credit_account, t.amount, t.currency)
    if step == HOLDING_CREDIT:
        return HoldCredit(cid, t.transfer_id, t.credit_account, t.amount, t.currency)
    if step == POSTING_PENDING:
        return PostPending(cid, t.transfer_id, t.debit_account, t.credit_account, amount)
    if step == SETTLING_CREDIT:
        return SettleCredit(cid, t.transfer_id, t.credit_account, amount)
    if step == POSTING_HOLD:
        return PostHold(cid, t.transfer_id, t.debit_account, amount)
    if step == VOIDING:
        return VoidPending(cid, t.transfer_id, t.debit_account, t.credit_account)
    raise AssertionError(f"no command for step {step}")


# (step, outcome of its reply) -> where the saga goes: a terminal status, or the next step.
_FINISH: Final = {
    (POSTING, "transfer_posted"): COMPLETED,
    (COMMITTING, "reservation_committed"): COMPLETED,
    (POSTING, "rejected"): REJECTED,
    (RESERVING, "rejected"): REJECTED,
    (RELEASING, "reservation_released"): COMPENSATED,  # or the resolution's status (_finish)
    (HOLDING, "rejected"): REJECTED,
    (POSTING_PENDING, "pending_posted"): COMPLETED,
    (POSTING_HOLD, "hold_posted"): COMPLETED,
    (VOIDING, "pending_voided"): VOIDED,  # or EXPIRED (_finish)
}
_ADVANCE: Final = {
    (RESERVING, "funds_reserved"): CREDITING,  # HOLDING_CREDIT for a pending transfer
    (CREDITING, "funds_credited"): COMMITTING,
    (CREDITING, "rejected"): RELEASING,
    (CANCELLING_CREDIT, "credit_cancelled"): RELEASING,
    (HOLDING_CREDIT, "rejected"): RELEASING,
    (SETTLING_CREDIT, "credit_settled"): POSTING_HOLD,
}
# (step, outcome) that puts a pending transfer's hold in place.
_HELD: Final = frozenset({(HOLDING, "funds_held"), (HOLDING_CREDIT, "credit_held")})
# Leaving the forward path records the shard's reason for it.
_REFUSED_FORWARD: Final = frozenset({(CREDITING, "rejected"), (HOLDING_CREDIT, "rejected")})


def _on_reply(
    state: SagaState, reply: ShardReply, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]]:
    key = (state.step, reply.outcome)
    if key in _HELD:
        return _hold_in_place(state)
    if key in _FINISH:
        status = RESOLVED_AS.get(state.resolution or "", _FINISH[key])
        # A rejection's reason is the shard's; a compensation keeps the reason it started with.
        reason = reply.reason if status == REJECTED else state.reason if status == COMPENSATED else None
        return _finish(state, status, reason)
    if key in _ADVANCE:
        step = (
            HOLDING_CREDIT
            if key == (RESERVING, "funds_reserved") and state.transfer.pending
            else _ADVANCE[key]
        )
        # Leaving the forward path (a refused credit) records why; returning to it clears it.
        reason = reply.reason if key in _REFUSED_FORWARD else state.reason
        return _advance(state, step, None if step == COMMITTING else reason, now, policy)
    if (
        key == (CANCELLING_CREDIT, "rejected")
        and reply.reason == "credit_applied"
        and not state.transfer.pending  # a pending credit is settled only after a post: never here
    ):
        return _advance(state, COMMITTING, None, now, policy)  # too late to undo: go forward
    # A definite answer this step cannot accept (a commit or release refused): the ledger and the
    # saga disagree. Park it for a person (the refusal is in the step history); re-sending stays
    # harmless, and the reason the result will carry is left as it was.
    return replace(state, parked=True), []


def _on_timeout(state: SagaState, now: int, policy: SagaPolicy) -> tuple[SagaState, list[Effect]]:
    if state.step == HELD:
        return resolve(state, EXPIRE, None, None, now, policy)
    if state.step in _UNDO and state.attempts >= policy.max_forward_attempts:
        undo, reason = _UNDO[state.step]
        return _advance(state, undo, reason, now, policy)
    attempts = state.attempts + 1
    backoff = min(policy.base_backoff_ms * 2 ** (attempts - 1), policy.max_backoff_ms)
    parked = state.parked or now - state.started_ms >= policy.park_after_ms
    resent = replace(state, attempts=attempts, next_attempt_ms=now + backoff, parked=parked)
    return resent, [command_for(resent)]


def _advance(
    state: SagaState, step: str, reason: str | None, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]]:
    moved = replace(state, step=step, reason=reason, attempts=1, next_attempt_ms=now + policy.base_backoff_ms)
    return moved, [command_for(moved)]


def _finish(state: SagaState, status: str, reason: str | None) -> tuple[SagaState, list[Effect]]:
    done = replace(state, status=status, step=DONE, reason=reason, parked=False)
    effects: list[Effect] = [PublishResult(state.transfer.transfer_id, status, reason)]
    if state.resolved_by is not None:  # the post or void command that resolved it ends with it
        effects.append(PublishResult(state.resolved_by, status, None))
    return done, effects


def _hold_in_place(state: SagaState) -> tuple[SagaState, list[Effect]]:
    """A pending transfer's hold is placed: wait, with the expiry as the only timer."""
    pending = replace(state, status=PENDING, step=HELD, attempts=0, next_attempt_ms=state.expires_ms)
    return pending, [PublishResult(state.transfer.transfer_id, PENDING, None)]


def resolve(
    state: SagaState, how: str, amount: int | None, resolved_by: str | None, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]]:
    """Start resolving a pending transfer whose hold is in place (callers check that it is)."""
    t = state.transfer
    if how == POST:
        step = SETTLING_CREDIT if t.cross_shard else POSTING_PENDING
    else:
        step = CANCELLING_CREDIT if t.cross_shard else VOIDING
    decided = replace(
        state, status=IN_FLIGHT, resolution=how, resolved_by=resolved_by, started_ms=now,
        post_amount=(amount or t.amount) if how == POST else None,
    )  # fmt: skip
    return _advance(decided, step, None, now, policy)
