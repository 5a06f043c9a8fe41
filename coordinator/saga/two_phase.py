"""Who resolves a pending transfer: the one place a post, a void and the expiry meet.

A pending transfer's saga row is locked while a batch decides, so whichever of post, void or expiry
is applied to it first wins, and is recorded in the saga (`resolution`) before any shard hears of
it. Everything later is refused with the reason that names the winner. Time decides the expiry: a
post or void that arrives at or after the timeout loses even if the sweeper has not fired yet, and
itself starts the expiry, so the outcome never depends on when a timer happened to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, overload

from coordinator.saga import batch_saga
from coordinator.saga.batch_saga import BatchState
from coordinator.saga.transfer_saga import (
    EXPIRE,
    HELD,
    PENDING,
    POST,
    TERMINAL,
    VOID,
    Effect,
    SagaPolicy,
    SagaState,
    resolve,
)

_LOST_TO: Final = {
    POST: "pending_transfer_already_posted",
    VOID: "pending_transfer_already_voided",
    EXPIRE: "pending_transfer_expired",
}
State = SagaState | BatchState
"""A pending transfer's saga, or a pending linked batch's."""


@dataclass(frozen=True)
class Refusal:
    """A post or void that cannot be applied. `state` and `effects` are set when refusing it still
    changes the pending transfer: a request past the timeout starts the expiry it lost to."""

    reason: str
    state: State | None = None
    effects: list[Effect] = field(default_factory=list)


@overload
def post(
    state: SagaState, post_id: str, amount: int | None, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]] | Refusal: ...
@overload
def post(
    state: BatchState, post_id: str, amount: int | None, now: int, policy: SagaPolicy
) -> tuple[BatchState, list[Effect]] | Refusal: ...
def post(
    state: State, post_id: str, amount: int | None, now: int, policy: SagaPolicy
) -> tuple[State, list[Effect]] | Refusal:
    """Post the hold, in full (`amount` None) or in part (not a batch's); or why not."""
    refusal = _unresolvable(state, now, policy)
    if refusal is not None:
        return refusal
    if isinstance(state, BatchState):
        if amount is not None:
            return Refusal("partial_post_of_batch")  # which leg would get less?
        return batch_saga.resolve(state, POST, post_id, now, policy)
    if amount is not None and amount > state.transfer.amount:
        return Refusal("amount_exceeds_pending")
    return resolve(state, POST, amount, post_id, now, policy)


@overload
def void(
    state: SagaState, void_id: str, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]] | Refusal: ...
@overload
def void(
    state: BatchState, void_id: str, now: int, policy: SagaPolicy
) -> tuple[BatchState, list[Effect]] | Refusal: ...
def void(state: State, void_id: str, now: int, policy: SagaPolicy) -> tuple[State, list[Effect]] | Refusal:
    """Release the hold; or why not."""
    refusal = _unresolvable(state, now, policy)
    if refusal is not None:
        return refusal
    return _resolve(state, VOID, void_id, now, policy)


def _resolve(
    state: State, how: str, resolved_by: str | None, now: int, policy: SagaPolicy
) -> tuple[State, list[Effect]]:
    if isinstance(state, BatchState):
        return batch_saga.resolve(state, how, resolved_by, now, policy)
    return resolve(state, how, None, resolved_by, now, policy)


def _unresolvable(state: State, now: int, policy: SagaPolicy) -> Refusal | None:
    if not state.pending:
        return Refusal("pending_transfer_not_pending")
    if state.resolution is not None:
        return Refusal(_LOST_TO[state.resolution])
    if state.status in TERMINAL:
        return Refusal("pending_transfer_not_pending")  # the hold was never placed
    if state.status != PENDING or state.step != HELD:
        return Refusal("pending_transfer_in_flight")  # the hold is still being placed
    if now >= state.expires_ms:
        expiring, effects = _resolve(state, EXPIRE, None, now, policy)
        return Refusal(_LOST_TO[EXPIRE], expiring, effects)
    return None
