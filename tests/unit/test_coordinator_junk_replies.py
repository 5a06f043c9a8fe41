"""A signed reply whose fields are of the wrong kind (a shard's key leaked, or a shard's bug) is
dead-lettered as invalid_field and moves no saga; the coordinator goes on with the next record.
Before, the reply decoded as it came, and an object for its transfer_id raised TypeError
(unhashable) out of Coordinator.handle: the coordinator restarted onto the same record, forever."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from schemas.shard_messages import encode
from tests.fakes import FakeSagaStore, handle_batch
from tests.unit.test_internal_auth_edges import (
    NS,
    PMAP,
    decoded,
    live_saga,
    record,
    rejection_of,
    signed,
)


@pytest.mark.parametrize(
    ("field", "junk"),
    [
        ("transfer_id", {"a": 1}),
        ("shard", "0"),
        ("in_reply_to", ["x"]),
        ("outcome", None),
        ("journal_seq", "1"),
    ],
)
def test_a_signed_reply_of_junk_kinds_is_dead_lettered_and_the_next_is_handled(
    field: str, junk: object
) -> None:
    rec = live_saga()
    store = FakeSagaStore([rec])
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000)
    good = rejection_of(rec)
    topic, key = NS.shard_replies, rec.transfer_id.encode()
    bad_value = orjson.dumps(orjson.loads(encode(good)) | {field: junk})
    good_value = encode(good)
    records = [
        record(topic, bad_value, key, signed(topic, key, bad_value), 20),
        record(topic, good_value, key, signed(topic, key, good_value), 21),
    ]
    asyncio.run(handle_batch(coordinator, store, decoded(records)))
    letters = [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.dead_letters]
    assert [(d["offset"], d["reason"]) for d in letters] == [(20, "invalid_field")]
    assert field in letters[0]["detail"]
    assert [r.transfer_id for r in store.changed] == [rec.transfer_id], "the valid reply still moved its saga"
