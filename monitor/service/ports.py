"""What the monitor service needs from the outside: somewhere to publish (Kafka in production,
monitor/adapters/kafka.py; a list in the unit tests) and an auditor of the ledger (PostgreSQL,
deploy/ledger_audit.py, handed in at the entry point; a fake in the unit tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from monitor.domain.audit import AuditReport
from schemas.breaker import BreakerState
from schemas.ledger_alert import Alert


class Publisher(Protocol):
    async def publish_alerts(self, alerts: Sequence[Alert]) -> None:
        """Every alert written (acknowledged by the broker) before it returns, in order; raises
        when it could not (the service keeps them and sends them again)."""

    async def publish_breakers(self, states: Sequence[BreakerState]) -> None:
        """Likewise, each BreakerState onto the compacted control topic, keyed by shard."""


class Auditor(Protocol):
    async def audit(self) -> AuditReport:
        """Every shard's hash chain recomputed and every journal reconciled with every saga, read
        only; raises a LedgerError (retriable when trying again later may help) when it cannot."""
