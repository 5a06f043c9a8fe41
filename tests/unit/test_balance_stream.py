"""Each shard batch publishes the balances it changed onto the compacted balances topic (issue 16,
item 1): one record per account per batch, keyed by account id, as the batch left it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from jsonschema import Draft202012Validator

from schemas.balances import CONTRACT, BalanceChanged, NotABalance, decode_balance, encode_balance
from schemas.shard_messages import PostTransfer, ReserveFunds, ShardCommand
from shards.domain.model import Account
from shards.service.worker import ShardWorker, WorkerSettings
from tests.fakes import FakeCheckpoints, FakeCommandSource, FakeShardStore
from tests.unit.test_internal_auth_edges import ALICE, BOB, NS, PMAP, command_record


def _id() -> str:
    return str(uuid.uuid4())


def _published(
    commands: Sequence[ShardCommand], settings: WorkerSettings | None = None
) -> list[BalanceChanged]:
    store = FakeShardStore([Account(ALICE, "EUR", posted=1_000, overdraft_limit=50), Account(BOB, "EUR")])
    worker = ShardWorker(
        settings or WorkerSettings(0), NS, store, FakeCommandSource(), FakeCheckpoints(), PMAP
    )
    records = [command_record(c, offset) for offset, c in enumerate(commands)]
    asyncio.run(worker.process(records, asyncio.Event()))
    changes = [m for m in store.outbox if m.topic == NS.balances]
    assert all(m.key == decode_balance(m.payload).account_id.encode() for m in changes), "keyed by account"
    return [decode_balance(m.payload) for m in changes]


def test_a_batch_publishes_each_changed_balance_once_as_the_batch_left_it() -> None:
    first = PostTransfer(_id(), _id(), ALICE, BOB, 300, "EUR")
    second = PostTransfer(_id(), _id(), ALICE, BOB, 200, "EUR")
    hold = ReserveFunds(_id(), _id(), ALICE, 100, "EUR")
    published = {b.account_id: b for b in _published([first, second, hold])}  # a hold is no entry

    assert len(published) == 2
    assert published[ALICE] == BalanceChanged(ALICE, "EUR", "active", 500, 100, 0, 450, 4, 0)
    assert published[BOB] == BalanceChanged(BOB, "EUR", "active", 500, 0, 0, 500, 4, 0)


def test_a_refused_transfer_publishes_nothing() -> None:
    too_much = PostTransfer(_id(), _id(), ALICE, BOB, 5_000, "EUR")
    assert _published([too_much]) == []


def test_publishing_can_be_turned_off() -> None:
    post = PostTransfer(_id(), _id(), ALICE, BOB, 1, "EUR")
    assert _published([post], WorkerSettings(0, publish_balances=False)) == []


def test_the_encoding_is_the_json_schema_and_round_trips() -> None:
    change = BalanceChanged("acct-1", "EUR", "frozen", -40, 0, 7, 10, 12, 3)
    Draft202012Validator.check_schema(CONTRACT.validator.schema)
    assert decode_balance(encode_balance(change)) == change


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{" * 3 + b"}" * 3, "nested"),
        (b"not json", "not JSON"),
        (b'{"type":"BalanceChanged","v":1}', "required"),
        (b" " * 2000, "bytes"),
    ],
)
def test_what_is_not_a_balance_is_refused_with_why(payload: bytes, why: str) -> None:
    with pytest.raises(NotABalance, match=why):
        decode_balance(payload)


def test_a_balance_with_an_unknown_field_or_a_boolean_amount_is_refused() -> None:
    good = encode_balance(BalanceChanged("acct-1", "EUR", "active", 1, 0, 0, 1, 1, 0))
    with pytest.raises(NotABalance):
        decode_balance(good[:-1] + b',"extra":1}')
    with pytest.raises(NotABalance):
        decode_balance(good.replace(b'"posted":1', b'"posted":true'))
