"""The journal as source of truth: immutable, hash-chained, replayable, and batch == one-by-one."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.shard_messages import OpenAccount, PostTransfer, ShardCommand
from shards.adapters.postgres_shard_store import to_micros
from shards.domain.model import entry_hash
from tests.ledger_harness import (
    ReplyCollector,
    accounts_on,
    balances,
    fresh_config,
    new_id,
    running_shards,
    send,
)

LEDGER = str(Path(sys.executable).with_name("ledger"))


def _ledger_cli(config: LedgerConfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **config.as_env()}
    return subprocess.run([LEDGER, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


async def _populated(
    kafka_bootstrap: str, database_url: str, transfers: int = 50
) -> tuple[LedgerConfig, list[str]]:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 1)
    issuer, *users = accounts_on(pmap, 0, 4)
    commands: list[ShardCommand] = [OpenAccount(new_id(), issuer, "EUR", overdraft_limit=10**12)]
    commands += [OpenAccount(new_id(), u, "EUR") for u in users]
    commands += [
        PostTransfer(new_id(), new_id(), issuer, users[i % 3], 1000 + i, "EUR") for i in range(transfers)
    ]
    async with running_shards(config, [0]), ReplyCollector(config) as replies:
        await send(config, 0, commands)
        await replies.wait_for([c.message_id for c in commands])
    return config, [issuer, *users]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {s}.journal SET amount = amount + 1 WHERE seq = 1",
        "DELETE FROM {s}.journal WHERE seq = 1",
        "TRUNCATE {s}.journal",
    ],
)
async def test_the_database_refuses_to_change_the_journal(
    kafka_bootstrap: str, database_url: str, statement: str
) -> None:
    config, _ = await _populated(kafka_bootstrap, database_url, transfers=2)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement.format(s=config.namespace.shard_schema(0)))
    finally:
        await conn.close()


async def test_verify_finds_an_entry_altered_behind_the_workers_back(
    kafka_bootstrap: str, database_url: str
) -> None:
    config, _ = await _populated(kafka_bootstrap, database_url)
    intact = _ledger_cli(config, "verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")  # a superuser skipping triggers
        await conn.execute(
            f"UPDATE {config.namespace.shard_schema(0)}.journal SET amount = amount + 100 WHERE seq = 20"
        )
    finally:
        await conn.close()
    broken = _ledger_cli(config, "verify")
    assert broken.returncode == 1
    assert "BROKEN at seq 20: the entry's content does not match its hash" in broken.stdout


async def test_verify_finds_a_rewrite_that_recomputed_every_hash(
    kafka_bootstrap: str, database_url: str
) -> None:
    config, _ = await _populated(kafka_bootstrap, database_url)
    schema = config.namespace.shard_schema(0)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        rows = await conn.fetch(f"SELECT * FROM {schema}.journal ORDER BY seq")
        prev = bytes(rows[0]["prev_hash"])
        for r in rows:  # move 100 on seq 20 and 21 (still balanced), then re-chain everything
            amount = r["amount"] + (100 if r["seq"] == 21 else -100 if r["seq"] == 20 else 0)
            digest = entry_hash(
                prev,
                r["seq"],
                r["transfer_id"],
                r["leg"],
                r["kind"],
                r["account_id"],
                amount,
                r["currency"],
                r["message_id"],
                to_micros(r["created_at"]),
            )
            await conn.execute(
                f"UPDATE {schema}.journal SET amount = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
                amount,
                prev,
                digest,
                r["seq"],
            )
            prev = digest
        await conn.execute(f"UPDATE {schema}.worker_state SET journal_hash = $1", prev)
    finally:
        await conn.close()
    broken = _ledger_cli(config, "verify", "--json")
    assert broken.returncode == 1
    assert "differs from the chain head published for this seq" in broken.stdout


async def test_replay_matches_and_point_in_time_balances(kafka_bootstrap: str, database_url: str) -> None:
    config, (_issuer, alice, *_) = await _populated(kafka_bootstrap, database_url, transfers=30)
    clean = _ledger_cli(config, "replay")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "shard 0: 60 entries" in clean.stdout
    # alice got transfers 0, 3, 6, ...: as of seq 2 she had only the first one.
    now = json.loads(_ledger_cli(config, "balance", alice).stdout)
    assert now["posted"] == sum(1000 + i for i in range(0, 30, 3))
    early = json.loads(_ledger_cli(config, "balance", alice, "--at-seq", "2").stdout)
    assert early["posted"] == 1000
    conn = await asyncpg.connect(database_url)
    try:
        schema = config.namespace.shard_schema(0)
        await conn.execute(f"UPDATE {schema}.balances SET posted = posted + 1 WHERE account_id = $1", alice)
    finally:
        await conn.close()
    drifted = _ledger_cli(config, "replay")
    assert drifted.returncode == 1
    assert alice in drifted.stdout


async def test_a_hot_batch_ends_as_one_by_one_application(kafka_bootstrap: str, database_url: str) -> None:
    rng = random.Random(7)
    results = []
    for batch_max in (2000, 1):
        config = fresh_config(kafka_bootstrap, database_url)
        pmap = await init_ledger(config, 1)
        hot = accounts_on(pmap, 0, 3, prefix="hot")
        commands: list[ShardCommand] = [
            OpenAccount(
                f"00000000-0000-4000-8000-00000000000{i}", a, "EUR", overdraft_limit=5_000 if i == 0 else 0
            )
            for i, a in enumerate(hot)
        ]
        rng.seed(7)
        for i in range(1000):
            debit, credit = rng.sample(hot, 2)
            message_id, transfer_id = f"10000000-0000-4000-8000-{i:012d}", f"20000000-0000-4000-8000-{i:012d}"
            commands.append(PostTransfer(message_id, transfer_id, debit, credit, rng.randint(1, 4000), "EUR"))
        async with running_shards(config, [0], batch_max=batch_max), ReplyCollector(config) as replies:
            await send(config, 0, commands)
            got = await replies.wait_for([c.message_id for c in commands], within_s=180)
        outcomes = [(got[c.message_id].outcome, got[c.message_id].reason) for c in commands]
        results.append((outcomes, await balances(config, 0)))
    (batched_outcomes, batched), (single_outcomes, single) = results
    assert batched_outcomes == single_outcomes
    assert batched == single
    assert any(o == ("rejected", "insufficient_funds") for o in batched_outcomes), (
        "the workload must hit limits"
    )
