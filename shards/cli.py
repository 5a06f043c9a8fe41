"""`ledger init`, `ledger shard run|relay` (the read-only commands are in shards/audit_cli.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import click

from deploy import event_loop
from deploy.config import LedgerConfig
from deploy.ledger_init import init_ledger
from deploy.postgres_roles import parse_passwords, read_passwords
from deploy.stack_env import ledger_config
from deploy.tracing import setup_tracing
from schemas.errors import LedgerError
from schemas.message_auth import MessageAuthenticator, TopicSigner
from shards.adapters.outbox_relay import OutboxRelay, idempotent_producer
from shards.audit_cli import COMMANDS as AUDIT_COMMANDS
from shards.bootstrap import open_pool, run_shard
from shards.service.worker import WorkerSettings

log = logging.getLogger("ledger")


def _final(error: BaseException) -> bool:
    """Whether `error` (or any error in a task group's) says retrying is pointless."""
    if isinstance(error, BaseExceptionGroup):
        return any(_final(e) for e in error.exceptions)
    return isinstance(error, LedgerError) and not error.retriable


def _config() -> LedgerConfig:
    return LedgerConfig.from_env(os.environ)


def _config_as(role: str) -> LedgerConfig:
    """An operator command's ledger: the environment's, or the local stack's as `role`."""
    return ledger_config(role, os.environ)


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
    event_loop.run(runner(), os.environ)


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
    pmap = asyncio.run(init_ledger(_config_as("admin"), shards, passwords))
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


# With the read-only ones, for callers that register every command of the package at once.
COMMANDS = (init_command, shard_group, *AUDIT_COMMANDS)
