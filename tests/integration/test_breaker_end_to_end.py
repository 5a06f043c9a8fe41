"""A shard's breaker, end to end on real Kafka (issue 16, item 5): an operator opens it with
`ledger breaker open`, the monitor publishes it, the coordinators follow it and refuse a new
transfer touching that shard at once (`shard_unavailable`, no balance changed) while one between
other shards goes through; `ledger breaker close` lets the same kind of transfer through again."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from deploy.ledger_init import init_ledger
from monitor.app import MonitorRun
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.integration.test_monitor import running_monitor
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    balances,
    fresh_config,
    ledger_cli,
    produce_raw,
    running_ledger,
)


def _id() -> str:
    return str(uuid.uuid4())


async def test_an_open_breaker_refuses_new_transfers_on_its_shard_at_once_and_closing_lets_them_through(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    ns = config.namespace
    sick = 1 - pmap.shard_for("issuer")
    (payee,) = accounts_on(pmap, sick, 1, prefix="payee")
    (local,) = accounts_on(pmap, pmap.shard_for("issuer"), 1, prefix="local")
    as_monitor = dataclasses.replace(config, kafka_security=kafka_principal("monitor"))
    as_operator = dataclasses.replace(config, kafka_security=kafka_principal("operator"))
    monitor = running_monitor(as_monitor, MonitorRun(rules=(), tick_s=0.2))
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results, monitor:
        opens = [
            OpenAccountRequest(_id(), a, "EUR", 10**9 if a == "issuer" else 0, {})
            for a in ("issuer", payee, local)
        ]
        await produce_raw(
            config, ns.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
        )
        await results.wait_for([o.command_id for o in opens])

        code, opened = await ledger_cli(
            as_operator, "breaker", "open", "--shard", str(sick), "--reason", "disk"
        )
        assert code == 0, opened
        assert (opened["state"], opened["latched"], opened["changed_by"]) == ("open", True, "operator")
        # The coordinators follow the control topic: give them a moment to hear of it.
        for _ in range(20):
            refused = TransferFunds(_id(), "issuer", payee, 100, "EUR")
            await produce_raw(config, ns.transfers, [(None, encode_public(refused))])
            result = (await results.wait_for([refused.transfer_id]))[refused.transfer_id]
            if result["state"] == "rejected":
                break
        assert (result["state"], result["reason"]) == ("rejected", "shard_unavailable")
        before = await balances(config, sick)
        another = TransferFunds(_id(), "issuer", payee, 100, "EUR")
        await produce_raw(config, ns.transfers, [(None, encode_public(another))])
        result = (await results.wait_for([another.transfer_id]))[another.transfer_id]
        assert (result["state"], result["reason"]) == ("rejected", "shard_unavailable"), "at once, every time"
        assert await balances(config, sick) == before, "a refusal changes no balance"
        healthy = TransferFunds(_id(), "issuer", local, 100, "EUR")
        await produce_raw(config, ns.transfers, [(None, encode_public(healthy))])
        assert (await results.wait_for([healthy.transfer_id]))[healthy.transfer_id]["state"] == "completed"

        code, closed = await ledger_cli(
            as_operator, "breaker", "close", "--shard", str(sick), "--reason", "fixed"
        )
        assert code == 0, closed
        for _ in range(20):
            again = TransferFunds(_id(), "issuer", payee, 100, "EUR")
            await produce_raw(config, ns.transfers, [(None, encode_public(again))])
            result = (await results.wait_for([again.transfer_id]))[again.transfer_id]
            if result["state"] == "completed":
                break
        assert result["state"] == "completed", result
        code, status = await ledger_cli(as_operator, "breaker", "status", "--shard", str(sick))
        assert code == 0, status
