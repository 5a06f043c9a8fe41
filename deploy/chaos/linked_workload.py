"""Linked batches in the chaos workload: a share of the moves is sent as a batch of 2-5 legs drawn
from the workload's own moves (its accounts, EUR, so the known total still holds), over more than
one shard. Some are doomed on purpose: one leg too large for any balance (the batch is rejected:
insufficient_funds) or one leg to the account frozen at the time (its credit is refused after
every hold was placed, so the batch is compensated; if the account was unfrozen before the batch
arrived, it completes). Some are sent twice, same batch id and body.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from deploy.bench.workload import Move
from schemas.public import BatchLeg, TransferBatch

DOOMS = ("too_large", "to_frozen")
"""How a batch is doomed on purpose (None: it is not)."""
MAX_SHARD_DRAWS = 10
"""Moves drawn again, at most, to spread a batch over more than one shard."""


@dataclass(frozen=True)
class LinkedSettings:
    share: float = 0.05
    """Share of the moves sent as linked batches (each batch draws its legs' moves on top)."""
    legs: tuple[int, int] = (2, 5)
    """Each batch's number of legs is drawn uniformly in this range."""
    too_large_fraction: float = 0.1
    """Share of batches with one leg larger than any balance: rejected."""
    to_frozen_fraction: float = 0.1
    """Share of batches with one leg to the account frozen when it is drawn: compensated."""
    duplicate_fraction: float = 0.1
    """Share of batches sent a second time, same id and body."""


@dataclass(frozen=True)
class BatchPlan:
    batch: TransferBatch
    doom: str | None
    """too_large | to_frozen | None."""
    duplicate: bool


def plan_batch(
    first: Move, next_move: Callable[[], Move], shard_of: Mapping[str, int], rng: random.Random,
    settings: LinkedSettings, *, max_amount: int, too_large: int, frozen: str | None,
) -> BatchPlan:  # fmt: skip
    """A batch whose legs are `first` and further moves (a move sized to be rejected is given an
    ordinary amount: doom is drawn here, once per batch), touching at least two shards when the
    draws allow, and maybe doomed."""
    moves = [first, *(next_move() for _ in range(rng.randint(*settings.legs) - 1))]
    for _ in range(MAX_SHARD_DRAWS):
        if len({shard_of[a] for m in moves for a in (m.debit, m.credit)}) > 1:
            break
        moves[-1] = next_move()
    legs = [BatchLeg(str(uuid.uuid4()), m.debit, m.credit, _ordinary(m.amount, max_amount, rng), "EUR")
            for m in moves]  # fmt: skip
    doom, draw = None, rng.random()
    if draw < settings.too_large_fraction:
        doom, at = "too_large", rng.randrange(len(legs))
        legs[at] = replace(legs[at], amount=too_large)
    elif draw < settings.too_large_fraction + settings.to_frozen_fraction and frozen is not None:
        payers = [i for i, leg in enumerate(legs) if leg.debit_account != frozen]
        if payers:
            doom, at = "to_frozen", rng.choice(payers)
            legs[at] = replace(legs[at], credit_account=frozen)
    batch = TransferBatch(str(uuid.uuid4()), tuple(legs), True)
    return BatchPlan(batch, doom, rng.random() < settings.duplicate_fraction)


def _ordinary(amount: int, max_amount: int, rng: random.Random) -> int:
    """A move's amount, unless it was sized to be rejected: then an ordinary one."""
    return amount if amount <= max_amount else rng.randint(1, max_amount)
