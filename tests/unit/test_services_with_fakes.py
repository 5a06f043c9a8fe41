"""Coordinator and ShardWorker driven through the in-memory ports (tests/fakes.py): dedupe across
batches, retries of a whole batch, and dead letters for what the store refuses, in milliseconds
(issue 14, item 8). The integration tests show the same against real servers."""

from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import replace

import orjson
import pytest
from aiokafka import ConsumerRecord

from coordinator.bootstrap import RunSettings, _handle, _with_retries
from coordinator.failpoints import Failpoints
from coordinator.saga.transfer_saga import command_id
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from coordinator.service.ports import VersionConflict
from infra.outbox import Committed
from schemas import envelopes
from schemas.errors import StoreUnavailable
from schemas.shard_messages import OpenAccount, PostTransfer, ShardReply, encode
from shards.domain.model import Account
from shards.service.worker import ShardWorker, WorkerSettings
from tests.fakes import FakeCheckpoints, FakeCommandSource, FakeSagaStore, FakeShardStore, handle_batch
from tests.unit.test_internal_auth_edges import (
    ALICE,
    BOB,
    NS,
    PMAP,
    command_record,
    decoded,
    live_saga,
    record,
    rejection_of,
    signed,
)


def _id() -> str:
    return str(uuid.uuid4())


def _replies(store: FakeShardStore, start: int = 0) -> list[ShardReply]:
    """The replies in the shard's outbox rows from `start` on, unpacked from their envelopes."""
    return [
        u.message
        for m in store.outbox[start:]
        if m.topic == NS.shard_replies
        for u in envelopes.replies(m.payload)
        if isinstance(u.message, ShardReply)
    ]


def reply_record(reply: ShardReply, offset: int) -> ConsumerRecord[bytes, bytes]:
    """A shard's signed reply record, as the coordinator consumes it."""
    topic, key, value = NS.shard_replies, str(reply.transfer_id).encode(), encode(reply)
    return record(topic, value, key, signed(topic, key, value), offset)


# --- the shard worker ----------------------------------------------------------------------------


def test_a_command_redelivered_in_a_later_batch_gets_the_same_reply_and_changes_nothing() -> None:
    store = FakeShardStore([Account(ALICE, "EUR", posted=1_000), Account(BOB, "EUR")])
    post = PostTransfer(_id(), _id(), ALICE, BOB, 300, "EUR")
    source = FakeCommandSource([command_record(post, 0)], [command_record(post, 1)])
    checkpoints = FakeCheckpoints()
    worker = ShardWorker(WorkerSettings(0), NS, store, source, checkpoints, PMAP)

    async def run_until_drained() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        drained = asyncio.create_task(source.drained.wait())
        await asyncio.wait([running, drained], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        drained.cancel()
        await running  # raises what stopped the worker, if something did

    asyncio.run(run_until_drained())

    assert store.commits == 2, "both batches committed"
    first, again = _replies(store)
    assert again == first, "the stored reply, message id and all"
    assert first.in_reply_to == post.message_id
    assert first.outcome == "transfer_posted"
    assert (store.accounts[ALICE].posted, store.accounts[BOB].posted) == (700, 300), "moved once"
    assert [e.transfer_id for e in store.entries] == [post.transfer_id] * 2, "one debit and one credit"
    assert list(store.inbox) == [post.message_id]
    assert source.committed == 2
    assert checkpoints.published == [(0, 2, store.head.journal_hash)], "the chain head, once"


def test_a_batch_the_store_refuses_is_applied_record_by_record_and_the_refused_one_dead_lettered() -> None:
    poison = OpenAccount(_id(), "acct-poison", "EUR", 0, {"note": "the store cannot hold this"})
    opened = OpenAccount(_id(), "acct-fine", "EUR", 0, {})
    post = PostTransfer(_id(), _id(), ALICE, BOB, 25, "EUR")
    store = FakeShardStore(
        [Account(ALICE, "EUR", posted=100), Account(BOB, "EUR")],
        refuse=lambda change: any(a.account_id == poison.account_id for a in change.created),
    )
    source = FakeCommandSource()
    worker = ShardWorker(WorkerSettings(0), NS, store, source, FakeCheckpoints(), PMAP)
    items = [command_record(opened, 10), command_record(poison, 11), command_record(post, 12)]
    asyncio.run(worker.process(items, asyncio.Event()))

    assert opened.account_id in store.accounts
    assert poison.account_id not in store.accounts
    assert store.accounts[BOB].posted == 25, "the record after the refused one went through"
    assert sorted(r.in_reply_to for r in _replies(store)) == sorted([opened.message_id, post.message_id])
    letters = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.dead_letters]
    assert [(d["offset"], d["reason"]) for d in letters] == [(11, "invalid_field")]
    assert "refuses" in letters[0]["detail"]
    assert f"dlq:{NS.shard_commands(0)}:0:11" in store.inbox, "a redelivery is not dead-lettered again"
    assert (worker.stats.dead_letters, source.committed) == (1, 13)


