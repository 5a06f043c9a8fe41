"""The `ledger` command. Entry points read configuration here (options and LEDGER_* variables)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import click

from deploy.config import LedgerConfig
from deploy.health import check_endpoints
from deploy.kafka_principals import OPERATOR
from deploy.processes import ProcessRecord, free_port
from deploy.stack import (
    LocalStack,
    StackSettings,
    load_state,
    recorded_kafka_security,
    save_state,
    stop_recorded,
)
from schemas.errors import LedgerError

home_option = click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".ledger"),
    show_default=True,
    envvar="LEDGER_HOME",
    help="Download cache and local stack state. [env: LEDGER_HOME]",
)


def _sigterm_as_exit(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C does, so every `with LocalStack(...)` stops its engines.
    raise SystemExit(128 + signum)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A sharded double-entry ledger with saga-coordinated cross-shard transfers on Kafka."""


@cli.group()
def dev() -> None:
    """A local stack on this machine: Kafka (from Maven jars) and a private PostgreSQL."""


_STACK_OPTIONS = (
    click.option(
        "--shards", type=click.IntRange(1, 64), default=4, show_default=True, envvar="LEDGER_SHARDS",
        help="Shards the stack serves. [env: LEDGER_SHARDS]",
    ),
    click.option(
        "--brokers", type=click.Choice(["1", "3"]), default="1", show_default=True,
        envvar="LEDGER_BROKERS", help="Kafka nodes (3: RF=3, min ISR 2). [env: LEDGER_BROKERS]",
    ),
    click.option(
        "--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
        envvar="LEDGER_DATA_DIR", help="Engine data and logs (default: a new temp dir).",
    ),
    home_option,
)  # fmt: skip


def _stack_options(fn: Any) -> Any:
    for option in _STACK_OPTIONS:
        fn = option(fn)
    return fn


def _settings(home: Path, brokers: str, shards: int, data_dir: Path | None) -> StackSettings:
    return StackSettings.from_env(
        os.environ, home=home, brokers=int(brokers), shards=shards, data_dir=data_dir
    )


@dev.command("up")
@_stack_options
@click.option("--workers/--no-workers", default=True, show_default=True,
              help="Also create the ledger and start shard workers, a coordinator and the API.")  # fmt: skip
@click.option("--api-port", type=click.IntRange(1, 65535), default=None, envvar="LEDGER_API_PORT",
              help="Port of the status API (default: a free one).")  # fmt: skip
def dev_up(
    home: Path, brokers: str, shards: int, data_dir: Path | None, workers: bool, api_port: int | None
) -> None:
    """Start a local stack in the background and record its endpoints in HOME/stack.json.

    Kafka and PostgreSQL are not started when KAFKA_BOOTSTRAP_SERVERS or LEDGER_DATABASE_URL name
    servers to use instead.
    """
    state = load_state(home)
    if state is not None and any(ProcessRecord.from_json(p).alive() for p in state["processes"]):
        click.echo(f"a local stack is already up ({home / 'stack.json'}); `ledger dev down` stops it")
        click.echo(json.dumps(state["endpoints"], indent=2))
        return
    stack = LocalStack(_settings(home, brokers, shards, data_dir), tie_to_owner=False)
    stack.start()
    try:
        if workers:
            stack.start_ledger(api_port=api_port or free_port())
    except BaseException:
        stack.stop()
        raise
    path = save_state(home, stack)
    click.echo(json.dumps(asdict(stack.endpoints), indent=2))
    click.echo(f"state: {path}; logs under {stack.root}", err=True)


