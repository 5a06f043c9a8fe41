"""Names of one deployment's Kafka topics and PostgreSQL schemas: the one place they are spelled.

Names come from configuration (a prefix), never from message content. Tests give every test its
own prefix, so each gets fresh topics and schemas on the same servers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from schemas.errors import ConfigurationError

_PREFIX = re.compile(r"^[a-z0-9_]{0,40}$")


@dataclass(frozen=True)
class Namespace:
    prefix: str = ""

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigurationError(f"namespace prefix must match {_PREFIX.pattern}: {self.prefix!r}")

    def shard_commands(self, shard: int) -> str:
        """Each shard consumes one single-partition topic: a total order of its commands."""
        return f"{self.prefix}ledger.shard.{shard:02d}.commands"

    def shard_schema(self, shard: int) -> str:
        """The PostgreSQL schema a shard owns."""
        return f"{self.prefix}shard_{shard:02d}"

    @property
    def control_schema(self) -> str:
        return f"{self.prefix}ledger_control"

    @property
    def coordinator_schema(self) -> str:
        return f"{self.prefix}ledger_coordinator"

    @property
    def transfers(self) -> str:
        """Public: transfer commands, keyed by transfer id."""
        return f"{self.prefix}ledger.transfers"

    @property
    def account_commands(self) -> str:
        """Public: open, freeze, unfreeze and close accounts, keyed by account id."""
        return f"{self.prefix}ledger.account-commands"

    @property
    def results(self) -> str:
        """Public: exactly one terminal result per transfer id (and account command results)."""
        return f"{self.prefix}ledger.results"

    @property
    def balances(self) -> str:
        """Public, read-only: each account's balance after every batch that changed it, keyed by
        account id, compacted (schemas/json/balance-changed.json)."""
        return f"{self.prefix}ledger.balances"

    @property
    def control(self) -> str:
        """Each shard's circuit breaker (schemas/breaker.py BreakerState), keyed by shard number,
        compacted: written by the monitor, read by coordinators before they start a saga."""
        return f"{self.prefix}ledger.control"

    @property
    def alerts(self) -> str:
        """Liquidity and health alerts from the monitor (schemas/alerts.py), keyed by alert id."""
        return f"{self.prefix}ledger.alerts"

    @property
    def telemetry(self) -> str:
        """Every process's figures, once a second, for the monitor's anomaly detection."""
        return f"{self.prefix}ledger.telemetry"

    @property
    def monitor_commands(self) -> str:
        """Operators -> monitor: liquidity rules (SetLiquidityRules) and breakers (SetBreaker)."""
        return f"{self.prefix}ledger.monitor-commands"

    @property
    def shard_replies(self) -> str:
        return f"{self.prefix}ledger.shard-replies"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}ledger.dead-letters"

    def is_internal(self, topic: str) -> bool:
        """Written only by coordinators and shards, so their messages are authenticated
        (schemas/message_auth.py): the shard command topics and the shard replies."""
        return topic == self.shard_replies or _shard_commands(self.prefix).match(topic) is not None


@functools.cache
def _shard_commands(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}ledger\.shard\.\d{{2,4}}\.commands$")
