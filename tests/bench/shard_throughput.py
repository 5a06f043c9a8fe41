"""How fast one shard worker applies intra-shard transfers from Kafka into PostgreSQL.

    .venv/bin/python -m tests.bench.shard_throughput [--transfers 100000] [--batch-max 2000]

Starts its own local stack (durable PostgreSQL settings), opens accounts, puts every transfer on
the shard's topic first, then starts one `ledger shard run` process and times it from its first
applied batch until every transfer is applied (journal head) and every reply is published (relay
cursor). Not a test: speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import time
from pathlib import Path

import asyncpg
import psutil

from deploy.kafka_principals import ADMIN
from deploy.ledger_init import init_ledger
from deploy.processes import spawn
from deploy.stack import LocalStack, StackSettings
from infra.config import LedgerConfig
from schemas.shard_messages import OpenAccount, PostTransfer, ShardCommand
from schemas.topics import Namespace
from tests.ledger_harness import accounts_on, new_id, send

LEDGER = str(Path(sys.executable).with_name("ledger"))


async def _heads(conn: asyncpg.Connection, schema: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        f"SELECT w.journal_seq, r.published_seq FROM {schema}.worker_state w, {schema}.relay_state r"
    )
    assert row is not None
    return row[0], row[1]


async def bench(
    config: LedgerConfig, transfers: int, accounts: int, batch_max: int, profile: str | None = None
) -> dict[str, object]:
    pmap = await init_ledger(config, 1)
    issuer, *users = accounts_on(pmap, 0, accounts + 1)
    rng = random.Random(1)
    opens: list[ShardCommand] = [OpenAccount(new_id(), issuer, "EUR", overdraft_limit=10**15)]
    opens += [OpenAccount(new_id(), u, "EUR") for u in users]
    funding: list[ShardCommand] = [PostTransfer(new_id(), new_id(), issuer, u, 10**9, "EUR") for u in users]
    work: list[ShardCommand] = []
    for _ in range(transfers):
        debit, credit = rng.sample(users, 2)
        work.append(PostTransfer(new_id(), new_id(), debit, credit, rng.randint(1, 10_000), "EUR"))
    started = time.monotonic()
    await send(config, 0, opens + funding + work)
    produce_s = time.monotonic() - started

    schema = config.namespace.shard_schema(0)
    target_seq = 2 * (len(funding) + transfers)
    target_outbox = len(opens) + len(funding) + transfers
    env = {**os.environ, **config.as_env()}
    log = Path(f"/tmp/ledger-bench-shard-{os.getpid()}.log")
    argv = [LEDGER, "shard", "run", "--shard", "0", "--batch-max", str(batch_max)]
    if profile:  # py-spy samples the worker; collapsed stacks go to PROFILE
        argv = [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            profile,
            "--",
            *argv,
        ]
    worker = spawn("shard-0", argv, log, tie_to_owner=True, env=env)
    conn = await asyncpg.connect(config.database_url)
    cpu = psutil.Process(worker.pid)
    try:
        first = applied_at = None
        seq, published = await _heads(conn, schema)
        deadline = time.monotonic() + 600
        while published < target_outbox and time.monotonic() < deadline:
            assert worker.alive(), worker.log_tail()
            await asyncio.sleep(0.02)
            seq, published = await _heads(conn, schema)
            now = time.monotonic()
            if first is None and seq > 0:
                first = (now, seq)
            if applied_at is None and seq >= target_seq:
                applied_at = now
        done_at = time.monotonic()
        cpu_s = sum(cpu.cpu_times()[:2])
        batches = await conn.fetchval(f"SELECT count(DISTINCT created_at) FROM {schema}.journal")
    finally:
        await conn.close()
        worker.stop(signal.SIGINT if profile else signal.SIGTERM)  # py-spy saves on Ctrl-C
    assert first is not None, "the worker applied nothing in 600 s"
    assert applied_at is not None, "the worker did not finish in 600 s"
    applied_transfers = (target_seq - first[1]) // 2
    return {
        "transfers": transfers,
        "accounts": accounts,
        "batch_max": batch_max,
        "mean_batch": round(target_seq / 2 / max(batches, 1), 1),
        "applied_per_s": round(applied_transfers / (applied_at - first[0])),
        "applied_and_published_per_s": round(applied_transfers / (done_at - first[0])),
        "worker_cpu_s": round(cpu_s, 1),
        "produce_s": round(produce_s, 1),
        "machine": f"{platform.node()} {psutil.cpu_count()} cores {psutil.virtual_memory().total >> 30} GiB",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--batch-max", type=int, default=5000)
    parser.add_argument("--profile", metavar="PATH", help="record the worker with py-spy (collapsed stacks)")
    args = parser.parse_args()
    with LocalStack(StackSettings.from_env(os.environ)) as stack:
        e = stack.endpoints
        security = stack.kafka_security(ADMIN)  # its own ledger, its own super user
        config = LedgerConfig(
            e.database_url, e.kafka_bootstrap_servers, Namespace("bench_"), kafka_security=security,
            message_keys=stack.message_keys(),
        )  # fmt: skip
        result = asyncio.run(bench(config, args.transfers, args.accounts, args.batch_max, args.profile))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
