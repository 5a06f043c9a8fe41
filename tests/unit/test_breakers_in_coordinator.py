"""A coordinator starts no new saga on a shard whose breaker is open (issue 16, item 5): the transfer
is refused at once with `shard_unavailable` and nothing is sent to any shard, while sagas already
in flight go on to their end."""

from __future__ import annotations

import asyncio
import uuid

import orjson

from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from schemas.breaker import BreakerState
from schemas.public import BatchLeg, TransferBatch, TransferFunds, encode_public
from tests.fakes import FakeSagaStore, handle_batch
from tests.ledger_harness import accounts_on
from tests.unit.test_internal_auth_edges import ALICE, BOB, NS, PMAP, decoded, live_saga, record, rejection_of
from tests.unit.test_services_with_fakes import reply_record

(CAROL,) = accounts_on(PMAP, 1, 1, prefix="brk")


def _id() -> str:
    return str(uuid.uuid4())


def _open(shard: int, seq: int = 1) -> BreakerState:
    return BreakerState(shard, "open", False, "step_p99_ms sustained", "monitor", seq, 1_000)


def _send(coordinator: Coordinator, store: FakeSagaStore, *commands: TransferFunds | TransferBatch) -> None:
    records = [record(NS.transfers, encode_public(c), None, [], i) for i, c in enumerate(commands)]
    asyncio.run(handle_batch(coordinator, store, decoded(records)))


def _results(store: FakeSagaStore) -> dict[str, tuple[str, str | None]]:
    out = {}
    for m in store.outbox:
        if m.topic == NS.results:
            r = orjson.loads(m.payload)
            out[r["transfer_id"]] = (r["state"], r["reason"])
    return out


def _to_shards(store: FakeSagaStore) -> list[str]:
    return [m.topic for m in store.outbox if m.topic != NS.results]


def test_a_transfer_touching_an_open_shard_is_refused_at_once_and_nothing_is_sent() -> None:
    store, coordinator = FakeSagaStore([]), Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    coordinator.breakers.heard(_open(1))
    cross, same = TransferFunds(_id(), ALICE, CAROL, 10, "EUR"), TransferFunds(_id(), ALICE, BOB, 10, "EUR")
    _send(coordinator, store, cross, same)

    assert _results(store) == {cross.transfer_id: ("rejected", "shard_unavailable")}
    assert store.transfers[cross.transfer_id].status == "rejected"
    assert _to_shards(store) == [NS.shard_commands(0)], "only the transfer within shard 0 started"
    assert store.transfers[same.transfer_id].status == "in_flight"


def test_a_refused_transfer_sent_again_after_the_breaker_closed_gets_the_same_answer() -> None:
    store, coordinator = FakeSagaStore([]), Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    coordinator.breakers.heard(_open(1))
    cross = TransferFunds(_id(), ALICE, CAROL, 10, "EUR")
    _send(coordinator, store, cross)
    coordinator.breakers.heard(BreakerState(1, "closed", False, "healthy", "monitor", 2, 5_000))
    _send(coordinator, store, cross)

    assert store.transfers[cross.transfer_id].reason == "shard_unavailable", "decided once"
    assert _to_shards(store) == []


def test_an_older_breaker_state_arriving_late_changes_nothing() -> None:
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    coordinator.breakers.heard(BreakerState(1, "closed", False, "healthy", "monitor", 3, 5_000))
    coordinator.breakers.heard(_open(1, seq=2))
    assert coordinator.breakers.refusal([1], 6_000) is None


def test_a_saga_in_flight_goes_on_while_its_shard_is_open() -> None:
    rec = live_saga()  # reserving on shard 0, crediting shard 1 next
    store, coordinator = FakeSagaStore([rec]), Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    coordinator.breakers.heard(_open(0))
    coordinator.breakers.heard(_open(1))
    asyncio.run(handle_batch(coordinator, store, decoded([reply_record(rejection_of(rec), 1)])))
    assert store.transfers[rec.transfer_id].status == "rejected"
    assert store.transfers[rec.transfer_id].reason == "insufficient_funds", "its own end, not refused"


def test_a_linked_batch_with_a_leg_on_an_open_shard_is_refused_whole() -> None:
    store, coordinator = FakeSagaStore([]), Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    coordinator.breakers.heard(_open(1))
    legs = [BatchLeg(_id(), ALICE, BOB, 5, "EUR"), BatchLeg(_id(), ALICE, CAROL, 5, "EUR")]
    batch = TransferBatch(_id(), tuple(legs), linked=True)
    _send(coordinator, store, batch)

    assert _results(store) == {batch.batch_id: ("rejected", "shard_unavailable")}
    assert _to_shards(store) == []
    result = next(orjson.loads(m.payload) for m in store.outbox if m.topic == NS.results)
    assert [(g["transfer_id"], g["state"], g["reason"]) for g in result["legs"]] == [
        (leg.transfer_id, "rejected", "shard_unavailable") for leg in legs
    ], "the result lists every leg, as for any rejected batch (chaos I13, seed 3)"
    rows = [store.transfers[leg.transfer_id] for leg in legs]
    assert [(r.status, r.reason, r.batch_id) for r in rows] == [
        ("rejected", "shard_unavailable", batch.batch_id)
    ] * 2
