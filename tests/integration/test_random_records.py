"""Proof for issue 12: a few hundred random byte strings on every topic the ledger consumes (the
public ones, and with an internal credential the shard command topics and the replies, both
unsigned and signed with the ledger's own key so that they reach the decoders) change nothing:
every one is dead-lettered, balances are unchanged, and a transfer sent after them completes."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import (
    ResultCollector,
    balances,
    dead_letters,
    fresh_config,
    produce_raw,
    running_ledger,
)

PER_TOPIC = 120
_WORDS = ["type", "v", "amount", "account_id", "message_id", "CreditFunds", "ShardReply", "EUR", "{", "\x00"]


def _junk(rng: random.Random) -> bytes:
    """Random bytes, or random JSON built from the contracts' words (never a valid id)."""
    kind = rng.random()
    if kind < 0.5:
        return rng.randbytes(rng.randrange(0, 3000))
    if kind < 0.9:

        def value(depth: int) -> Any:
            pick = rng.random()
            if depth > 3 or pick < 0.3:
                return rng.choice(
                    [None, True, 0, -1, 2**63, 1.5, rng.choice(_WORDS), "x" * rng.randrange(300)]
                )
            if pick < 0.6:
                return [value(depth + 1) for _ in range(rng.randrange(4))]
            return {rng.choice(_WORDS): value(depth + 1) for _ in range(rng.randrange(6))}

        return orjson.dumps({"type": rng.choice(_WORDS), "v": rng.choice([1, 2, "1"]), "x": value(0)})
    return b"[" * rng.randrange(10, 5000)


async def _all_balances(config: LedgerConfig) -> dict[str, tuple[int, int]]:
    return {**await balances(config, 0), **await balances(config, 1)}


async def test_random_records_on_every_consumed_topic_change_nothing(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    ns = config.namespace
    rng = random.Random(12)
    targets = [
        (ns.transfers, False), (ns.account_commands, False),
        (ns.shard_commands(0), False), (ns.shard_commands(1), True), (ns.shard_commands(0), True),
        (ns.shard_replies, False), (ns.shard_replies, True),
    ]  # fmt: skip
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        opens = [
            OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**15 if a == "issuer" else 0)
            for a in ("issuer", "a", "b")
        ]
        await produce_raw(
            config, ns.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
        )
        await results.wait_for([o.command_id for o in opens])
        fund = TransferFunds(str(uuid.uuid4()), "issuer", "a", 1_000_000, "EUR")
        await produce_raw(config, ns.transfers, [(None, encode_public(fund))])
        await results.wait_for([fund.transfer_id])
        before = await _all_balances(config)
        for topic, signed in targets:
            junk = [
                (rng.choice([None, rng.randbytes(rng.randrange(40))]), _junk(rng)) for _ in range(PER_TOPIC)
            ]
            await produce_raw(config, topic, junk, signed=signed)
        letters = await dead_letters(config, PER_TOPIC * len(targets), within_s=90)
        after_junk = await _all_balances(config)
        t = TransferFunds(str(uuid.uuid4()), "a", "b", 7, "EUR")
        await produce_raw(config, ns.transfers, [(None, encode_public(t))])
        done = await results.wait_for([t.transfer_id], within_s=20)
    assert len(letters) == PER_TOPIC * len(targets), "every random record is dead-lettered, once"
    reasons = {(d["source_topic"], d["reason"]) for d in letters}
    assert (ns.shard_commands(0), "unauthenticated") in reasons
    assert any(topic == ns.shard_replies and reason != "unauthenticated" for topic, reason in reasons)
    assert after_junk == before, "random records changed balances"
    assert done[t.transfer_id]["state"] == "completed"
    assert set(results.by_id) == {o.command_id for o in opens} | {fund.transfer_id, t.transfer_id}
