"""Configuration read at entry points: what a parent passes to a child `ledger` is what it reads."""

from __future__ import annotations

import pytest

from deploy.config import LedgerConfig
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
