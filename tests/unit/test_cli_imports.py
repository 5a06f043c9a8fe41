"""`ledger --help` and the read-only commands start without loading drivers they do not use."""

from __future__ import annotations

import subprocess
import sys

import click

from deploy.cli import cli
from deploy.lazy_group import LazyGroup

HEAVY = ("aiokafka", "asyncpg", "matplotlib", "opentelemetry", "jsonschema", "faust", "aiohttp")
_LOADED = "import sys, {}; print(*sorted({{m.split('.')[0] for m in sys.modules}} & set(sys.argv[1:])))"


def _loaded_by(modules: str) -> list[str]:
    """Which of HEAVY importing `modules` loads, in a fresh interpreter (this one has them all)."""
    code = _LOADED.format(modules)
    found = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, check=True)
    return found.stdout.split()


def test_importing_the_cli_loads_no_driver_or_plotting_library() -> None:
    assert _loaded_by("deploy.cli") == []


def test_the_read_commands_load_only_the_database_driver() -> None:
    assert _loaded_by("shards.audit_cli, coordinator.query_cli, deploy.dev_env") == ["asyncpg"]


def test_every_command_listed_lazily_is_found_under_its_name() -> None:
    assert isinstance(cli, LazyGroup)
    with click.Context(cli) as ctx:
        for name in cli.lazy:
            command = cli.get_command(ctx, name)
            assert command is not None
            assert (command.name, command.hidden) == (name, False)
