"""Scenes of the demo that users recognize, each through the public topics and the status API as a
payment service and an operator would see them: a card authorization held, then settled for less;
a card payment split three ways across shards; an EUR->USD exchange against the bank's two
currency pools, as a linked pair.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from deploy.ledger_client import LedgerClient
from deploy.stack import ISSUERS
from schemas.public import BatchLeg, OpenAccountRequest, PostPendingTransfer, TransferBatch, TransferFunds

FX_POOLS = {"EUR": "fx-pool-eur", "USD": "fx-pool-usd"}  # the bank's own currency positions
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


async def _show(
    client: LedgerClient, http: aiohttp.ClientSession, api_url: str, scene: Scene, batch: TransferBatch
) -> None:
    await client.send_transfers([batch])
    result = (await client.wait_for([batch.batch_id], final=True))[batch.batch_id]
    scene.steps.append(("result", _result(result) | {"legs": result.get("legs")}))
    async with http.get(f"{api_url}/transfers/{batch.batch_id}") as response:
        status = await response.json()
    scene.steps.append(("steps", [f"{s['step']}: {s['outcome']}" for s in status["steps"]]))


async def split_payment(
    client: LedgerClient, http: aiohttp.ClientSession, api_url: str, payer: str, payees: list[str]
) -> Scene:
    """A card payment split three ways, merchant, fee and network, across shards: all or none."""
    merchant, fee, network = payees
    scene = Scene(f"split payment: {payer} pays {merchant} 90.00, {fee} 7.00, {network} 3.00, linked")
    legs = ((merchant, 9_000), (fee, 700), (network, 300))
    batch = TransferBatch(
        str(uuid.uuid4()),
        tuple(BatchLeg(str(uuid.uuid4()), payer, to, amount, "EUR") for to, amount in legs),
        True,
    )
    await _show(client, http, api_url, scene, batch)
    return scene


async def currency_exchange(
    client: LedgerClient, http: aiohttp.ClientSession, api_url: str, eur_customer: str, usd_customer: str
) -> Scene:
    """EUR 100.00 -> USD 108.00 as a linked pair against the bank's two currency pools."""
    scene = Scene(f"exchange: {eur_customer} sells EUR 100.00, {usd_customer} receives USD 108.00, linked")
    opened = [
        OpenAccountRequest(str(uuid.uuid4()), FX_POOLS["EUR"], "EUR", 0, {}),
        OpenAccountRequest(str(uuid.uuid4()), FX_POOLS["USD"], "USD", 0, {}),
    ]
    await client.wait_for(await client.send_account_commands(opened))
    stock = TransferFunds(str(uuid.uuid4()), ISSUERS["USD"], FX_POOLS["USD"], 1_000_000, "USD")
    await client.wait_for(await client.send_transfers([stock]))
    pair = (
        BatchLeg(str(uuid.uuid4()), eur_customer, FX_POOLS["EUR"], 10_000, "EUR"),
        BatchLeg(str(uuid.uuid4()), FX_POOLS["USD"], usd_customer, 10_800, "USD"),
    )
    await _show(client, http, api_url, scene, TransferBatch(str(uuid.uuid4()), pair, True))
    return scene
