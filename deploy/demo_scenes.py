"""Scenes of the demo that users recognize, each through the public topics and the status API as a
payment service and an operator would see them: a card authorization held, then settled for less.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from deploy.ledger_client import LedgerClient
from schemas.public import PostPendingTransfer, TransferFunds

AUTHORIZED = 12_000  # a card authorization: 120.00 held at the pump, the tank takes 95.00
SETTLED = 9_500


@dataclass
class Scene:
    title: str
    steps: list[tuple[str, Any]] = field(default_factory=list)
    """(what happened, what the ledger answered or showed)."""


def _balance(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("account_id", "posted", "pending_debits", "pending_credits", "available")
    return {k: body.get(k) for k in keys}


def _result(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k) for k in ("transfer_id", "state", "reason", "amount", "pending_id")}


async def card_authorization(
    client: LedgerClient, http: aiohttp.ClientSession, api_url: str, cardholder: str, merchant: str
) -> Scene:
    """Hold AUTHORIZED on the cardholder for the merchant (on another shard), then post SETTLED:
    the rest of the hold goes back to the cardholder, the merchant's pending credit becomes posted."""
    scene = Scene(f"card authorization: {cardholder} -> {merchant}, {AUTHORIZED} held, {SETTLED} settled")

    async def balances(moment: str) -> None:
        for account in (cardholder, merchant):
            async with http.get(f"{api_url}/accounts/{account}") as response:
                scene.steps.append((f"{moment}: {account}", _balance(await response.json())))

    await balances("before")
    hold = TransferFunds(
        str(uuid.uuid4()), cardholder, merchant, AUTHORIZED, "EUR", {"card": "authorization"}, 600_000
    )
    await client.send_transfers([hold])
    scene.steps.append(
        (
            "authorized (pending, 10 min)",
            _result((await client.wait_for([hold.transfer_id]))[hold.transfer_id]),
        )
    )
    await balances("held")
    post = PostPendingTransfer(str(uuid.uuid4()), hold.transfer_id, SETTLED)
    await client.send_transfers([post])
    settled = await client.wait_for([post.transfer_id, hold.transfer_id], final=True)
    scene.steps.append(("settled for less", _result(settled[post.transfer_id])))
    await balances("settled")
    return scene
