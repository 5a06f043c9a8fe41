"""Whether a NEW transfer may start, given the shards' circuit breakers (schemas/breaker.py).

    every shard it touches closed                   -> admitted
    any of them open                                -> refused, reason shard_unavailable
    the rest closed, some half-open, each of those
    with a token in its bucket                      -> admitted, one token taken from each
    a half-open one with no token                   -> refused, reason shard_unavailable

The trickle is a token bucket per half-open shard: `trickle_per_s` new sagas a second, `burst` at
once, kept in integer thousandths of a token so that the same calls always decide the same way. A
bucket starts full when its shard's breaker goes half-open (a new seq): the first probe goes at
once. Each coordinator keeps its own buckets, so the trickle a shard sees is `trickle_per_s` per
coordinator.

Only new transfers come here. A saga already in flight is never refused: the caller must not ask
for its next step, its retries or its compensation (abandoning a half-done saga would strand held
funds); a refusal here happens before anything was sent to any shard, so it changes no balance.
Keeping the latest BreakerState per shard (`remember`) is the caller's as well. Pure: time is passed
in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from schemas.breaker import CLOSED, HALF_OPEN, BreakerState

SHARD_UNAVAILABLE: Final = "shard_unavailable"
_MILLI: Final = 1000


@dataclass(frozen=True)
class AdmissionPolicy:
    """The trickle through a half-open breaker, chosen at the entry point."""

    trickle_per_s: int = 5
    """New sagas a second let through to a half-open shard, per coordinator."""
    burst: int = 1
    """Tokens a bucket holds at most: new sagas let through at once."""


@dataclass(frozen=True)
class Bucket:
    seq: int
    """The half-open BreakerState it belongs to: a bucket of an earlier one is discarded."""
    milli_tokens: int
    at_ms: int


@dataclass(frozen=True)
class Gate:
    """The buckets of the half-open shards; start with `Gate()`."""

    buckets: Mapping[int, Bucket] = field(default_factory=dict)
    """At most one per shard: never more than the ledger has shards."""


@dataclass(frozen=True)
class Admitted:
    pass


@dataclass(frozen=True)
class Refused:
    reason: str
    shards: tuple[int, ...]
    """The shards that refused it, for the log (the result carries only the reason)."""


def remember(latest: Mapping[int, BreakerState], incoming: BreakerState) -> dict[int, BreakerState]:
    """The latest BreakerState per shard after `incoming`: an older or repeated one changes nothing."""
    if not incoming.newer_than(latest.get(incoming.shard)):
        return dict(latest)
    return {**latest, incoming.shard: incoming}


def admit(
    gate: Gate,
    breakers: Mapping[int, BreakerState],
    shards: Iterable[int],
    now_ms: int,
    policy: AdmissionPolicy,
) -> tuple[Gate, Admitted | Refused]:
    """Whether a new transfer touching `shards` may start at `now_ms`. A shard without a
    BreakerState is closed."""
    touched = sorted(set(shards))
    states = {shard: breakers[shard] for shard in touched if shard in breakers}
    not_closed = {shard: s for shard, s in states.items() if s.state != CLOSED}
    blocked = tuple(shard for shard, s in not_closed.items() if s.state != HALF_OPEN)
    if blocked:
        return gate, Refused(SHARD_UNAVAILABLE, blocked)
    if not not_closed:
        return gate, Admitted()
    buckets = {
        shard: _refilled(gate.buckets.get(shard), s, now_ms, policy) for shard, s in not_closed.items()
    }
    empty = tuple(shard for shard, bucket in buckets.items() if bucket.milli_tokens < _MILLI)
    if empty:  # take no token from the others either: all or nothing
        return Gate({**gate.buckets, **buckets}), Refused(SHARD_UNAVAILABLE, empty)
    taken = {shard: Bucket(b.seq, b.milli_tokens - _MILLI, b.at_ms) for shard, b in buckets.items()}
    return Gate({**gate.buckets, **taken}), Admitted()


def _refilled(bucket: Bucket | None, state: BreakerState, now_ms: int, policy: AdmissionPolicy) -> Bucket:
    full = policy.burst * _MILLI
    if bucket is None or bucket.seq != state.seq:
        return Bucket(state.seq, full, now_ms)
    elapsed = max(0, now_ms - bucket.at_ms)  # a clock that steps back refills nothing
    # trickle_per_s tokens a second is trickle_per_s thousandths of a token a millisecond.
    return Bucket(
        bucket.seq, min(full, bucket.milli_tokens + elapsed * policy.trickle_per_s), max(now_ms, bucket.at_ms)
    )
