"""The shards' circuit breakers as this coordinator last heard of them (`ledger.control`), asked
before a NEW saga starts: a transfer touching an open shard is refused at once, `shard_unavailable`,
before any shard hears of it, so the refusal changes no balance. Sagas in flight never come here."""

from __future__ import annotations

from collections.abc import Iterable

from coordinator.saga.admission import AdmissionPolicy, Gate, Refused, admit, remember
from schemas.breaker import BreakerState


class Breakers:
    def __init__(self, policy: AdmissionPolicy | None = None) -> None:
        self.policy = policy or AdmissionPolicy()
        self.latest: dict[int, BreakerState] = {}
        self.gate = Gate()

    def heard(self, state: BreakerState) -> None:
        """A BreakerState from the control topic; an older one than this coordinator has is ignored."""
        self.latest = remember(self.latest, state)

    def refusal(self, shards: Iterable[int], now_ms: int) -> str | None:
        """None to start a new saga touching `shards`, or why not."""
        if not self.latest:  # no breaker ever left closed: every transfer, at no cost
            return None
        self.gate, verdict = admit(self.gate, self.latest, shards, now_ms, self.policy)
        return verdict.reason if isinstance(verdict, Refused) else None
