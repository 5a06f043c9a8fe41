"""The coordinator's account path, driven through the in-memory saga store (tests/fakes.py): each
account command becomes one shard command on its account's shard, each shard answer one
AccountResult with an id fixed by the command, and a command that cannot be read is answered, not
sent. (Opening with an overdraft: test_issuance_accounts.py.)"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import orjson

from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from schemas import envelopes
from schemas.public import (
    AccountCommand,
    CloseAccount,
    FreezeAccount,
    OpenAccountRequest,
    TransferFunds,
    UnfreezeAccount,
    encode_public,
)
from schemas.shard_messages import ChangeAccountStatus, OpenAccount, PostTransfer, ShardReply, encode
from tests.fakes import FakeSagaStore, handle_batch
from tests.ledger_harness import accounts_on
from tests.unit.test_internal_auth_edges import NS, PMAP, decoded, record, signed

DAVE, ERIN = accounts_on(PMAP, 1, 2, prefix="acct")


def _id() -> str:
    return str(uuid.uuid4())


def _account_result_id(command_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:account-result:{command_id}"))


def _results(store: FakeSagaStore) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in store.outbox if m.topic == NS.results]


def test_each_account_command_goes_to_its_accounts_shard_as_one_shard_command() -> None:
    commands: list[AccountCommand] = [
        OpenAccountRequest(_id(), DAVE, "EUR", 0, {"kind": "customer"}),
        FreezeAccount(_id(), DAVE),
        UnfreezeAccount(_id(), DAVE),
        CloseAccount(_id(), DAVE),
    ]
    records = [
        record(NS.account_commands, encode_public(c), DAVE.encode(), [], i) for i, c in enumerate(commands)
    ]
    store = FakeSagaStore()
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 1_000)
    asyncio.run(handle_batch(coordinator, store, decoded(records)))

    (envelope,) = store.outbox
    assert envelope.topic == NS.shard_commands(1)
    sent = [u.message for u in envelopes.commands(envelope.payload)]
    open_, freeze, unfreeze, close = (c.command_id for c in commands)
    assert sent == [
        OpenAccount(open_, DAVE, "EUR", 0, {"kind": "customer"}),
        ChangeAccountStatus(freeze, DAVE, "frozen"),
        ChangeAccountStatus(unfreeze, DAVE, "active"),
        ChangeAccountStatus(close, DAVE, "closed"),
    ], "in the order they arrived, each under its command's id"
    assert store.changed == [], "an account command starts no saga"
    assert store.inbox == [], "a public command's dedupe is the shard's, by its id"


def test_account_and_transfer_commands_of_a_batch_reach_the_shard_in_arrival_order() -> None:
    freeze, unfreeze = FreezeAccount(_id(), DAVE), UnfreezeAccount(_id(), DAVE)
    transfer = TransferFunds(_id(), DAVE, ERIN, 5, "EUR")
    records = [
        record(NS.account_commands, encode_public(freeze), DAVE.encode(), [], 0),
        record(NS.transfers, encode_public(transfer), None, [], 0),
        record(NS.account_commands, encode_public(unfreeze), DAVE.encode(), [], 1),
    ]
    store = FakeSagaStore()
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 1_000)
    asyncio.run(handle_batch(coordinator, store, decoded(records)))

    (envelope,) = store.outbox
    sent = [u.message for u in envelopes.commands(envelope.payload)]
    assert [type(c) for c in sent] == [ChangeAccountStatus, PostTransfer, ChangeAccountStatus]
    assert [cast(ChangeAccountStatus, c).message_id for c in sent[::2]] == [
        freeze.command_id,
        unfreeze.command_id,
    ]


def test_a_shards_answer_becomes_one_account_result_once() -> None:
    done, refused = _id(), _id()
    replies = [
        ShardReply(_id(), done, "OpenAccount", 1, DAVE, None, "account_opened"),
        ShardReply(_id(), refused, "ChangeAccountStatus", 1, DAVE, None, "rejected", "account_closed"),
    ]
    topic = NS.shard_replies
    value = envelopes.encode(envelopes.REPLIES, [encode(r) for r in replies], {})
    envelope = record(topic, value, DAVE.encode(), signed(topic, DAVE.encode(), value), 7)
    store = FakeSagaStore()
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 1_000)
    asyncio.run(handle_batch(coordinator, store, decoded([envelope])))

    assert _results(store) == [
        {
            "type": "AccountResult", "v": 1, "message_id": _account_result_id(done), "command_id": done,
            "account_id": DAVE, "outcome": "done", "reason": None,
        },
        {
            "type": "AccountResult", "v": 1, "message_id": _account_result_id(refused),
            "command_id": refused, "account_id": DAVE, "outcome": "rejected", "reason": "account_closed",
        },
    ]  # fmt: skip
    assert [m.key for m in store.outbox] == [done.encode(), refused.encode()], "keyed by the command"
    assert sorted(store.inbox) == sorted(r.message_id for r in replies)

    asyncio.run(handle_batch(coordinator, store, decoded([envelope])))
    assert len(_results(store)) == 2, "a redelivered answer is not answered again"


def test_an_unreadable_account_command_with_an_id_is_answered_and_not_sent() -> None:
    command_id = _id()
    command = {"type": "FreezeAccount", "v": 1, "command_id": command_id, "account_id": DAVE, "extra": 1}
    raw = orjson.dumps(command)
    store = FakeSagaStore()
    coordinator = Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 1_000)
    asyncio.run(handle_batch(coordinator, store, decoded([record(NS.account_commands, raw, None, [], 0)])))

    (result,) = _results(store)
    assert len(store.outbox) == 1, "nothing goes to a shard"
    assert (result["message_id"], result["command_id"], result["account_id"], result["outcome"]) == (
        _account_result_id(command_id), command_id, DAVE, "rejected",
    )  # fmt: skip
    assert result["reason"]
