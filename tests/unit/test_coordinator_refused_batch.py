"""A batch PostgreSQL refuses (the same every time: a value it cannot store, a check violated) no
longer stops the coordinator's partitions: it is handled a record at a time, the record refused
alone is dead-lettered (invalid_field) and the others go through. Before, the database's error
left the consume loop, and the restarted coordinator met the same batch again, forever."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import orjson

from coordinator.bootstrap import RunSettings, _handle_isolating
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from infra.outbox import Committed
from schemas.public import TransferFunds, encode_public
from tests.fakes import FakeSagaStore
from tests.unit.test_internal_auth_edges import ALICE, BOB, NS, PMAP, decoded, record


class HandedRows:
    """The relay's side of the hand-over: what it was given to send."""

    def __init__(self) -> None:
        self.rows: list[Committed] = []

    def hand_over(self, rows: Sequence[Committed]) -> None:
        self.rows += rows


def test_the_refused_record_is_dead_lettered_and_the_rest_go_through() -> None:
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    before, poison, after = (TransferFunds(str(uuid.uuid4()), ALICE, BOB, 5, "EUR") for _ in range(3))
    records = [
        record(NS.transfers, encode_public(t), None, [], n) for n, t in enumerate((before, poison, after))
    ]
    # Commits like PostgreSQL would, except a batch that writes the poisoned transfer.
    store = FakeSagaStore(refuse=lambda rec: rec.transfer_id == poison.transfer_id)
    relay = HandedRows()
    asyncio.run(
        _handle_isolating(
            store, coordinator, relay.hand_over, decoded(records), asyncio.Event(), RunSettings()
        )
    )
    committed = store.outbox
    assert [c.message for c in relay.rows] == committed, "the relay gets the committed rows, and only those"
    started = {r.transfer_id for r in store.changed}
    assert started == {before.transfer_id, after.transfer_id}
    letters = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.dead_letters]
    assert [(d["offset"], d["reason"]) for d in letters] == [(1, "invalid_field")]
    assert "CheckViolationError" in letters[0]["detail"]