def test_a_batch_whose_write_fails_for_a_moment_is_retried_and_applied_once() -> None:
    store = FakeShardStore([Account(ALICE, "EUR", posted=100), Account(BOB, "EUR")])
    store.fail_next_write(StoreUnavailable("connection reset (fake)"))
    post = PostTransfer(_id(), _id(), ALICE, BOB, 40, "EUR")
    worker = ShardWorker(WorkerSettings(0), NS, store, FakeCommandSource(), FakeCheckpoints(), PMAP)
    asyncio.run(worker.process([command_record(post, 0)], asyncio.Event()))

    assert worker.stats.retries == 1
    assert (store.commits, store.accounts[BOB].posted) == (1, 40)
    assert [r.in_reply_to for r in _replies(store)] == [post.message_id]


# --- the coordinator -----------------------------------------------------------------------------


def test_a_shard_reply_redelivered_in_a_later_batch_changes_no_saga() -> None:
    rec = live_saga()
    assert rec.state is not None
    store = FakeSagaStore([rec])
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    reserved = ShardReply(
        _id(), command_id(rec.transfer_id, rec.state.step), "ReserveFunds", 0, ALICE, rec.transfer_id,
        "funds_reserved",
    )  # fmt: skip
    asyncio.run(handle_batch(coordinator, store, decoded([reply_record(reserved, 1)])))
    moved = store.transfers[rec.transfer_id]
    assert moved.status == "in_flight"
    assert moved.state is not None
    assert moved.state.step == "crediting", "the reply moved the saga on"
    before = (len(store.changed), len(store.steps), list(store.inbox), len(store.outbox))

    again = reply_record(reserved, 2)  # redelivered: after a crash before the offset commit, say
    asyncio.run(handle_batch(coordinator, store, decoded([again])))

    assert store.commits == 2
    assert store.transfers[rec.transfer_id] == moved, "no saga changed"
    assert (len(store.changed), len(store.steps), list(store.inbox), len(store.outbox)) == before


def test_a_version_conflict_retries_the_batch_whole_and_it_is_applied_once() -> None:
    rec = live_saga()
    store = FakeSagaStore([rec])
    store.fail_next_write(VersionConflict("another coordinator changed a saga (fake)"))
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    reply = rejection_of(rec)
    batch = decoded([reply_record(reply, 7)])
    handed: list[Committed] = []
    work = functools.partial(_handle, store, coordinator, batch, Failpoints(), handed.extend)
    asyncio.run(_with_retries(work, asyncio.Event(), RunSettings(max_backoff_s=0.01)))

    assert store.commits == 1
    saga = store.transfers[rec.transfer_id]
    assert (saga.status, saga.reason, saga.version) == ("rejected", "insufficient_funds", rec.version + 1)
    assert store.inbox == [reply.message_id]
    results = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.results]
    assert [(r["transfer_id"], r["state"]) for r in results] == [(rec.transfer_id, "rejected")], "once"
    assert [c.message for c in handed] == store.outbox, "the relay gets the committed rows once"


def test_the_fake_store_finds_a_saga_written_under_a_stale_version() -> None:
    """What the retry above stands for: two batches read the same saga, the second to write loses."""
    rec = live_saga()
    store = FakeSagaStore([rec])

    async def race() -> None:
        async with store.batch() as slow:
            (stale,) = (await slow.load([rec.transfer_id])).values()
            async with store.batch() as fast:
                (fresh,) = (await fast.load([rec.transfer_id])).values()
                await fast.write([replace(fresh, reason="first")], [], [], [])
            await slow.write([replace(stale, reason="second")], [], [], [])  # rolls `slow` back

    with pytest.raises(VersionConflict):
        asyncio.run(race())
    assert (store.transfers[rec.transfer_id].reason, store.commits) == ("first", 1)
