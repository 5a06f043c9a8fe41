"""A dead letter always fits on its topic, and says exactly why the record was refused."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas.currencies import JSON_DIR
from schemas.dead_letters import (
    DEAD_LETTER_REASONS,
    MAX_KEY_PREFIX,
    MAX_RAW_PREFIX,
    DeadLetter,
    from_public_reason,
)
from schemas.public import ACCOUNT_COMMAND_REASONS, TRANSFER_REASONS

_CONTRACT = orjson.loads((JSON_DIR / "dead-letter.json").read_bytes())
_SCHEMA = Draft202012Validator(_CONTRACT)


@pytest.mark.parametrize("size", [0, 10, MAX_RAW_PREFIX, 900_000, 5 * 1024 * 1024])
def test_a_dead_letter_is_bounded_whatever_the_record(size: int) -> None:
    raw = bytes(i % 251 for i in range(size))
    key = b"k" * 100_000
    letter = DeadLetter.of("ledger.transfers", 3, 17, "too_large", "x" * 5000, raw, key)
    encoded = letter.encode()
    assert len(encoded) < 8 * 1024, "a dead letter must fit the smallest record limit by far"
    body = orjson.loads(encoded)
    assert not list(_SCHEMA.iter_errors(body))
    assert body["raw_size"] == size
    assert body["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(body["raw_prefix_base64"]) == raw[:MAX_RAW_PREFIX]
    assert base64.b64decode(body["key_prefix_base64"]) == key[:MAX_KEY_PREFIX]
    assert body["key_size"] == len(key)
    assert len(body["detail"]) <= 1000


def test_a_dead_letter_names_a_known_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        DeadLetter.of("t", 0, 0, "undecodable", "", b"", None)
    letter = DeadLetter.of("t", 0, 0, "not_utf8", "byte 0xff", b"\xff", None)
    body = orjson.loads(letter.encode())
    assert (body["reason"], body["key_prefix_base64"], body["key_size"]) == ("not_utf8", None, None)
    assert set(_CONTRACT["properties"]["reason"]["enum"]) == DEAD_LETTER_REASONS


def test_the_inbox_id_is_where_the_record_came_from() -> None:
    assert DeadLetter.of("t", 2, 9, "not_json", "", b"x", None).inbox_id == "dlq:t:2:9"


def test_every_public_rejection_can_be_dead_lettered() -> None:
    """A public command whose id cannot be read is dead-lettered with its reason: none may be
    missing from the dead letter's contract (DeadLetter.of refuses an unknown reason)."""
    assert {from_public_reason(r) for r in TRANSFER_REASONS | ACCOUNT_COMMAND_REASONS} <= DEAD_LETTER_REASONS
