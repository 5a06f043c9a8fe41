"""SIGKILL a shard worker while it processes a stream, restart it: exactly one effect per command."""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
from pathlib import Path

import asyncpg

from deploy.ledger_init import init_ledger
from deploy.processes import ProcessRecord, spawn
from infra.config import LedgerConfig
from schemas.partitioning import PartitionMap
from schemas.shard_messages import (
    CommitReservation,
    OpenAccount,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    ShardCommand,
)
from shards.domain.book import ShardBook
from shards.domain.model import GENESIS_HASH
from tests.ledger_harness import ReplyCollector, accounts_on, balances, fresh_config, new_id, send

LEDGER = str(Path(sys.executable).with_name("ledger"))


def _workload(pmap: PartitionMap, rng: random.Random, transfers: int) -> list[ShardCommand]:
    issuer, *users = accounts_on(pmap, 0, 9)
    commands: list[ShardCommand] = [OpenAccount(new_id(), issuer, "EUR", overdraft_limit=10**12)]
    commands += [OpenAccount(new_id(), u, "EUR") for u in users]
    for _ in range(transfers):
        roll = rng.random()
        if roll < 0.3:
            commands.append(
                PostTransfer(new_id(), new_id(), issuer, rng.choice(users), rng.randint(1, 9999), "EUR")
            )
        elif roll < 0.8:
            debit, credit = rng.sample(users, 2)
            commands.append(PostTransfer(new_id(), new_id(), debit, credit, rng.randint(1, 9999), "EUR"))
        else:
            transfer, account = new_id(), rng.choice(users)
            commands.append(ReserveFunds(new_id(), transfer, account, rng.randint(1, 5000), "EUR"))
            end = CommitReservation if rng.random() < 0.5 else ReleaseReservation
            commands.append(end(new_id(), transfer, account))
    return commands


def _start_worker(config: LedgerConfig, log: Path) -> ProcessRecord:
    env = {**os.environ, **config.as_env()}
    argv = [LEDGER, "shard", "run", "--shard", "0", "--batch-max", "40"]
    return spawn("shard-0", argv, log, tie_to_owner=True, env=env)


async def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 1)
    commands = _workload(pmap, random.Random(11), transfers=3000)
    ids = [c.message_id for c in commands]
    log = Path(tempfile.mkdtemp(prefix="ledger-crash-")) / "worker.log"
    await send(config, 0, commands)

    kills = 0
    async with ReplyCollector(config) as replies:
        for fraction in (0.2, 0.5):
            worker = _start_worker(config, log)
            try:
                while len(replies.replies) < fraction * len(ids):
                    assert worker.alive(), worker.log_tail()
                    await replies.poll(timeout_ms=50)
            finally:
                worker.stop(signal.SIGKILL)
            assert len(replies.replies) < len(ids), "the kill must land mid-stream"
            kills += 1
        worker = _start_worker(config, log)
        try:
            got = await replies.wait_for(ids, within_s=180)
        finally:
            exit_code = worker.stop(signal.SIGTERM)
    assert kills == 2
    assert exit_code == 0, f"SIGTERM must stop the worker cleanly:\n{worker.log_tail()}"

    # The oracle: the same commands applied one at a time by the pure domain.
    oracle = ShardBook(0, pmap, [], [], 0, GENESIS_HASH, now_us=0)
    expected = [oracle.apply(c) for c in commands]
    assert [(got[r.in_reply_to].outcome, got[r.in_reply_to].reason) for r in expected] == [
        (r.outcome, r.reason) for r in expected
    ]
    final = await balances(config, 0)
    assert final == {a.account_id: (a.posted, a.reserved) for a in oracle.accounts.values()}

    conn = await asyncpg.connect(database_url)
    try:
        schema = config.namespace.shard_schema(0)
        per_message = await conn.fetch(
            f"SELECT message_id, count(*) FROM {schema}.journal GROUP BY message_id"
        )
        inbox = await conn.fetchval(f"SELECT count(*) FROM {schema}.inbox")
    finally:
        await conn.close()
    assert all(n == 2 for _, n in per_message), "a command with an effect wrote exactly its two legs"
    assert len(per_message) == len(oracle.entries) // 2
    assert inbox == len(commands)
