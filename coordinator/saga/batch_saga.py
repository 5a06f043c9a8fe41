"""A linked batch's saga as a pure state machine: up to 100 legs over any shards and currencies,
all of them or none. `decide(state, event, policy) -> (state, effects)`, like transfer_saga.

A batch is a two-phase transfer over many legs, posted as soon as every hold is in place (unless
the batch itself is pending). Nothing becomes spendable before every shard has agreed, so a
refusal anywhere is undone everywhere without taking back money someone may have spent:

    reserving       every debit leg held, one ApplyLegs per debit shard
    holding_credit  every credit leg shown as a pending credit, one per credit shard
    (held           a pending batch waits here for post, void or expiry: two_phase rules)
    settling_credit every pending credit posted from its shard's transit account
    posting_hold    every hold posted to its shard's transit account       -> completed
  refused or timed out while reserving or holding_credit:
    cancelling_credit (every credit shard) -> releasing (every debit shard) -> rejected | compensated

Each step waits for every shard it sent to; an undo goes to every shard of its side, answered or
not, so a late forward command finds a tombstone there. A step's command to a shard has a fixed id
(batch, step, shard): a re-send is deduplicated by the shard, and a reply counts only if it
answers a command of the current step from a shard still awaited.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from coordinator.saga.transfer_saga import (
    CANCELLING_CREDIT,
    COMPENSATED,
    COMPLETED,
    DONE,
    EXPIRE,
    HELD,
    HOLDING_CREDIT,
    IN_FLIGHT,
    PENDING,
    POST,
    POSTING_HOLD,
    REJECTED,
    RELEASING,
    RESERVING,
    RESOLVED_AS,
    SETTLING_CREDIT,
    TERMINAL,
    Event,
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SendToShard,
    TimerFired,
)
from schemas.ids import url_uuid5
from schemas.shard_messages import ApplyLegs, Leg, ShardReply

LINKED_FAILED: Final = "linked_transfer_failed"
"""The reason every leg but the one that failed gets."""


@dataclass(frozen=True)
class BatchLeg:
    transfer_id: str  # each leg is a transfer of its own to the shards
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    debit_shard: int
    credit_shard: int


@dataclass(frozen=True)
class Batch:
    batch_id: str
    legs: tuple[BatchLeg, ...]
    pending_timeout_ms: int | None = None

    @property
    def pending(self) -> bool:
        return self.pending_timeout_ms is not None


@dataclass(frozen=True)
class BatchState:
    batch: Batch
    status: str
    step: str
    waiting: frozenset[int]  # shards whose answer to the current step is still missing
    reason: str | None
    failed_leg: str | None  # the leg whose refusal undid the batch (None for a timeout)
    attempts: int
    next_attempt_ms: int
    started_ms: int
    parked: bool = False
    expires_ms: int = 0
    resolution: str | None = None
    resolved_by: str | None = None
    failed_in: str | None = None  # the forward step that was refused or timed out

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def pending(self) -> bool:
        return self.batch.pending


Effect = SendToShard | PublishResult


def leg_outcomes(state: BatchState) -> list[tuple[str, str, str | None]]:
    """(leg, status, reason) of every leg: each has its batch's status; when the batch failed, the
    leg that failed has its reason and every other leg LINKED_FAILED."""
    failed = state.status in (REJECTED, COMPENSATED)
    outcomes = []
    for leg in state.batch.legs:
        reason = None
        if failed:
            named = leg.transfer_id == state.failed_leg or state.failed_leg is None
            reason = state.reason if named else LINKED_FAILED
        outcomes.append((leg.transfer_id, state.status, reason))
    return outcomes


# Which side of each leg a step touches, and the ApplyLegs step name it sends.
_DEBIT_SIDE: Final = {RESERVING: "reserve", RELEASING: "release", POSTING_HOLD: "post_hold"}
_CREDIT_SIDE: Final = {HOLDING_CREDIT: "hold_credit", CANCELLING_CREDIT: "cancel", SETTLING_CREDIT: "settle"}
# Forward steps that may give up, and the reason the result will carry.
_GIVES_UP: Final = {RESERVING: "reserve_timeout", HOLDING_CREDIT: "credit_timeout"}


def command_id(batch_id: str, step: str, shard: int) -> str:
    return url_uuid5(f"ledger:batch:{batch_id}:{step}:{shard}")


def shards_of(batch: Batch, step: str) -> frozenset[int]:
    if step in _DEBIT_SIDE:
        return frozenset(leg.debit_shard for leg in batch.legs)
    return frozenset(leg.credit_shard for leg in batch.legs)


def commands_for(state: BatchState, shards: frozenset[int]) -> list[Effect]:
    """The current step's ApplyLegs to each of `shards` (the same every time it is sent)."""
    b, step = state.batch, state.step
    if not shards:  # held, or every shard answered: nothing to send
        return []
    debit = step in _DEBIT_SIDE
    name = _DEBIT_SIDE[step] if debit else _CREDIT_SIDE[step]
    effects: list[Effect] = []
    for shard in sorted(shards):
        legs = tuple(
            Leg(leg.transfer_id, leg.debit_account if debit else leg.credit_account, leg.amount, leg.currency)
            for leg in b.legs
            if (leg.debit_shard if debit else leg.credit_shard) == shard
        )
        effects.append(
            SendToShard(shard, ApplyLegs(command_id(b.batch_id, step, shard), b.batch_id, name, legs))
        )
    return effects


def start(batch: Batch, now_ms: int, policy: SagaPolicy) -> tuple[BatchState, list[Effect]]:
    expires = now_ms + batch.pending_timeout_ms if batch.pending_timeout_ms is not None else 0
    state = BatchState(
        batch, IN_FLIGHT, RESERVING, shards_of(batch, RESERVING), None, None, 1,
        now_ms + policy.base_backoff_ms, now_ms, expires_ms=expires,
    )  # fmt: skip
    return state, commands_for(state, state.waiting)


