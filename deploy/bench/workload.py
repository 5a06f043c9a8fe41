"""The benchmark's workload, the same for the ledger and the baseline: pure and seeded.

Debit accounts are drawn uniformly or Zipf-skewed (a few hot accounts), credit accounts on the
same or another shard in the asked proportion, and a fraction of amounts larger than any balance,
so that they are rejected for insufficient funds. With `hot_accounts`, a share of transfers pays
one of a few merchant accounts (a bank's fee and settlement accounts): where a row-locking SQL
ledger serializes. With `pending_fraction`, a share of transfers is two-phase: held, then posted in
full, posted for half, or voided (drawn from a random stream of its own, so the transfers are the
same ones with or without it; only some of them become holds). With `linked_fraction`, a share of
moves opens a linked batch: that move and the next `linked_legs - 1` ones the same draws would give,
as one all-or-nothing batch (again chosen by a stream of its own: with or without batches the
transfers are the same ones in the same order, only grouped).
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, replace
from typing import Literal

from schemas.partitioning import PartitionMap


@dataclass(frozen=True)
class WorkloadSettings:
    accounts: int = 1000
    cross_fraction: float = 0.1
    """Share of transfers whose accounts live on different shards."""
    zipf_s: float = 0.0
    """Skew of debit accounts: 0 is uniform; 1.0 makes a few accounts hot."""
    balanced: bool = False
    """Turn each drawn pair either way with equal chance, so that every account (the hot ones too)
    expects to receive as much as it pays and none runs dry over a long run."""
    max_amount: int = 10_000
    """Ordinary amounts are at most this many minor units."""
    amounts: str = "uniform"
    """`uniform` in 1..max_amount, or `log`: log-uniform (as many 1-9 as 1000-9999), integers only."""
    reject_fraction: float = 0.1
    """Share of transfers asking more than any account holds."""
    funding: int = 10**9
    """What each account receives from the issuer before the run."""
    hot_accounts: int = 0
    """Merchant accounts that receive `hot_share` of all transfers (and pay none)."""
    hot_share: float = 0.0
    pending_fraction: float = 0.0
    """Share of transfers sent as a hold and, once held, posted or voided (two-phase)."""
    pending_half: float = 0.2
    """Of those, the share posted for half the held amount (the rest of the hold released)."""
    pending_void: float = 0.1
    """Of those, the share voided (nothing moves); the others are posted in full."""
    linked_fraction: float = 0.0
    """Share of moves that open a linked batch (its legs one-shot, never two-phase)."""
    linked_legs: int = 3
    """Legs of each linked batch: the move that opens it and the next ones drawn (2..100)."""
    seed: int = 1
    prefix: str = "acct"
    """Account ids are PREFIX-000000...: a run on a long-lived ledger uses its own accounts."""


Resolution = Literal["post", "post_half", "void"]
"""How a two-phase transfer ends, once its hold is in place."""


@dataclass(frozen=True)
class Move:
    debit: str
    credit: str
    amount: int
    cross_shard: bool
    debit_shard: int
    pending: Resolution | None = None
    """None: one shot. Else held first, then posted in full, posted for half, or voided."""
    linked: tuple[Move, ...] = ()
    """The further legs of the linked batch this move opens (empty: not a batch)."""

    @property
    def legs(self) -> tuple[Move, ...]:
        """What moves money: this move alone, or every leg of its batch, this one first."""
        return (replace(self, linked=()), *self.linked) if self.linked else (self,)

    @property
    def post_amount(self) -> int:
        """What a `post_half` posts: half the hold, at least one minor unit."""
        return max(1, self.amount // 2)


class Workload:
    def __init__(self, settings: WorkloadSettings, pmap: PartitionMap) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)  # noqa: S311 - a workload, not a secret
        self.pending_rng = random.Random(f"{settings.seed}:pending")  # noqa: S311 - its own stream
        self.linked_rng = random.Random(f"{settings.seed}:linked")  # noqa: S311 - its own stream
        self.accounts = [f"{settings.prefix}-{i:06d}" for i in range(settings.accounts)]
        self.shard_of = {a: pmap.shard_for(a) for a in self.accounts}
        self.by_shard: dict[int, list[str]] = {}
        for account, shard in self.shard_of.items():
            self.by_shard.setdefault(shard, []).append(account)
        # Merchants spread over the shards, one per shard in turn; they pay nobody.
        shards = sorted(self.by_shard)
        self.hot = [
            self.by_shard[shards[i % len(shards)]][i // len(shards)] for i in range(settings.hot_accounts)
        ]
        for merchant in self.hot:
            self.by_shard[self.shard_of[merchant]].remove(merchant)
        self.payers = [a for a in self.accounts if a not in set(self.hot)]
        weights = [1 / (rank + 1) ** settings.zipf_s for rank in range(len(self.payers))]
        self.cumulative = list(itertools.accumulate(weights))

    def next(self) -> Move:
        move = self._one_shot()
        s = self.settings
        if s.linked_fraction > 0 and self.linked_rng.random() < s.linked_fraction:
            return replace(move, linked=tuple(self._one_shot() for _ in range(s.linked_legs - 1)))
        rng = self.pending_rng
        if s.pending_fraction <= 0 or rng.random() >= s.pending_fraction:
            return move
        end = rng.random()
        if end < s.pending_void:
            return replace(move, pending="void")
        return replace(move, pending="post_half" if end < s.pending_void + s.pending_half else "post")

    def _one_shot(self) -> Move:
        s, rng = self.settings, self.rng
        if self.hot and rng.random() < s.hot_share:
            return self._to_merchant()
        debit = self.payers[bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])]
        home = self.shard_of[debit]
        others = [sh for sh in self.by_shard if sh != home and self.by_shard[sh]]
        cross = bool(others) and rng.random() < s.cross_fraction
        pool = self.by_shard[rng.choice(others)] if cross else self.by_shard[home]
        if len(pool) == 1 and pool[0] == debit:
            pool = self.payers  # a shard with one account cannot pair with itself
        credit = debit
        while credit == debit:
            credit = rng.choice(pool)
        if s.balanced and rng.random() < 0.5:
            debit, credit = credit, debit
            home = self.shard_of[debit]
        # A rejected share asks more than any account can hold in this run.
        amount = s.funding * 10 if rng.random() < s.reject_fraction else self._amount()
        return Move(debit, credit, amount, home != self.shard_of[credit], home)

    def _to_merchant(self) -> Move:
        """A payment to a merchant, from a payer on its shard or (in the cross share) another."""
        s, rng = self.settings, self.rng
        merchant = rng.choice(self.hot)
        home = self.shard_of[merchant]
        others = [sh for sh in self.by_shard if sh != home and self.by_shard[sh]]
        cross = bool(others) and rng.random() < s.cross_fraction
        debit = rng.choice(self.by_shard[rng.choice(others)] if cross else self.by_shard[home] or self.payers)
        amount = s.funding * 10 if rng.random() < s.reject_fraction else self._amount()
        return Move(debit, merchant, amount, self.shard_of[debit] != home, self.shard_of[debit])

    def _amount(self) -> int:
        if self.settings.amounts == "log":
            digits = self.rng.randint(1, len(str(self.settings.max_amount)))
            return self.rng.randint(10 ** (digits - 1), min(10**digits - 1, self.settings.max_amount))
        return self.rng.randint(1, self.settings.max_amount)
