"""The Python shard messages and the JSON Schema contracts in schemas/json say the same thing.

The fast decoder (`command_from_dict`) is held to the schema's verdict on a table of payloads; where
the two cannot agree because of what JSON Schema can express, the decoder is the stricter one and the
case is listed separately with the reason.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import fields
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from schemas.currencies import CURRENCIES, JSON_DIR
from schemas.errors import LedgerError
from schemas.partitioning import PartitionMap
from schemas.shard_messages import (
    COMMAND_TYPES,
    FIELD_CHECKS,
    LEG_STEPS,
    MAX_AMOUNT,
    VERSION,
    ApplyLegs,
    CancelCredit,
    ChangeAccountStatus,
    CommitReservation,
    CreditFunds,
    HoldCredit,
    HoldTransfer,
    InvalidMessage,
    Leg,
    OpenAccount,
    PostHold,
    PostPending,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    SettleCredit,
    ShardCommand,
    ShardReply,
    VoidPending,
    command_from_dict,
    decode_command,
    decode_reply,
    encode,
    reply_id,
)
from shards.domain.book import ShardBook
from shards.domain.model import GENESIS_HASH


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


COMMAND_SCHEMA = _load("shard-command.json")
REPLY_SCHEMA = _load("shard-reply.json")
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(_load(name)))
    for name in ("shard-command.json", "shard-reply.json", "currency.json")
)
COMMANDS = Draft202012Validator(COMMAND_SCHEMA, registry=REGISTRY)
REPLIES = Draft202012Validator(REPLY_SCHEMA, registry=REGISTRY)
ENVELOPE = {"type", "v"}


def decoder_accepts(payload: object) -> bool:
    try:
        command_from_dict(payload)
    except InvalidMessage:
        return False
    return True


# --- the types and the schemas ------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMAND_TYPES)
def test_command_fields_are_the_schema_properties(name: str) -> None:
    definition = COMMAND_SCHEMA["$defs"][name]
    names = {f.name for f in fields(COMMAND_TYPES[name])}
    assert set(definition["properties"]) - ENVELOPE == names
    # On the wire every field is required (the decoder demands each, encode writes each), even
    # those with a default in Python.
    assert set(definition["required"]) - ENVELOPE == names
    assert set(definition["required"]) >= ENVELOPE
    assert definition["properties"]["type"] == {"const": name}
    assert definition["properties"]["v"] == {"const": VERSION}
    assert definition["additionalProperties"] is False


def test_the_schema_offers_exactly_the_command_types() -> None:
    assert [ref["$ref"] for ref in COMMAND_SCHEMA["oneOf"]] == [f"#/$defs/{name}" for name in COMMAND_TYPES]


def test_a_field_name_means_the_same_everywhere() -> None:
    """FIELD_CHECKS is keyed by field name, so the schema must define a name the same way in every type."""
    definitions: defaultdict[str, set[str]] = defaultdict(set)
    for name in COMMAND_TYPES:
        for field_name, schema in COMMAND_SCHEMA["$defs"][name]["properties"].items():
            if field_name not in ENVELOPE:
                definitions[field_name].add(json.dumps(schema, sort_keys=True))
    assert {name: len(schemas) for name, schemas in definitions.items() if len(schemas) > 1} == {}
    assert set(definitions) == set(FIELD_CHECKS)


def test_reply_fields_are_the_schema_properties() -> None:
    names = {f.name for f in fields(ShardReply)}
    assert set(REPLY_SCHEMA["properties"]) - ENVELOPE == names
    assert set(REPLY_SCHEMA["required"]) - ENVELOPE == names - {"leg"}  # leg: only when refused
    assert set(REPLY_SCHEMA["required"]) >= ENVELOPE
    assert REPLY_SCHEMA["additionalProperties"] is False
    assert set(REPLY_SCHEMA["properties"]["command"]["enum"]) == set(COMMAND_TYPES)


# --- the same verdict on every payload ----------------------------------------------------------

MID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
TID = "7d9e0f1a-2b3c-4d5e-8f6a-7b8c9d0e1f2a"
MAX = MAX_AMOUNT

VALID: dict[str, dict[str, Any]] = {
    "OpenAccount": {
        "type": "OpenAccount", "v": 1, "message_id": MID, "account_id": "alice", "currency": "EUR",
        "overdraft_limit": 0, "metadata": {},
    },
    "ChangeAccountStatus": {
        "type": "ChangeAccountStatus", "v": 1, "message_id": MID, "account_id": "alice", "status": "frozen",
    },
    "PostTransfer": {
        "type": "PostTransfer", "v": 1, "message_id": MID, "transfer_id": TID, "debit_account": "alice",
        "credit_account": "bob", "amount": 1050, "currency": "EUR",
    },
    "ReserveFunds": {
        "type": "ReserveFunds", "v": 1, "message_id": MID, "transfer_id": TID, "account_id": "alice",
        "amount": 1050, "currency": "EUR",
    },
    "CreditFunds": {
        "type": "CreditFunds", "v": 1, "message_id": MID, "transfer_id": TID, "account_id": "bob",
        "amount": 1050, "currency": "EUR",
    },
    "CommitReservation": {
        "type": "CommitReservation", "v": 1, "message_id": MID, "transfer_id": TID, "account_id": "alice",
    },
    "ReleaseReservation": {
        "type": "ReleaseReservation", "v": 1, "message_id": MID, "transfer_id": TID, "account_id": "alice",
    },
}  # fmt: skip

Case = tuple[str, object, bool]  # (id, payload, valid?)


def _with(kind: str, **changes: object) -> dict[str, Any]:
    return {**VALID[kind], **changes}


def _without(kind: str, name: str) -> dict[str, Any]:
    return {k: v for k, v in VALID[kind].items() if k != name}


def _having(name: str) -> list[str]:
    return [kind for kind, payload in VALID.items() if name in payload]


def _cases() -> list[Case]:
    cases: list[Case] = [(f"valid {kind}", payload, True) for kind, payload in VALID.items()]
    cases += [
        ("largest overdraft", _with("OpenAccount", overdraft_limit=MAX), True),
        ("64-character id", _with("OpenAccount", account_id="a" * 64), True),
        ("id with _ . -", _with("OpenAccount", account_id="A.b_c-9"), True),
        ("another currency", _with("OpenAccount", currency="JPY"), True),
        ("fullest metadata", _with("OpenAccount", metadata={f"{i:064}": "v" * 256 for i in range(16)}), True),
        ("metadata counts characters", _with("OpenAccount", metadata={"é" * 64: "€" * 256}), True),
        ("status active", _with("ChangeAccountStatus", status="active"), True),
        ("status closed", _with("ChangeAccountStatus", status="closed"), True),
        ("version 1.0 is the number 1", _with("CommitReservation", v=1.0), True),
    ]
    for kind in _having("amount"):
        cases += [(f"{kind} amount 1", _with(kind, amount=1), True)]
        cases += [(f"{kind} amount 2**63-1", _with(kind, amount=MAX), True)]
        bad_amounts: list[object] = ["1050", 10.5, True, False, None, 0, -1, 2**63, 2**64, [1050], {}]
        cases += [(f"{kind} amount {a!r}", _with(kind, amount=a), False) for a in bad_amounts]
    bad_limits: list[object] = [-1, 2**63, "0", True, None, 0.5]
    cases += [(f"overdraft_limit {x!r}", _with("OpenAccount", overdraft_limit=x), False) for x in bad_limits]

    bad_uuids: list[object] = [
        "not-a-uuid", "", MID.upper(), MID.replace("-", ""), "{" + MID + "}", MID[:-1], MID + "0",
        "urn:uuid:" + MID, 123, None,
    ]  # fmt: skip
    for kind, payload in VALID.items():
        for name in ("message_id", "transfer_id"):
            if name in payload:
                cases += [(f"{kind}.{name} {u!r}", _with(kind, **{name: u}), False) for u in bad_uuids]
    bad_ids: list[object] = ["a:b", "transit:EUR", "a" * 65, "", "-abc", "_abc", ".abc", "ab c", "é", "a/b"]
    bad_ids += [7, None]
    for kind, payload in VALID.items():
        for name in ("account_id", "debit_account", "credit_account"):
            if name in payload:
                cases += [(f"{kind}.{name} {a!r}", _with(kind, **{name: a}), False) for a in bad_ids]
    bad_currencies: list[object] = ["ZZZ", "XXX", "eur", "EURO", "EU", "", None, 978]
    for kind in _having("currency"):
        cases += [(f"{kind} currency {c!r}", _with(kind, currency=c), False) for c in bad_currencies]

    bad_metadata: list[object] = [
        {str(i): "v" for i in range(17)}, {"k": "v" * 257}, {"k" * 65: "v"}, {"é" * 65: "v"},
        {"k": 1}, {"k": None}, {"k": ["v"]}, {"k": {"nested": "v"}}, [], "k=v", None,
    ]  # fmt: skip
    cases += [(f"metadata {m!r:.40}", _with("OpenAccount", metadata=m), False) for m in bad_metadata]
    bad_statuses: list[object] = ["deleted", "ACTIVE", "", None]
    cases += [(f"status {s!r}", _with("ChangeAccountStatus", status=s), False) for s in bad_statuses]

    bad_versions: list[object] = [2, 0, "1", None, True, False, 1.5]
    cases += [(f"version {v!r}", _with("PostTransfer", v=v), False) for v in bad_versions]
    bad_types: list[object] = ["Unknown", "postTransfer", "ShardReply", None, 1, ["PostTransfer"]]
    cases += [(f"type {t!r}", _with("PostTransfer", type=t), False) for t in bad_types]
    cases += [
        ("reserve fields under an unknown type", _with("ReserveFunds", type="CreditReservation"), False),
        ("commit fields under type PostTransfer", _with("CommitReservation", type="PostTransfer"), False),
    ]

    for kind, payload in VALID.items():
        cases += [(f"{kind} without {name}", _without(kind, name), False) for name in payload]
        cases += [(f"{kind} with an unknown field", _with(kind, note="hi"), False)]
    not_objects: list[object] = [[], [VALID["PostTransfer"]], "PostTransfer", 1, 1.5, None, True]
    cases += [(f"not an object: {x!r:.30}", x, False) for x in not_objects]
    return cases


CASES = _cases()


@pytest.mark.parametrize(("payload", "valid"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decoder_and_schema_give_the_same_verdict(payload: object, valid: bool) -> None:
    assert COMMANDS.is_valid(payload) is valid
    assert decoder_accepts(payload) is valid


# What JSON Schema cannot say: the decoder is stricter on these, on purpose.
STRICTER: list[Case] = [
    # JSON Schema compares numbers by value, so 1050.0 is an "integer" to it; the decoder refuses any
    # float (the contract: "minor units (cents), never a float"); a float amount is a producer bug.
    ("amount 1050.0", _with("PostTransfer", amount=1050.0), False),
    ("overdraft_limit 0.0", _with("OpenAccount", overdraft_limit=0.0), False),
    # Schema patterns are ECMA-262, where `$` is the end of the input. Python's `$` (which the
    # jsonschema package uses) also matches before a final newline, so it lets these through.
    ("account id with a final newline", _with("CreditFunds", account_id="bob\n"), False),
    ("message id with a final newline", _with("CreditFunds", message_id=MID + "\n"), False),
    ("transfer id with a final newline", _with("CreditFunds", transfer_id=TID + "\n"), False),
]


@pytest.mark.parametrize(("payload", "valid"), [c[1:] for c in STRICTER], ids=[c[0] for c in STRICTER])
def test_the_decoder_is_stricter_where_json_schema_cannot_say_it(payload: object, valid: bool) -> None:
    assert decoder_accepts(payload) is valid
    # If this starts failing, the validator has caught up: move the case into CASES.
    assert COMMANDS.is_valid(payload)


def test_invalid_message_is_a_non_retriable_ledger_error() -> None:
    with pytest.raises(InvalidMessage) as caught:
        command_from_dict(_with("PostTransfer", amount=0))
    assert isinstance(caught.value, LedgerError)
    assert caught.value.retriable is False
    assert caught.value.reason == "invalid_field"
    assert "amount" in str(caught.value)


# --- bytes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", VALID)
def test_encode_and_decode_round_trip(kind: str) -> None:
    payload = VALID[kind]
    command = decode_command(orjson.dumps(payload))
    assert type(command).__name__ == kind
    assert command == command_from_dict(payload)
    assert orjson.loads(encode(command)) == payload
    assert decode_command(encode(command)) == command


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"type": "PostTransfer"',
        # orjson reads an integer beyond 64 bits as a float: still no amount.
        orjson.dumps(VALID["PostTransfer"]).replace(b'"amount":1050', b'"amount":18446744073709551616'),
        orjson.dumps(VALID["PostTransfer"]).replace(b'"amount":1050', b'"amount":1e3'),
    ],
)
def test_bad_bytes_are_invalid_messages(raw: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_command(raw)


uuids = st.uuids().map(str)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "message_id": uuids,
    "transfer_id": uuids,
    "account_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True),
    "amount": st.integers(1, MAX),
    "overdraft_limit": st.integers(0, MAX),
    "currency": st.sampled_from(sorted(CURRENCIES)),
    "status": st.sampled_from(["active", "frozen", "closed"]),
    "metadata": st.dictionaries(st.text(max_size=64), st.text(max_size=256), max_size=16),
}
FIELD_VALUES["debit_account"] = FIELD_VALUES["credit_account"] = FIELD_VALUES["account_id"]
FIELD_VALUES["step"] = st.sampled_from(sorted(LEG_STEPS))
FIELD_VALUES["legs"] = st.lists(
    st.builds(Leg, **{n: FIELD_VALUES[n] for n in ("transfer_id", "account_id", "amount", "currency")}),
    min_size=1, max_size=5, unique_by=lambda leg: leg.transfer_id,
).map(tuple)  # fmt: skip

any_command: st.SearchStrategy[ShardCommand] = st.one_of(
    [st.builds(cls, **{f.name: FIELD_VALUES[f.name] for f in fields(cls)}) for cls in COMMAND_TYPES.values()]
)


@settings(max_examples=150, deadline=None)
@given(any_command)
def test_every_encoded_command_is_valid_and_decodes_to_itself(command: ShardCommand) -> None:
    raw = encode(command)
    assert COMMANDS.is_valid(orjson.loads(raw))
    assert decode_command(raw) == command


def _replies() -> list[ShardReply]:
    """Replies of every outcome, as a shard gives them."""
    partition_map = PartitionMap.initial(1)
    book = ShardBook(0, partition_map, [], [], 0, GENESIS_HASH, 1)
    a, b, t = "alice", "bob", TID
    p, q, r = (f"00000000-0000-4000-9000-00000000000{i}" for i in range(3))
    commands: list[ShardCommand] = [
        OpenAccount(MID, a, "EUR", 100),
        OpenAccount("00000000-0000-4000-8000-000000000001", b, "EUR"),
        ChangeAccountStatus("00000000-0000-4000-8000-000000000002", b, "frozen"),
        PostTransfer("00000000-0000-4000-8000-000000000003", t, a, b, 1, "EUR"),  # rejected: frozen
        ChangeAccountStatus("00000000-0000-4000-8000-000000000004", b, "active"),
        PostTransfer("00000000-0000-4000-8000-000000000005", t, a, b, 1, "EUR"),
        PostTransfer("00000000-0000-4000-8000-000000000006", t, a, b, 1, "EUR"),  # already applied
        ReserveFunds("00000000-0000-4000-8000-000000000007", t, a, 5, "EUR"),
        CreditFunds("00000000-0000-4000-8000-000000000008", t, b, 5, "EUR"),
        CommitReservation("00000000-0000-4000-8000-000000000009", t, a),
        ReleaseReservation("00000000-0000-4000-8000-00000000000a", MID, a),  # tombstone
        CancelCredit("00000000-0000-4000-8000-00000000000b", MID, b),  # tombstone
        HoldTransfer("00000000-0000-4000-8000-00000000000c", p, a, b, 3, "EUR"),
        PostPending("00000000-0000-4000-8000-00000000000d", p, a, b, 2),
        HoldTransfer("00000000-0000-4000-8000-00000000000e", q, a, b, 3, "EUR"),
        VoidPending("00000000-0000-4000-8000-00000000000f", q, a, b),
        ReserveFunds("00000000-0000-4000-8000-000000000010", r, a, 4, "EUR"),
        HoldCredit("00000000-0000-4000-8000-000000000011", r, b, 4, "EUR"),
        SettleCredit("00000000-0000-4000-8000-000000000012", r, b, 1),
        PostHold("00000000-0000-4000-8000-000000000013", r, a, 1),
        ApplyLegs(
            "00000000-0000-4000-8000-000000000014",
            q,
            "reserve",
            (Leg("00000000-0000-4000-a000-000000000001", a, 1, "EUR"),),
        ),
        ApplyLegs(
            "00000000-0000-4000-8000-000000000015",
            q,
            "reserve",
            (Leg("00000000-0000-4000-a000-000000000002", a, 10**9, "EUR"),),
        ),
    ]
    return [book.apply(c) for c in commands]


def test_replies_of_every_outcome_match_the_reply_schema_and_round_trip() -> None:
    replies = _replies()
    assert {r.outcome for r in replies} == set(REPLY_SCHEMA["properties"]["outcome"]["enum"])
    for reply in replies:
        raw = encode(reply)
        errors = [e.message for e in REPLIES.iter_errors(orjson.loads(raw))]
        assert errors == [], reply
        assert decode_reply(raw) == reply


def test_a_reply_with_fields_the_type_lacks_is_invalid() -> None:
    payload = orjson.loads(encode(_replies()[0]))
    with pytest.raises(InvalidMessage):
        decode_reply(orjson.dumps({**payload, "extra": 1}))
    with pytest.raises(InvalidMessage):
        decode_reply(orjson.dumps({**payload, "v": 2}))


def test_reply_id_is_the_rfc_4122_uuid5_of_the_command_id() -> None:
    for command_id in ("0e8a4f8e-3b9b-4c1e-9a59-3b7d2a8f0c11", str(uuid.uuid4())):
        expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ledger:reply:{command_id}"))
        assert reply_id(command_id) == expected


def test_wire_names_are_the_contracts_not_the_class_names() -> None:
    """A class renamed in Python must not rename the message on the wire (issue 14, item 8)."""
    command = ReserveFunds(str(uuid.uuid4()), str(uuid.uuid4()), "acct-1", 10, "EUR")
    ReserveFunds.__name__ = "HoldFunds"
    try:
        assert orjson.loads(encode(command))["type"] == "ReserveFunds"
        assert decode_command(encode(command)) == command
    finally:
        ReserveFunds.__name__ = "ReserveFunds"
