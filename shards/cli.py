"""`ledger init`, `ledger shard run|relay` (the read-only commands are in shards/audit_cli.py)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import click

from deploy.ledger_init import init_ledger
from deploy.postgres_roles import parse_passwords, read_passwords
from deploy.stack_env import ledger_config
from infra.config import LedgerConfig
from infra.metrics import METRICS_PORT_HELP, metrics_endpoint, setup_metrics
from infra.outbox_relay import OutboxRelay, idempotent_producer
from infra.postgres_pool import open_pool
from infra.processes import run_until_signalled
from infra.tracing import setup_tracing
from schemas.message_auth import MessageAuthenticator, TopicSigner
from shards.audit_cli import COMMANDS as AUDIT_COMMANDS
from shards.bootstrap import run_shard
from shards.service.worker import WorkerSettings

log = logging.getLogger("ledger")


def _config() -> LedgerConfig:
    return LedgerConfig.from_env(os.environ)


def _config_as(role: str) -> LedgerConfig:
    """An operator command's ledger: the environment's, or the local stack's as `role`."""
    return ledger_config(role, os.environ)


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
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="LEDGER_METRICS_PORT",
              help=METRICS_PORT_HELP)  # fmt: skip
@click.option("--balances/--no-balances", default=True, show_default=True, envvar="LEDGER_PUBLISH_BALANCES",
              help="Publish changed balances (ledger.balances). [env: LEDGER_PUBLISH_BALANCES]")  # fmt: skip
def shard_run(
    shard_ids: tuple[int, ...], batch_max: int, relay: bool, metrics_port: int | None, balances: bool
) -> None:
    """Apply commands from the shards' topics until SIGTERM (which finishes the current batch)."""
    config = _config()
    MessageAuthenticator(config.message_keys)  # no key: refused here, before anything starts
    setup_tracing("ledger-shard", os.environ)
    setup_metrics("ledger-shard", metrics_endpoint(metrics_port, os.environ), os.environ)

    def settings(shard: int) -> WorkerSettings:
        return WorkerSettings(shard, batch_max=batch_max, publish_balances=balances)

    async def main(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            for shard in shard_ids:
                tasks.create_task(run_shard(config, settings(shard), stop, with_relay=relay))

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