def refuse(batch: Batch, reason: str, now_ms: int) -> tuple[BatchState, list[Effect]]:
    """A batch refused before any shard heard of it (a shard's breaker is open): rejected whole,
    every leg with `reason`, nothing to undo."""
    state = BatchState(batch, IN_FLIGHT, RESERVING, frozenset(), reason, None, 0, 0, now_ms)
    return _finish(state, REJECTED)


def decide(state: BatchState, event: Event, policy: SagaPolicy) -> tuple[BatchState, list[Effect]]:
    """The next state and what to send. Events for a finished batch change nothing."""
    if state.terminal:
        return state, []
    match event:
        case ReplyArrived(reply=reply, now_ms=now):
            awaited = reply.shard in state.waiting and state.step != HELD
            if not awaited or reply.in_reply_to != command_id(state.batch.batch_id, state.step, reply.shard):
                return state, []  # stale, duplicate or foreign
            return _on_reply(state, reply, now, policy)
        case TimerFired(now_ms=now):
            if now < state.next_attempt_ms:
                return state, []
            return _on_timeout(state, now, policy)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover - the match is exhaustive


def _on_reply(
    state: BatchState, reply: ShardReply, now: int, policy: SagaPolicy
) -> tuple[BatchState, list[Effect]]:
    if reply.rejected:
        if state.step in _GIVES_UP:  # a forward step refused: undo everywhere
            return _undo(state, reply.reason, reply.leg, now, policy)
        # An undo or a settlement refused: the ledger and the saga disagree. Park it for a person;
        # re-sending stays harmless.
        return replace(state, parked=True), []
    waiting = state.waiting - {reply.shard}
    if waiting:
        return replace(state, waiting=waiting), []
    return _step_done(state, now, policy)


def _step_done(state: BatchState, now: int, policy: SagaPolicy) -> tuple[BatchState, list[Effect]]:
    step = state.step
    if step == RESERVING:
        return _advance(state, HOLDING_CREDIT, now, policy)
    if step == HOLDING_CREDIT and state.batch.pending and state.resolution is None:
        held = replace(state, status=PENDING, step=HELD, waiting=frozenset(), attempts=0,
                       next_attempt_ms=state.expires_ms)  # fmt: skip
        return held, [PublishResult(state.batch.batch_id, PENDING, None)]
    if step == HOLDING_CREDIT:
        return _advance(state, SETTLING_CREDIT, now, policy)
    if step == SETTLING_CREDIT:
        return _advance(state, POSTING_HOLD, now, policy)
    if step == CANCELLING_CREDIT:
        return _advance(state, RELEASING, now, policy)
    if step == POSTING_HOLD:
        return _finish(state, COMPLETED)
    # RELEASING: everything undone. A hold refused outright is a rejection (as for one transfer);
    # a refused pending credit or a timeout undid what was placed: compensated.
    if state.resolution is not None:
        return _finish(state, RESOLVED_AS[state.resolution])
    refused_hold = state.failed_in == RESERVING and state.reason != _GIVES_UP[RESERVING]
    return _finish(state, REJECTED if refused_hold else COMPENSATED)


def _undo(
    state: BatchState, reason: str | None, leg: str | None, now: int, policy: SagaPolicy
) -> tuple[BatchState, list[Effect]]:
    undo = CANCELLING_CREDIT if state.step == HOLDING_CREDIT else RELEASING
    failed = replace(state, reason=reason, failed_leg=leg, failed_in=state.step)
    return _advance(failed, undo, now, policy)


def _on_timeout(state: BatchState, now: int, policy: SagaPolicy) -> tuple[BatchState, list[Effect]]:
    if state.step == HELD:
        return resolve(state, EXPIRE, None, now, policy)
    if state.step in _GIVES_UP and state.attempts >= policy.max_forward_attempts:
        return _undo(state, _GIVES_UP[state.step], None, now, policy)
    attempts = state.attempts + 1
    backoff = min(policy.base_backoff_ms * 2 ** (attempts - 1), policy.max_backoff_ms)
    parked = state.parked or now - state.started_ms >= policy.park_after_ms
    resent = replace(state, attempts=attempts, next_attempt_ms=now + backoff, parked=parked)
    return resent, commands_for(resent, resent.waiting)


def _advance(state: BatchState, step: str, now: int, policy: SagaPolicy) -> tuple[BatchState, list[Effect]]:
    shards = shards_of(state.batch, step)
    moved = replace(
        state, step=step, waiting=shards, attempts=1, next_attempt_ms=now + policy.base_backoff_ms
    )
    return moved, commands_for(moved, shards)


def resolve(
    state: BatchState, how: str, resolved_by: str | None, now: int, policy: SagaPolicy
) -> tuple[BatchState, list[Effect]]:
    """Start resolving a pending batch whose holds are in place (callers check that they are)."""
    decided = replace(state, status=IN_FLIGHT, resolution=how, resolved_by=resolved_by, started_ms=now)
    return _advance(decided, SETTLING_CREDIT if how == POST else CANCELLING_CREDIT, now, policy)


def _finish(state: BatchState, status: str) -> tuple[BatchState, list[Effect]]:
    reason = state.reason if status in (REJECTED, COMPENSATED) else None
    done = replace(state, status=status, step=DONE, waiting=frozenset(), reason=reason, parked=False)
    effects: list[Effect] = [PublishResult(state.batch.batch_id, status, reason)]
    if state.resolved_by is not None:
        effects.append(PublishResult(state.resolved_by, status, None))
    return done, effects
