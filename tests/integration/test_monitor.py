"""`ledger monitor run` on real Kafka (issue 16, items 2, 3 and 5): the faust app, as the monitor
principal, alerts exactly once when a liquidity rule is crossed and once when it clears, turns an
operator's SetBreaker into a latched BreakerState on ledger.control, and repeats neither after a
restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from monitor.app import MonitorRun, run_monitor
from monitor.cli import read_rules
from schemas.alerts import LiquidityAlert, decode_alert
from schemas.breaker import BY_OPERATOR, OPEN, SetBreaker, decode_breaker_state, encode_breaker
from schemas.liquidity_rules import LiquidityRule, encode_rules_file
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    fresh_config,
    produce_raw,
    read_topic,
    running_ledger,
)

FLOOR = LiquidityRule("issuer-floor", "available_below", "critical", "EUR", account_id="issuer", floor=5_000)


def _id() -> str:
    return str(uuid.uuid4())


@contextlib.asynccontextmanager
async def running_monitor(config: LedgerConfig, run: MonitorRun) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_monitor(config, run, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def _alerts(config: LedgerConfig, want: int, within_s: float) -> list[LiquidityAlert]:
    return [
        decode_alert(r.value or b"")
        for r in await read_topic(config, config.namespace.alerts, want, within_s)
    ]


async def test_the_monitor_alerts_once_per_crossing_and_clearing_and_obeys_an_operator_breaker(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any, tmp_path: Path
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    ns = config.namespace
    as_monitor = dataclasses.replace(config, kafka_security=kafka_principal("monitor"))
    as_operator = dataclasses.replace(config, kafka_security=kafka_principal("operator"))
    (payee,) = accounts_on(pmap, 1 - pmap.shard_for("issuer"), 1, prefix="payee")
    rules_file = tmp_path / "rules.json"
    rules_file.write_bytes(encode_rules_file((FLOOR,)))
    run = MonitorRun(rules=read_rules(rules_file), tick_s=0.2)  # as `--rules FILE` reads it
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        async with running_monitor(as_monitor, run):
            opens = [
                OpenAccountRequest(_id(), "issuer", "EUR", 10_000, {}),  # available 10 000: above the floor
                OpenAccountRequest(_id(), payee, "EUR", 0, {}),
            ]
            await produce_raw(
                config, ns.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
            )
            await results.wait_for([o.command_id for o in opens])
            for debit, credit in (("issuer", payee), (payee, "issuer")):  # down to 4 000, back to 10 000
                move = TransferFunds(_id(), debit, credit, 6_000, "EUR")
                await produce_raw(config, ns.transfers, [(None, encode_public(move))])
                result = (await results.wait_for([move.transfer_id]))[move.transfer_id]
                assert result["state"] == "completed", result.get("reason")
            # A redelivered or repeated alert would show within these seconds.
            alerts = await _alerts(config, want=3, within_s=15)
            assert [(a.rule_id, a.state, a.account_id, a.observed) for a in alerts] == [
                ("issuer-floor", "fired", "issuer", 4_000),
                ("issuer-floor", "cleared", "issuer", 10_000),
            ]

            command = SetBreaker(_id(), 0, "open", "draining shard 0 for maintenance", "alice")
            await produce_raw(as_operator, ns.monitor_commands, [(b"0", encode_breaker(command))])
            (record,) = await read_topic(config, ns.control, want=1, within_s=30)
            state = decode_breaker_state(record.value or b"")
            assert record.key == b"0"
            assert (state.shard, state.state, state.latched, state.changed_by) == (0, OPEN, True, BY_OPERATOR)
            assert "alice" in state.reason
            assert state.seq == 1

        # A restart rebuilds from ledger.alerts and ledger.control: nothing is written again.
        async with running_monitor(as_monitor, run):
            await asyncio.sleep(8)  # it rejoins the group, replays what was not committed, ticks
        assert len(await _alerts(config, want=3, within_s=3)) == 2
        assert len(await read_topic(config, ns.control, want=2, within_s=3)) == 1

        # Restarted, it knows the breaker it opened: an operator's close is that breaker's next change.
        async with running_monitor(as_monitor, run):
            command = SetBreaker(_id(), 0, "close", "maintenance done", "alice")
            await produce_raw(as_operator, ns.monitor_commands, [(b"0", encode_breaker(command))])
            records = await read_topic(config, ns.control, want=2, within_s=60)
        assert [decode_breaker_state(r.value or b"").seq for r in records] == [1, 2]
