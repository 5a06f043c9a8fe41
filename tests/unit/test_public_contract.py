"""The public contract: schemas/public_parse.py reads what payment services send exactly as the JSON
Schema files say, with one stable reason for every way a command can be wrong (tests/bad_inputs.py).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields, replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from schemas import public, public_parse
from schemas.currencies import CURRENCIES, JSON_DIR
from schemas.errors import LedgerError
from schemas.public import (
    ACCOUNT_COMMAND_REASONS,
    ACCOUNT_COMMAND_TYPES,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    PENDING_COMMAND_TYPES,
    TRANSFER_REASONS,
    WIRE_TYPES,
    AccountResult,
    CloseAccount,
    FreezeAccount,
    OpenAccountRequest,
    PublicMessage,
    PublicRejection,
    TransferFunds,
    TransferResult,
    UnfreezeAccount,
    encode_public,
    request_fingerprint,
)
from schemas.public_parse import parse_account_command, parse_transfer
from tests.bad_inputs import (
    BAD_TRANSFERS,
    TEST_MAX_AMOUNT,
    VALID_TRANSFER,
    VALID_TRANSFER_WITH_SQL_METADATA,
    BadInput,
    encoded,
    padded_to,
    transfer,
    transfer_id_for,
    with_literal,
)


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


# Compiled here from the files as they are, independently of the (inlined) validators in public.py.
PUBLIC_FILES = (
    "transfer-command.json",
    "pending-command.json",
    "batch-command.json",
    "account-command.json",
    "transfer-result.json",
)
SCHEMAS = {name: _load(name) for name in (*PUBLIC_FILES, "currency.json", "shard-command.json")}
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(schema)) for name, schema in SCHEMAS.items()
)
TRANSFER_SCHEMA = SCHEMAS["transfer-command.json"]
ACCOUNT_SCHEMA = SCHEMAS["account-command.json"]
RESULT_SCHEMA = SCHEMAS["transfer-result.json"]
TRANSFERS = Draft202012Validator(TRANSFER_SCHEMA, registry=REGISTRY)
ACCOUNT_COMMANDS = Draft202012Validator(ACCOUNT_SCHEMA, registry=REGISTRY)
RESULTS = Draft202012Validator(RESULT_SCHEMA, registry=REGISTRY)
ENVELOPE = {"type", "v"}


def rejection(raw: bytes) -> PublicRejection:
    with pytest.raises(PublicRejection) as caught:
        parse_transfer(raw, max_amount=TEST_MAX_AMOUNT)
    return caught.value


def account_rejection(raw: bytes) -> PublicRejection:
    with pytest.raises(PublicRejection) as caught:
        parse_account_command(raw)
    return caught.value


# --- every bad input, its reason --------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_TRANSFERS, ids=[c.name for c in BAD_TRANSFERS])
def test_a_bad_transfer_is_rejected_with_its_reason_and_readable_id(case: BadInput) -> None:
    error = rejection(case.raw)
    assert (error.reason, error.transfer_id or error.id_as_sent) == (case.reason, case.readable_id), (
        error.detail
    )
    assert error.detail
    assert error.command_id is None


def test_the_table_uses_every_reason_and_only_those() -> None:
    assert {case.reason for case in BAD_TRANSFERS} == TRANSFER_REASONS


def test_every_case_has_its_own_name_and_transfer_id() -> None:
    names = [case.name for case in BAD_TRANSFERS]
    assert len(set(names)) == len(names)
    readable = [case.readable_id for case in BAD_TRANSFERS if case.readable_id is not None]
    assert len(set(readable)) == len(readable)
    assert transfer_id_for("valid transfer") not in readable


def test_a_rejection_is_a_non_retriable_ledger_error() -> None:
    error = rejection(encoded(transfer("zero", amount=0)))
    assert isinstance(error, LedgerError)
    assert error.retriable is False
    assert str(error).startswith("amount_not_positive: ")


def test_every_reason_fits_the_result_schema() -> None:
    reason = Draft202012Validator(RESULT_SCHEMA["$defs"]["reason"])
    for code in TRANSFER_REASONS | ACCOUNT_COMMAND_REASONS:
        assert reason.is_valid(code), code


# What JSON Schema (as the jsonschema package runs it) accepts and the contract does not: the parser
# is stricter on these, on purpose. If a schema assertion starts failing, the validator caught up.
STRICTER = [
    ("amount 1000.0", with_literal("s1", "amount", "1000.0"), "invalid_amount"),
    ("amount 1e3", with_literal("s2", "amount", "1e3"), "invalid_amount"),
    ("version 1.0", with_literal("s3", "v", "1.0"), "unsupported_version"),
    ("transfer id + newline", encoded(transfer("s4", transfer_id=f"{transfer_id_for('s4')}\n")),
     "invalid_transfer_id"),
    ("account id + newline", encoded(transfer("s5", debit_account="alice\n")), "invalid_account_id"),
    ("lone surrogate", with_literal("s6", "metadata", '{"k": "\\ud800"}'), "invalid_metadata"),
    ("NUL in metadata", encoded(transfer("s9", metadata={"k": "\x00"})), "invalid_metadata"),
    ("same account", encoded(transfer("s7", credit_account="alice")), "same_account"),
    ("above the limit", encoded(transfer("s8", amount=TEST_MAX_AMOUNT + 1)), "amount_above_limit"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "reason"), [c[1:] for c in STRICTER], ids=[c[0] for c in STRICTER])
def test_the_parser_is_stricter_where_json_schema_cannot_say_it(raw: bytes, reason: str) -> None:
    assert TRANSFERS.is_valid(json.loads(raw))
    assert rejection(raw).reason == reason


def _first_error(validator: Draft202012Validator, payload: object) -> tuple[str, list[object]] | None:
    error = next(validator.iter_errors(payload), None)
    return None if error is None else (str(error.validator), list(error.path))


@pytest.mark.parametrize("case", BAD_TRANSFERS, ids=[c.name for c in BAD_TRANSFERS])
def test_the_inlined_validator_reports_the_same_first_error_as_the_file(case: BadInput) -> None:
    try:
        payload = json.loads(case.raw)
    except (ValueError, RecursionError):
        return  # never reaches a validator
    if isinstance(payload, dict):
        assert _first_error(public_parse._TRANSFER_VALIDATOR, payload) == _first_error(TRANSFERS, payload)


# --- valid commands ---------------------------------------------------------------------------------


def test_a_valid_transfer_without_metadata_parses() -> None:
    assert parse_transfer(VALID_TRANSFER, max_amount=TEST_MAX_AMOUNT) == TransferFunds(
        transfer_id_for("valid transfer"), "alice", "bob", 1050, "EUR"
    )


def test_sql_text_in_metadata_is_data() -> None:
    command = parse_transfer(VALID_TRANSFER_WITH_SQL_METADATA, max_amount=TEST_MAX_AMOUNT)
    assert command.metadata == {"note": "x'; DROP TABLE accounts;--"}


VALID_TRANSFERS: list[tuple[str, dict[str, Any]]] = [
    ("amount 1", transfer("v1", amount=1)),
    ("amount at the limit", transfer("v2", amount=TEST_MAX_AMOUNT)),
    ("64-character ids", transfer("v3", debit_account="a" * 64, credit_account="B." + "9" * 62)),
    ("ids with _ . -", transfer("v4", debit_account="A.b_c-9", credit_account="a.B_C-9")),
    ("ids differing only in case", transfer("v5", debit_account="alice", credit_account="Alice")),
    ("another currency", transfer("v6", currency="JPY")),
    ("empty metadata", transfer("v7", metadata={})),
    ("fullest metadata", transfer("v8", metadata={f"{i:064}": "v" * 256 for i in range(16)})),
    ("metadata counts characters", transfer("v9", metadata={"é" * 64: "€" * 256})),
    ("brackets and quotes in metadata", transfer("v10", metadata={"k": '[[[[[[[[[[{{{{{{{{{{"\\', "[": "{"})),
    ("control characters in metadata", transfer("v11", metadata={"k": "a\x01b\nc\x1b"})),
    ("keys in another order", dict(reversed(transfer("v12", metadata={"b": "2", "a": "1"}).items()))),
]  # fmt: skip


@pytest.mark.parametrize("payload", [c[1] for c in VALID_TRANSFERS], ids=[c[0] for c in VALID_TRANSFERS])
def test_valid_transfers_parse_to_their_fields(payload: dict[str, Any]) -> None:
    assert TRANSFERS.is_valid(payload)
    command = parse_transfer(encoded(payload), max_amount=TEST_MAX_AMOUNT)
    assert command == TransferFunds(**{k: v for k, v in payload.items() if k not in ENVELOPE})
    assert parse_transfer(orjson.dumps(payload), max_amount=TEST_MAX_AMOUNT) == command
    assert parse_transfer(json.dumps(payload, indent=2).encode(), max_amount=TEST_MAX_AMOUNT) == command


def test_a_payload_of_exactly_16_kib_is_read() -> None:
    raw = padded_to("exactly 16 KiB", MAX_PAYLOAD_BYTES)
    assert len(raw) == MAX_PAYLOAD_BYTES
    assert parse_transfer(raw, max_amount=TEST_MAX_AMOUNT).transfer_id == transfer_id_for("exactly 16 KiB")


def test_the_limit_is_the_callers() -> None:
    raw = encoded(transfer("limit", amount=2**63 - 1))
    command = parse_transfer(raw, max_amount=2**63 - 1)
    assert isinstance(command, TransferFunds)
    assert command.amount == 2**63 - 1
    assert rejection(raw).reason == "amount_above_limit"


# --- nesting ----------------------------------------------------------------------------------------


def test_100000_levels_of_nesting_are_refused_without_recursion() -> None:
    deep = b"[" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep[:MAX_PAYLOAD_BYTES])  # what the guard stands in front of
    assert rejection(deep).reason == "payload_too_large"
    assert rejection(deep[:MAX_PAYLOAD_BYTES]).reason == "nesting_too_deep"
    assert rejection(b'{"a":' * 3000).reason == "nesting_too_deep"
    assert account_rejection(deep[:MAX_PAYLOAD_BYTES]).reason == "nesting_too_deep"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'["[[[[[[[[[[[[[["]', "not_an_object"),  # brackets in a string are text
        (b'["\\"[[[[[[[[[[["]', "not_an_object"),  # so are those after an escaped quote
        (b'["\\\\"' + b"[" * 10, "nesting_too_deep"),  # an escaped backslash ends no string
        (b'"' + b'\\"' * 8000 + b"[" * 9, "malformed_json"),  # all inside one unterminated string
        (b'["' + b"\\" * 16000, "malformed_json"),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, "not_an_object"),  # as deep as allowed
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nesting_too_deep"),
        (b"[]" * 5000, "malformed_json"),  # many brackets, never deep
    ],
)
def test_nesting_is_counted_as_json_counts_it(raw: bytes, reason: str) -> None:
    assert rejection(raw).reason == reason


# --- the types and the schemas ----------------------------------------------------------------------


def _definition(cls: type[PublicMessage]) -> dict[str, Any]:
    wire = WIRE_TYPES[cls]
    if cls is TransferFunds:
        return TRANSFER_SCHEMA
    if wire in PENDING_COMMAND_TYPES:
        return dict(SCHEMAS["pending-command.json"]["$defs"][wire])
    if wire == "TransferBatch":
        return SCHEMAS["batch-command.json"]
    if wire in ACCOUNT_COMMAND_TYPES:
        return dict(ACCOUNT_SCHEMA["$defs"][wire])
    return dict(RESULT_SCHEMA["$defs"][wire])


@pytest.mark.parametrize("cls", WIRE_TYPES, ids=list(WIRE_TYPES.values()))
def test_dataclass_fields_are_the_schema_properties(cls: type[PublicMessage]) -> None:
    definition = _definition(cls)
    wire_name = {"pending_timeout_ms": "pending"}  # an object on the wire: {"timeout_ms": N}
    names = [wire_name.get(f.name, f.name) for f in fields(cls)]
    assert list(definition["properties"]) == ["type", "v", *names]  # in order: it orders the errors
    optional = {
        wire_name.get(f.name, f.name)
        for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    }
    assert set(definition["required"]) == ENVELOPE | (set(names) - optional)
    assert definition["properties"]["type"] == {"const": WIRE_TYPES[cls]}
    assert definition["properties"]["v"] == {"const": public.VERSION}
    assert definition["additionalProperties"] is False
    assert list(definition).index("properties") < list(definition).index("required")


def test_schema_defaults_are_the_dataclass_defaults() -> None:
    limit = ACCOUNT_SCHEMA["$defs"]["OpenAccount"]["properties"]["overdraft_limit"]
    assert OpenAccountRequest("c", "a", "EUR").overdraft_limit == limit["default"]


def test_the_oneofs_offer_exactly_the_types() -> None:
    assert [r["$ref"] for r in ACCOUNT_SCHEMA["oneOf"]] == [f"#/$defs/{n}" for n in ACCOUNT_COMMAND_TYPES]
    assert [r["$ref"] for r in RESULT_SCHEMA["oneOf"]] == ["#/$defs/TransferResult", "#/$defs/AccountResult"]


def test_every_field_has_a_reason() -> None:
    properties = set(TRANSFER_SCHEMA["properties"])
    for name in ACCOUNT_COMMAND_TYPES:
        properties |= set(ACCOUNT_SCHEMA["$defs"][name]["properties"])
    for name in PENDING_COMMAND_TYPES:
        properties |= set(SCHEMAS["pending-command.json"]["$defs"][name]["properties"])
    properties |= set(SCHEMAS["batch-command.json"]["properties"])
    assert properties == set(public_parse._FIELD_REASONS)


@pytest.mark.parametrize("name", ["uuid", "account_id", "amount", "limit", "metadata"])
def test_public_definitions_are_the_shard_definitions(name: str) -> None:
    """What a payment service may send is what a shard accepts: no command is valid at the edge
    and then refused inside."""
    assert TRANSFER_SCHEMA["$defs"][name] == SCHEMAS["shard-command.json"]["$defs"][name]


@pytest.mark.parametrize("name", PUBLIC_FILES)
def test_the_schema_files_are_valid_draft_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(SCHEMAS[name])
    assert SCHEMAS[name]["$id"] == name


# --- encoding -----------------------------------------------------------------------------------------

TID = transfer_id_for("encoded")
MID = "0f1e2d3c-4b5a-4968-8776-655443322110"
CID = "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d"
NOW, NOW_PRECISE = "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123456+00:00"
MESSAGES: list[PublicMessage] = [
    TransferFunds(TID, "alice", "bob", 1050, "EUR"),
    TransferFunds(TID, "alice", "bob", 1050, "EUR", {"order": "A-1", "note": "x'; DROP TABLE accounts;--"}),
    OpenAccountRequest(CID, "alice", "EUR"),
    OpenAccountRequest(CID, "alice", "JPY", 500, {"owner": "Alice"}),
    FreezeAccount(CID, "alice"),
    UnfreezeAccount(CID, "alice"),
    CloseAccount(CID, "alice"),
    TransferResult(MID, TID, "completed", None, "ab" * 32, "alice", "bob", 1050, "EUR", NOW_PRECISE),
    TransferResult(MID, TID, "rejected", "malformed_json", "cd" * 32, None, None, None, None, NOW),
    TransferResult(MID, TID, "compensated", "account_closed", "ef" * 32, "alice", "bob", 1, "EUR", NOW),
    TransferResult(MID, TID, "pending", None, "ef" * 32, "alice", "bob", 1, "EUR", NOW),
    TransferResult(MID, TID, "expired", None, "ef" * 32, "alice", "bob", 1, "EUR", NOW),
    TransferResult(MID, TID, "voided", None, "ef" * 32, "alice", "bob", 1, "EUR", NOW, pending_id=TID),
    AccountResult(MID, CID, "alice", "done", None),
    AccountResult(MID, CID, None, "rejected", "invalid_account_id"),
]  # fmt: skip


@pytest.mark.parametrize("message", MESSAGES, ids=[type(m).__name__ for m in MESSAGES])
def test_encoded_messages_validate_against_their_schema(message: PublicMessage) -> None:
    payload = orjson.loads(encode_public(message))
    assert payload["type"] == WIRE_TYPES[type(message)]
    assert payload["v"] == 1
    validator = {TransferFunds: TRANSFERS, TransferResult: RESULTS, AccountResult: RESULTS}.get(
        type(message), ACCOUNT_COMMANDS
    )
    assert [e.message for e in validator.iter_errors(payload)] == []


@pytest.mark.parametrize("message", MESSAGES[:7], ids=[type(m).__name__ for m in MESSAGES[:7]])
def test_encoded_commands_parse_to_themselves(message: PublicMessage) -> None:
    raw = encode_public(message)
    if isinstance(message, TransferFunds):
        assert parse_transfer(raw, max_amount=TEST_MAX_AMOUNT) == message
    else:
        assert parse_account_command(raw) == message


@pytest.mark.parametrize(
    "changes",
    [{"reason": "insufficient_funds"}, {"state": "rejected", "reason": None}, {"finished_at": "yesterday"}],
)
def test_results_that_break_the_contract_do_not_validate(changes: dict[str, Any]) -> None:
    message = replace(MESSAGES[7], **changes)
    assert not RESULTS.is_valid(orjson.loads(encode_public(message)))


storable = st.characters(codec="utf-8", exclude_characters="\x00")  # see test_the_parser_is_stricter...
account_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
transfers = st.builds(
    TransferFunds,
    transfer_id=st.uuids().map(str),
    debit_account=account_ids,
    credit_account=account_ids,
    amount=st.integers(1, TEST_MAX_AMOUNT),
    currency=st.sampled_from(sorted(CURRENCIES)),
    metadata=st.dictionaries(st.text(storable, max_size=64), st.text(storable, max_size=256), max_size=16),
).filter(lambda t: t.debit_account != t.credit_account)


@settings(max_examples=150, deadline=None)
@given(transfers)
def test_every_encoded_transfer_is_valid_and_parses_to_itself(command: TransferFunds) -> None:
    raw = encode_public(command)
    assert TRANSFERS.is_valid(orjson.loads(raw))
    parsed = parse_transfer(raw, max_amount=TEST_MAX_AMOUNT)
    assert parsed == command
    assert request_fingerprint(parsed) == request_fingerprint(command)


# --- fingerprints -------------------------------------------------------------------------------------

BASE = TransferFunds(TID, "alice", "bob", 1050, "EUR", {"order": "A-1"})


def test_a_fingerprint_is_a_sha256_hex_that_fits_the_result_schema() -> None:
    fingerprint = request_fingerprint(BASE)
    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0
    assert fingerprint == fingerprint.lower()


def test_the_same_body_has_the_same_fingerprint_however_it_was_written() -> None:
    payload = transfer("encoded", metadata={"order": "A-1", "b": "é"})
    writings = [
        encoded(payload),
        orjson.dumps(payload),
        json.dumps(payload, indent=4, ensure_ascii=True).encode(),
        json.dumps(dict(reversed(payload.items())), sort_keys=True).encode(),
        encoded(payload).replace(b'"alice"', b'"\\u0061lice"'),
    ]
    fingerprints = {request_fingerprint(parse_transfer(raw, max_amount=TEST_MAX_AMOUNT)) for raw in writings}
    assert len(fingerprints) == 1


def test_absent_and_empty_metadata_are_the_same_command() -> None:
    without = parse_transfer(encoded(transfer("m")), max_amount=TEST_MAX_AMOUNT)
    empty = parse_transfer(encoded(transfer("m", metadata={})), max_amount=TEST_MAX_AMOUNT)
    assert without == empty
    assert request_fingerprint(without) == request_fingerprint(empty)


@pytest.mark.parametrize(
    "changes",
    [
        {"transfer_id": transfer_id_for("other")},
        {"debit_account": "carol"},
        {"credit_account": "carol"},
        {"debit_account": "bob", "credit_account": "alice"},
        {"amount": 1051},
        {"currency": "USD"},
        {"metadata": {}},
        {"metadata": {"order": "A-2"}},
        {"metadata": {"Order": "A-1"}},
        {"metadata": {"order": "A-1", "note": ""}},
        {"metadata": {"order": "A-1 "}},
    ],
    ids=repr,
)
def test_any_difference_changes_the_fingerprint(changes: dict[str, Any]) -> None:
    assert request_fingerprint(replace(BASE, **changes)) != request_fingerprint(BASE)


# --- account commands ---------------------------------------------------------------------------------

ACCOUNT_ID = "alice"


def account_command(kind: str, **changes: object) -> dict[str, Any]:
    payload: dict[str, Any] = {"type": kind, "v": 1, "command_id": CID, "account_id": ACCOUNT_ID}
    if kind == "OpenAccount":
        payload["currency"] = "EUR"
    return {**payload, **changes}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (account_command("OpenAccount"), OpenAccountRequest(CID, ACCOUNT_ID, "EUR")),
        (account_command("OpenAccount", overdraft_limit=0), OpenAccountRequest(CID, ACCOUNT_ID, "EUR")),
        (
            account_command(
                "OpenAccount", overdraft_limit=2**63 - 1, metadata={"note": "x'; DROP TABLE a;--"}
            ),
            OpenAccountRequest(CID, ACCOUNT_ID, "EUR", 2**63 - 1, {"note": "x'; DROP TABLE a;--"}),
        ),
        (account_command("FreezeAccount"), FreezeAccount(CID, ACCOUNT_ID)),
        (account_command("UnfreezeAccount"), UnfreezeAccount(CID, ACCOUNT_ID)),
        (account_command("CloseAccount"), CloseAccount(CID, ACCOUNT_ID)),
    ],
    ids=lambda value: repr(value)[:60],
)
def test_valid_account_commands_parse(payload: dict[str, Any], expected: object) -> None:
    assert ACCOUNT_COMMANDS.is_valid(payload)
    assert parse_account_command(encoded(payload)) == expected


def omit(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != name}


BAD_ACCOUNT_COMMANDS: list[tuple[str, bytes, str, str | None, str | None]] = [
    # (name, raw, reason, readable command_id, readable account_id)
    ("not JSON", b"open alice", "malformed_json", None, None),
    ("too large", b" " * (MAX_PAYLOAD_BYTES + 1), "payload_too_large", None, None),
    ("array", b"[]", "not_an_object", None, None),
    ("a transfer", encoded(transfer("a transfer")), "unknown_message_type", None, None),
    ("unknown type", encoded(account_command("DeleteAccount")), "unknown_message_type", CID, ACCOUNT_ID),
    ("type null", encoded(account_command("CloseAccount", type=None)), "unknown_message_type", CID,
     ACCOUNT_ID),
    ("no type", encoded({"v": 1, "command_id": CID, "account_id": "a"}), "missing_field", CID, "a"),
    ("version 2", encoded(account_command("FreezeAccount", v=2)), "unsupported_version", CID, ACCOUNT_ID),
    ("version 1.0", encoded(account_command("FreezeAccount")).replace(b'"v": 1', b'"v": 1.0'),
     "unsupported_version", CID, ACCOUNT_ID),
    ("no currency", encoded(omit(account_command("OpenAccount"), "currency")), "missing_field", CID,
     ACCOUNT_ID),
    ("no command id", encoded(omit(account_command("CloseAccount"), "command_id")), "missing_field", None,
     ACCOUNT_ID),
    ("currency on a freeze", encoded(account_command("FreezeAccount", currency="EUR")), "unknown_field", CID,
     ACCOUNT_ID),
    ("upper-case command id", encoded(account_command("CloseAccount", command_id=CID.upper())),
     "invalid_command_id", None, ACCOUNT_ID),
    ("SQL account id", encoded(account_command("OpenAccount", account_id="x'; DROP TABLE accounts;--")),
     "invalid_account_id", CID, None),
    ("NUL in account id", encoded(account_command("FreezeAccount", account_id="alice\x00")),
     "invalid_account_id", CID, None),
    ("account id + newline", encoded(account_command("FreezeAccount", account_id="alice\n")),
     "invalid_account_id", CID, None),
    ("lower-case currency", encoded(account_command("OpenAccount", currency="eur")), "unknown_currency", CID,
     ACCOUNT_ID),
    ("negative overdraft", encoded(account_command("OpenAccount", overdraft_limit=-1)),
     "invalid_overdraft_limit", CID, ACCOUNT_ID),
    ("overdraft 2**63", encoded(account_command("OpenAccount", overdraft_limit=2**63)),
     "invalid_overdraft_limit", CID, ACCOUNT_ID),
    ("overdraft 0.0", encoded(account_command("OpenAccount", overdraft_limit=0.0)),
     "invalid_overdraft_limit", CID, ACCOUNT_ID),
    ("overdraft true", encoded(account_command("OpenAccount", overdraft_limit=True)),
     "invalid_overdraft_limit", CID, ACCOUNT_ID),
    ("17 metadata keys", encoded(account_command("OpenAccount", metadata={str(i): "" for i in range(17)})),
     "invalid_metadata", CID, ACCOUNT_ID),
    ("NUL in metadata", encoded(account_command("OpenAccount", metadata={"k": "\x00"})), "invalid_metadata",
     CID, ACCOUNT_ID),
    ("duplicate account id", encoded(account_command("FreezeAccount")).replace(
        b'"account_id"', b'"account_id": "bob", "account_id"'), "malformed_json", CID, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "reason", "command_id", "account_id"),
    [c[1:] for c in BAD_ACCOUNT_COMMANDS],
    ids=[c[0] for c in BAD_ACCOUNT_COMMANDS],
)
def test_bad_account_commands_are_rejected(
    raw: bytes, reason: str, command_id: str | None, account_id: str | None
) -> None:
    error = account_rejection(raw)
    assert error.reason in ACCOUNT_COMMAND_REASONS
    assert (error.reason, error.command_id, error.account_id) == (reason, command_id, account_id), (
        error.detail
    )
    assert error.transfer_id is None
