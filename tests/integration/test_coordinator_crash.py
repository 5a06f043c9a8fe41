"""Crashes mid-saga: SIGKILL the coordinator at each saga step, and a shard worker mid-saga.

After a restart every saga ends terminal, each transfer has exactly one result, and
reconciliation is clean.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.ledger_init import init_ledger
from deploy.processes import ProcessRecord, spawn
from infra.config import LedgerConfig
from schemas.public import FreezeAccount, OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, produce_raw, running_shards

LEDGER = str(Path(sys.executable).with_name("ledger"))


def _id() -> str:
    return str(uuid.uuid4())


def _start(config: LedgerConfig, name: str, args: Sequence[str], failpoints: str = "") -> ProcessRecord:
    env = {**os.environ, **config.as_env(), "LEDGER_FAILPOINTS": failpoints}
    log = Path(tempfile.mkdtemp(prefix="ledger-crash-")) / f"{name}.log"
    return spawn(name, [LEDGER, *args], log, tie_to_owner=True, env=env)


def _coordinator(config: LedgerConfig, failpoints: str = "") -> ProcessRecord:
    return _start(config, "coordinator", ["coordinator", "run", "--issuance-account", "issuer"], failpoints)


async def _prepare(config: LedgerConfig, results: ResultCollector) -> tuple[str, str, str]:
    """Open issuer, a payer on shard 0, a payee and a frozen payee on shard 1; fund the payer."""
    pmap = await init_ledger(config, 2)
    (payer,) = accounts_on(pmap, 0, 1, prefix="payer")
    payee, frozen = accounts_on(pmap, 1, 2, prefix="payee")
    opens = [
        OpenAccountRequest(_id(), a, "EUR", 10**12 if a == "issuer" else 0, {})
        for a in ("issuer", payer, payee, frozen)
    ]
    await produce_raw(config, config.namespace.account_commands, [(None, encode_public(o)) for o in opens])
    await results.wait_for([o.command_id for o in opens])
    freeze = FreezeAccount(_id(), frozen)
    fund = TransferFunds(_id(), "issuer", payer, 1_000_000, "EUR")
    await produce_raw(config, config.namespace.account_commands, [(None, encode_public(freeze))])
    await produce_raw(config, config.namespace.transfers, [(None, encode_public(fund))])
    await results.wait_for([freeze.command_id, fund.transfer_id])
    return payer, payee, frozen


async def _check(config: LedgerConfig, results: ResultCollector, ids: list[str]) -> None:
    got = await results.wait_for(ids, within_s=120)
    assert all(r["state"] in ("completed", "compensated") for r in got.values()), got
    for transfer_id in ids:
        assert len({r["message_id"] for r in results.by_id[transfer_id]}) == 1, "one result per transfer"
    sagas, views, _ = await read_views(config, [0, 1])
    assert not [s for s in sagas.values() if s.status == "in_flight"]
    assert reconcile(sagas, views) == []


@pytest.mark.parametrize(
    "failpoint",
    [
        "before_commit:crediting",
        "after_commit:crediting",
        "after_commit:committing",
        "before_commit:done",
        "after_commit:releasing",
        "after_commit:done",
    ],
)
async def test_coordinator_killed_at_a_saga_step_recovers(
    kafka_bootstrap: str, database_url: str, failpoint: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    async with running_shards(config, [0, 1]), ResultCollector(config) as results:
        first = _coordinator(config)
        try:
            payer, payee, frozen = await _prepare(config, results)
        finally:
            first.stop()
        doomed = _coordinator(config, failpoint)
        transfers = [
            TransferFunds(_id(), payer, frozen if i % 4 == 0 else payee, 100 + i, "EUR") for i in range(12)
        ]
        try:
            await produce_raw(
                config, config.namespace.transfers, [(None, encode_public(t)) for t in transfers]
            )
            for _ in range(600):
                if not doomed.alive():
                    break
                await asyncio.sleep(0.1)
            assert not doomed.alive(), f"failpoint {failpoint} never fired:\n{doomed.log_tail()}"
        finally:
            doomed.stop()
        survivor = _coordinator(config)
        try:
            await _check(config, results, [t.transfer_id for t in transfers])
        finally:
            survivor.stop()


async def test_credit_shard_killed_mid_saga_recovers(kafka_bootstrap: str, database_url: str) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    async with running_shards(config, [0]), ResultCollector(config) as results:
        shard1 = _start(config, "shard-1", ["shard", "run", "--shard", "1"])
        coordinator = _coordinator(config)
        try:
            payer, payee, frozen = await _prepare(config, results)
            transfers = [
                TransferFunds(_id(), payer, frozen if i % 5 == 0 else payee, 10 + i, "EUR")
                for i in range(300)
            ]
            await produce_raw(
                config, config.namespace.transfers, [(None, encode_public(t)) for t in transfers[:150]]
            )
            await results.wait_for([transfers[0].transfer_id], within_s=60)
            shard1.stop(signal.SIGKILL)  # the credit side dies with sagas in flight
            await produce_raw(
                config, config.namespace.transfers, [(None, encode_public(t)) for t in transfers[150:]]
            )
            await asyncio.sleep(3)  # unanswered credits are re-sent meanwhile (same ids: deduplicated)
            shard1 = _start(config, "shard-1", ["shard", "run", "--shard", "1"])
            await _check(config, results, [t.transfer_id for t in transfers])
        finally:
            coordinator.stop()
            shard1.stop()
