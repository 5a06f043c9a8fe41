"""Two-phase transfers in the chaos workload: a share of the moves is sent as a hold with a short
timeout, and each hold is resolved a little later (after its first result, or after a bound when a
fault holds that up): posted in full, posted for less, voided, or left to expire, roughly a quarter
each; some posts and voids are sent twice (same id, same body). Timeouts short enough that some
posts and voids race the expiry (which is the point), long enough that under faults most holds
still end the way they were meant to (a 120 s run with 1-4 s timeouts saw 58% of holds expire).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from deploy.bench.workload import Move
from deploy.chaos.checker import Sent
from schemas.public import (
    PostPendingTransfer,
    TransferCommand,
    TransferFunds,
    VoidPendingTransfer,
    request_fingerprint,
)

RESOLUTIONS = ("post", "post_less", "void", "expire")
"""How a hold is to end, drawn with equal chance; `expire` sends nothing."""
HOLD_ANSWER_WITHIN_S = 10.0
"""How long a resolution waits for its hold's first result before it is sent anyway."""

Send = Callable[[TransferCommand, str], Awaitable[None]]


@dataclass(frozen=True)
class PendingSettings:
    share: float = 0.15
    """Share of the moves sent as pending transfers."""
    timeout_ms: tuple[int, int] = (3_000, 10_000)
    """Each hold's timeout is drawn uniformly in this range."""
    resolve_within_s: float = 2.0
    """A post or void is sent this long at most (uniformly drawn) after its hold's first result."""
    duplicate_fraction: float = 0.2
    """Share of posts and voids sent a second time, same id and body."""


@dataclass(frozen=True)
class PendingPlan:
    """One pending transfer and how it is to end, all drawn up front (seeded, in order)."""

    hold: TransferFunds
    resolution: PostPendingTransfer | VoidPendingTransfer | None
    delay_s: float
    duplicate: bool


def plan(move: Move, rng: random.Random, settings: PendingSettings) -> PendingPlan:
    hold = TransferFunds(
        str(uuid.uuid4()), move.debit, move.credit, move.amount, "EUR",
        pending_timeout_ms=rng.randint(*settings.timeout_ms),
    )  # fmt: skip
    how = rng.choice(RESOLUTIONS)
    resolution: PostPendingTransfer | VoidPendingTransfer | None = None
    if how == "post":
        resolution = PostPendingTransfer(str(uuid.uuid4()), hold.transfer_id)
    elif how == "post_less":
        resolution = PostPendingTransfer(
            str(uuid.uuid4()), hold.transfer_id, rng.randint(1, max(1, hold.amount - 1))
        )
    elif how == "void":
        resolution = VoidPendingTransfer(str(uuid.uuid4()), hold.transfer_id)
    delay = rng.uniform(0, settings.resolve_within_s)
    return PendingPlan(hold, resolution, delay, rng.random() < settings.duplicate_fraction)


async def hold_then_resolve(p: PendingPlan, send: Send, answered: Callable[[str], bool]) -> None:
    """Send the hold; once it is answered (or the bound ran out), after the drawn delay, its
    resolution (and that again, when drawn)."""
    await send(p.hold, "original")
    if p.resolution is None:
        return
    deadline = time.monotonic() + HOLD_ANSWER_WITHIN_S
    while not answered(p.hold.transfer_id) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls results read elsewhere
        await asyncio.sleep(0.1)
    await asyncio.sleep(p.delay_s)
    await send(p.resolution, "original")
    if p.duplicate:
        await send(p.resolution, "duplicate")


def sent_record(command: TransferCommand, kind: str) -> Sent:
    """What the History records of a command sent: its id, body, role and what it is."""
    fingerprint = request_fingerprint(command)
    if isinstance(command, TransferFunds):
        what = "transfer" if command.pending_timeout_ms is None else "pending"
        return Sent(command.transfer_id, fingerprint, kind, what, command.amount)
    if isinstance(command, PostPendingTransfer):
        return Sent(command.transfer_id, fingerprint, kind, "post", command.amount, command.pending_id)
    if isinstance(command, VoidPendingTransfer):
        return Sent(command.transfer_id, fingerprint, kind, "void", None, command.pending_id)
    return Sent(command.batch_id, fingerprint, kind, "batch", legs=command.transfers)
