"""`ledger status`, `ledger transfers`, `ledger reconcile`: read-only, so they load no Kafka client."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from typing import Any

import click

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.adapters.postgres_status import STATES, list_transfers, transfer_status
from coordinator.saga.reconciliation import Violation, reconcile
from deploy.exit_codes import NOT_FOUND
from deploy.stack_env import ledger_config
from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool


def _config_as(role: str) -> LedgerConfig:
    """The environment's ledger, or the local stack's as `role`."""
    return ledger_config(role, os.environ)


async def _query_status(config: LedgerConfig, transfer_id: str | None, state: str, limit: int) -> Any:
    pool = await open_pool(config.database_url, config.namespace.coordinator_schema, max_size=1)
    try:
        if transfer_id is not None:
            return await transfer_status(pool, transfer_id)
        return await list_transfers(pool, state, limit)
    finally:
        await pool.close()


@click.command("status")
@click.argument("transfer_id")
def status_command(transfer_id: str) -> None:
    """Where a transfer stands: state, reason, and each saga step (exit 3 when unknown)."""
    found = asyncio.run(_query_status(_config_as("reader"), transfer_id, "", 0))
    if found is None:
        click.echo(f"no transfer {transfer_id}", err=True)
        sys.exit(NOT_FOUND)
    click.echo(json.dumps(found, indent=2, default=str))


@click.command("transfers")
@click.option("--state", type=click.Choice(sorted(STATES)), default="in_flight", show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def transfers_command(state: str, limit: int) -> None:
    """List transfers in a state; `needs_attention` lists parked sagas."""
    click.echo(
        json.dumps(
            asyncio.run(_query_status(_config_as("reader"), None, state, limit)), indent=2, default=str
        )
    )


async def _reconcile(config: LedgerConfig) -> tuple[list[Violation], int, int, bool]:
    pool = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(pool).load_partition_map()
    finally:
        await pool.close()
    sagas, views, one_snapshot = await read_views(config, sorted(set(pmap.shards)))
    return reconcile(sagas, views), len(sagas), len(views), one_snapshot


@click.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reconcile_command(as_json: bool) -> None:
    """Check, without stopping anything, that every shard's journal agrees with every saga (exit 1)."""
    violations, sagas, shards, one_snapshot = asyncio.run(_reconcile(_config_as("reader")))
    if as_json:
        report = {
            "sagas": sagas,
            "shards": shards,
            "one_snapshot": one_snapshot,
            "ok": not violations,
            "violations": [asdict(v) for v in violations],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"reconciled {sagas} sagas across {shards} shards: {len(violations)} violations")
        for v in violations[:50]:
            click.echo(f"  {v.check}: {v.subject}: {v.detail}")
    sys.exit(1 if violations else 0)


COMMANDS = (status_command, transfers_command, reconcile_command)
