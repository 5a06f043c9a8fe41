"""A coordinator restarted under its instance id takes its partitions back without a rebalance.

Found by ledger chaos (seed 12): with dynamic membership, a killed coordinator that came back made
the group rebalance, and the group then waited out the dead member's session, so every saga
stopped for about 10 s, not only the dead coordinator's. A static member (Kafka's
group.instance.id) that rejoins within its session gets its own partitions back, and the others
never revoke theirs. The dynamic case is kept to show the check can fail.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from coordinator.bootstrap import RunSettings, run_coordinator
from coordinator.service.coordinator import CoordinatorSettings
from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from tests.ledger_harness import fresh_config

GROUP_LOG = "aiokafka.consumer.group_coordinator"


async def _quiet(
    caplog: pytest.LogCaptureFixture, group: str, *, since: int, syncs: int, for_s: float
) -> None:
    """Until `syncs` syncs were logged after record `since`, then nothing in the group for `for_s`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = [r for r in caplog.records[since:] if r.name == GROUP_LOG and group in r.getMessage()]
        synced = sum("Successfully synced group" in r.getMessage() for r in records)
        if synced >= syncs and time.time() - records[-1].created > for_s:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"group {group} never settled")


def _start(config: LedgerConfig, instance_id: str | None) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    settings = CoordinatorSettings(issuance_accounts=frozenset({"issuer"}))
    run = RunSettings(instance_id=instance_id)
    return stop, asyncio.create_task(run_coordinator(config, settings, stop, run))


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
async def test_a_restarted_coordinator_does_not_rebalance_the_others(
    kafka_bootstrap: str, database_url: str, caplog: pytest.LogCaptureFixture, static: bool
) -> None:
    caplog.set_level(logging.INFO, logger=GROUP_LOG)
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 1)
    group = f"{config.namespace.prefix}ledger.coordinator"
    stop_a, a = _start(config, "coordinator-a" if static else None)
    stop_b, b = _start(config, "coordinator-b" if static else None)
    try:
        await _quiet(caplog, group, since=0, syncs=2, for_s=3.0)
        before = len(caplog.records)
        stop_b.set()  # B goes away (a static member does not leave the group) ...
        await b
        stop_b, b = _start(config, "coordinator-b" if static else None)  # ... and comes back
        await _quiet(caplog, group, since=before, syncs=1, for_s=5.0)  # > a heartbeat interval
        after = [r.getMessage() for r in caplog.records[before:] if r.name == GROUP_LOG]
        revoked = [m for m in after if m.startswith("Revoking previously assigned partitions frozenset")]
        if static:
            assert revoked == [], "the coordinator that stayed gave up its partitions"
            assert any("Joined group" in m and "coordinator-b" in m for m in after), after
        else:
            assert revoked, "dynamic members rebalance on a restart: the check must see it"
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(a, b)
