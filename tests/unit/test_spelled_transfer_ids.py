"""Issue 13, item 6: a transfer id that is a UUID in another spelling (upper-case, braces, no
dashes, urn:uuid:) gets a `rejected / invalid_transfer_id` result addressed to the id as it was
sent, so a sender waiting on that id hears back. Before, it got only a dead letter.

The id is no transfer's id (the contract's ids are canonical: lower-case, dashed), so the answer is
recorded nowhere: no `transfers` row that a later transfer with the canonical spelling of the same
UUID could run into. The result's message_id is derived from the id and the bytes as sent, so a
redelivered command gets an identical result (same message_id), as every result does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from schemas.currencies import JSON_DIR
from schemas.public import PublicRejection, TransferFunds, encode_public
from schemas.public_parse import parse_transfer
from tests.bad_inputs import encoded, transfer
from tests.fakes import FakeSagaStore, handle_batch
from tests.unit.test_internal_auth_edges import NS, PMAP, decoded, record

_CANONICAL = "9a0e3c1b-5d2f-4e6a-8b7c-1d2e3f4a5b6c"
SPELLINGS = [
    _CANONICAL.upper(),
    _CANONICAL.replace("-", ""),
    "{" + _CANONICAL + "}",
    "urn:uuid:" + _CANONICAL,
    "{" + _CANONICAL.upper() + "}",
]
NOT_UUIDS = [_CANONICAL + "\n", _CANONICAL[:-1], "{" + _CANONICAL, _CANONICAL[:8] + _CANONICAL[9:], "x" * 36]


def _schemas() -> Registry[Any]:
    names = ("transfer-command.json", "transfer-result.json", "currency.json")
    return Registry().with_resources(
        (n, Resource.from_contents(json.loads((JSON_DIR / n).read_text()))) for n in names
    )


RESULTS = Draft202012Validator(
    json.loads((JSON_DIR / "transfer-result.json").read_text()), registry=_schemas()
)


def _rejection(raw: bytes) -> PublicRejection:
    with pytest.raises(PublicRejection) as caught:
        parse_transfer(raw, max_amount=10**12)
    return caught.value


@pytest.mark.parametrize("spelled", SPELLINGS)
def test_the_parser_names_an_id_in_another_spelling_as_sent(spelled: str) -> None:
    error = _rejection(encoded(transfer("x", transfer_id=spelled)))
    assert (error.reason, error.transfer_id, error.id_as_sent) == ("invalid_transfer_id", None, spelled)


@pytest.mark.parametrize("junk", NOT_UUIDS)
def test_an_id_that_is_no_uuid_in_any_spelling_stays_unreadable(junk: str) -> None:
    error = _rejection(encoded(transfer("x", transfer_id=junk)))
    assert (error.reason, error.transfer_id, error.id_as_sent) == ("invalid_transfer_id", None, None)


def _handle(store: FakeSagaStore, raws: list[bytes]) -> None:
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 5_000)
    records = [record(NS.transfers, raw, None, [], i) for i, raw in enumerate(raws)]
    asyncio.run(handle_batch(coordinator, store, decoded(records)))


@pytest.mark.parametrize("spelled", SPELLINGS)
def test_the_coordinator_answers_the_id_as_sent_and_records_nothing(spelled: str) -> None:
    raw = encoded(transfer("x", transfer_id=spelled))
    store = FakeSagaStore()
    _handle(store, [raw, raw])  # a redelivery: the same result again
    assert [m.topic for m in store.outbox] == [NS.results, NS.results], "a result each, no dead letter"
    first, again = (orjson.loads(m.payload) for m in store.outbox)
    assert first == again
    assert (first["transfer_id"], first["state"], first["reason"]) == (
        spelled,
        "rejected",
        "invalid_transfer_id",
    )
    assert first["request_fingerprint"] == hashlib.sha256(raw).hexdigest()
    assert {m.key for m in store.outbox} == {spelled.encode()}
    assert RESULTS.is_valid(first), list(RESULTS.iter_errors(first))
    assert store.changed == [], "no transfers row for an id that is no transfer's"


def test_the_canonical_spelling_is_a_transfer_of_its_own() -> None:
    store = FakeSagaStore()
    valid = TransferFunds(_CANONICAL, "alice", "bob", 100, "EUR")
    _handle(store, [encoded(transfer("x", transfer_id=_CANONICAL.upper())), encode_public(valid)])
    assert [r.transfer_id for r in store.changed] == [_CANONICAL]
    assert store.changed[0].status == "in_flight"
    assert str(uuid.UUID(_CANONICAL.upper())) == _CANONICAL  # the same UUID, told apart by spelling
