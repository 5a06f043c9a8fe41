"""The pure cores (shards/domain, coordinator/saga, monitor/domain) import nothing that does I/O or
reaches deploy/, each package imports only the layers below it (schemas < infra < shards <
coordinator < deploy), and the services (coordinator/service, shards/service) reach adapters and
drivers only through ports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("shards/domain", "coordinator/saga", "monitor/domain")
FORBIDDEN = frozenset(
    {"asyncio", "asyncpg", "aiokafka", "faust", "opentelemetry", "socket", "subprocess", "deploy"}
)


def pure_files() -> list[Path]:
    """Every module of the pure packages that exist yet (coordinator/saga may not)."""
    return sorted(
        p for package in PURE_PACKAGES if (ROOT / package).is_dir() for p in (ROOT / package).rglob("*.py")
    )


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of everything `source`, a module in `package`, imports (relative ones resolved)."""
    names: set[str] = set()
    parts = package.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            parent = ".".join([*base, *([node.module] if node.module else [])])
            if parent:
                names.add(parent)
            # `from . import x` and `from pkg import x` may import a module x: count those too.
            names.update(f"{parent}.{alias.name}" if parent else alias.name for alias in node.names)
    return names


def forbidden_in(source: str, package: str) -> set[str]:
    return {name for name in imported_modules(source, package) if name.split(".")[0] in FORBIDDEN}


def package_of(path: Path) -> str:
    """The package a module's relative imports start from: its directory (for __init__.py too)."""
    return ".".join(path.parent.relative_to(ROOT).parts)


def test_the_domain_has_modules_to_check() -> None:
    assert any(p.is_relative_to(ROOT / "shards/domain") for p in pure_files())
    assert any(p.is_relative_to(ROOT / "monitor/domain") for p in pure_files())


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: Path) -> None:
    assert forbidden_in(path.read_text(), package_of(path)) == set()


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import asyncio", {"asyncio"}),
        ("import asyncpg.pool as pool", {"asyncpg.pool"}),
        ("from aiokafka import AIOKafkaProducer", {"aiokafka", "aiokafka.AIOKafkaProducer"}),
        (
            "from opentelemetry.trace import get_tracer",
            {"opentelemetry.trace", "opentelemetry.trace.get_tracer"},
        ),
        ("import os, socket", {"socket"}),
        ("def f() -> None:\n    import subprocess", {"subprocess"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import faust", {"faust"}),
        ("from deploy.cli import main", {"deploy.cli", "deploy.cli.main"}),
        ("from ... import deploy", {"deploy"}),  # from shards/domain: the top level
        ("from .model import Account\nimport hashlib\nimport asyncio_compat", set()),
    ],
)
def test_the_check_finds_forbidden_imports(source: str, found: set[str]) -> None:
    assert forbidden_in(source, "shards.domain") == found


def test_the_chaos_checker_is_pure() -> None:
    # It judges what the adapters read; it reads nothing itself, so tests can plant violations.
    path = ROOT / "deploy/chaos/checker.py"
    found = forbidden_in(path.read_text(), package_of(path)) - {"deploy", "deploy.chaos"}
    assert not {name for name in found if not name.startswith("deploy.")}, found


# --- layering (issue 14, item 8): infra/ below coordinator/ and shards/, deploy/ above them all ----

# package -> top-level packages (or dotted prefixes) its modules may not import.
LAYERS: dict[str, tuple[str, ...]] = {
    "schemas": ("coordinator", "shards", "deploy", "infra"),
    "infra": ("coordinator", "shards", "deploy"),
    "shards": ("coordinator", "deploy"),
    "coordinator": ("deploy", "shards.adapters", "shards.service", "shards.bootstrap", "shards.cli"),
    "monitor": ("deploy", "coordinator", "shards"),
}
# Entry points read the local stack's settings (deploy/stack_env), and the status API reads a
# balance the way `ledger balance` does: the only exceptions.
EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "cli.py": ("deploy",),
    "_cli.py": ("deploy",),
    "coordinator/api/status.py": ("shards.service.audit",),
}


def layered_files() -> list[Path]:
    return sorted(p for package in LAYERS for p in (ROOT / package).rglob("*.py"))


def layering_breaches(relative: str, source: str) -> set[str]:
    """What the module at `relative` (a path from the root) imports that its layer may not."""
    package = relative.split("/", maxsplit=1)[0]
    allowed = tuple(
        prefix for suffix, prefixes in EXCEPTIONS.items() if relative.endswith(suffix) for prefix in prefixes
    )
    return {
        name
        for name in imported_modules(source, ".".join(relative.split("/")[:-1]))
        for banned in LAYERS[package]
        if (name == banned or name.startswith(banned + "."))
        and not any(name == a or name.startswith(a + ".") for a in allowed)
    }


