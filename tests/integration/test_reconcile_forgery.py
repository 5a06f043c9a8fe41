"""`ledger reconcile` on a real ledger: a normal run of every kind of transfer reconciles, and an
entry planted through the shard's own code path, as a forged command would leave it (hash chain
intact, balances consistent, so `ledger verify` and `ledger replay` still pass), does not."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from infra.postgres_pool import open_pool
from schemas.partitioning import PartitionMap
from schemas.public import FreezeAccount, OpenAccountRequest, TransferFunds, encode_public
from schemas.shard_messages import CreditFunds, PostTransfer
from shards.adapters.postgres_shard_store import PostgresShardStore
from shards.domain.book import ShardBook
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, produce_raw, running_ledger

LEDGER = str(Path(sys.executable).with_name("ledger"))


def _id() -> str:
    return str(uuid.uuid4())


async def _ledger(config: LedgerConfig, *args: str) -> tuple[int, Any]:
    """Run a `ledger ... --json` command as an operator would: (exit code, its JSON report)."""
    env = os.environ | config.as_env()
    done = await asyncio.to_thread(
        subprocess.run, [LEDGER, *args, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


async def _plant(
    config: LedgerConfig, pmap: PartitionMap, shard: int, command: PostTransfer | CreditFunds
) -> str:
    """Apply `command` to a stopped shard exactly as its worker would, with no saga behind it."""
    pool = await open_pool(config.shard_database_url(shard), config.namespace.shard_schema(shard))
    try:
        store = PostgresShardStore(pool)
        epoch = await store.claim()
        async with store.batch(epoch) as tx:
            accounts = (
                [command.debit_account, command.credit_account]
                if isinstance(command, PostTransfer)
                else [command.account_id]
            )
            loaded, operations = await tx.load(accounts, [command.transfer_id], [command.currency])
            book = ShardBook(
                shard,
                pmap,
                loaded,
                operations,
                tx.head.journal_seq,
                tx.head.journal_hash,
                1_700_000_000_000_000,
            )
            reply = book.apply(command)
            await tx.write(book, [], [])
    finally:
        await pool.close()
    return reply.outcome


async def test_reconcile_passes_a_normal_run_and_reports_planted_entries(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    a0, b0 = accounts_on(pmap, 0, 2, prefix="cust")
    c1, frozen1 = accounts_on(pmap, 1, 2, prefix="cust")
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        opens = [
            OpenAccountRequest(_id(), a, "EUR", 10**15 if a == "issuer" else 0, {})
            for a in ("issuer", a0, b0, c1, frozen1)
        ]
        await produce_raw(
            config, config.namespace.account_commands, [(None, encode_public(o)) for o in opens]
        )
        await results.wait_for([o.command_id for o in opens])
        freeze = FreezeAccount(_id(), frozen1)
        await produce_raw(config, config.namespace.account_commands, [(None, encode_public(freeze))])
        await results.wait_for([freeze.command_id])
        fund = TransferFunds(_id(), "issuer", a0, 50_000, "EUR")
        await produce_raw(config, config.namespace.transfers, [(None, encode_public(fund))])
        await results.wait_for([fund.transfer_id])
        work = {
            "same_shard": TransferFunds(_id(), a0, b0, 1_000, "EUR"),
            "cross_shard": TransferFunds(_id(), a0, c1, 2_000, "EUR"),
            "insufficient": TransferFunds(_id(), b0, c1, 5_000, "EUR"),
            "frozen_credit": TransferFunds(_id(), a0, frozen1, 3_000, "EUR"),
        }
        await produce_raw(
            config, config.namespace.transfers, [(None, encode_public(t)) for t in work.values()]
        )
        got = await results.wait_for([t.transfer_id for t in work.values()])
    assert {name: got[t.transfer_id]["state"] for name, t in work.items()} == {
        "same_shard": "completed",
        "cross_shard": "completed",
        "insufficient": "rejected",
        "frozen_credit": "compensated",
    }
    code, report = await _ledger(config, "reconcile")
    assert (code, report["violations"]) == (0, []), report

    # An outside producer's PostTransfer between two accounts of shard 0 (the finding),
    # and a credit on shard 1 for the saga the coordinator compensated.
    forged = _id()
    compensated = work["frozen_credit"].transfer_id
    assert (
        await _plant(config, pmap, 0, PostTransfer(_id(), forged, a0, b0, 12_345, "EUR")) == "transfer_posted"
    )
    assert (
        await _plant(config, pmap, 1, CreditFunds(_id(), compensated, c1, 3_000, "EUR")) == "funds_credited"
    )
    for command in ("verify", "replay"):  # the forgery is well formed: only reconciliation can see it
        code, _ = await _ledger(config, command)
        assert code == 0, command
    code, report = await _ledger(config, "reconcile")
    assert code == 1
    found = {(v["check"], v["subject"], v["detail"]) for v in report["violations"]}
    assert {
        ("entry_without_saga", forged, f"shard 0: transfer debit {a0} -12345 EUR: no saga has this id"),
        ("entry_without_saga", forged, f"shard 0: transfer credit {b0} +12345 EUR: no saga has this id"),
        ("leg_without_saga", forged, "transfer on shard 0"),
        (
            "entry_for_failed_saga",
            compensated,
            f"shard 1: credit credit {c1} +3000 EUR: the saga was compensated, so it has no entries",
        ),
    } <= found, found
