"""Shard workers on real Kafka and PostgreSQL: every command path, duplicates, bad input."""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.shard_messages import (
    ChangeAccountStatus,
    CommitReservation,
    CreditFunds,
    OpenAccount,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    ShardCommand,
)
from tests.ledger_harness import (
    ReplyCollector,
    accounts_on,
    balances,
    fresh_config,
    new_id,
    produce_raw,
    running_shards,
    send,
)


@pytest.fixture
async def ledger(kafka_bootstrap: str, database_url: str) -> LedgerConfig:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, shard_count=2)
    return config


async def test_intra_shard_transfers_and_the_saga_legs(ledger: LedgerConfig) -> None:
    pmap = await init_ledger(ledger, 2)
    issuer, alice, bob = accounts_on(pmap, 0, 3)
    (carol,) = accounts_on(pmap, 1, 1)
    t1, t2, t3 = new_id(), new_id(), new_id()
    shard0: list[ShardCommand] = [
        OpenAccount(new_id(), issuer, "EUR", overdraft_limit=10**12),
        OpenAccount(new_id(), alice, "EUR"),
        OpenAccount(new_id(), bob, "EUR"),
        PostTransfer(new_id(), t1, issuer, alice, 10_000, "EUR"),
        PostTransfer(new_id(), new_id(), alice, bob, 20_000, "EUR"),  # more than alice has
        ReserveFunds(new_id(), t2, alice, 3_000, "EUR"),
        CommitReservation(new_id(), t2, alice),
        ReserveFunds(new_id(), t3, alice, 1_000, "EUR"),
        ReleaseReservation(new_id(), t3, alice),
        CommitReservation(new_id(), t3, alice),  # late: already released
    ]
    shard1: list[ShardCommand] = [
        OpenAccount(new_id(), carol, "EUR"),
        CreditFunds(new_id(), t2, carol, 3_000, "EUR"),
    ]
    async with running_shards(ledger, [0, 1]), ReplyCollector(ledger) as replies:
        await send(ledger, 0, shard0)
        await send(ledger, 1, shard1)
        got = await replies.wait_for([c.message_id for c in shard0 + shard1])
    outcomes = [(got[c.message_id].outcome, got[c.message_id].reason) for c in shard0]
    assert outcomes == [
        ("account_opened", None),
        ("account_opened", None),
        ("account_opened", None),
        ("transfer_posted", None),
        ("rejected", "insufficient_funds"),
        ("funds_reserved", None),
        ("reservation_committed", None),
        ("funds_reserved", None),
        ("reservation_released", None),
        ("rejected", "reservation_released"),
    ]
    b0, b1 = await balances(ledger, 0), await balances(ledger, 1)
    assert b0[alice] == (10_000 - 3_000, 0)
    assert b0[issuer] == (-10_000, 0)
    assert b0["transit:EUR"] == (3_000, 0)
    assert b1[carol] == (3_000, 0)
    assert b1["transit:EUR"] == (-3_000, 0)
    assert sum(p for p, _ in b0.values()) == sum(p for p, _ in b1.values()) == 0


async def test_duplicates_get_the_same_reply_and_change_nothing(ledger: LedgerConfig) -> None:
    pmap = await init_ledger(ledger, 2)
    issuer, alice = accounts_on(pmap, 0, 2)
    transfer = PostTransfer(new_id(), new_id(), issuer, alice, 500, "EUR")
    first: list[ShardCommand] = [
        OpenAccount(new_id(), issuer, "EUR", overdraft_limit=10**9),
        OpenAccount(new_id(), alice, "EUR"),
        transfer,
        transfer,  # duplicate inside one batch
    ]
    async with running_shards(ledger, [0]), ReplyCollector(ledger) as replies:
        await send(ledger, 0, first)
        await replies.wait_for([c.message_id for c in first])
        await send(ledger, 0, [transfer, transfer])  # and in later batches
        await send(ledger, 0, [check := ChangeAccountStatus(new_id(), alice, "frozen")])
        await replies.wait_for([check.message_id])
    assert (await balances(ledger, 0))[alice] == (500, 0)
    assert replies.deliveries[transfer.message_id] >= 4, "each copy is answered (with the same reply)"
    conn = await asyncpg.connect(ledger.database_url)
    try:
        schema = ledger.namespace.shard_schema(0)
        entries = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".journal WHERE message_id = $1', transfer.message_id
        )
    finally:
        await conn.close()
    assert entries == 2


async def test_undecodable_commands_are_dead_lettered_once(ledger: LedgerConfig) -> None:
    # Signed as a coordinator would: the decoder, not the authentication, is what refuses them.
    bad = (b"not json", b'{"type": "ReserveFunds", "v": 1}', b"\xff\xfe")
    await produce_raw(ledger, ledger.namespace.shard_commands(0), [(None, raw) for raw in bad], signed=True)
    pmap = await init_ledger(ledger, 2)
    (alice,) = accounts_on(pmap, 0, 1)
    async with running_shards(ledger, [0]), ReplyCollector(ledger) as replies:
        await send(ledger, 0, [after := OpenAccount(new_id(), alice, "EUR")])
        assert (await replies.wait_for([after.message_id]))[after.message_id].outcome == "account_opened"
    consumer = AIOKafkaConsumer(
        ledger.namespace.dead_letters,
        **ledger.kafka_args(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        letters = [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    assert len(letters) == 3
    assert "unauthenticated" not in {orjson.loads(r.value or b"{}")["reason"] for r in letters}
