"""Configuration of a ledger deployment, read from the environment at entry points only."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ConfigurationError
from schemas.topics import Namespace

_SHARD_DSN = re.compile(r"^LEDGER_SHARD_(\d+)_DATABASE_URL$")
_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,32}):([0-9a-fA-F]{64,128})$")
_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class KafkaSecurity:
    """How this process authenticates to Kafka: one principal per role (see README, Security)."""

    protocol: str = "PLAINTEXT"
    """PLAINTEXT (no authentication), SASL_PLAINTEXT (loopback only) or SASL_SSL (a real cluster)."""
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    """PEM bundle that signs the brokers' certificates (SASL_SSL); the system's when None."""

    def __post_init__(self) -> None:
        if self.protocol not in _PROTOCOLS:
            raise ConfigurationError(f"LEDGER_KAFKA_SECURITY_PROTOCOL must be one of {_PROTOCOLS}")
        if self.protocol != "PLAINTEXT" and not (self.username and self.password):
            raise ConfigurationError(f"{self.protocol} needs LEDGER_KAFKA_USERNAME and LEDGER_KAFKA_PASSWORD")

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        if self.protocol == "PLAINTEXT":
            return {}
        args: dict[str, Any] = {
            "security_protocol": self.protocol,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }
        if self.protocol == "SASL_SSL":
            from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 - only for TLS

            args["ssl_context"] = create_ssl_context(cafile=self.ca_file)
        return args

    def as_env(self) -> dict[str, str]:
        env = {"LEDGER_KAFKA_SECURITY_PROTOCOL": self.protocol, "LEDGER_KAFKA_SASL_MECHANISM": self.mechanism}
        optional = {
            "LEDGER_KAFKA_USERNAME": self.username,
            "LEDGER_KAFKA_PASSWORD": self.password,
            "LEDGER_KAFKA_CA_FILE": self.ca_file,
        }
        return env | {k: v for k, v in optional.items() if v}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        return cls(
            protocol=env.get("LEDGER_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            mechanism=env.get("LEDGER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            username=env.get("LEDGER_KAFKA_USERNAME") or None,
            password=env.get("LEDGER_KAFKA_PASSWORD") or None,
            ca_file=env.get("LEDGER_KAFKA_CA_FILE") or None,
        )


def parse_message_keys(text: str) -> tuple[tuple[str, bytes], ...]:
    """`kid:hex[,kid:hex...]`: the keys that authenticate internal messages. The first signs; every
    one verifies. Rotation (schemas/message_auth.py): add the new key second everywhere, then move
    it first everywhere, then drop the old one once nothing signed with it is left in flight."""
    keys: list[tuple[str, bytes]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _KEY.match(item)
        if match is None:
            raise ConfigurationError("LEDGER_MESSAGE_KEYS entries are kid:hex (32 to 64 bytes of hex)")
        keys.append((match.group(1), bytes.fromhex(match.group(2))))
    if len({kid for kid, _ in keys}) != len(keys):
        raise ConfigurationError("LEDGER_MESSAGE_KEYS names a key id twice")
    return tuple(keys)


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
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """This process's Kafka principal."""
    message_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    """HMAC keys shared by coordinators and shards (first signs, all verify). Coordinator, shard and
    relay processes refuse to start without one; other processes need none."""
    max_message_bytes: int = 256 * 1024
    """Largest record the public topics accept (their max.message.bytes)."""

    def kafka_args(self) -> dict[str, Any]:
        """Where and as whom any aiokafka client of this process connects."""
        return {"bootstrap_servers": self.kafka_bootstrap_servers, **self.kafka_security.client_args()}

    def as_env(self) -> dict[str, str]:
        """The variables `from_env` reads, so a child `ledger` process sees this same ledger."""
        env = {
            "LEDGER_DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "LEDGER_NAMESPACE": self.namespace.prefix,
            "LEDGER_REPLICATION_FACTOR": str(self.replication_factor),
            "LEDGER_PARTITIONS": str(self.partitions),
            "LEDGER_MAX_MESSAGE_BYTES": str(self.max_message_bytes),
            **self.kafka_security.as_env(),
        }
        if self.message_keys:
            env["LEDGER_MESSAGE_KEYS"] = ",".join(f"{kid}:{key.hex()}" for kid, key in self.message_keys)
        return env | {f"LEDGER_SHARD_{n}_DATABASE_URL": url for n, url in self.shard_database_urls.items()}

    def shard_database_url(self, shard: int) -> str:
        return self.shard_database_urls.get(shard, self.database_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LedgerConfig:
        """LEDGER_DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, LEDGER_NAMESPACE, LEDGER_SHARD_<N>_DATABASE_URL,
        LEDGER_REPLICATION_FACTOR, LEDGER_PARTITIONS, LEDGER_MAX_MESSAGE_BYTES, LEDGER_MESSAGE_KEYS,
        LEDGER_KAFKA_SECURITY_PROTOCOL, LEDGER_KAFKA_SASL_MECHANISM, LEDGER_KAFKA_USERNAME,
        LEDGER_KAFKA_PASSWORD, LEDGER_KAFKA_CA_FILE."""
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
                kafka_security=KafkaSecurity.from_env(env),
                message_keys=parse_message_keys(env.get("LEDGER_MESSAGE_KEYS", "")),
                max_message_bytes=int(env.get("LEDGER_MAX_MESSAGE_BYTES", str(256 * 1024))),
            )
        except ValueError as e:
            raise ConfigurationError(f"bad ledger setting: {e}") from None
