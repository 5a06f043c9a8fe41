"""What the monitor service needs from the outside: somewhere to publish. Kafka in production
(monitor/adapters/kafka.py), a list in the unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas.alerts import LiquidityAlert
from schemas.breaker import BreakerState


class Publisher(Protocol):
    async def publish_alerts(self, alerts: Sequence[LiquidityAlert]) -> None:
        """Every alert written (acknowledged by the broker) before it returns, in order; raises
        when it could not (the service keeps them and sends them again)."""

    async def publish_breakers(self, states: Sequence[BreakerState]) -> None:
        """Likewise, each BreakerState onto the compacted control topic, keyed by shard."""
