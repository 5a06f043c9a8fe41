"""Issue 12, item 4, at the edges: a shard worker applies only commands a coordinator signed, and a
coordinator acts only on replies a shard signed. Anything else becomes a dead letter with reason
`unauthenticated` and changes nothing. Driven through the in-memory fakes of the ports (tests/fakes.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from coordinator.adapters.kafka_records import RecordDecoder
from coordinator.saga.transfer_saga import SagaPolicy, Transfer, command_id, start
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from coordinator.service.inbound import Inbound
from coordinator.service.ports import TransferRecord
from schemas import envelopes
from schemas.message_auth import MessageAuthenticator
from schemas.partitioning import PartitionMap
from schemas.public import TransferFunds, encode_public
from schemas.shard_messages import CreditFunds, PostTransfer, ShardCommand, ShardReply, encode
from schemas.topics import Namespace
from shards.adapters.kafka_source import decode_command_record
from shards.domain.model import Account
from shards.service.worker import ShardWorker, WorkerSettings
from tests.fakes import FakeCheckpoints, FakeCommandSource, FakeSagaStore, FakeShardStore, handle_batch
from tests.ledger_harness import accounts_on

NS = Namespace("t_auth_")
PMAP = PartitionMap.initial(2)
KEYS = (("k1", bytes(range(32))),)
AUTH = MessageAuthenticator(KEYS)
LEAKED = MessageAuthenticator([("k1", b"\x55" * 32)])  # right key id, wrong secret
ALICE, BOB = accounts_on(PMAP, 0, 2, prefix="auth")


def _id() -> str:
    return str(uuid.uuid4())


DECODER = RecordDecoder(NS, AUTH, 10**12)


def decoded(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Inbound]:
    """Records as the coordinator's edge hands them to its service."""
    return [m for r in records for m in DECODER.decode(r)]


def record(
    topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]], offset: int
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, 0, len(value), tuple(headers))


def signed(
    topic: str, key: bytes | None, value: bytes, by: MessageAuthenticator = AUTH
) -> list[tuple[str, bytes]]:
    return [by.sign(topic, key, value)]


# --- the shard worker ----------------------------------------------------------------------------


def shard_worker(store: FakeShardStore, source: FakeCommandSource) -> ShardWorker:
    return ShardWorker(WorkerSettings(0), NS, store, source, FakeCheckpoints(), PMAP)


def command_record(
    command: ShardCommand, offset: int, *, topic: str = NS.shard_commands(0), **how: Any
) -> Any:
    key, value = str(getattr(command, "transfer_id", "")).encode(), encode(command)
    headers = how.get("headers", signed(how.get("signed_topic", topic), key, value, how.get("by", AUTH)))
    (decoded,) = decode_command_record(record(topic, how.get("value", value), key, headers, offset), AUTH)
    return decoded


def test_a_shard_applies_only_commands_a_coordinator_signed() -> None:
    store = FakeShardStore([Account(ALICE, "EUR", posted=1_000), Account(BOB, "EUR")])
    source = FakeCommandSource()
    credit = CreditFunds(_id(), _id(), ALICE, 5_000_000, "EUR")
    post = PostTransfer(_id(), _id(), ALICE, BOB, 500, "EUR")
    honest = PostTransfer(_id(), _id(), ALICE, BOB, 7, "EUR")
    forged = [
        command_record(credit, 0, headers=[]),  # no header at all
        command_record(post, 1, by=LEAKED),  # signed with a key the ledger does not have
        command_record(credit, 2, signed_topic=NS.shard_commands(1)),  # signed for another shard
        command_record(post, 3, value=encode(post).replace(b"500", b"900")),  # tampered after signing
    ]
    asyncio.run(shard_worker(store, source).process([*forged, command_record(honest, 4)], asyncio.Event()))

    letters = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.dead_letters]
    assert [(d["offset"], d["reason"]) for d in letters] == [(n, "unauthenticated") for n in range(4)]
    assert "no ledger-auth header" in letters[0]["detail"]
    assert "bad MAC" in letters[1]["detail"]
    replies = [
        u.message for m in store.outbox if m.topic == NS.shard_replies for u in envelopes.replies(m.payload)
    ]
    assert [r.in_reply_to for r in replies] == [honest.message_id], "only the signed command ran"  # type: ignore[union-attr]
    assert {e.transfer_id for e in store.entries} == {honest.transfer_id}
    assert source.committed == 5, "the partition moves on past the forgeries"


# --- the coordinator -----------------------------------------------------------------------------


def live_saga() -> TransferRecord:
    (carol,) = accounts_on(PMAP, 1, 1, prefix="auth")
    transfer = Transfer(_id(), ALICE, carol, 100, "EUR", 0, 1)
    state, _ = start(transfer, 1_000, SagaPolicy())
    return TransferRecord(transfer.transfer_id, "f" * 64, 0, state, "in_flight", None, 1)


def rejection_of(rec: TransferRecord) -> ShardReply:
    assert rec.state is not None
    step_command = command_id(rec.transfer_id, rec.state.step)
    return ShardReply(
        _id(), step_command, "ReserveFunds", 0, ALICE, rec.transfer_id, "rejected", "insufficient_funds"
    )


def test_a_coordinator_acts_only_on_replies_a_shard_signed() -> None:
    rec = live_saga()
    store = FakeSagaStore([rec])
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    reply = rejection_of(rec)
    key, value, topic = rec.transfer_id.encode(), encode(reply), NS.shard_replies
    forged = [
        record(topic, value, key, [], 10),
        record(topic, value, key, signed(topic, key, value, LEAKED), 11),
        record(topic, value, key, signed(NS.shard_commands(0), key, value), 12),  # a command's MAC
        record(topic, value, key, [("ledger-auth", b"v1:k9:" + b"0" * 64)], 13),
    ]
    asyncio.run(handle_batch(coordinator, store, decoded(forged)))

    assert store.changed == [], "no saga moved"
    assert store.steps == []
    letters = [orjson.loads(m.payload) for m in store.outbox]
    assert [m.topic for m in store.outbox] == [NS.dead_letters] * 4
    assert [(d["offset"], d["reason"]) for d in letters] == [(n, "unauthenticated") for n in range(10, 14)]
    assert "unknown key id 'k9'" in letters[3]["detail"]
    assert reply.message_id not in store.inbox, "the forged id is not spent: the real reply still counts"

    # The same reply signed by a shard is acted on: the test can see a saga move.
    asyncio.run(
        handle_batch(coordinator, store, decoded([record(topic, value, key, signed(topic, key, value), 14)]))
    )
    assert [r.transfer_id for r in store.changed] == [rec.transfer_id]


def test_public_topics_need_no_signature() -> None:
    store = FakeSagaStore()
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    raw = encode_public(TransferFunds(_id(), ALICE, BOB, 5, "EUR"))
    asyncio.run(handle_batch(coordinator, store, decoded([record(NS.transfers, raw, None, [], 0)])))
    assert [m.topic for m in store.outbox] == [NS.shard_commands(0)], "a same-shard transfer was started"
