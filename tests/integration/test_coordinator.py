"""The whole transfer path on real Kafka and PostgreSQL: public topics in, one result out."""

from __future__ import annotations

import uuid

import pytest

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.public import FreezeAccount, OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    balances,
    fresh_config,
    produce_raw,
    running_ledger,
)


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def ledger(kafka_bootstrap: str, database_url: str) -> LedgerConfig:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, shard_count=2)
    return config


async def _open(config: LedgerConfig, results: ResultCollector, accounts: dict[str, int]) -> None:
    commands = [OpenAccountRequest(_id(), a, "EUR", limit, {}) for a, limit in accounts.items()]
    await produce_raw(
        config,
        config.namespace.account_commands,
        [(c.account_id.encode(), encode_public(c)) for c in commands],
    )
    got = await results.wait_for([c.command_id for c in commands])
    assert all(r["outcome"] == "done" for r in got.values()), got


async def test_same_shard_cross_shard_rejected_and_compensated(ledger: LedgerConfig) -> None:
    pmap = await init_ledger(ledger, 2)
    a0, b0 = accounts_on(pmap, 0, 2, prefix="cust")
    (c1, frozen1) = accounts_on(pmap, 1, 2, prefix="cust")
    issuer_shard = pmap.shard_for("issuer")
    async with running_ledger(ledger, [0, 1]), ResultCollector(ledger) as results:
        await _open(ledger, results, {"issuer": 10**15, a0: 0, b0: 0, c1: 0, frozen1: 0})
        freeze = FreezeAccount(_id(), frozen1)
        await produce_raw(
            ledger, ledger.namespace.account_commands, [(frozen1.encode(), encode_public(freeze))]
        )
        await results.wait_for([freeze.command_id])
        transfers = {
            "fund": TransferFunds(_id(), "issuer", a0, 10_000, "EUR"),
        }
        await produce_raw(
            ledger,
            ledger.namespace.transfers,
            [(t.transfer_id.encode(), encode_public(t)) for t in transfers.values()],
        )
        await results.wait_for([t.transfer_id for t in transfers.values()])
        more = {
            "same_shard": TransferFunds(_id(), a0, b0, 1_000, "EUR"),
            "cross_shard": TransferFunds(_id(), a0, c1, 2_000, "EUR"),
            "insufficient": TransferFunds(_id(), b0, c1, 5_000, "EUR"),
            "frozen_credit": TransferFunds(_id(), a0, frozen1, 3_000, "EUR"),
        }
        await produce_raw(
            ledger,
            ledger.namespace.transfers,
            [(t.transfer_id.encode(), encode_public(t)) for t in more.values()],
        )
        got = await results.wait_for([t.transfer_id for t in more.values()])
    outcome = {name: (got[t.transfer_id]["state"], got[t.transfer_id]["reason"]) for name, t in more.items()}
    assert outcome == {
        "same_shard": ("completed", None),
        "cross_shard": ("completed", None),
        "insufficient": ("rejected", "insufficient_funds"),
        "frozen_credit": ("compensated", "account_frozen"),
    }
    shard_of_a0 = await balances(ledger, 0)
    assert shard_of_a0[a0] == (10_000 - 1_000 - 2_000, 0)  # the compensated 3,000 is released
    assert shard_of_a0[b0] == (1_000, 0)
    assert (await balances(ledger, 1))[c1] == (2_000, 0)
    assert issuer_shard in (0, 1)
