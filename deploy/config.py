"""Configuration of a ledger deployment, read from the environment at entry points only."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.errors import ConfigurationError
from schemas.topics import Namespace

_SHARD_DSN = re.compile(r"^LEDGER_SHARD_(\d+)_DATABASE_URL$")


@dataclass(frozen=True)
class LedgerConfig:
    database_url: str
    """PostgreSQL for the control schema, and for every shard without a DSN of its own."""
    kafka_bootstrap_servers: str
    namespace: Namespace = field(default_factory=Namespace)
    """Prefix of every topic and schema name (tests use a unique one each)."""
    shard_database_urls: Mapping[int, str] = field(default_factory=dict)
    """Shards that live on another PostgreSQL server."""
    replication_factor: int = 1
    """Of every topic the ledger creates: 3 on a real cluster."""
    partitions: int = 8
    """Partitions of ledger.transfers and ledger.shard-replies, alike so that a saga's commands and
    replies meet in the same coordinator; the coordinators' unit of parallelism."""

    def as_env(self) -> dict[str, str]:
        """The variables `from_env` reads, so a child `ledger` process sees this same ledger."""
        env = {
            "LEDGER_DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "LEDGER_NAMESPACE": self.namespace.prefix,
            "LEDGER_REPLICATION_FACTOR": str(self.replication_factor),
            "LEDGER_PARTITIONS": str(self.partitions),
        }
        return env | {f"LEDGER_SHARD_{n}_DATABASE_URL": url for n, url in self.shard_database_urls.items()}

    def shard_database_url(self, shard: int) -> str:
        return self.shard_database_urls.get(shard, self.database_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LedgerConfig:
        """LEDGER_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, LEDGER_NAMESPACE, LEDGER_SHARD_<N>_DATABASE_URL,
        LEDGER_REPLICATION_FACTOR, LEDGER_PARTITIONS."""
        missing = [k for k in ("LEDGER_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") if not env.get(k)]
        if missing:
            raise ConfigurationError(
                f"{' and '.join(missing)} not set (`ledger dev up` prints values for a local stack)"
            )
        shard_urls = {int(m.group(1)): v for k, v in env.items() if (m := _SHARD_DSN.match(k))}
        try:
            return cls(
                database_url=env["LEDGER_DATABASE_URL"],
                kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                namespace=Namespace(env.get("LEDGER_NAMESPACE", "")),
                shard_database_urls=shard_urls,
                replication_factor=int(env.get("LEDGER_REPLICATION_FACTOR", "1")),
                partitions=int(env.get("LEDGER_PARTITIONS", "8")),
            )
        except ValueError as e:
            raise ConfigurationError(f"bad ledger setting: {e}") from None
