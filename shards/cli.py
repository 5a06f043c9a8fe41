"""`ledger init`, `ledger shard run|relay`, `ledger replay`, `ledger verify`, `ledger balance`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
import click

from deploy.config import LedgerConfig
from deploy.ledger_init import init_ledger
from deploy.postgres_roles import parse_passwords, read_passwords
from deploy.tracing import setup_tracing
from schemas.errors import LedgerError
from schemas.message_auth import MessageAuthenticator, TopicSigner
from shards.adapters.outbox_relay import OutboxRelay, idempotent_producer
from shards.adapters.postgres_control import PostgresControl
from shards.bootstrap import open_pool, run_shard
from shards.domain.partitioning import PartitionMap
from shards.service.audit import (
    ChainReport,
    ReplayReport,
    account_balance,
    balance_at,
    replay_shard,
    verify_chain,
)
from shards.service.worker import WorkerSettings

log = logging.getLogger("ledger")


def _final(error: BaseException) -> bool:
    """Whether `error` (or any error in a task group's) says retrying is pointless."""
    if isinstance(error, BaseExceptionGroup):
        return any(_final(e) for e in error.exceptions)
    return isinstance(error, LedgerError) and not error.retriable


def _config() -> LedgerConfig:
    return LedgerConfig.from_env(os.environ)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)`; SIGTERM or Ctrl-C sets `stop`, so the work in hand is finished cleanly.

    This is a process's outermost loop: when `main` fails it is started again, from fresh
    connections, after a growing pause. A database restart or a broker lost mid-call can fail it
    in places no inner retry covers, and the process must outlive those. Only an error that says
    it is not worth retrying (a newer worker fenced this one out, bad configuration) ends it.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pause = 0.5
        while True:
            try:
                await main(stop)
                return
            except Exception as e:
                if stop.is_set() or _final(e):
                    raise
                log.exception("stopped by %s; starting again in %.1fs", type(e).__name__, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                return
            pause = min(pause * 2, 30.0)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(runner())


@click.command("init")
@click.option("--shards", type=click.IntRange(1, 1024), required=True, envvar="LEDGER_SHARDS",
              help="How many shards the ledger has. [env: LEDGER_SHARDS]")  # fmt: skip
@click.option("--db-roles", "db_roles", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="LEDGER_DB_ROLES_FILE",
              help="JSON {role: password}: create (or re-password) these PostgreSQL roles (or JSON "
                   "text in LEDGER_DB_ROLES). Existing roles are granted again either way. "
                   "[env: LEDGER_DB_ROLES_FILE]")  # fmt: skip
def init_command(shards: int, db_roles: Path | None) -> None:
    """Create the control schema, the partition map, every shard schema and every topic, then
    grant each process's PostgreSQL role exactly its rights (README, Security).

    Safe to run again: what exists is checked and kept.
    """
    # The variable lets docker-compose pass passwords it takes from the operator's shell.
    roles_json = os.environ.get("LEDGER_DB_ROLES")
    passwords = read_passwords(db_roles) if db_roles else parse_passwords(roles_json) if roles_json else None
    pmap = asyncio.run(init_ledger(_config(), shards, passwords))
    click.echo(f"ledger ready: {pmap.shard_count} shards, partition map v{pmap.version}")


@click.group("shard")
def shard_group() -> None:
    """Shard worker processes."""


@shard_group.command("run")
@click.option("--shard", "shard_ids", type=click.IntRange(0, 1023), multiple=True, required=True,
              help="Shard to run; repeat to run several in one process.")  # fmt: skip
@click.option("--batch-max", type=click.IntRange(1, 100_000), default=5000, show_default=True,
              envvar="LEDGER_BATCH_MAX",
              help="Commands per transaction, at most. [env: LEDGER_BATCH_MAX]")  # fmt: skip
@click.option("--relay/--no-relay", default=True, show_default=True,
              help="Also publish the outbox (or leave it to `ledger shard relay`).")  # fmt: skip
def shard_run(shard_ids: tuple[int, ...], batch_max: int, relay: bool) -> None:
    """Apply commands from the shards' topics until SIGTERM (which finishes the current batch)."""
    config = _config()
    MessageAuthenticator(config.message_keys)  # no key: refused here, before anything starts
    setup_tracing("ledger-shard", os.environ)

    async def main(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            for shard in shard_ids:
                tasks.create_task(
                    run_shard(config, WorkerSettings(shard, batch_max=batch_max), stop, with_relay=relay)
                )

    run_until_signalled(main)


@shard_group.command("relay")
@click.option("--shard", type=click.IntRange(0, 1023), required=True)
def shard_relay(shard: int) -> None:
    """Publish one shard's outbox to Kafka until SIGTERM (when the worker runs with --no-relay)."""
    config = _config()
    schema = config.namespace.shard_schema(shard)
    signer = TopicSigner(MessageAuthenticator(config.message_keys), config.namespace.is_internal)

    async def main(stop: asyncio.Event) -> None:
        pool = await open_pool(config.shard_database_url(shard), schema, max_size=2)
        producer = idempotent_producer(config.kafka_args(), max_message_bytes=config.max_message_bytes)
        await producer.start()
        try:
            await OutboxRelay(pool, producer, lock_name=f"relay:{schema}", signer=signer).run(stop)
        finally:
            await producer.stop()
            await pool.close()

    run_until_signalled(main)


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


async def _verify_all(config: LedgerConfig) -> list[ChainReport]:
    pmap, checkpoints = await _control(config)
    reports = []
    for shard in sorted(set(pmap.shards)):
        pool = await _shard_pool(config, shard)
        try:
            reports.append(await verify_chain(pool, shard, checkpoints[shard]))
        finally:
            await pool.close()
    return reports


async def _balance(
    config: LedgerConfig, account_id: str, seq: int | None, at: dt.datetime | None
) -> dict[str, Any]:
    pmap, _ = await _control(config)
    shard = pmap.shard_for(account_id)
    pool = await _shard_pool(config, shard)
    try:
        from_journal = asdict(await balance_at(pool, account_id, seq=seq, at=at)) | {"shard": shard}
        if seq is not None or at is not None:
            return from_journal
        current = await account_balance(pool, account_id)  # reserved and available are "now" only
        return from_journal | (current or {"error": "account_not_found"})
    finally:
        await pool.close()


@click.command("replay")
@click.option("--shard", "shard_ids", type=click.IntRange(0, 1023), multiple=True,
              help="Shard to replay (default: all).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def replay_command(shard_ids: tuple[int, ...], as_json: bool) -> None:
    """Rebuild balances from the journal and report any difference from the cached ones (exit 1)."""
    reports = asyncio.run(_replay_all(_config(), shard_ids))
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
    reports = asyncio.run(_verify_all(_config()))
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
@click.option("--at", "at_time", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
              help="As of this time (UTC unless an offset is given).")  # fmt: skip
def balance_command(account_id: str, at_seq: int | None, at_time: dt.datetime | None) -> None:
    """An account's balance: posted (from its journal), reserved, available and currency; or the
    posted balance as of a journal seq or a time."""
    when = at_time.replace(tzinfo=at_time.tzinfo or dt.UTC) if at_time else None
    click.echo(json.dumps(asyncio.run(_balance(_config(), account_id, at_seq, when))))


COMMANDS = (init_command, shard_group, replay_command, verify_command, balance_command)
