"""Linked batches end to end on real Kafka and PostgreSQL: a payment split three ways across shards,
an EUR->USD exchange against the bank's two currency pools, batches that fail whole (naming the
leg), leg ids that are transfer ids, a pending batch posted whole, and the books after."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.public import (
    BatchLeg,
    FreezeAccount,
    OpenAccountRequest,
    PostPendingTransfer,
    TransferBatch,
    TransferCommand,
    TransferFunds,
)
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, ledger_cli, running_ledger


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def ledger(kafka_bootstrap: str, database_url: str) -> LedgerConfig:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, shard_count=2)
    return config


async def _posted(config: LedgerConfig, shards: int) -> dict[str, tuple[int, int, int]]:
    """account -> (posted, pending debits, pending credits), over every shard."""
    found: dict[str, tuple[int, int, int]] = {}
    for shard in range(shards):
        conn = await asyncpg.connect(config.shard_database_url(shard))
        try:
            schema = config.namespace.shard_schema(shard)
            rows = await conn.fetch(
                f'SELECT account_id, posted, reserved, pending_credit FROM "{schema}".balances'
            )
            found |= {r[0]: (r[1], r[2], r[3]) for r in rows}
        finally:
            await conn.close()
    return found


async def _final(results: ResultCollector, commands: list[TransferCommand]) -> dict[str, Any]:
    await results.send_transfers(commands)
    return await results.wait_for([c.transfer_id for c in commands], within_s=60, final=True)


def _batch(*legs: tuple[str, str, int, str], pending_ms: int | None = None) -> TransferBatch:
    return TransferBatch(
        _id(), tuple(BatchLeg(_id(), d, c, amount, currency) for d, c, amount, currency in legs), True,
        pending_timeout_ms=pending_ms,
    )  # fmt: skip


async def test_linked_batches_complete_whole_or_not_at_all(ledger: LedgerConfig) -> None:
    pmap = await init_ledger(ledger, 2)
    customer, fee, pool_eur = accounts_on(pmap, 0, 3, prefix="card")
    merchant, network, frozen = accounts_on(pmap, 1, 3, prefix="card")
    (traveller_usd,) = accounts_on(pmap, 0, 1, prefix="usd")
    (pool_usd,) = accounts_on(pmap, 1, 1, prefix="usd")
    eur = [customer, fee, pool_eur, merchant, network, frozen]
    async with running_ledger(ledger, [0, 1]), ResultCollector(ledger) as results:
        opened = [
            OpenAccountRequest(_id(), "issuer", "EUR", 10**15),
            OpenAccountRequest(_id(), "issuer-usd", "USD", 10**15),
        ]
        opened += [OpenAccountRequest(_id(), a, "EUR") for a in eur]
        opened += [OpenAccountRequest(_id(), a, "USD") for a in (traveller_usd, pool_usd)]
        await results.send_account_commands(opened)
        await results.wait_for([c.command_id for c in opened])
        freeze = FreezeAccount(_id(), frozen)
        await results.send_account_commands([freeze])
        await results.wait_for([freeze.command_id])
        funding: list[TransferCommand] = [
            TransferFunds(_id(), "issuer", customer, 50_000, "EUR"),
            TransferFunds(_id(), "issuer-usd", pool_usd, 1_000_000, "USD"),
        ]
        assert {r["state"] for r in (await _final(results, funding)).values()} == {"completed"}

        split = _batch(
            (customer, merchant, 9_000, "EUR"), (customer, fee, 700, "EUR"), (customer, network, 300, "EUR")
        )
        exchange = _batch((customer, pool_eur, 10_000, "EUR"), (pool_usd, traveller_usd, 10_800, "USD"))
        done = await _final(results, [split, exchange])
        for batch in (split, exchange):
            result = done[batch.batch_id]
            assert (result["state"], result["reason"], result.get("failed_leg")) == ("completed", None, None)
            assert [(leg["transfer_id"], leg["state"]) for leg in result["legs"]] == [
                (leg.transfer_id, "completed") for leg in batch.transfers
            ]

        to_frozen = _batch((customer, merchant, 1_000, "EUR"), (customer, frozen, 500, "EUR"))
        too_much = _batch((customer, fee, 1_000, "EUR"), (customer, network, 10**9, "EUR"))
        failed = await _final(results, [to_frozen, too_much])
        assert failed[to_frozen.batch_id]["state"] == "compensated"
        assert failed[to_frozen.batch_id]["failed_leg"] == to_frozen.transfers[1].transfer_id
        assert [leg["reason"] for leg in failed[to_frozen.batch_id]["legs"]] == [
            "linked_transfer_failed",
            "account_frozen",
        ]
        assert (failed[too_much.batch_id]["state"], failed[too_much.batch_id]["reason"]) == (
            "rejected",
            "insufficient_funds",
        )
        assert failed[too_much.batch_id]["failed_leg"] == too_much.transfers[1].transfer_id

        # a leg in a currency its account does not hold; the split again with one leg's body changed
        wrong_currency = _batch((customer, merchant, 100, "EUR"), (customer, fee, 100, "USD"))
        changed = TransferBatch(
            split.batch_id,
            (split.transfers[0], replace(split.transfers[1], amount=701), split.transfers[2]),
            True,
        )
        mismatched = (await _final(results, [wrong_currency]))[wrong_currency.batch_id]
        usd_leg = wrong_currency.transfers[1].transfer_id
        assert (mismatched["reason"], mismatched["failed_leg"]) == ("currency_mismatch", usd_leg)
        await results.send_transfers([changed])
        await results.wait_for([split.batch_id])
        while len(results.by_id[split.batch_id]) < 2:  # the refusal is a second, different result
            await results.poll()
        assert results.by_id[split.batch_id][1]["reason"] == "transfer_id_reused"

        taken = funding[0].transfer_id
        reused = TransferBatch(_id(), (BatchLeg(taken, customer, fee, 1, "EUR"),), True)
        over_a_leg = TransferFunds(split.transfers[0].transfer_id, customer, fee, 1, "EUR")
        refused = await _final(results, [reused, over_a_leg])
        assert (refused[reused.batch_id]["state"], refused[reused.batch_id]["reason"]) == (
            "rejected",
            "leg_id_reused",
        )
        assert refused[over_a_leg.transfer_id]["reason"] == "transfer_id_reused"

        held = _batch((customer, merchant, 2_000, "EUR"), (customer, fee, 100, "EUR"), pending_ms=600_000)
        await results.send_transfers([held])
        assert (await results.wait_for([held.batch_id]))[held.batch_id]["state"] == "pending"
        books = await _posted(ledger, 2)
        assert (books[customer][1], books[merchant][2], books[fee][2]) == (2_100, 2_000, 100)
        partial = PostPendingTransfer(_id(), held.batch_id, 50)
        assert (await _final(results, [partial]))[partial.transfer_id]["reason"] == "partial_post_of_batch"
        whole = PostPendingTransfer(_id(), held.batch_id)
        assert (await _final(results, [whole]))[whole.transfer_id]["state"] == "completed"
        assert (await results.wait_for([held.batch_id], final=True))[held.batch_id]["state"] == "completed"

    books = await _posted(ledger, 2)
    spent = 9_000 + 700 + 300 + 10_000 + 2_000 + 100
    assert books[customer] == (50_000 - spent, 0, 0)
    assert (books[merchant][0], books[fee][0], books[network][0], books[pool_eur][0]) == (
        11_000,
        800,
        300,
        10_000,
    )
    assert (books[traveller_usd][0], books[pool_usd][0]) == (10_800, 1_000_000 - 10_800)
    assert books.get(frozen, (0, 0, 0)) == (0, 0, 0)
    sagas, views, _ = await read_views(ledger, [0, 1])
    assert reconcile(sagas, views) == []


async def test_the_cli_sends_a_linked_batch_from_a_file_and_shows_its_legs(
    ledger: LedgerConfig, tmp_path: Path
) -> None:
    pmap = await init_ledger(ledger, 2)
    (payer,) = accounts_on(pmap, 0, 1, prefix="cli")
    shop, tax = accounts_on(pmap, 1, 2, prefix="cli")
    async with running_ledger(ledger, [0, 1]), ResultCollector(ledger) as results:
        opened = [OpenAccountRequest(_id(), "issuer", "EUR", 10**15)]
        opened += [OpenAccountRequest(_id(), a, "EUR") for a in (payer, shop, tax)]
        await results.send_account_commands(opened)
        await results.wait_for([c.command_id for c in opened])
        await _final(results, [TransferFunds(_id(), "issuer", payer, 1_000, "EUR")])

        legs = tmp_path / "legs.json"
        legs.write_text(json.dumps([
            {"debit_account": payer, "credit_account": shop, "amount": 800, "currency": "EUR"},
            {"debit_account": payer, "credit_account": tax, "amount": 160, "currency": "EUR"},
        ]))  # fmt: skip
        code, done = await ledger_cli(ledger, "transfer", "--linked", str(legs), "--wait")
        assert (code, done["state"], [leg["state"] for leg in done["legs"]]) == (
            0,
            "completed",
            ["completed"] * 2,
        )
        code, status = await ledger_cli(ledger, "status", done["transfer_id"])
        assert [(leg["credit_account"], leg["amount"], leg["state"]) for leg in status["legs"]] == [
            (shop, 800, "completed"),
            (tax, 160, "completed"),
        ]
        code, refused = await ledger_cli(
            ledger, "transfer", "--linked", str(legs), "--wait"
        )  # 40 left: too little
        assert (code, refused["state"], refused["reason"]) == (3, "rejected", "insufficient_funds")
        legs.write_text("[]")
        code, usage = await ledger_cli(ledger, "transfer", "--linked", str(legs))
        assert code == 2, usage
        code, usage = await ledger_cli(ledger, "transfer", "--linked", str(legs), "--from", payer)
        assert code == 2, usage
