"""Who resolves a pending transfer: the one place a post, a void and the expiry meet.

A pending transfer's saga row is locked while a batch decides, so whichever of post, void or expiry
is applied to it first wins, and is recorded in the saga (`resolution`) before any shard hears of
it. Everything later is refused with the reason that names the winner. Time decides the expiry: a
post or void that arrives at or after the timeout loses even if the sweeper has not fired yet, and
itself starts the expiry, so the outcome never depends on when a timer happened to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

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


@dataclass(frozen=True)
class Refusal:
    """A post or void that cannot be applied. `state` and `effects` are set when refusing it still
    changes the pending transfer: a request past the timeout starts the expiry it lost to."""

    reason: str
    state: SagaState | None = None
    effects: list[Effect] = field(default_factory=list)


def post(
    state: SagaState, post_id: str, amount: int | None, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]] | Refusal:
    """Post the hold, in full (`amount` None) or in part; or why not."""
    refusal = _unresolvable(state, now, policy)
    if refusal is not None:
        return refusal
    if amount is not None and amount > state.transfer.amount:
        return Refusal("amount_exceeds_pending")
    return resolve(state, POST, amount, post_id, now, policy)


def void(
    state: SagaState, void_id: str, now: int, policy: SagaPolicy
) -> tuple[SagaState, list[Effect]] | Refusal:
    """Release the hold; or why not."""
    refusal = _unresolvable(state, now, policy)
    if refusal is not None:
        return refusal
    return resolve(state, VOID, None, void_id, now, policy)


def _unresolvable(state: SagaState, now: int, policy: SagaPolicy) -> Refusal | None:
    if not state.transfer.pending:
        return Refusal("pending_transfer_not_pending")
    if state.resolution is not None:
        return Refusal(_LOST_TO[state.resolution])
    if state.status in TERMINAL:
        return Refusal("pending_transfer_not_pending")  # the hold was never placed
    if state.status != PENDING or state.step != HELD:
        return Refusal("pending_transfer_in_flight")  # the hold is still being placed
    if now >= state.expires_ms:
        expiring, effects = resolve(state, EXPIRE, None, None, now, policy)
        return Refusal(_LOST_TO[EXPIRE], expiring, effects)
    return None
