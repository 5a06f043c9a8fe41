"""Configuration read at entry points: what a parent passes to a child `ledger` is what it reads."""

from __future__ import annotations

import pytest

from infra.config import KafkaSecurity, LedgerConfig, parse_message_keys
from schemas.errors import ConfigurationError
from schemas.topics import Namespace


def test_as_env_round_trips_through_from_env() -> None:
    config = LedgerConfig(
        "postgresql://a@h/db", "k1:9092,k2:9092", Namespace("t_ab_"), {3: "postgresql://b@h2/db"},
        replication_factor=3, partitions=12,
    )  # fmt: skip
    assert LedgerConfig.from_env(config.as_env()) == config


def test_missing_servers_are_named() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS"):
        LedgerConfig.from_env({})


def test_security_settings_round_trip() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", username="u", password="p")
    config = LedgerConfig(
        "postgresql://a@h/db", "k1:9092", kafka_security=security,
        message_keys=(("k2", bytes(32)), ("k1", b"\x01" * 32)), max_message_bytes=1000,
    )  # fmt: skip
    assert LedgerConfig.from_env(config.as_env()) == config
    assert config.kafka_args()["sasl_plain_username"] == "u"


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_KAFKA_USERNAME"):
        KafkaSecurity("SASL_SSL")


@pytest.mark.parametrize("text", ["k1", "k1:zz", "k1:" + "00" * 8, "k1:" + "00" * 32 + ",k1:" + "11" * 32])
def test_malformed_message_keys_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_MESSAGE_KEYS"):
        parse_message_keys(text)
