"""`ledger outbox parked` lists the parked rows of every shard schema and the coordinator's."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from click.testing import CliRunner

from deploy.cli import cli
from deploy.ledger_init import init_ledger
from tests.ledger_harness import fresh_config


async def test_parked_rows_of_every_schema_are_listed(kafka_bootstrap: str, database_url: str) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    ns = config.namespace
    runner = CliRunner(env=config.as_env())  # in a thread: the command runs its own event loop
    empty = await asyncio.to_thread(runner.invoke, cli, ["outbox", "parked"])
    assert (empty.exit_code, empty.output.strip()) == (0, "no parked outbox rows"), repr(empty.exception)

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f'INSERT INTO "{ns.shard_schema(1)}".outbox_parked (seq, topic, payload, created_at, error) '
            "VALUES (7, 'replies', $1, now(), 'MessageSizeTooLargeError')",
            b"x" * 1234,
        )
        await conn.execute(
            f'INSERT INTO "{ns.coordinator_schema}".outbox_parked (id, topic, payload, created_at, error) '
            "VALUES (42, 'gone', 'p', now(), 'UnknownTopicOrPartitionError')"
        )
    finally:
        await conn.close()
    listed = await asyncio.to_thread(runner.invoke, cli, ["outbox", "parked", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["schema"], r["seq"], r["topic"], r["size"], r["error"]) for r in rows] == [
        (ns.shard_schema(1), 7, "replies", 1234, "MessageSizeTooLargeError"),
        (ns.coordinator_schema, 42, "gone", 1, "UnknownTopicOrPartitionError"),
    ]
    assert all(r["parked_at"] for r in rows)
    table = await asyncio.to_thread(runner.invoke, cli, ["outbox", "parked"])
    assert table.exit_code == 0
    assert "MessageSizeTooLargeError" in table.output
    assert ns.coordinator_schema in table.output
