"""The ledger's Kafka principals (one per role) and a local stack's generated SCRAM credentials.

Which principal may do what is in deploy/kafka_acls.py. The credentials of a local stack are random,
written once into its data folder (mode 0600) and never committed; a real cluster provisions its
own (see README, Security).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.config import KafkaSecurity
from schemas.errors import ConfigurationError

ADMIN = "admin"
"""Super user: brokers between themselves, `ledger init` / `ledger acl apply`, operators' tooling."""
COORDINATOR = "coordinator"
CLIENT = "client"
"""Payment services: write transfers, read results."""
OPERATOR = "operator"
"""Operators and the demo / bench / chaos workloads: a client that may also manage accounts."""
MONITOR = "monitor"
"""`ledger monitor run`: reads balances, results and telemetry; writes alerts and breaker states."""

PROVISIONED_SHARDS = 16
"""Shard principals a local cluster is formatted with (SCRAM users exist from the first start)."""


def shard_principal(shard: int) -> str:
    return f"shard-{shard:02d}"


def principal_names(shards: int) -> tuple[str, ...]:
    return (ADMIN, COORDINATOR, CLIENT, OPERATOR, MONITOR, *(shard_principal(s) for s in range(shards)))


@dataclass(frozen=True)
class KafkaCredentials:
    """SCRAM passwords by principal name."""

    passwords: Mapping[str, str] = field(repr=False)

    @classmethod
    def generate(cls, shards: int = PROVISIONED_SHARDS) -> KafkaCredentials:
        return cls({name: secrets.token_urlsafe(24) for name in principal_names(shards)})

    def security(self, name: str, protocol: str = "SASL_PLAINTEXT") -> KafkaSecurity:
        """How the principal `name` connects (SCRAM-SHA-512)."""
        if name not in self.passwords:
            raise ConfigurationError(f"no Kafka credentials for principal {name!r}")
        return KafkaSecurity(protocol, "SCRAM-SHA-512", name, self.passwords[name])

    def scram_arguments(self) -> list[str]:
        """`StorageTool format` flags creating every user in the new cluster's metadata log."""
        # token_urlsafe passwords hold no ',', ']' or '=': the flag's syntax needs no quoting.
        return [
            arg
            for name, password in sorted(self.passwords.items())
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(dict(self.passwords), out, indent=2)

    @classmethod
    def load(cls, path: Path) -> KafkaCredentials:
        try:
            passwords = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigurationError(f"cannot read Kafka credentials {path}: {e}") from e
        return cls({str(k): str(v) for k, v in passwords.items()})

    @classmethod
    def load_or_generate(cls, path: Path, shards: int = PROVISIONED_SHARDS) -> KafkaCredentials:
        """The saved credentials, completed with a password for any principal added since they
        were made (a stack from before the monitor existed): the cluster is formatted with every
        user at each start, so a new principal can log in from the next one."""
        if not path.exists():
            made = cls.generate(shards)
            made.save(path)
            return made
        loaded = cls.load(path)
        missing = [name for name in principal_names(shards) if name not in loaded.passwords]
        if not missing:
            return loaded
        completed = cls({**loaded.passwords, **{name: secrets.token_urlsafe(24) for name in missing}})
        completed.save(path)
        return completed