@dev.command("status")
@home_option
def dev_status(home: Path) -> None:
    """Show the recorded stack: endpoints, processes and a live health check.

    Exit 0 healthy, 1 unhealthy, 3 when no stack is recorded.
    """
    state = load_state(home)
    if state is None:
        click.echo(f"no local stack is recorded in {home / 'stack.json'}")
        sys.exit(3)
    processes = [ProcessRecord.from_json(p) for p in state["processes"]]
    health = check_endpoints(state["endpoints"], recorded_kafka_security(state))
    report = {
        "endpoints": state["endpoints"],
        "processes": {p.name: {"pid": p.pid, "alive": p.alive(), "log": p.log_path} for p in processes},
        "health": health,
    }
    click.echo(json.dumps(report, indent=2))
    healthy = all(p.alive() for p in processes) and all(v == "ok" for v in health.values())
    sys.exit(0 if healthy else 1)


@dev.command("down")
@home_option
def dev_down(home: Path) -> None:
    """Stop the recorded stack and delete its temporary data. Harmless when nothing runs."""
    stopped = stop_recorded(home)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command()
@_stack_options
@click.option("--transfers", type=click.IntRange(1, 1_000_000), default=3000, show_default=True)
@click.option("--customers", type=click.IntRange(10, 100_000), default=200, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the stack running (stop it with `ledger dev down`).")
def demo(
    home: Path, brokers: str, shards: int, data_dir: Path | None, transfers: int, customers: int, keep: bool
) -> None:
    """Start a local ledger, run thousands of transfers through Kafka, reconcile, stop.

    Exits non-zero if reconciliation finds any violation.
    """
    from deploy.demo import DemoSettings, run_demo, show  # noqa: PLC0415 - heavy imports, demo only

    settings = _settings(home, brokers, shards, data_dir)
    stack = LocalStack(settings, tie_to_owner=not keep)
    stack.start()
    try:
        stack.start_ledger(api_port=free_port())
        if keep:
            save_state(home, stack)
        e = stack.endpoints
        click.echo(
            f"local ledger up: {shards} shards, Kafka {e.kafka_bootstrap_servers}, API {e.status_api_url}"
        )
        report = asyncio.run(run_demo(stack.ledger_config(OPERATOR), str(e.status_api_url),
                                      str(stack.api_token),
                                      DemoSettings(customers=customers, transfers=transfers)))  # fmt: skip
        show(report)
    finally:
        if not keep:
            stack.stop()
            click.echo("stack stopped")
        else:
            click.echo(f"stack kept running; `ledger dev down --home {home}` stops it")
    if report.violations:
        sys.exit(1)


@cli.group()
def acl() -> None:
    """The ledger's Kafka ACLs: who may read and write which topic."""


@acl.command("apply")
@click.option("--shards", type=click.IntRange(1, 1024), required=True, envvar="LEDGER_SHARDS",
              help="How many shards the ledger has. [env: LEDGER_SHARDS]")  # fmt: skip
def acl_apply(shards: int) -> None:
    """Create the ACLs the ledger needs that the cluster lacks (as a super user). Safe to run again."""
    from deploy.kafka_acls import apply_acls, ledger_acls  # noqa: PLC0415 - keeps `ledger dev` light

    config = LedgerConfig.from_env(os.environ)
    created = asyncio.run(apply_acls(config.kafka_args(), ledger_acls(config.namespace, shards)))
    for rule in created:
        click.echo(f"created: {rule}")
    click.echo(f"ACLs in place ({len(created)} created)")


def _register() -> None:
    from coordinator.cli import COMMANDS as COORDINATOR_COMMANDS  # noqa: PLC0415 - keeps `ledger dev` light
    from deploy.bench.command import bench  # noqa: PLC0415
    from deploy.chaos.command import chaos  # noqa: PLC0415
    from shards.cli import COMMANDS as SHARD_COMMANDS  # noqa: PLC0415
    from shards.outbox_cli import outbox  # noqa: PLC0415

    for command in (*SHARD_COMMANDS, *COORDINATOR_COMMANDS, outbox, bench, chaos):
        cli.add_command(command)


_register()


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
    try:
        cli(standalone_mode=True)
    except LedgerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2 if not e.retriable else 75)  # 75 = EX_TEMPFAIL: worth trying again
