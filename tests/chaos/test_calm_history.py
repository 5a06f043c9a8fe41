"""The chaos workload, its state reader and the checker against the real ledger with no fault:
every invariant holds. (The planted-violation tests, tests/unit/test_chaos_checker.py, show the
checker can fail; this shows the history and state it is fed are read right.)"""

from __future__ import annotations

import asyncio

import pytest

from deploy.chaos.checker import check
from deploy.chaos.postgres_state import read_ledger
from deploy.chaos.workload import ChaosClient, ChaosWorkloadSettings
from deploy.ledger_init import init_ledger
from tests.ledger_harness import fresh_config, running_ledger

pytestmark = pytest.mark.chaos


async def test_a_calm_run_violates_no_invariant(kafka_bootstrap: str, database_url: str) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    settings = ChaosWorkloadSettings(accounts=20, duplicate_fraction=0.1, reuse_fraction=0.05, seed=3)
    async with running_ledger(config, [0, 1]), ChaosClient(config, pmap, settings) as client:
        await client.prepare()
        for i in range(300):
            client.start_next()
            if i % 50 == 0:
                await client.read_balances()
            await asyncio.sleep(0.005)
        await client.drain()
        assert await client.wait_settled(within_s=120)
        history = client.history()
        ledger = await read_ledger(config, [0, 1])
    found = check(history, ledger)
    assert found == {name: [] for name in found}
    kinds = {s.kind for s in history.sent}
    assert kinds == {"original", "duplicate", "reused"}, "the workload exercised every kind"
    states = {r.state for r in history.results}
    assert {"completed", "rejected"} <= states
    batches = {s.transfer_id for s in history.sent if s.command == "batch"}
    assert batches, "linked batches were sent"
    assert batches <= set(ledger.batches), "and the state reader found each batch's row"
    assert history.reads
    assert history.issued["EUR"] == settings.funding * settings.accounts
