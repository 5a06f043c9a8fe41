"""A command valid by its contract that the database refuses (a NUL character PostgreSQL text
cannot hold) is dead-lettered as invalid_field, and the shard goes on with the next (issue 12:
"a record that cannot be handled is dead-lettered and the partition moves on")."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer

from deploy.ledger_init import init_ledger
from schemas.shard_messages import OpenAccount
from tests.ledger_harness import (
    ReplyCollector,
    accounts_on,
    balances,
    fresh_config,
    new_id,
    running_shards,
    send,
)


async def test_a_command_the_database_refuses_is_dead_lettered_and_the_shard_goes_on(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 1)
    first, poisoned, after = accounts_on(pmap, 0, 3)
    ok_before = OpenAccount(new_id(), first, "EUR")
    poison = OpenAccount(new_id(), poisoned, "EUR", 0, {"note": "a\x00b"})  # jsonb refuses \u0000
    ok_after = OpenAccount(new_id(), after, "EUR")
    async with running_shards(config, [0], batch_max=50), ReplyCollector(config) as replies:
        await send(config, 0, [ok_before, poison, ok_after])
        got = await replies.wait_for([ok_before.message_id, ok_after.message_id], within_s=30)
    assert {r.outcome for r in got.values()} == {"account_opened"}
    assert poison.message_id not in replies.replies
    assert set(await balances(config, 0)) == {first, after}
    consumer = AIOKafkaConsumer(
        config.namespace.dead_letters, **config.kafka_args(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        letters = [
            orjson.loads(r.value or b"{}")
            for rs in (await consumer.getmany(timeout_ms=5000)).values()
            for r in rs
        ]
    finally:
        await consumer.stop()
    assert [(d["reason"], d["offset"]) for d in letters] == [("invalid_field", 1)]
    assert "database" in letters[0]["detail"]
