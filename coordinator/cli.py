"""`ledger coordinator run`, `ledger api run`, and the client commands: transfer, open-account."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from typing import Any, BinaryIO

import click
from aiohttp import web

from coordinator.api.auth import ApiTokens
from coordinator.api.status import make_app
from coordinator.bootstrap import RunSettings, run_coordinator
from coordinator.failpoints import Failpoints
from coordinator.query_cli import COMMANDS as QUERY_COMMANDS
from coordinator.saga.transfer_saga import SagaPolicy
from coordinator.service.coordinator import CoordinatorSettings
from deploy.ledger_client import LedgerClient
from deploy.stack_env import ledger_config
from infra.config import LedgerConfig
from infra.metrics import METRICS_PORT_HELP, metrics_endpoint, setup_metrics
from infra.processes import run_until_signalled
from infra.tracing import setup_tracing
from schemas.public import (
    MAX_BATCH_PAYLOAD_BYTES,
    MAX_LEGS,
    MAX_PENDING_TIMEOUT_MS,
    BatchLeg,
    OpenAccountRequest,
    PostPendingTransfer,
    TransferBatch,
    TransferCommand,
    TransferFunds,
    VoidPendingTransfer,
    encode_public,
)

# Exit codes of `--wait`: the transfer's outcome, or 75 (EX_TEMPFAIL) when no result came in time.
# A hold in place (pending) and a void that released it are what was asked for: 0.
EXIT_CODES = {
    "completed": 0, "done": 0, "pending": 0, "voided": 0, "rejected": 3, "compensated": 4, "expired": 5,
}  # fmt: skip
EXPIRED_EXIT = 5  # also for a post or void that lost to the expiry (rejected, pending_transfer_expired)


def _config() -> LedgerConfig:
    return LedgerConfig.from_env(os.environ)


def _config_as(role: str) -> LedgerConfig:
    """A client command's ledger: the environment's, or the local stack's as `role`."""
    return ledger_config(role, os.environ)


@click.group("coordinator")
def coordinator_group() -> None:
    """The saga coordinator."""


@coordinator_group.command("run")
@click.option("--batch-max", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              envvar="LEDGER_COORDINATOR_BATCH_MAX", help="Records per transaction, at most.")  # fmt: skip
@click.option("--max-transfer-amount", type=click.IntRange(1), default=10**12, show_default=True,
              envvar="LEDGER_MAX_TRANSFER_AMOUNT", help="Per-transfer limit, in minor units.")  # fmt: skip
@click.option("--issuance-account", "issuance", multiple=True, envvar="LEDGER_ISSUANCE_ACCOUNTS",
              help="May be opened with an overdraft: where money enters (one per currency, say). "
                   "Repeatable; LEDGER_ISSUANCE_ACCOUNTS lists them comma- or space-separated.")  # fmt: skip
@click.option("--retry-after-ms", type=click.IntRange(10), default=SagaPolicy.base_backoff_ms,
              show_default=True, envvar="LEDGER_RETRY_AFTER_MS",
              help="A step's command unanswered this long is sent again (the wait doubles).")  # fmt: skip
@click.option("--instance-id", envvar="LEDGER_COORDINATOR_INSTANCE_ID",
              help="A name unique to this instance and stable across its restarts (a pod name): it "
                   "then keeps its partitions over a restart instead of rebalancing the group.")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="LEDGER_METRICS_PORT",
              help=METRICS_PORT_HELP)  # fmt: skip
def coordinator_run(
    batch_max: int,
    max_transfer_amount: int,
    issuance: tuple[str, ...],
    retry_after_ms: int,
    instance_id: str | None,
    metrics_port: int | None,
) -> None:
    """Drive transfers and sagas until SIGTERM. Run several for availability (one consumer group)."""
    config = _config()
    setup_tracing("ledger-coordinator", os.environ)
    setup_metrics("ledger-coordinator", metrics_endpoint(metrics_port, os.environ), os.environ)
    settings = CoordinatorSettings(
        max_transfer_amount=max_transfer_amount, issuance_accounts=_account_list(issuance),
        policy=SagaPolicy(base_backoff_ms=retry_after_ms),
    )  # fmt: skip
    run = RunSettings(
        batch_max=batch_max, instance_id=instance_id,
        failpoints=Failpoints.parse(os.environ.get("LEDGER_FAILPOINTS")),
    )  # fmt: skip
    run_until_signalled(lambda stop: run_coordinator(config, settings, stop, run))


def _account_list(values: tuple[str, ...]) -> frozenset[str]:
    """Account ids from repeated options or the environment: click splits an envvar of a multiple
    option on whitespace only, so commas are split here (no account id holds either)."""
    return frozenset(a for v in values for a in re.split(r"[,\s]+", v) if a)


@click.group("api")
def api_group() -> None:
    """The status API."""


