"""Database role names, their DSNs and the local passwords file (no server needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import pytest

from deploy.postgres_roles import (
    LedgerRoles,
    generate_passwords,
    read_passwords,
    role_configs,
    role_dsn,
    scram_verifier,
    write_passwords,
)
from infra.config import LedgerConfig
from schemas.errors import ConfigurationError
from schemas.topics import Namespace


def test_one_role_per_shard_then_the_coordinator_and_the_reader() -> None:
    roles = LedgerRoles(Namespace("p_"), 3)
    shards = ["p_ledger_shard_00", "p_ledger_shard_01", "p_ledger_shard_02"]
    assert roles.names() == [*shards, "p_ledger_coordinator", "p_ledger_reader"]
    longest = LedgerRoles(Namespace("x" * 40), 1024).shard(1023)
    assert len(longest) <= 63, "PostgreSQL would truncate the name"


def test_a_role_dsn_keeps_server_and_database_and_quotes_the_password() -> None:
    admin = "postgresql://ledger:secret@db.internal:5433/ledger?sslmode=require"
    assert role_dsn(admin, "ledger_reader", "a/b@c") == (
        "postgresql://ledger_reader:a%2Fb%40c@db.internal:5433/ledger?sslmode=require"
    )


def test_each_process_gets_its_own_role_on_each_server() -> None:
    config = LedgerConfig(
        "postgresql://admin:x@main/ledger", "k:9092", shard_database_urls={1: "postgresql://admin:x@other/l"}
    )
    roles = LedgerRoles(Namespace(), 2)
    configs = role_configs(config, roles, generate_passwords(roles))
    assert configs.shards[0].database_url.startswith("postgresql://ledger_shard_00:")
    assert configs.shards[0].shard_database_urls == {}
    assert configs.shards[1].shard_database_url(1).startswith("postgresql://ledger_shard_01:")
    assert configs.shards[1].shard_database_url(1).endswith("@other/l")
    assert configs.coordinator.database_url.startswith("postgresql://ledger_coordinator:")
    assert configs.reader.shard_database_url(1).startswith("postgresql://ledger_reader:")


def test_the_passwords_file_is_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "state" / "postgres-roles.json"
    passwords = generate_passwords(LedgerRoles(Namespace(), 2))
    write_passwords(path, passwords)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_passwords(path) == passwords
    assert len(set(passwords.values())) == 4
    path.write_text('{"ledger_reader": 5}')
    with pytest.raises(ConfigurationError):
        read_passwords(path)


def test_the_scram_verifier_is_rfc_7677s() -> None:
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt, 4096)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    server_key = base64.b64encode(hmac.digest(salted, b"Server Key", "sha256")).decode()
    assert verifier.startswith(f"SCRAM-SHA-256$4096:{base64.b64encode(salt).decode()}$")
    assert verifier.endswith(f":{server_key}")
    with pytest.raises(ConfigurationError):
        scram_verifier("pässword", salt)
