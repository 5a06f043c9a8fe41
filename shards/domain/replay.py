"""Balances derived from the source of truth: posted = sum of journal amounts, reserved = open holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Balance:
    posted: int
    reserved: int


@dataclass(frozen=True)
class Difference:
    account_id: str
    cached: Balance | None
    replayed: Balance | None


def replay(entries: Iterable[tuple[str, int]], held: Iterable[tuple[str, int]]) -> dict[str, Balance]:
    """(account, signed amount) journal entries and (account, amount) open holds -> balances."""
    posted: dict[str, int] = {}
    reserved: dict[str, int] = {}
    for account_id, amount in entries:
        posted[account_id] = posted.get(account_id, 0) + amount
    for account_id, amount in held:
        reserved[account_id] = reserved.get(account_id, 0) + amount
    return {a: Balance(posted.get(a, 0), reserved.get(a, 0)) for a in posted.keys() | reserved.keys()}


def differences(cached: Mapping[str, Balance], replayed: Mapping[str, Balance]) -> list[Difference]:
    """Accounts whose cached balance is not what the journal says. A zero balance equals absence."""
    zero = Balance(0, 0)
    return [
        Difference(a, cached.get(a), replayed.get(a))
        for a in sorted(cached.keys() | replayed.keys())
        if cached.get(a, zero) != replayed.get(a, zero)
    ]
