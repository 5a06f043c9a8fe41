"""Failpoints: named places where a crash test can make this process die at once, on purpose.

Off unless LEDGER_FAILPOINTS is set at the entry point (`ledger coordinator run`), e.g.
`after_commit:crediting` kills the coordinator right after it committed a batch that moved a saga
into the crediting step, before the Kafka offsets are committed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Failpoints:
    armed: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, spec: str | None) -> Failpoints:
        return cls(frozenset(p.strip() for p in (spec or "").split(",") if p.strip()))

    def hit(self, when: str, steps: Iterable[str]) -> None:
        """Die by SIGKILL if `when:step` is armed for any of `steps`."""
        if self.armed and any(f"{when}:{step}" in self.armed for step in steps):
            os.kill(os.getpid(), signal.SIGKILL)
