"""Balances derived from the source of truth: posted = sum of journal amounts, reserved = open holds,
pending_credit = the credits of pending transfers not yet posted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Balance:
    posted: int
    reserved: int
    pending_credit: int = 0


@dataclass(frozen=True)
class Difference:
    account_id: str
    cached: Balance | None
    replayed: Balance | None


def replay(
    entries: Iterable[tuple[str, int]],
    held: Iterable[tuple[str, int]],
    pending_credits: Iterable[tuple[str, int]] = (),
) -> dict[str, Balance]:
    """(account, signed amount) journal entries, (account, amount) open holds and (account, amount)
    pending credits -> balances."""
    posted, reserved, pending = _sums(entries), _sums(held), _sums(pending_credits)
    return {
        a: Balance(posted.get(a, 0), reserved.get(a, 0), pending.get(a, 0))
        for a in posted.keys() | reserved.keys() | pending.keys()
    }


def _sums(amounts: Iterable[tuple[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for account_id, amount in amounts:
        total[account_id] = total.get(account_id, 0) + amount
    return total


def differences(cached: Mapping[str, Balance], replayed: Mapping[str, Balance]) -> list[Difference]:
    """Accounts whose cached balance is not what the journal says. A zero balance equals absence."""
    zero = Balance(0, 0)
    return [
        Difference(a, cached.get(a), replayed.get(a))
        for a in sorted(cached.keys() | replayed.keys())
        if cached.get(a, zero) != replayed.get(a, zero)
    ]
