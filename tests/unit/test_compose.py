"""docker-compose.yml stays in step with the CLI: every ledger service runs a real subcommand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml

from deploy.cli import cli
from deploy.kafka_local import kafka_version

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _ledger_services() -> dict[str, list[str]]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return {
        name: list(service["command"])
        for name, service in spec["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def _resolves(argv: list[str]) -> bool:
    """True when click accepts argv: each word names a subcommand and the options parse."""
    group: click.Command = cli
    ctx = click.Context(cli, info_name="ledger")
    args = list(argv)
    while isinstance(group, click.Group) and args and not args[0].startswith("-"):
        sub = group.get_command(ctx, args.pop(0))
        if sub is None:
            return False
        group = sub
    try:
        group.make_context("ledger", args, resilient_parsing=False)
    except click.exceptions.Exit:
        return True  # --help
    except click.ClickException:
        return False
    return True


def test_every_ledger_service_runs_a_real_subcommand() -> None:
    services = _ledger_services()
    assert {"init", "shard-0", "shard-1", "coordinator", "status-api"} <= set(services)
    assert services["shard-1"] == ["shard", "run", "--shard", "1"]
    assert services["coordinator"][:2] == ["coordinator", "run"]
    assert "--help" not in {word for argv in services.values() for word in argv}, "no placeholders left"
    bad = {name: argv for name, argv in services.items() if not _resolves(argv)}
    assert not bad, f"compose services with commands the CLI does not have: {bad}"


def test_the_check_itself_rejects_unknown_commands() -> None:
    assert not _resolves(["no-such-command"])
    assert not _resolves(["dev", "up", "--brokers", "7"])
    assert _resolves(["dev", "status"])
    assert not _resolves(["shard", "run"])  # --shard is required
    assert not _resolves(["shard", "run", "--shard", "x"])


def test_engines_are_the_official_images() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version()}"  # the pom's release
    assert services["postgres"]["image"] == "postgres:15"


def test_only_the_status_api_gets_its_tokens_and_only_from_the_shell() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    tokens = services["status-api"]["environment"]["LEDGER_API_TOKENS"]
    assert tokens.startswith("${LEDGER_API_TOKENS:?"), "required, and never written in this file"
    assert services["status-api"]["environment"]["LEDGER_DATABASE_URL"], "the shared settings are kept"
    others = [
        n
        for n, s in services.items()
        if n != "status-api" and "LEDGER_API_TOKENS" in s.get("environment", {})
    ]
    assert not others, f"the API's tokens leak to {others}"


def test_kafka_authenticates_and_authorizes_every_process_as_its_own_principal() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    kafka = services["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "no listener without authentication"
    assert "SCRAM-SHA-512" in kafka["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"].split(",")
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "${LEDGER_KAFKA_ADMIN_PASSWORD:?" in kafka["KAFKA_LISTENER_NAME_CLIENT_PLAIN_SASL_JAAS_CONFIG"]

    principals = {
        "shard-0": "shard-00", "shard-1": "shard-01", "coordinator": "coordinator", "monitor": "monitor",
        "init": "admin",
    }  # fmt: skip
    for name, principal in principals.items():
        env = services[name]["environment"]
        assert env["LEDGER_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        assert env["LEDGER_KAFKA_USERNAME"] == principal, name
        assert env["LEDGER_KAFKA_PASSWORD"].startswith("${LEDGER_KAFKA_"), (
            f"{name}: password from the shell only"
        )
    assert services["status-api"]["environment"]["LEDGER_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "LEDGER_KAFKA_PASSWORD" not in services["status-api"]["environment"], (
        "the API gets no Kafka principal"
    )
    # The init step runs after the SCRAM users exist, and applies the ACLs.
    assert "kafka-users" in services["init"]["depends_on"]
    users = re.findall(
        r"([\w-]+)=\$\{LEDGER_KAFKA_PASSWORD_", services["kafka-users"]["environment"]["USERS"]
    )
    assert set(users) == {"coordinator", "client", "operator", "monitor", "shard-00", "shard-01"}


def test_compose_runs_the_monitor_as_its_own_principal_scraped_by_prometheus() -> None:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    monitor = services["monitor"]
    assert monitor["command"][:2] == ["monitor", "run"]
    env = monitor["environment"]
    assert env["LEDGER_KAFKA_USERNAME"] == "monitor"
    assert "ledger_reader:" in env["LEDGER_DATABASE_URL"], "it audits every schema, read only"
    assert "LEDGER_MESSAGE_KEYS" not in env, "it writes no money message"
    assert "monitor=" in services["kafka-users"]["environment"]["USERS"]
    prometheus = yaml.safe_load((COMPOSE.parent / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert "monitor:9464" in targets
