"""The continuous audit on a real ledger (issue 16, item 6): a monitor auditing every second finds
nothing on a sound ledger, then a journal row altered behind the ledger's back; it latches that
shard's breaker on ledger.control and raises a critical LedgerAlert on ledger.alerts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import asyncpg

from deploy.ledger_audit import PostgresAuditor
from deploy.ledger_init import init_ledger
from monitor.app import MonitorRun, run_monitor
from monitor.service.monitor import MonitorStats
from schemas.breaker import BY_MONITOR, OPEN, decode_breaker_state
from schemas.ledger_alert import DIVERGENCE, HASH_CHAIN, LedgerAlert, decode_any_alert
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    fresh_config,
    open_and_pay,
    read_topic,
    running_ledger,
)


async def _until(condition: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def test_the_monitor_audit_latches_a_shard_whose_journal_was_altered_and_alerts(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    ns = config.namespace
    as_monitor = dataclasses.replace(config, kafka_security=kafka_principal("monitor"))
    shard = pmap.shard_for("issuer")
    (payee,) = accounts_on(pmap, 1 - shard, 1, prefix="payee")
    stats = MonitorStats()
    run = MonitorRun(tick_s=0.2, audit_every_s=1.0, stats=stats)
    stop = asyncio.Event()
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        done = await open_and_pay(config, results, {"issuer": 10_000, payee: 0}, payee, payments=5)
        assert {r["state"] for r in done.values()} == {"completed"}

        monitor = asyncio.create_task(run_monitor(as_monitor, run, stop, PostgresAuditor(config)))
        try:
            await _until(lambda: stats.audits["ok"] >= 2, within_s=60)
            sound = stats.last_audit
            assert sound is not None
            assert (sound.broken, sound.findings) == ((), ())
            assert sound.entries > 0

            conn = await asyncpg.connect(config.shard_database_url(shard))  # the owner, in tests
            try:
                await conn.execute("SET session_replication_role = replica")  # past the append-only trigger
                await conn.execute(
                    f"UPDATE {ns.shard_schema(shard)}.journal SET amount = amount + 1 WHERE seq = 1"
                )
            finally:
                await conn.close()
            altered_at = time.monotonic()

            (record,) = await read_topic(config, ns.control, want=1, within_s=30)
            latched_after = time.monotonic() - altered_at
            state = decode_breaker_state(record.value or b"")
            assert (state.shard, state.state, state.latched, state.changed_by) == (
                shard,
                OPEN,
                True,
                BY_MONITOR,
            )
            assert "hash_chain seq 1" in state.reason
            alerts = [decode_any_alert(r.value or b"") for r in await read_topic(config, ns.alerts, 1, 30)]
            chain = [a for a in alerts if isinstance(a, LedgerAlert) and a.check == HASH_CHAIN]
            assert [(a.kind, a.state, a.severity, a.shard, a.subject) for a in chain] == [
                (DIVERGENCE, "fired", "critical", shard, "seq 1")
            ]
            last = stats.last_audit
            assert last is not None
            print(
                f"\naudit of {last.entries} entries, {last.sagas} sagas: {last.seconds:.3f} s "
                f"(chains {last.chain_s:.3f} s, reconciliation {last.reconcile_s:.3f} s); "
                f"breaker latched {latched_after:.1f} s after the row was altered"
            )
        finally:
            stop.set()
            await asyncio.wait_for(monitor, 60)
