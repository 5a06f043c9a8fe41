"""Which ledger a command talks to: the environment's, else the recorded local stack's, as its role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.kafka_principals import KafkaCredentials
from deploy.postgres_roles import write_passwords
from deploy.stack_env import ROLES, NoLocalStack, ledger_config, stack_env
from infra.config import LedgerConfig
from schemas.errors import ConfigurationError

OWNER_DSN = "postgresql://ledger:owner-secret@127.0.0.1:5999/ledger"


def _record_stack(home: Path) -> None:
    data = home / "data"
    KafkaCredentials({"admin": "a-pw", "client": "c-pw", "operator": "o-pw"}).save(data / "kafka.json")
    write_passwords(data / "roles.json", {"ledger_reader": "r/pw@:x", "ledger_coordinator": "k-pw"})
    endpoints = {
        "kafka_bootstrap_servers": "127.0.0.1:9999", "database_url": OWNER_DSN, "brokers": 1, "shards": 2,
        "database_roles_file": str(data / "roles.json"),
    }  # fmt: skip
    state = {"endpoints": endpoints, "processes": [], "kafka_credentials": str(data / "kafka.json")}
    (home / "stack.json").write_text(json.dumps(state))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    _record_stack(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("role", "principal"), [("client", "client"), ("operator", "operator")])
def test_clients_get_their_principal_and_the_read_only_role(home: Path, role: str, principal: str) -> None:
    config = ledger_config(role, {"LEDGER_HOME": str(home)})
    assert config.kafka_bootstrap_servers == "127.0.0.1:9999"
    assert (config.kafka_security.username, config.kafka_security.protocol) == (principal, "SASL_PLAINTEXT")
    assert config.database_url == "postgresql://ledger_reader:r%2Fpw%40%3Ax@127.0.0.1:5999/ledger"
    assert config.message_keys == ()


def test_the_reader_has_no_kafka_credentials_and_the_admin_owns_everything(home: Path) -> None:
    reader = ledger_config("reader", {"LEDGER_HOME": str(home)})
    assert reader.kafka_security.username is None
    assert reader.database_url.startswith("postgresql://ledger_reader:")
    admin = ledger_config("admin", {"LEDGER_HOME": str(home)})
    assert (admin.kafka_security.username, admin.database_url) == ("admin", OWNER_DSN)


def test_a_variable_wins_over_the_recorded_stack(home: Path) -> None:
    config = ledger_config("operator", {"LEDGER_HOME": str(home), "LEDGER_KAFKA_USERNAME": "someone"})
    assert config.kafka_security.username == "someone"
    given = {
        "LEDGER_HOME": str(home),
        "LEDGER_DATABASE_URL": "postgresql://x@h/db",
        "KAFKA_BOOTSTRAP_SERVERS": "h:1",
    }
    assert ledger_config("operator", given) == LedgerConfig.from_env(given)


def test_without_settings_or_a_stack_the_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"ledger dev up.*ledger dev env"):
        ledger_config("reader", {"LEDGER_HOME": str(tmp_path)})
    with pytest.raises(NoLocalStack):
        stack_env(tmp_path, "operator")


def test_a_role_outside_the_list_is_refused(home: Path) -> None:
    assert "admin" in ROLES
    with pytest.raises(ConfigurationError, match="no role"):
        stack_env(home, "coordinator")


def test_servers_given_from_outside_are_recorded_without_credentials(tmp_path: Path) -> None:
    endpoints = {"kafka_bootstrap_servers": "k:1", "database_url": OWNER_DSN, "brokers": 3, "shards": 1}
    (tmp_path / "stack.json").write_text(json.dumps({"endpoints": endpoints, "kafka_credentials": None}))
    config = ledger_config("operator", {"LEDGER_HOME": str(tmp_path)})
    assert (config.database_url, config.kafka_security.username) == (OWNER_DSN, None)
    assert config.replication_factor == 3
