"""`ledger replay`, `ledger verify`, `ledger balance`: read-only, so they load no Kafka client."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from dataclasses import asdict
from typing import Any

import asyncpg
import click

from deploy.exit_codes import NOT_FOUND
from deploy.stack_env import ledger_config
from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool
from schemas.partitioning import PartitionMap
from shards.adapters.postgres_audit import verify_ledger
from shards.service.audit import (
    ReplayReport,
    account_balance,
    balance_at,
    replay_shard,
)


def _config_as(role: str) -> LedgerConfig:
    """The environment's ledger, or the local stack's as `role`."""
    return ledger_config(role, os.environ)


async def _shard_pool(config: LedgerConfig, shard: int) -> asyncpg.Pool:
    return await open_pool(config.shard_database_url(shard), config.namespace.shard_schema(shard), max_size=1)


async def _control(config: LedgerConfig) -> tuple[PartitionMap, dict[int, list[tuple[int, bytes]]]]:
    """The current partition map and every shard's published chain heads."""
    pool = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        control = PostgresControl(pool)
        pmap = await control.load_partition_map()
        return pmap, {s: await control.checkpoints(s) for s in sorted(set(pmap.shards))}
    finally:
        await pool.close()


async def _replay_all(config: LedgerConfig, shard_ids: tuple[int, ...]) -> list[ReplayReport]:
    pmap, _ = await _control(config)
    reports = []
    for shard in shard_ids or sorted(set(pmap.shards)):
        pool = await _shard_pool(config, shard)
        try:
            reports.append(await replay_shard(pool, shard))
        finally:
            await pool.close()
    return reports


async def _balance(
    config: LedgerConfig, account_id: str, seq: int | None, at: dt.datetime | None
) -> dict[str, Any] | None:
    """The balance, or None when the account does not exist."""
    pmap, _ = await _control(config)
    shard = pmap.shard_for(account_id)
    pool = await _shard_pool(config, shard)
    try:
        current = await account_balance(pool, account_id)  # reserved and available are "now" only
        if current is None:
            return None
        from_journal = asdict(await balance_at(pool, account_id, seq=seq, at=at)) | {"shard": shard}
        if seq is not None or at is not None:
            return from_journal
        return from_journal | current
    finally:
        await pool.close()


@click.command("replay")
@click.option("--shard", "shard_ids", type=click.IntRange(0, 1023), multiple=True,
              help="Shard to replay (default: all).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def replay_command(shard_ids: tuple[int, ...], as_json: bool) -> None:
    """Rebuild balances from the journal and report any difference from the cached ones (exit 1)."""
    reports = asyncio.run(_replay_all(_config_as("reader"), shard_ids))
    if as_json:
        click.echo(json.dumps([asdict(r) | {"ok": r.ok} for r in reports], indent=2, default=str))
    else:
        for r in reports:
            verdict = (
                "ok" if r.ok else f"{len(r.differences)} differences, unbalanced {r.unbalanced_currencies}"
            )
            click.echo(f"shard {r.shard}: {r.entries} entries, {r.accounts} accounts: {verdict}")
            for d in r.differences[:20]:
                click.echo(f"  {d.account_id}: cached {d.cached}, journal says {d.replayed}")
    sys.exit(0 if all(r.ok for r in reports) else 1)


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(as_json: bool) -> None:
    """Recompute every shard's journal hash chain; report the first broken link (exit 1)."""
    reports = asyncio.run(verify_ledger(_config_as("reader")))
    if as_json:
        click.echo(json.dumps([asdict(r) | {"ok": r.ok} for r in reports], indent=2))
    else:
        for r in reports:
            where = "intact" if r.ok else f"BROKEN at seq {r.first_broken_seq}: {r.problem}"
            click.echo(
                f"shard {r.shard}: {r.entries} entries, {r.checkpoints_checked} published heads: {where}"
            )
    sys.exit(0 if all(r.ok for r in reports) else 1)


@click.command("balance")
@click.argument("account_id")
@click.option("--at-seq", type=click.IntRange(1), help="As of this journal seq of the account's shard.")
@click.option(
    "--at",
    "at_time",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="As of this time (UTC unless an offset is given).",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Then print each change from ledger.balances, a JSON line each, until Ctrl-C.",
)
@click.option("--changes", type=click.IntRange(1), help="With --follow: stop after this many changes.")
def balance_command(
    account_id: str, at_seq: int | None, at_time: dt.datetime | None, follow: bool, changes: int | None
) -> None:
    """An account's balance: posted (from its journal), pending debits (held, also as `reserved`),
    pending credits (not yet spendable), available and currency; or the posted balance as of a
    journal seq or a time (exit 3 when there is no such account). `--follow` then prints every
    change the account's shard publishes (as the client principal: read access to the topic)."""
    when = at_time.replace(tzinfo=at_time.tzinfo or dt.UTC) if at_time else None
    if follow:
        from shards.balance_follow_cli import follow_balance  # noqa: PLC0415 - Kafka only when following

        asyncio.run(follow_balance(_config_as("client"), account_id, changes, _balance))
        return
    found = asyncio.run(_balance(_config_as("reader"), account_id, at_seq, when))
    if found is None:
        click.echo(f"no account {account_id} (account_not_found)", err=True)
        sys.exit(NOT_FOUND)
    click.echo(json.dumps(found))


COMMANDS = (replay_command, verify_command, balance_command)
