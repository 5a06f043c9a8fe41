"""The `ledger` command. Entry points read configuration here (options and LEDGER_* variables)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from deploy.dev_env import dev_env
from deploy.exit_codes import TEMPFAIL, USAGE
from deploy.health import reachable
from deploy.kafka_principals import OPERATOR
from deploy.lazy_group import LazyGroup
from deploy.processes import ProcessRecord, free_port
from deploy.stack_env import ledger_config, read_state
from schemas.errors import LedgerError

if TYPE_CHECKING:
    from deploy.stack import StackSettings

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


# Defined elsewhere, imported when run (deploy/lazy_group.py): `ledger --help` stays quick.
_ELSEWHERE = {
    "init": ("shards.cli:init_command", "Create or update the ledger: schemas, topics, ACLs, roles."),
    "shard": ("shards.cli:shard_group", "Shard worker processes."),
    "coordinator": ("coordinator.cli:coordinator_group", "The saga coordinator."),
    "api": ("coordinator.cli:api_group", "The status API."),
    "monitor": ("deploy.monitor_cli:monitor_group", "Liquidity alerts, circuit breakers, continuous audit."),
    "transfer": (
        "coordinator.cli:transfer_command",
        "Send a transfer (--pending: a hold); --wait for its result.",
    ),
    "post": ("coordinator.cli:post_command", "Post a pending transfer, in full or for less."),
    "void": ("coordinator.cli:void_command", "Release a pending transfer's hold."),
    "open-account": ("coordinator.cli:open_account_command", "Open an account and wait for the answer."),
    "status": ("coordinator.query_cli:status_command", "Where a transfer stands (exit 3 when unknown)."),
    "transfers": ("coordinator.query_cli:transfers_command", "List transfers in a state."),
    "reconcile": ("coordinator.query_cli:reconcile_command", "Journals agree with sagas (exit 1)."),
    "balance": ("shards.audit_cli:balance_command", "An account's balance, now or at a point in time."),
    "replay": ("shards.audit_cli:replay_command", "Rebuild balances from the journal and compare (exit 1)."),
    "verify": ("shards.audit_cli:verify_command", "Recompute every hash chain (exit 1)."),
    "outbox": ("shards.outbox_cli:outbox", "The outboxes of the shards and the coordinators."),
    "doctor": ("deploy.doctor.command:doctor_command", "Explain each problem and its fix (exit 1)."),
    "breaker": ("deploy.breaker_cli:breaker_group", "Shards' circuit breakers: status, open, close."),
    "bench": ("deploy.bench.command:bench", "Measure the ledger end to end (exit 1 if the gate fails)."),
    "chaos": ("deploy.chaos.command:chaos", "Faults injected, invariants checked (exit 1 on a violation)."),
}


@click.group(cls=LazyGroup, lazy=_ELSEWHERE, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A sharded double-entry ledger with saga-coordinated cross-shard transfers on Kafka.

    Commands talk to the ledger that LEDGER_DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS name; with
    neither set, to the local stack `ledger dev up` recorded in LEDGER_HOME (default .ledger), as
    the least privileged principal each needs.

    \b
    Exit codes: 0 ok; 1 a check found a problem (reconcile, verify, replay,
    doctor, an unhealthy stack); 2 usage or configuration error; 3 not found (transfer,
    account, local stack) or rejected; 4 compensated; 5 expired (a hold nobody posted in time,
    or a post or void that came too late); 75 no result yet or a
    temporary failure (try again).
    """


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
    from deploy.stack import StackSettings  # noqa: PLC0415 - it loads the engines' code

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
    """Start a local stack in the background, supervised, and record it in HOME/stack.json.

    A supervisor process restarts any process of the stack that dies (backoff, logged in the data
    folder's logs/supervisor.log). On a data folder of a stopped stack (--data-dir) it resumes it:
    same data, ports and credentials. When the stack is up already it says so and exits 0.
    Kafka and PostgreSQL are not started when KAFKA_BOOTSTRAP_SERVERS or LEDGER_DATABASE_URL name
    servers to use instead.
    """
    from deploy.dev_stack import up  # noqa: PLC0415 - keeps the other commands light

    result = up(home, _settings(home, brokers, shards, data_dir), workers=workers, api_port=api_port,
                free_port=free_port)  # fmt: skip
    state = result.state
    if result.how in ("running", "supervised"):
        again = "; its supervisor had stopped: a new one took over" if result.how == "supervised" else ""
        click.echo(f"a local stack is already up ({home / 'stack.json'}){again}; `ledger dev down` stops it")
        click.echo(json.dumps(state["endpoints"], indent=2))
        return
    click.echo(json.dumps(state["endpoints"], indent=2))
    if result.how == "resumed":
        click.echo(f"resumed the stopped stack in {state['data_dir']}", err=True)
    click.echo(f"state: {home / 'stack.json'}; logs under {state['data_dir']}/logs", err=True)


