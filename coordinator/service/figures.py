"""What a coordinator tells its metrics (coordinator/adapters/otel_metrics.py), once a batch's
writes are accepted by the store: the transfers it finished and how long shards took to answer."""

from __future__ import annotations

from typing import Protocol


class SagaFigures(Protocol):
    def finished(self, state: str, reason: str | None) -> None:
        """A transfer reached a final state (completed, rejected, compensated, voided, expired)."""

    def answered(self, shard: int, took_ms: int) -> None:
        """A shard answered a saga step's first send `took_ms` after it was decided."""


class NoFigures:
    """Metrics off, or a test that does not look at them."""

    def finished(self, state: str, reason: str | None) -> None:
        pass

    def answered(self, shard: int, took_ms: int) -> None:
        pass
