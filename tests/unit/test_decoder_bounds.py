"""Every decoder is bounded (size, nesting) before it parses, names the precise reason a dead letter
carries, and given any bytes at all raises only its own refusal, never anything else (issue 12)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.currencies import JSON_DIR
from schemas.dead_letters import DEAD_LETTER_REASONS, DeadLetter
from schemas.message_auth import HEADER, MessageAuthenticator, Unauthenticated
from schemas.public import MAX_PAYLOAD_BYTES, PublicRejection
from schemas.public_parse import parse_account_command, parse_transfer
from schemas.shard_messages import (
    COMMAND_TYPES,
    MAX_INTERNAL_BYTES,
    REPLY_OUTCOMES,
    REPLY_REASONS,
    InvalidMessage,
    ShardReply,
    decode_command,
    decode_reply,
    encode,
)

_INTERNAL = [decode_command, decode_reply]


@pytest.mark.parametrize("decode", _INTERNAL)
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "not_utf8"),
        (b'{"type": "\xc3\x28"}', "not_utf8"),
        (b"[" * 30_000 + b"]" * 30_000, "nesting_too_deep"),
        (b'{"a":' * 9 + b"1" + b"}" * 9, "nesting_too_deep"),
        (b" " * (MAX_INTERNAL_BYTES + 1), "too_large"),
        (b"{", "not_json"),
        (b"[1]", "not_an_object"),
    ],
)
def test_internal_decoders_refuse_with_the_precise_reason(decode: Any, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(raw)
    assert caught.value.reason == reason


_REPLY = ShardReply(
    str(uuid.uuid4()), str(uuid.uuid4()), "CreditFunds", 1, "acct-1", str(uuid.uuid4()), "funds_credited"
)


@pytest.mark.parametrize(
    ("field", "junk"),
    [
        ("message_id", 5), ("message_id", "not-a-uuid"), ("in_reply_to", None), ("command", "Steal"),
        ("command", ["CreditFunds"]), ("shard", "1"), ("shard", True), ("shard", -1), ("shard", 1.5),
        ("account_id", 7), ("account_id", "x" * 65), ("transfer_id", 1), ("transfer_id", "t"),
        ("outcome", "money_created"), ("outcome", {}), ("reason", 3), ("reason", "because"),
        ("journal_seq", "9"), ("journal_seq", 0), ("journal_seq", True), ("journal_seq", 2**64 - 1),
    ],
)  # fmt: skip
def test_a_reply_with_a_field_of_the_wrong_kind_is_refused(field: str, junk: object) -> None:
    body = orjson.loads(encode(_REPLY)) | {field: junk}
    with pytest.raises(InvalidMessage) as caught:
        decode_reply(orjson.dumps(body))
    assert caught.value.reason == "invalid_field"
    assert field in str(caught.value)


def test_a_valid_reply_still_decodes() -> None:
    assert decode_reply(encode(_REPLY)) == _REPLY
    rejected = ShardReply(str(uuid.uuid4()), str(uuid.uuid4()), "ReserveFunds", 0, "a", None, "rejected",
                          "insufficient_funds", None)  # fmt: skip
    assert decode_reply(encode(rejected)) == rejected


@pytest.mark.parametrize("parse", [lambda raw: parse_transfer(raw, max_amount=10**12), parse_account_command])
@pytest.mark.parametrize(
    ("raw", "public", "letter"),
    [
        (b"\xff\xfe{}", "malformed_json", "not_utf8"),
        (b"{", "malformed_json", "not_json"),
        (b'{"a": 1, "a": 2}', "malformed_json", "not_json"),
        (b'{"a": NaN}', "malformed_json", "not_json"),
        (b"[" * 50 + b"]" * 50, "nesting_too_deep", "nesting_too_deep"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "payload_too_large", "too_large"),
        (b"[]", "not_an_object", "not_an_object"),
    ],
)
def test_public_refusals_keep_their_reason_and_tell_the_dead_letter_more(
    parse: Any, raw: bytes, public: str, letter: str
) -> None:
    with pytest.raises(PublicRejection) as caught:
        parse(raw)
    assert caught.value.reason == public, "the result's reason is the public contract's: unchanged"
    assert caught.value.dead_letter_reason == letter
    assert letter in DEAD_LETTER_REASONS


# --- fuzz: any bytes at all -> a value or the decoder's own refusal, never another exception ------

_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
_FIELDS = [
    "type", "v", "message_id", "in_reply_to", "command", "shard", "account_id", "transfer_id",
    "outcome", "reason", "journal_seq", "amount", "currency", "debit_account", "credit_account",
    "metadata", "status", "overdraft_limit", "command_id",
]  # fmt: skip
# Objects that look like messages, with a junk value or two: the decoders' deeper paths.
_NEAR_MISSES = st.builds(
    lambda base, junk: orjson.dumps(base | junk),
    st.sampled_from([
        orjson.loads(encode(_REPLY)),
        {"type": "CreditFunds", "v": 1, "message_id": str(uuid.uuid4()), "transfer_id": str(uuid.uuid4()),
         "account_id": "a", "amount": 5, "currency": "EUR"},
        {"type": "TransferFunds", "v": 1, "transfer_id": str(uuid.uuid4()), "debit_account": "a",
         "credit_account": "b", "amount": 5, "currency": "EUR"},
        {"type": "OpenAccount", "v": 1, "command_id": str(uuid.uuid4()), "account_id": "a",
         "currency": "EUR"},
    ]),
    st.dictionaries(st.sampled_from(_FIELDS), _JSONISH, max_size=2),
)  # fmt: skip
_ANY_BYTES = st.binary(max_size=2048) | _NEAR_MISSES | _JSONISH.map(orjson.dumps)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ANY_BYTES)
def test_no_bytes_make_a_decoder_raise_anything_but_its_refusal(raw: bytes) -> None:
    reasons: list[str] = []
    for decode in _INTERNAL:
        try:
            decode(raw)
        except InvalidMessage as e:
            reasons.append(e.reason)
    for parse in (lambda b: parse_transfer(b, max_amount=10**12), parse_account_command):
        try:
            parse(raw)
        except PublicRejection as e:
            reasons.append(e.dead_letter_reason)
    for reason in reasons:  # each can be dead-lettered, and the letter is bounded
        assert len(DeadLetter.of("t", 0, 0, reason, "", raw, None).encode()) < 8 * 1024


def test_the_reply_checks_name_the_contracts_outcomes_and_reasons() -> None:
    schema = orjson.loads((JSON_DIR / "shard-reply.json").read_bytes())["properties"]
    assert set(schema["outcome"]["enum"]) == REPLY_OUTCOMES
    assert set(schema["reason"]["anyOf"][0]["enum"]) == REPLY_REASONS
    assert set(schema["command"]["enum"]) == set(COMMAND_TYPES)


_AUTH = MessageAuthenticator([("k1", b"s" * 32)])


@settings(max_examples=800, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([HEADER, "traceparent", "x"]) | st.text(max_size=12),
            st.binary(max_size=120) | st.from_regex(rb"\Av1:[ -~]{0,12}:[0-9a-fA-F]{0,70}\Z"),
        ),
        max_size=3,
    ),
    st.binary(max_size=200),
    st.none() | st.binary(max_size=20),
)
def test_no_headers_make_authentication_raise_anything_but_unauthenticated(
    headers: list[tuple[str, bytes]], payload: bytes, key: bytes | None
) -> None:
    try:
        _AUTH.verify("t.shard.00.commands", key, payload, headers)
    except Unauthenticated as e:
        assert len(DeadLetter.of("t", 0, 0, e.reason, str(e), payload, key).encode()) < 8 * 1024  # noqa: PT017
    else:
        raise AssertionError("random headers verified")
