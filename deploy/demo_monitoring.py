"""The demo's monitoring scene (issue 16): a liquidity floor crossed and cleared twice, one alert
per crossing and per clearing, never more; and a shard's breaker opened by an operator, refusing a
card payment at once, then closed again.

Everything goes through the public topics as an operator would: the rule is the monitor's rules
file (deploy/demo-liquidity-rules.json), the alerts are read from ledger.alerts, the breaker is
`ledger breaker`'s SetBreaker, and its state is read from ledger.control.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from deploy.breaker_cli import set_breaker
from deploy.demo_scenes import Scene, _result
from deploy.ledger_client import LedgerClient
from deploy.stack import ISSUERS
from infra.config import LedgerConfig
from schemas.alerts import decode_alert
from schemas.breaker import SetBreaker
from schemas.errors import LedgerError
from schemas.public import OpenAccountRequest, TransferFunds

SETTLEMENT = "settlement-eur"  # a merchant acquirer's settlement account
FLOOR = 50_000  # 500.00: below it, treasury wants to know
RULE_ID = "settlement-floor"
DEMO_RULES = Path(__file__).with_name("demo-liquidity-rules.json")
"""The demo monitor's `--rules`: the floor, in force before the account exists. (Sent as a
SetLiquidityRules instead, it could reach the monitor before or after the account's first
balances: another topic, so no order between them.)"""


async def monitoring(client: LedgerClient, config: LedgerConfig, merchant: str, shard: int) -> Scene:
    """A floor on the settlement account crossed and cleared twice (four alerts, no more), then
    the breaker of `merchant`'s shard opened and closed by an operator around a payment to it."""
    scene = Scene(f"monitoring: a floor of {FLOOR} on {SETTLEMENT}; shard {shard}'s breaker, by hand")
    await client.wait_for(
        await client.send_account_commands([OpenAccountRequest(str(uuid.uuid4()), SETTLEMENT, "EUR", 0, {})])
    )
    scene.steps.append(("opened empty: below the floor", 0))
    await _move(client, scene, ISSUERS["EUR"], SETTLEMENT, 100_000)  # 1,000.00: above it
    await _move(client, scene, SETTLEMENT, merchant, 60_000)  # 400.00 left: below it again
    await _move(client, scene, ISSUERS["EUR"], SETTLEMENT, 30_000)  # 700.00: above it
    for alert in await _alerts(config, RULE_ID, want=4, within_s=30):  # one per crossing, no more
        scene.steps.append((f"alert {alert['state']}", alert))

    opened = await set_breaker(config, SetBreaker(str(uuid.uuid4()), shard, "open", "disk check", "demo"), 30)
    scene.steps.append((f"breaker of shard {shard} opened by an operator", _state(opened)))
    refused = await _until_state(client, SETTLEMENT, merchant, "rejected")
    scene.steps.append(("a payment to it", _result(refused)))
    closed = await set_breaker(config, SetBreaker(str(uuid.uuid4()), shard, "close", "disk fine", "demo"), 30)
    scene.steps.append((f"breaker of shard {shard} closed", _state(closed)))
    scene.steps.append(
        ("the same payment again", _result(await _until_state(client, SETTLEMENT, merchant, "completed")))
    )
    return scene


async def _move(client: LedgerClient, scene: Scene, debit: str, credit: str, amount: int) -> None:
    move = TransferFunds(str(uuid.uuid4()), debit, credit, amount, "EUR")
    result = (await client.wait_for(await client.send_transfers([move])))[move.transfer_id]
    scene.steps.append((f"{debit} -> {credit} {amount}", result.get("state")))


def _state(state: Any) -> dict[str, Any] | None:
    return (
        None
        if state is None
        else {k: getattr(state, k) for k in ("state", "latched", "reason", "changed_by", "seq")}
    )


async def _until_state(client: LedgerClient, debit: str, credit: str, state: str) -> dict[str, Any]:
    """A payment of 1.00, sent again until its result is `state` (coordinators hear of a breaker
    within a moment: the first one may still go through), or the last result after 20 tries."""
    result: dict[str, Any] = {}
    for _ in range(20):
        move = TransferFunds(str(uuid.uuid4()), debit, credit, 100, "EUR")
        result = (await client.wait_for(await client.send_transfers([move])))[move.transfer_id]
        if result.get("state") == state:
            break
        await asyncio.sleep(0.5)
    return result


async def _alerts(config: LedgerConfig, rule_id: str, want: int, within_s: float) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        config.namespace.alerts, **config.kafka_args(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        # Until `want` came, then 2 s more: an alert repeated while the rule holds would show.
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if len(found) >= want:
                deadline = min(deadline, time.monotonic() + 2)
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    try:
                        alert = decode_alert(r.value or b"")
                    except LedgerError:  # another kind of alert: not this scene's
                        continue
                    if alert.rule_id == rule_id:
                        found.append({
                            "state": alert.state, "available": alert.observed, "floor": alert.threshold,
                            "alert_id": alert.alert_id,
                        })  # fmt: skip
    finally:
        await consumer.stop()
    return found