class _TokenList(click.ParamType):
    """A `--token`; from the environment, a comma-separated list of them."""

    name = "token"

    def split_envvar_value(self, rv: str) -> list[str]:
        return [t.strip() for t in rv.split(",") if t.strip()]


@api_group.command("run")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="LEDGER_API_HOST")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8080, show_default=True, envvar="LEDGER_API_PORT"
)
@click.option("--token", "tokens", type=_TokenList(), multiple=True, envvar="LEDGER_API_TOKENS",
              help="A bearer token clients must send (repeatable; several rotate without downtime). "
                   "Prefer LEDGER_API_TOKENS (comma-separated): arguments show in ps. Required.")  # fmt: skip
def api_run(host: str, port: int, tokens: tuple[str, ...]) -> None:
    """Serve GET /transfers/{id}, /transfers?state=, /accounts/{id}, /healthz until SIGTERM.

    Every route but /healthz needs `Authorization: Bearer <token>`; without any token configured
    the API does not start (there is no unauthenticated mode).
    """
    access = ApiTokens(tokens)  # refuses before anything connects
    config = _config()

    async def serve(stop: asyncio.Event) -> None:
        runner = web.AppRunner(await make_app(config, access))
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        click.echo(f"status API on http://{host}:{port}", err=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    run_until_signalled(serve)


async def _produce_and_wait(
    config: LedgerConfig,
    topic: str,
    key: str,
    payload: bytes,
    result_id: str,
    wait_s: float | None,
    *,
    final: bool = True,
) -> dict[str, Any] | None:
    """Produce one command; with `wait_s`, return the first result (with `final`, the first final
    one: not a hold's `pending`) for `result_id` (its transfer or command id), or None when none
    came in time. The client reads results from before the command is sent, and drops a duplicate
    result (the same message_id again)."""
    async with LedgerClient(
        config.kafka_args(), config.namespace, since=None if wait_s is None else "now"
    ) as client:
        await client.send_raw(topic, [(key.encode(), payload)])
        return None if wait_s is None else await client.wait_one(result_id, wait_s, final=final)


def _finish(result: dict[str, Any] | None, what: str) -> None:
    if result is None:
        click.echo(f"no result for {what} yet (it may still complete)", err=True)
        sys.exit(75)
    click.echo(json.dumps(result, indent=2))
    if result.get("reason") == "pending_transfer_expired":
        sys.exit(EXPIRED_EXIT)
    sys.exit(EXIT_CODES.get(str(result.get("state", result.get("outcome"))), 1))


_DURATION = re.compile(r"(\d{1,10})(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class _Duration(click.ParamType):
    """A hold's duration: 500ms, 30s, 15m, 2h or 7d (at most 30 days), as milliseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        match = _DURATION.fullmatch(str(value).strip())
        ms = int(match[1]) * _UNIT_MS[match[2]] if match else 0
        if not 1 <= ms <= MAX_PENDING_TIMEOUT_MS:
            self.fail(f"{value!r} is not a duration from 1ms to 30d (e.g. 30s, 15m, 2h, 7d)", param, ctx)
        return ms


def _send_transfer(command: TransferCommand, wait: bool, timeout: float, *, final: bool = True) -> None:
    """Produce a transfer command as the client; print what was sent, or (`--wait`) its result."""
    config = _config_as("client")
    tid = command.transfer_id
    payload = encode_public(command)
    wait_s = timeout if wait else None
    result = asyncio.run(
        _produce_and_wait(config, config.namespace.transfers, tid, payload, tid, wait_s, final=final)
    )
    if not wait:
        click.echo(json.dumps({"transfer_id": tid, "sent": True}))
        return
    _finish(result, f"transfer {tid}")


_ID_OPTION = click.option(
    "--id",
    "transfer_id",
    type=click.UUID,
    default=None,
    help="This command's transfer id (UUID); new when omitted.",
)
_WAIT_OPTION = click.option(
    "--wait", is_flag=True, help="Wait for the result and exit with its outcome (see `ledger --help`)."
)
_TIMEOUT_OPTION = click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait with --wait."
)


@click.command("transfer")
@click.option("--from", "debit", help="Debit account.")
@click.option("--to", "credit", help="Credit account.")
@click.option("--amount", type=click.IntRange(1), help="Minor units (cents): an integer.")
@click.option("--currency", help="ISO 4217 code, e.g. EUR.")
@click.option("--linked", "legs_file", type=click.File("rb"), default=None,
              help="Instead of --from/--to/--amount/--currency: a JSON list of legs (each with "
                   "debit_account, credit_account, amount, currency, optional transfer_id), sent as one "
                   "linked batch: all legs or none.")  # fmt: skip
@click.option("--pending", "pending_ms", type=_Duration(), default=None,
              help="Hold the amount this long (30s, 15m, 2h, 7d) for `ledger post` or `ledger void`; "
                   "unresolved by then, it expires.")  # fmt: skip
@_ID_OPTION
@_WAIT_OPTION
@_TIMEOUT_OPTION
def transfer_command(
    debit: str | None,
    credit: str | None,
    amount: int | None,
    currency: str | None,
    legs_file: BinaryIO | None,
    pending_ms: int | None,
    transfer_id: uuid.UUID | None,
    wait: bool,
    timeout: float,
) -> None:
    """Put a transfer (or with --linked a linked batch) on ledger.transfers (exit 0 completed, or
    with --pending the hold in place; 3 rejected, 4 compensated)."""
    tid = str(transfer_id or uuid.uuid4())
    one = (debit, credit, amount, currency)
    command: TransferCommand
    if legs_file is not None:
        if any(v is not None for v in one):
            raise click.UsageError(
                "--linked takes its legs from the file: no --from, --to, --amount or --currency"
            )
        command = TransferBatch(tid, _legs(legs_file), True, pending_timeout_ms=pending_ms)
    elif debit is None or credit is None or amount is None or currency is None:
        raise click.UsageError("--from, --to, --amount and --currency are required (or --linked FILE)")
    else:
        command = TransferFunds(tid, debit, credit, amount, currency, {}, pending_ms)
    _send_transfer(command, wait, timeout, final=pending_ms is None)


_LEG_KEYS = {"debit_account", "credit_account", "amount", "currency"}


def _legs(source: BinaryIO) -> tuple[BatchLeg, ...]:
    """The legs of a --linked file, read with the contract's bound; a usage error says what is wrong
    (the ledger checks every field again)."""
    raw = source.read(MAX_BATCH_PAYLOAD_BYTES + 1)
    if len(raw) > MAX_BATCH_PAYLOAD_BYTES:
        raise click.UsageError(f"--linked: the file is over {MAX_BATCH_PAYLOAD_BYTES} bytes")
    try:
        listed = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise click.UsageError(f"--linked: not JSON: {e}") from None
    if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_LEGS:
        raise click.UsageError(f"--linked: a JSON list of 1 to {MAX_LEGS} legs")
    legs = []
    for i, leg in enumerate(listed):
        if not isinstance(leg, dict) or not _LEG_KEYS <= leg.keys() <= _LEG_KEYS | {"transfer_id"}:
            raise click.UsageError(
                f"--linked: leg {i} needs exactly {sorted(_LEG_KEYS)} (and may have transfer_id)"
            )
        legs.append(
            BatchLeg(
                str(leg.get("transfer_id") or uuid.uuid4()),
                leg["debit_account"],
                leg["credit_account"],
                leg["amount"],
                leg["currency"],
            )
        )
    return tuple(legs)


@click.command("post")
@click.argument("pending_id", type=click.UUID)
@click.option("--amount", type=click.IntRange(1), default=None,
              help="Post this much (at most the hold: the rest is released). Default: all.")  # fmt: skip
@_ID_OPTION
@_WAIT_OPTION
@_TIMEOUT_OPTION
def post_command(
    pending_id: uuid.UUID, amount: int | None, transfer_id: uuid.UUID | None, wait: bool, timeout: float
) -> None:
    """Post a pending transfer's hold, in full or for less (exit 0 completed, 3 rejected, 5 expired)."""
    command = PostPendingTransfer(str(transfer_id or uuid.uuid4()), str(pending_id), amount)
    _send_transfer(command, wait, timeout)


@click.command("void")
@click.argument("pending_id", type=click.UUID)
@_ID_OPTION
@_WAIT_OPTION
@_TIMEOUT_OPTION
def void_command(pending_id: uuid.UUID, transfer_id: uuid.UUID | None, wait: bool, timeout: float) -> None:
    """Release a pending transfer's hold (exit 0 voided, 3 rejected, 5 expired)."""
    _send_transfer(VoidPendingTransfer(str(transfer_id or uuid.uuid4()), str(pending_id)), wait, timeout)


@click.command("open-account")
@click.argument("account_id")
@click.option("--currency", required=True)
@click.option("--overdraft-limit", type=click.IntRange(0), default=0, show_default=True)
@click.option("--timeout", type=float, default=60.0, show_default=True)
def open_account_command(account_id: str, currency: str, overdraft_limit: int, timeout: float) -> None:
    """Open an account (through ledger.account-commands) and wait for the answer."""
    config = _config_as("operator")
    command_id = str(uuid.uuid4())
    payload = encode_public(OpenAccountRequest(command_id, account_id, currency, overdraft_limit, {}))
    topic = config.namespace.account_commands
    _finish(
        asyncio.run(_produce_and_wait(config, topic, account_id, payload, command_id, timeout)),
        f"account {account_id}",
    )


# With the read-only ones, for callers that register every command of the package at once.
COMMANDS = (
    coordinator_group, api_group, transfer_command, post_command, void_command, open_account_command,
    *QUERY_COMMANDS,
)  # fmt: skip
