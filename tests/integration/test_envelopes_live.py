"""Envelopes on real Kafka and PostgreSQL (issue 14, item 1): a shard worker applies the good commands
of an envelope and dead-letters the bad one, and an envelope delivered again (a redelivery after a
crash before the offset commit) is answered again and applies nothing twice."""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas import envelopes
from schemas.shard_messages import OpenAccount, PostTransfer, ShardCommand, encode
from tests.ledger_harness import (
    ReplyCollector,
    accounts_on,
    balances,
    dead_letters,
    fresh_config,
    new_id,
    produce_raw,
    running_shards,
)


async def _rewind(ledger: LedgerConfig, topic: str) -> None:
    """Set the shard's committed offset back to the start of its topic."""
    group = f"{ledger.namespace.prefix}ledger.shard.00"
    consumer = AIOKafkaConsumer(**ledger.kafka_args(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition := TopicPartition(topic, 0)])
        await consumer.commit({partition: 0})
    finally:
        await consumer.stop()


@pytest.fixture
async def ledger(kafka_bootstrap: str, database_url: str) -> LedgerConfig:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, shard_count=1)
    return config


async def test_a_redelivered_envelope_with_a_bad_command_applies_the_good_ones_once(
    ledger: LedgerConfig,
) -> None:
    pmap = await init_ledger(ledger, 1)
    issuer, alice = accounts_on(pmap, 0, 2)
    good: list[ShardCommand] = [
        OpenAccount(new_id(), issuer, "EUR", overdraft_limit=10**9),
        OpenAccount(new_id(), alice, "EUR"),
        *(PostTransfer(new_id(), new_id(), issuer, alice, 100 + n, "EUR") for n in range(5)),
    ]
    bad = orjson.dumps({**orjson.loads(encode(PostTransfer(new_id(), new_id(), issuer, alice, 1, "EUR"))),
                        "amount": 0})  # fmt: skip
    payloads = [encode(c) for c in good[:4]] + [bad] + [encode(c) for c in good[4:]]
    envelope = envelopes.encode(envelopes.COMMANDS, payloads, {})
    topic = ledger.namespace.shard_commands(0)

    async with ReplyCollector(ledger) as replies:
        await produce_raw(ledger, topic, [(b"e", envelope)], signed=True)
        async with running_shards(ledger, [0]):
            got = await replies.wait_for([c.message_id for c in good])
        await _rewind(ledger, topic)  # as if the worker had died before its offset commit
        async with running_shards(ledger, [0]):
            while min(replies.deliveries.get(c.message_id, 0) for c in good) < 2:
                assert await replies.poll(5_000) > 0, "every command of the redelivered envelope is answered"
        letters = await dead_letters(ledger, want=2, within_s=5)

    assert [got[c.message_id].outcome for c in good] == ["account_opened"] * 2 + ["transfer_posted"] * 5
    assert (await balances(ledger, 0))[alice] == (sum(100 + n for n in range(5)), 0), "applied once"
    assert [(d["source_topic"], d["offset"], d["item"], d["reason"]) for d in letters] == [
        (topic, 0, 4, "invalid_field")
    ], "dead-lettered once, however often it comes"
    conn = await asyncpg.connect(ledger.database_url)
    try:
        journal = await conn.fetchval(f'SELECT count(*) FROM "{ledger.namespace.shard_schema(0)}".journal')
    finally:
        await conn.close()
    assert journal == 2 * 5, "two entries per transfer, none for the repeat"
