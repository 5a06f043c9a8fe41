"""The chaos suite's corrupted shard (deploy/chaos/corruption.py) on a real ledger, with the monitor
auditing every second: the altered row breaks that shard's chain and nothing else, the monitor
latches the breaker and alerts, the restore puts the row back exactly, and the operator's part
closes the latch once the chain verifies and the alert has cleared."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import asyncpg

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.chaos.breakers import BreakerWatch, timeline
from deploy.chaos.corruption import give_back, restore, tamper
from deploy.ledger_audit import PostgresAuditor
from deploy.ledger_init import init_ledger
from monitor.app import MonitorRun, run_monitor
from monitor.service.monitor import MonitorStats
from schemas.breaker import CLOSED, OPEN
from shards.adapters.postgres_audit import verify_ledger
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, open_and_pay, running_ledger


async def _until(condition: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def _row(config: Any, shard: int, seq: int) -> tuple[str, bytes]:
    conn = await asyncpg.connect(config.shard_database_url(shard))
    try:
        row = await conn.fetchrow(
            f"SELECT message_id, hash FROM {config.namespace.shard_schema(shard)}.journal WHERE seq = $1", seq
        )
    finally:
        await conn.close()
    assert row is not None
    return row[0], bytes(row[1])


async def test_a_corrupted_shard_is_latched_and_alerted_then_restored_exactly_and_given_back(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    as_monitor = dataclasses.replace(config, kafka_security=kafka_principal("monitor"))
    as_operator = dataclasses.replace(config, kafka_security=kafka_principal("operator"))  # as chaos runs
    shard = pmap.shard_for("issuer")
    (payee,) = accounts_on(pmap, 1 - shard, 1, prefix="payee")
    stats = MonitorStats()
    stop, watching = asyncio.Event(), asyncio.Event()
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        await open_and_pay(config, results, {"issuer": 10_000, payee: 0}, payee, payments=5)

        t0 = time.monotonic()
        watch = BreakerWatch(as_operator, t0)
        watcher = asyncio.create_task(watch.run(watching))
        run = MonitorRun(tick_s=0.2, audit_every_s=1.0, stats=stats)
        monitor = asyncio.create_task(run_monitor(as_monitor, run, stop, PostgresAuditor(config)))
        try:
            await _until(lambda: stats.audits["ok"] >= 1, within_s=60)
            sagas, views, _ = await read_views(config, [0, 1])
            found_before = reconcile(sagas, views)

            onset = round(time.monotonic() - t0, 2)
            tampering = await tamper(as_operator, shard)
            original, stored_hash = tampering.original, (await _row(config, shard, tampering.seq))[1]
            assert (await _row(config, shard, tampering.seq))[0] == tampering.altered
            (chain,) = await verify_ledger(config, [shard])
            assert chain.first_broken_seq == tampering.seq
            # Only the chain sees it: reconciliation reads no message_id.
            sagas, views, _ = await read_views(config, [0, 1])
            assert reconcile(sagas, views) == found_before

            def latched() -> bool:
                return any(c.shard == shard and c.state == OPEN and c.latched for c in watch.changes)

            await _until(lambda: latched() and watch.alert_since(shard, "fired", onset), within_s=30)
            await restore(as_operator, tampering)
            healed = round(time.monotonic() - t0, 2)
            await restore(as_operator, tampering)  # again, as after a lost commit answer: still restored
            assert await _row(config, shard, tampering.seq) == (original, stored_hash)

            said = await give_back(as_operator, shard, watch, onset)
            assert "breaker closed by the operator" in said
            assert watch.alert_since(shard, "cleared", onset)
            await _until(lambda: watch.changes[-1].state == CLOSED, within_s=10)
            assert all(r.ok for r in await verify_ledger(config))
            fault = {"kind": "corrupt_shard", "target": shard, "started_s": onset, "healed_s": healed}
            (seen,) = timeline(watch.changes, [fault], 2, watch.alerts)["per_fault"]
            assert seen["isolated_and_alerted"], seen
            assert seen["closed_after_heal_s"] is not None, seen
            print(f"\n{said}; timeline {seen}")
        finally:
            stop.set()
            watching.set()
            await asyncio.wait_for(monitor, 60)
            await watcher
