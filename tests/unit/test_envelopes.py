"""Envelopes (issue 14, item 1): the codec against its JSON Schema, the packer's grouping and bounds,
and a shard worker and a coordinator handling envelopes with bad, repeated and foreign messages."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from infra import envelopes as packing
from infra.outbox import OutboxMessage
from schemas import envelopes
from schemas.public import TransferFunds, encode_public
from schemas.shard_messages import (
    CommitReservation,
    InvalidMessage,
    OpenAccount,
    PostTransfer,
    ShardReply,
    decode_command,
    encode,
)
from shards.domain.model import Account
from tests.fakes import FakeCommandSource, FakeSagaStore, FakeShardStore, handle_batch
from tests.unit.test_internal_auth_edges import (
    ALICE,
    AUTH,
    BOB,
    NS,
    PMAP,
    decoded,
    live_saga,
    record,
    rejection_of,
    shard_worker,
    signed,
)
from tests.unit.test_internal_auth_edges import command_record as single_command_record

JSON_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
NAMES = ("shard-envelope.json", "shard-command.json", "shard-reply.json", "currency.json")
REGISTRY: Registry[Any] = Registry().with_resources(
    (n, Resource.from_contents(json.loads((JSON_DIR / n).read_text()))) for n in NAMES
)
SCHEMA = Draft202012Validator(json.loads((JSON_DIR / "shard-envelope.json").read_text()), registry=REGISTRY)
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _id() -> str:
    return str(uuid.uuid4())


def post(amount: int = 5) -> PostTransfer:
    return PostTransfer(_id(), _id(), ALICE, BOB, amount, "EUR")


def command_message(raw: bytes, headers: dict[str, str] | None = None) -> OutboxMessage:
    return OutboxMessage(NS.shard_commands(0), b"k", raw, headers or {})


# --- the codec and its schema ----------------------------------------------------------------------


def test_an_envelope_carries_its_commands_in_order_with_their_traces() -> None:
    commands = [post(n) for n in range(1, 4)]
    raw = envelopes.encode(envelopes.COMMANDS, [encode(c) for c in commands], {1: TRACE})

    assert SCHEMA.is_valid(orjson.loads(raw))
    unpacked = envelopes.commands(raw)
    assert [u.message for u in unpacked] == commands
    assert [u.index for u in unpacked] == [0, 1, 2]
    assert [u.traceparent for u in unpacked] == [None, TRACE, None]


def test_the_same_messages_make_the_same_envelope_id_and_others_another() -> None:
    payloads = [encode(post()) for _ in range(3)]
    first = orjson.loads(envelopes.encode(envelopes.COMMANDS, payloads, {}))["envelope_id"]
    again = orjson.loads(envelopes.encode(envelopes.COMMANDS, payloads, {}))["envelope_id"]
    other = orjson.loads(envelopes.encode(envelopes.COMMANDS, payloads[:2], {}))["envelope_id"]
    assert first == again != other


def test_a_record_that_is_not_an_envelope_meets_the_single_message_checks_unchanged() -> None:
    command = post()
    assert [u.message for u in envelopes.commands(encode(command))] == [command]
    for raw, reason in [
        (b"\xff", "not_utf8"),
        (b"[" * 10, "nesting_too_deep"),
        (b'{"type":"ShardCommands"}', "unknown_message_type"),  # not an envelope's first bytes
        (b"x" * (70 * 1024), "too_large"),
    ]:
        with pytest.raises(InvalidMessage) as single:
            decode_command(raw)
        with pytest.raises(InvalidMessage) as either:
            envelopes.commands(raw)
        assert single.value.reason == either.value.reason == reason


def _envelope(**changes: Any) -> bytes:
    body = {"type": "ShardCommands", "v": 1, "envelope_id": _id(), "traceparents": {}}
    body["messages"] = [orjson.loads(encode(post()))]
    body.update(changes)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"extra": 1}, "unknown_field"),
        ({"traceparents": ...}, "missing_field"),
        ({"v": 2}, "unsupported_version"),
        ({"v": True}, "unsupported_version"),
        ({"envelope_id": "not-a-uuid"}, "invalid_field"),
        ({"messages": []}, "invalid_field"),
        ({"messages": [orjson.loads(encode(post()))] * 1001}, "invalid_field"),
        pytest.param({"traceparents": {"1": TRACE}}, "invalid_field", id="trace-of-no-message"),
        ({"traceparents": {"01": TRACE}}, "invalid_field"),
        ({"traceparents": {"0": "00-zz"}}, "invalid_field"),
        ({"messages": orjson.Fragment(b"[" * 1100 + b"]" * 1100)}, "nesting_too_deep"),
    ],
)
def test_an_envelope_that_breaks_its_own_contract_is_refused_whole(
    changes: dict[str, Any], reason: str
) -> None:
    raw = _envelope(**changes)
    if reason != "nesting_too_deep" and changes.get("traceparents") != {"1": TRACE}:
        # (an index past the end is beyond JSON Schema; no parser reads 1,100 levels)
        assert not SCHEMA.is_valid(orjson.loads(raw)), "the schema refuses it too"
    with pytest.raises(InvalidMessage) as refused:
        envelopes.commands(raw)
    assert refused.value.reason == reason


def test_one_bad_message_in_an_envelope_is_refused_alone() -> None:
    good = [post(), post()]
    bad = orjson.dumps({**orjson.loads(encode(post())), "amount": -5})
    raw = envelopes.encode(envelopes.COMMANDS, [encode(good[0]), bad, encode(good[1])], {})
    assert not SCHEMA.is_valid(orjson.loads(raw)), "the schema, which sees the whole, refuses it"
    unpacked = envelopes.commands(raw)
    assert [u.message for u in unpacked][0::2] == good
    refusal = unpacked[1].message
    assert isinstance(refusal, InvalidMessage)
    assert refusal.reason == "invalid_field"
    assert unpacked[1].index == 1


def test_a_message_deeper_than_its_contract_is_refused_alone() -> None:
    deep = orjson.dumps({**orjson.loads(encode(post())), "metadata": {"a": {"b": {"c": 1}}}})
    raw = envelopes.encode(envelopes.COMMANDS, [deep, encode(post())], {})
    first, second = envelopes.commands(raw)
    assert isinstance(first.message, InvalidMessage)
    assert isinstance(second.message, PostTransfer)


# --- the packer ----------------------------------------------------------------------------------


def test_the_packer_makes_one_envelope_per_destination_and_leaves_the_rest() -> None:
    result = OutboxMessage(NS.results, b"t", b"{}", {})
    to_0 = [OutboxMessage(NS.shard_commands(0), b"a", encode(post()), {}) for _ in range(3)]
    to_1 = [OutboxMessage(NS.shard_commands(1), b"b", encode(post()), {"traceparent": TRACE})]
    packed = packing.pack([to_0[0], result, to_1[0], to_0[1], to_0[2]], envelopes.COMMANDS,
                          lambda m: m.topic if m.topic != NS.results else None, 256 * 1024)  # fmt: skip

    assert [m.topic for m in packed] == [NS.results, NS.shard_commands(0), NS.shard_commands(1)]
    assert packed[0] is result
    assert [u.message for u in envelopes.commands(packed[1].payload)] == [
        decode_command(m.payload) for m in to_0
    ]
    assert packed[1].key == b"a"
    assert [u.traceparent for u in envelopes.commands(packed[2].payload)] == [TRACE]


def test_the_packer_splits_at_the_record_size_and_the_message_count() -> None:
    big = OpenAccount(_id(), "acct-1", "EUR", 0, {f"k{i}": "v" * 250 for i in range(16)})  # ~4.3 KB
    many = [command_message(encode(big), {"traceparent": TRACE}) for _ in range(100)]
    limit = 64 * 1024
    packed = packing.pack(many, envelopes.COMMANDS, lambda m: m.topic, limit)
    assert len(packed) > 1
    assert all(len(m.payload) <= limit - 1024 for m in packed)
    assert sum(len(envelopes.commands(m.payload)) for m in packed) == 100

    small = [command_message(encode(post())) for _ in range(2500)]
    counts = [len(envelopes.commands(m.payload)) for m in packing.pack(small, envelopes.COMMANDS,
                                                                       lambda m: m.topic, 10**7)]  # fmt: skip
    assert counts == [1000, 1000, 500]


def test_a_message_larger_than_the_budget_still_goes_alone() -> None:
    huge = command_message(b'{"pad":"' + b"x" * 5000 + b'"}')
    packed = packing.pack(
        [command_message(encode(post())), huge], envelopes.COMMANDS, lambda m: m.topic, 4096
    )
    assert [len(orjson.loads(m.payload)["messages"]) for m in packed] == [1, 1]


def test_key_partition_is_kafkas_default_partitioner() -> None:
    rng = random.Random(7)
    for _ in range(500):
        key = rng.randbytes(rng.randint(0, 40))
        partitions = rng.randint(1, 64)
        assert packing.key_partition(key, partitions) == DefaultPartitioner()(
            key, list(range(partitions)), []
        )


# --- a shard worker ------------------------------------------------------------------------------


def envelope_record(commands: list[bytes], offset: int) -> Any:
    """A coordinator's envelope as the shard's edge decodes it (a record holds several commands)."""
    topic, key = NS.shard_commands(0), b"k"
    value = envelopes.encode(envelopes.COMMANDS, commands, {})
    from shards.adapters.kafka_source import decode_command_record  # noqa: PLC0415

    return decode_command_record(record(topic, value, key, signed(topic, key, value), offset), AUTH)


def test_a_shard_applies_the_good_commands_of_an_envelope_and_dead_letters_the_bad_one() -> None:
    store = FakeShardStore([Account(ALICE, "EUR", posted=1_000), Account(BOB, "EUR")])
    source = FakeCommandSource()
    first, last = post(100), post(200)
    bad = orjson.dumps({**orjson.loads(encode(post())), "currency": "XXX"})
    items = envelope_record([encode(first), bad, encode(last)], offset=7)
    asyncio.run(shard_worker(store, source).process(items, asyncio.Event()))

    assert {e.transfer_id for e in store.entries} == {first.transfer_id, last.transfer_id}
    letters = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.dead_letters]
    assert [(d["offset"], d["item"], d["reason"]) for d in letters] == [(7, 1, "invalid_field")]
    assert ("dlq:" + NS.shard_commands(0) + ":0:7:1") in list(store.inbox)
    replies = [m for m in store.outbox if m.topic == NS.shard_replies]
    answered = [u.message for m in replies for u in envelopes.replies(m.payload)]
    assert sorted(r.in_reply_to for r in answered if isinstance(r, ShardReply)) == sorted(
        [first.message_id, last.message_id]
    )
    assert source.committed == 8


def test_a_shard_sends_one_reply_envelope_per_partition_each_where_its_replies_keys_go() -> None:
    store = FakeShardStore([Account(ALICE, "EUR", posted=10_000), Account(BOB, "EUR")])
    commands = [post() for _ in range(40)]
    items = [single_command_record(c, offset) for offset, c in enumerate(commands)]
    worker = shard_worker(store, FakeCommandSource())
    asyncio.run(worker.process(items, asyncio.Event()))

    partitions = worker.settings.reply_partitions
    envelopes_sent = [m for m in store.outbox if m.topic == NS.shard_replies]
    seen: set[int] = set()
    for m in envelopes_sent:
        where = packing.key_partition(m.key, partitions)
        assert where not in seen, "one envelope per partition"
        seen.add(where)
        for u in envelopes.replies(m.payload):
            assert isinstance(u.message, ShardReply)
            assert packing.key_partition(cast(str, u.message.transfer_id).encode(), partitions) == where
    assert 1 < len(envelopes_sent) <= partitions
    assert sum(len(envelopes.replies(m.payload)) for m in envelopes_sent) == 40


# --- a coordinator -------------------------------------------------------------------------------


def test_a_coordinator_sends_one_envelope_per_shard_for_a_batch() -> None:
    store = FakeSagaStore()
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    transfers = [TransferFunds(_id(), ALICE, BOB, 5, "EUR") for _ in range(30)]
    records = [record(NS.transfers, encode_public(t), None, [], i) for i, t in enumerate(transfers)]
    asyncio.run(handle_batch(coordinator, store, decoded(records)))

    assert [m.topic for m in store.outbox] == [NS.shard_commands(0)]
    posted = [u.message for u in envelopes.commands(store.outbox[0].payload)]
    assert [cast(PostTransfer, c).transfer_id for c in posted] == [t.transfer_id for t in transfers]


def test_a_coordinator_acts_on_each_reply_of_an_envelope_and_dead_letters_a_bad_one() -> None:
    recs = [live_saga() for _ in range(2)]
    store = FakeSagaStore(recs)
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    junk = orjson.dumps({**orjson.loads(encode(rejection_of(recs[0]))), "shard": "zero"})
    payloads = [encode(rejection_of(recs[0])), junk, encode(rejection_of(recs[1]))]
    topic, key = NS.shard_replies, recs[0].transfer_id.encode()
    value = envelopes.encode(envelopes.REPLIES, payloads, {})
    asyncio.run(
        handle_batch(coordinator, store, decoded([record(topic, value, key, signed(topic, key, value), 3)]))
    )

    assert sorted(r.transfer_id for r in store.changed) == sorted(r.transfer_id for r in recs)
    letters = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.dead_letters]
    assert [(d["offset"], d["item"], d["reason"]) for d in letters] == [(3, 1, "invalid_field")]
    assert f"dlq:{topic}:0:3:1" in store.inbox
    results = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.results]
    assert sorted((r["transfer_id"], r["state"]) for r in results) == sorted(
        (r.transfer_id, "rejected") for r in recs
    )


def test_an_envelope_without_a_shards_mac_is_refused_whole() -> None:
    rec = live_saga()
    store = FakeSagaStore([rec])
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    value = envelopes.encode(envelopes.REPLIES, [encode(rejection_of(rec))], {})
    topic, key = NS.shard_replies, rec.transfer_id.encode()
    forged = record(topic, value, key, signed(NS.shard_commands(0), key, value), 4)  # a command's MAC
    asyncio.run(handle_batch(coordinator, store, decoded([forged])))

    assert store.changed == []
    letters = [orjson.loads(m.payload) for m in store.outbox]
    assert [(d["offset"], d["reason"], "item" in d) for d in letters] == [(4, "unauthenticated", False)]


def test_a_redelivered_reply_envelope_changes_nothing_twice() -> None:
    """Every reply in it is already in the inbox (as after a crash before the offset commit, or on
    the coordinator a rebalance gave its partition to), so nothing moves again."""
    rec = live_saga()
    store = FakeSagaStore([rec])  # its inbox remembers what earlier batches wrote
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    value = envelopes.encode(envelopes.REPLIES, [encode(rejection_of(rec))], {})
    topic, key = NS.shard_replies, rec.transfer_id.encode()
    envelope = record(topic, value, key, signed(topic, key, value), 5)
    asyncio.run(handle_batch(coordinator, store, decoded([envelope])))
    moved, sent = len(store.changed), len(store.outbox)
    assert moved == 1

    asyncio.run(handle_batch(coordinator, store, decoded([envelope])))
    assert (len(store.changed), len(store.outbox)) == (moved, sent)


def test_commit_reservation_is_a_command_the_envelope_carries() -> None:
    """Every command type travels in an envelope and back out unchanged."""
    command = CommitReservation(_id(), _id(), ALICE)
    raw = envelopes.encode(envelopes.COMMANDS, [encode(command)], {})
    assert SCHEMA.is_valid(orjson.loads(raw))
    assert [u.message for u in envelopes.commands(raw)] == [command]