def test_the_layers_have_modules_to_check() -> None:
    assert {p.relative_to(ROOT).parts[0] for p in layered_files()} == set(LAYERS)


@pytest.mark.parametrize("path", layered_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_layer_imports_only_below_it(path: Path) -> None:
    assert layering_breaches(path.relative_to(ROOT).as_posix(), path.read_text()) == set()


@pytest.mark.parametrize(
    ("relative", "source", "found"),
    [
        ("coordinator/service/x.py", "from shards.adapters.outbox import Committed",
         {"shards.adapters.outbox", "shards.adapters.outbox.Committed"}),
        ("coordinator/service/x.py", "from shards.domain.model import Account", set()),
        ("coordinator/cli.py", "from deploy.stack_env import ledger_config", set()),
        ("coordinator/service/x.py", "from deploy.stack_env import ledger_config",
         {"deploy.stack_env", "deploy.stack_env.ledger_config"}),
        ("infra/x.py", "from ..shards import bootstrap", {"shards", "shards.bootstrap"}),
        ("schemas/x.py", "import infra.config", {"infra.config"}),
    ],
)  # fmt: skip
def test_the_layering_check_finds_breaches(relative: str, source: str, found: set[str]) -> None:
    assert layering_breaches(relative, source) == found


# --- services talk to ports (issue 14, item 8): no adapter, no driver -------------------------------

SERVICE_PACKAGES = ("coordinator/service", "shards/service")
DRIVERS = frozenset({"asyncpg", "aiokafka"})
PURE_DRIVER_PARTS = ("aiokafka.partitioner",)  # murmur2, Kafka's partitioner hash: no I/O
# The audit reads a shard's schema in one read-only snapshot: SQL is its whole job, so it is an
# adapter in all but place. Moving it (and what imports it) is left for later; until then it may
# import these, and nothing more.
SERVICE_EXCEPTIONS: dict[str, frozenset[str]] = {
    "shards/service/audit.py": frozenset(
        {"asyncpg", "shards.adapters.postgres_shard_store", "shards.adapters.postgres_shard_store.to_micros"}
    ),
}


def driver_modules() -> frozenset[str]:
    """The infra modules that import a driver: adapters shared by both services."""
    return frozenset(
        f"infra.{p.stem}"
        for p in (ROOT / "infra").glob("*.py")
        if any(is_driver(name) for name in imported_modules(p.read_text(), "infra"))
    )


def is_driver(name: str) -> bool:
    pure = any(name == part or name.startswith(part + ".") for part in PURE_DRIVER_PARTS)
    return name.split(".", maxsplit=1)[0] in DRIVERS and not pure


def adapter_imports(source: str, package: str, adapters: frozenset[str]) -> set[str]:
    """What a service module imports that is an adapter, a driver, or an infra module using one."""
    return {
        name
        for name in imported_modules(source, package)
        if "adapters" in name.split(".")
        or is_driver(name)
        or any(name == a or name.startswith(a + ".") for a in adapters)
    }


def service_files() -> list[Path]:
    return sorted(p for package in SERVICE_PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_some_infra_modules_are_adapters() -> None:
    assert {"infra.postgres_pool", "infra.postgres_control", "infra.kafka_commits"} <= driver_modules()


@pytest.mark.parametrize("path", service_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_services_import_ports_not_adapters(path: Path) -> None:
    expected = SERVICE_EXCEPTIONS.get(path.relative_to(ROOT).as_posix(), frozenset())
    assert adapter_imports(path.read_text(), package_of(path), driver_modules()) == expected


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from coordinator.adapters.postgres_sagas import SagaTransaction",
         {"coordinator.adapters.postgres_sagas", "coordinator.adapters.postgres_sagas.SagaTransaction"}),
        ("from ..adapters import kafka_source", {"shards.adapters", "shards.adapters.kafka_source"}),
        ("from infra.postgres_control import PostgresControl",
         {"infra.postgres_control", "infra.postgres_control.PostgresControl"}),
        ("import asyncpg", {"asyncpg"}),
        ("from aiokafka import AIOKafkaConsumer", {"aiokafka", "aiokafka.AIOKafkaConsumer"}),
        ("from infra.envelopes import key_partition", set()),
        ("from shards.service.ports import ShardStore\nfrom infra.outbox import OutboxMessage", set()),
    ],
)  # fmt: skip
def test_the_service_check_finds_adapters(source: str, found: set[str]) -> None:
    assert adapter_imports(source, "shards.service", driver_modules()) == found
