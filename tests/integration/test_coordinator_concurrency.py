"""Two coordinators at once (one consumer group), 1,000 transfers among 3 hot accounts on 2 shards."""

from __future__ import annotations

import asyncio
import random
import uuid

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.bootstrap import RunSettings, run_coordinator
from coordinator.saga.reconciliation import reconcile
from coordinator.saga.transfer_saga import SagaPolicy
from coordinator.service.coordinator import CoordinatorSettings
from deploy.ledger_init import init_ledger
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    balances,
    fresh_config,
    produce_raw,
    running_shards,
)


async def test_two_coordinators_and_hot_accounts_conserve_money(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    hot = [*accounts_on(pmap, 0, 2, prefix="hot"), *accounts_on(pmap, 1, 1, prefix="hot")]
    settings = CoordinatorSettings(
        issuance_accounts=frozenset({"issuer"}), policy=SagaPolicy(base_backoff_ms=2000)
    )
    stop = asyncio.Event()
    async with running_shards(config, [0, 1]), ResultCollector(config) as results:
        coordinators = [
            asyncio.create_task(run_coordinator(config, settings, stop, RunSettings())) for _ in range(2)
        ]
        try:
            opens = [
                OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**12 if a == "issuer" else 0, {})
                for a in ("issuer", *hot)
            ]
            await produce_raw(
                config, config.namespace.account_commands, [(None, encode_public(o)) for o in opens]
            )
            await results.wait_for([o.command_id for o in opens])
            funding = [TransferFunds(str(uuid.uuid4()), "issuer", a, 20_000, "EUR") for a in hot]
            await produce_raw(config, config.namespace.transfers, [(None, encode_public(t)) for t in funding])
            await results.wait_for([t.transfer_id for t in funding])
            rng = random.Random(3)
            work = []
            for _ in range(1000):
                debit, credit = rng.sample(hot, 2)
                work.append(TransferFunds(str(uuid.uuid4()), debit, credit, rng.randint(1, 3_000), "EUR"))
            await produce_raw(
                config, config.namespace.transfers, [(t.transfer_id.encode(), encode_public(t)) for t in work]
            )
            got = await results.wait_for([t.transfer_id for t in work], within_s=180)
        finally:
            stop.set()
            await asyncio.gather(*coordinators)
    states = {r["state"] for r in got.values()}
    assert states <= {"completed", "rejected"}, states
    assert any(r["state"] == "rejected" for r in got.values()), "hot accounts must run dry sometimes"
    assert all(len({r["message_id"] for r in results.by_id[t.transfer_id]}) == 1 for t in work)
    merged = {**await balances(config, 0), **await balances(config, 1)}
    assert sum(merged[a][0] for a in hot) == 3 * 20_000, "money is neither created nor lost"
    assert all(merged[a][0] >= 0 and merged[a][1] == 0 for a in hot)
    sagas, views, _ = await read_views(config, [0, 1])
    assert reconcile(sagas, views) == []
