"""`ledger outbox parked`: the outbox rows Kafka refused for good, in every schema of the ledger."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import asyncpg
import click

from deploy.stack_env import ledger_config
from infra.config import LedgerConfig
from infra.outbox_parking import list_parked
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool


async def _all_parked(config: LedgerConfig) -> list[dict[str, Any]]:
    ns = config.namespace
    pool = await open_pool(config.database_url, ns.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(pool).load_partition_map()
    finally:
        await pool.close()
    places = [(config.shard_database_url(s), ns.shard_schema(s)) for s in sorted(set(pmap.shards))]
    places.append((config.database_url, ns.coordinator_schema))
    rows: list[dict[str, Any]] = []
    for dsn, schema in places:
        conn = await asyncpg.connect(dsn)
        try:
            rows += await list_parked(conn, schema)
        finally:
            await conn.close()
    return rows


@click.group("outbox")
def outbox() -> None:
    """The outboxes of the shards and the coordinators."""


@outbox.command("parked")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def parked_command(as_json: bool) -> None:
    """Rows Kafka refused for good (too large for their topic, topic gone, not authorized), moved
    aside so the rows behind them could go out: schema, seq (id), topic, size, error, parked_at."""
    rows = asyncio.run(_all_parked(ledger_config("reader", os.environ)))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row | {"parked_at": row["parked_at"].isoformat()}))
        return
    if not rows:
        click.echo("no parked outbox rows")
        return
    click.echo(f"{'schema':<24} {'seq':>10} {'topic':<40} {'size':>9}  {'parked_at':<25} error")
    for r in rows:
        click.echo(
            f"{r['schema']:<24} {r['seq']:>10} {r['topic']:<40} {r['size']:>9}  "
            f"{r['parked_at'].isoformat(timespec='seconds'):<25} {r['error']}"
        )
