"""How long shards take to answer, as this coordinator process sees it: from a step's command
being decided here to its reply being read here.

Only the commands this process decided count. A coordinator that takes over partitions (another
one died or was paused) reads replies to steps decided long before by someone else: timed from
their saga rows, every shard looked slow at once to it, and under ledger chaos (seed 3) the tail of
a coordinator kill hid a slow shard behind that fleet-wide "anomaly". No I/O here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

MAX_UNANSWERED: Final = 100_000
"""Commands remembered until answered: a shard that never answers must not grow this without end
(the oldest are forgotten first; their replies then count for nothing)."""


class StepClock:
    def __init__(self, bound: int = MAX_UNANSWERED) -> None:
        self._bound = bound
        self._decided: dict[str, int] = {}  # command id -> when first decided (insertion order)

    def decided(self, command_ids: Iterable[str], at_ms: int) -> None:
        """Commands written to the outbox at `at_ms`; one sent again keeps its first time."""
        for command_id in command_ids:
            self._decided.setdefault(command_id, at_ms)
        while len(self._decided) > self._bound:
            del self._decided[next(iter(self._decided))]

    def replied(self, replies: Iterable[tuple[int, str]], at_ms: int) -> list[tuple[int, int]]:
        """(shard, ms it took) for each (shard, command id) reply read at `at_ms` to a command this
        process decided, once: a redelivered reply, or one to another process's command, gives none."""
        took = []
        for shard, command_id in replies:
            since = self._decided.pop(command_id, None)
            if since is not None:
                took.append((shard, max(at_ms - since, 0)))
        return took

    def __len__(self) -> int:
        return len(self._decided)