@dev.command("supervise", hidden=True)
@home_option
def dev_supervise(home: Path) -> None:
    """Keep the processes of the stack recorded in HOME running (started by `ledger dev up`)."""
    from deploy.supervisor import supervise  # noqa: PLC0415

    supervise(home)


@dev.command("status")
@home_option
@click.option("--check", is_flag=True,
              help="Send Kafka and PostgreSQL a real request (slower) instead of connecting.")  # fmt: skip
def dev_status(home: Path, check: bool) -> None:
    """Show the recorded stack: endpoints, processes and whether Kafka and PostgreSQL answer.

    Exit 0 healthy, 1 unhealthy, 3 when no stack is recorded.
    """
    state = read_state(home)
    if state is None:
        click.echo(f"no local stack is recorded in {home / 'stack.json'}")
        sys.exit(3)
    processes = [ProcessRecord.from_json(p) for p in state["processes"]]
    if state.get("supervisor"):
        processes.append(ProcessRecord.from_json(state["supervisor"]))
    health = _live_health(state) if check else reachable(state["endpoints"])
    restarts = state.get("restarts", {})
    report = {
        "endpoints": state["endpoints"],
        "processes": {p.name: _process_status(p, restarts.get(p.name, {})) for p in processes},
        "health": health,
    }
    click.echo(json.dumps(report, indent=2))
    healthy = all(p.alive() for p in processes) and all(v == "ok" for v in health.values())
    sys.exit(0 if healthy else 1)


def _live_health(state: dict[str, Any]) -> dict[str, str]:
    from deploy.health import check_endpoints  # noqa: PLC0415 - loads both clients
    from deploy.stack import recorded_kafka_security  # noqa: PLC0415

    return check_endpoints(state["endpoints"], recorded_kafka_security(state))


def _process_status(p: ProcessRecord, restarts: dict[str, Any]) -> dict[str, Any]:
    last = restarts.get("last_restart_at")
    return {
        "pid": p.pid, "alive": p.alive(), "restarts": restarts.get("restarts", 0),
        "last_restart": datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds") if last else None,
        "last_exit": restarts.get("last_exit"), "log": p.log_path,
    }  # fmt: skip


@dev.command("down")
@home_option
@click.option(
    "--purge", is_flag=True, help="Also delete a data folder given with --data-dir (else kept to resume)."
)
def dev_down(home: Path, purge: bool) -> None:
    """Stop the recorded stack (its supervisor first, then every process, restarted ones included)
    and delete its temporary data. Harmless when nothing runs."""
    from deploy.stack import stop_recorded  # noqa: PLC0415 - it loads the engines' code

    stopped = stop_recorded(home, purge=purge)
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
    from deploy.demo_monitoring import DEMO_RULES  # noqa: PLC0415
    from deploy.stack import LocalStack, save_state  # noqa: PLC0415

    settings = _settings(home, brokers, shards, data_dir)
    stack = LocalStack(settings, tie_to_owner=not keep)
    stack.start()
    try:
        # The demo's liquidity rule is in force before its account exists (deploy/demo_monitoring.py).
        stack.start_ledger(api_port=free_port(), monitor=("--rules", str(DEMO_RULES)))
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

    config = ledger_config("admin", os.environ)
    created = asyncio.run(apply_acls(config.kafka_args(), ledger_acls(config.namespace, shards)))
    for rule in created:
        click.echo(f"created: {rule}")
    click.echo(f"ACLs in place ({len(created)} created)")


dev.add_command(dev_env)


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_exit)
    try:
        cli(standalone_mode=True)
    except LedgerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(TEMPFAIL if e.retriable else USAGE)  # deploy/exit_codes.py
