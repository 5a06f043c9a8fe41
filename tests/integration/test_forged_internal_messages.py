"""Issue 12, item 4 (proof): with a leaked Kafka credential but no valid MAC, the findings' forgeries
change nothing. A CreditFunds and a PostTransfer written onto a shard's command topic, and a
`rejected` reply for a live saga's current step (its command id read from the status query), are
each dead-lettered as `unauthenticated`; balances stay as they were and the saga then completes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaProducer

from coordinator.adapters.postgres_status import transfer_status
from coordinator.bootstrap import RunSettings, run_coordinator
from coordinator.saga.transfer_saga import SagaPolicy
from coordinator.service.coordinator import CoordinatorSettings
from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from infra.postgres_pool import close_pool, open_pool
from schemas.message_auth import MessageAuthenticator
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from schemas.shard_messages import CreditFunds, PostTransfer, ShardReply, encode
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    balances,
    dead_letters,
    fresh_config,
    new_id,
    produce_raw,
    running_shards,
)

# Knows the key id the ledger uses, not its secret: what a leaked Kafka credential gives you.
WRONG_KEY = MessageAuthenticator([("test", b"\x42" * 32)])


async def forge(config: LedgerConfig, topic: str, key: bytes | None, value: bytes, *, mac: bool) -> None:
    """Write as the ledger's own Kafka principal would: the broker lets it through."""
    headers = [WRONG_KEY.sign(topic, key, value)] if mac else []
    producer = AIOKafkaProducer(**config.kafka_args(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def open_and_fund(
    config: LedgerConfig, results: ResultCollector, accounts: Sequence[str], funded: str
) -> None:
    opens = [
        OpenAccountRequest(new_id(), a, "EUR", 10**12 if a == "issuer" else 0, {})
        for a in ("issuer", *accounts)
    ]
    await produce_raw(
        config,
        config.namespace.account_commands,
        [(o.account_id.encode(), encode_public(o)) for o in opens],
    )
    await results.wait_for([o.command_id for o in opens])
    fund = TransferFunds(new_id(), "issuer", funded, 1_000_000, "EUR")
    await produce_raw(config, config.namespace.transfers, [(fund.transfer_id.encode(), encode_public(fund))])
    assert (await results.wait_for([fund.transfer_id]))[fund.transfer_id]["state"] == "completed"


async def crediting_command(config: LedgerConfig, transfer_id: str, within_s: float = 30) -> str:
    """The command id of the saga's current step once it waits on the credit (GET /transfers/{id})."""
    pool = await open_pool(config.database_url, config.namespace.coordinator_schema, max_size=1)
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            status = await transfer_status(pool, transfer_id)
            if status is not None and status["step"] == "crediting":
                (step,) = [s for s in status["steps"] if s["step"] == "crediting"]
                return str(step["command_id"])
            await asyncio.sleep(0.1)
        raise AssertionError(f"transfer {transfer_id} never reached crediting")
    finally:
        await close_pool(pool)


async def saga_of(config: LedgerConfig, transfer_id: str) -> tuple[str, str]:
    pool = await open_pool(config.database_url, config.namespace.coordinator_schema, max_size=1)
    try:
        status = await transfer_status(pool, transfer_id)
    finally:
        await close_pool(pool)
    assert status is not None
    return status["status"], status["step"]


@contextlib.asynccontextmanager
async def patient_coordinator(config: LedgerConfig) -> AsyncIterator[None]:
    """A coordinator that keeps re-sending a credit for a minute before it gives up on it, so the
    saga is still live when the stopped credit shard comes back."""
    settings = CoordinatorSettings(
        issuance_accounts=frozenset({"issuer"}),
        policy=SagaPolicy(base_backoff_ms=500, max_backoff_ms=2_000, max_forward_attempts=60),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_coordinator(config, settings, stop, RunSettings(sweep_every_s=0.1)))
    try:
        yield
    finally:
        stop.set()
        await task


async def test_forged_internal_messages_with_a_leaked_credential_are_dead_lettered(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    ns = config.namespace
    pmap = await init_ledger(config, 2)
    victim, other = accounts_on(pmap, 0, 2, prefix="victim")
    (remote,) = accounts_on(pmap, 1, 1, prefix="remote")
    async with patient_coordinator(config), running_shards(config, [0]), ResultCollector(config) as results:
        async with running_shards(config, [1]):
            await open_and_fund(config, results, [victim, other, remote], victim)
        # Shard 1 is down: a cross-shard saga waits on its credit, its command id in plain view.
        live = TransferFunds(new_id(), victim, remote, 250, "EUR")
        await produce_raw(config, ns.transfers, [(live.transfer_id.encode(), encode_public(live))])
        credit_id = await crediting_command(config, live.transfer_id)
        before = await balances(config, 0)

        credit = CreditFunds(new_id(), new_id(), victim, 5_000_000, "EUR")
        post = PostTransfer(new_id(), new_id(), victim, other, 12_345, "EUR")
        reply = ShardReply(
            new_id(), credit_id, "CreditFunds", 1, remote, live.transfer_id, "rejected", "account_frozen"
        )
        key = live.transfer_id.encode()
        await forge(config, ns.shard_commands(0), credit.transfer_id.encode(), encode(credit), mac=False)
        await forge(config, ns.shard_commands(0), post.transfer_id.encode(), encode(post), mac=True)
        await forge(config, ns.shard_replies, key, encode(reply), mac=False)
        await forge(config, ns.shard_replies, key, encode(reply), mac=True)

        letters = await dead_letters(config, 4, within_s=60)
        assert sorted((d["source_topic"], d["reason"]) for d in letters) == sorted(
            [(ns.shard_commands(0), "unauthenticated")] * 2 + [(ns.shard_replies, "unauthenticated")] * 2
        ), letters
        assert await saga_of(config, live.transfer_id) == ("in_flight", "crediting"), (
            "the forged reply moved it"
        )
        assert await balances(config, 0) == before, "a forged command moved money"

        async with running_shards(config, [1]):
            done = (await results.wait_for([live.transfer_id], within_s=90))[live.transfer_id]
    assert (done["state"], done["reason"]) == ("completed", None)
    assert len(results.by_id[live.transfer_id]) == 1
    shard0, shard1 = await balances(config, 0), await balances(config, 1)
    assert (shard0[victim], shard0[other], shard1[remote]) == ((1_000_000 - 250, 0), (0, 0), (250, 0))
