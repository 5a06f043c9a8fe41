"""BreakerState and SetBreaker: the decoders give the JSON Schema files' verdicts, with stable reasons."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from schemas.breaker import (
    MAX_CONTROL_BYTES,
    BreakerState,
    SetBreaker,
    closed,
    decode_breaker_state,
    decode_set_breaker,
    encode_breaker,
)
from schemas.currencies import JSON_DIR
from schemas.dead_letters import DEAD_LETTER_REASONS
from schemas.shard_messages import InvalidMessage


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


STATE_SCHEMA = _load("breaker-state.json")
COMMAND_SCHEMA = _load("set-breaker.json")
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(_load(name))) for name in ("breaker-state.json", "set-breaker.json")
)
STATES = Draft202012Validator(STATE_SCHEMA, registry=REGISTRY)
COMMANDS = Draft202012Validator(COMMAND_SCHEMA, registry=REGISTRY)

STATE = BreakerState(3, "open", True, "diverged: chain mismatch at seq 41", "monitor", 7, 1_764_662_400_000)
COMMAND = SetBreaker(
    "0b7c6c1e-5c57-4d1b-9b1f-0f0e0d0c0b0a", 3, "close", "journal checked: row restored", "ana.ops"
)
STATE_BODY = orjson.loads(encode_breaker(STATE))
COMMAND_BODY = orjson.loads(encode_breaker(COMMAND))


def _reason(decode: Any, raw: bytes) -> str | None:
    try:
        decode(raw)
    except InvalidMessage as e:
        reason: str = e.reason
        retriable = e.retriable
    else:
        return None
    assert reason in DEAD_LETTER_REASONS
    assert not retriable
    return reason


def test_fields_are_the_schema_properties() -> None:
    assert {f.name for f in fields(BreakerState)} | {"type", "v"} == set(STATE_SCHEMA["properties"])
    assert set(STATE_SCHEMA["required"]) == set(STATE_SCHEMA["properties"])
    assert {f.name for f in fields(SetBreaker)} | {"type", "v"} == set(COMMAND_SCHEMA["properties"])
    assert set(COMMAND_SCHEMA["required"]) == set(COMMAND_SCHEMA["properties"])


@pytest.mark.parametrize(
    "message",
    [
        STATE,
        closed(0),
        BreakerState(1023, "half_open", False, "healthy for 5 s", "monitor", 2**63 - 1, 0),
        COMMAND,
    ],
)
def test_encoded_messages_are_valid_and_decode_to_themselves(message: BreakerState | SetBreaker) -> None:
    raw = encode_breaker(message)
    validator, decode = (
        (STATES, decode_breaker_state)
        if isinstance(message, BreakerState)
        else (COMMANDS, decode_set_breaker)
    )
    assert not list(validator.iter_errors(orjson.loads(raw)))
    assert decode(raw) == message


def test_a_long_reason_is_cut_to_the_contract() -> None:
    raw = encode_breaker(BreakerState(1, "open", False, "x" * 5000, "monitor", 1, 5))
    assert len(decode_breaker_state(raw).reason) == 256
    raw = encode_breaker(SetBreaker(COMMAND.command_id, 1, "open", "y" * 5000, "ana"))
    assert len(decode_set_breaker(raw).reason) == 200


def test_the_largest_valid_message_fits_the_bound() -> None:
    # A 256-character reason of astral characters, each written as an escaped surrogate pair.
    body = {**STATE_BODY, "reason": "😀" * 256}
    raw = json.dumps(body, ensure_ascii=True).encode()
    assert len(raw) <= MAX_CONTROL_BYTES
    assert not list(STATES.iter_errors(body))
    assert decode_breaker_state(raw).reason == "😀" * 256


STATE_CASES: list[tuple[dict[str, Any], str | None]] = [
    (STATE_BODY, None),
    ({**STATE_BODY, "type": "SetBreaker"}, "unknown_message_type"),
    ({**STATE_BODY, "v": 2}, "unsupported_version"),
    ({**STATE_BODY, "v": True}, "unsupported_version"),
    ({**STATE_BODY, "extra": 1}, "unknown_field"),
    ({k: v for k, v in STATE_BODY.items() if k != "seq"}, "missing_field"),
    ({**STATE_BODY, "shard": 1024}, "invalid_field"),
    ({**STATE_BODY, "shard": -1}, "invalid_field"),
    ({**STATE_BODY, "shard": "3"}, "invalid_field"),
    ({**STATE_BODY, "shard": True}, "invalid_field"),
    ({**STATE_BODY, "state": "ajar"}, "invalid_field"),
    ({**STATE_BODY, "latched": 1}, "invalid_field"),
    ({**STATE_BODY, "latched": True, "state": "half_open"}, "invalid_field"),
    ({**STATE_BODY, "latched": True, "state": "closed"}, "invalid_field"),
    ({**STATE_BODY, "latched": False, "state": "closed"}, None),
    ({**STATE_BODY, "reason": "r" * 257}, "invalid_field"),
    ({**STATE_BODY, "reason": None}, "invalid_field"),
    ({**STATE_BODY, "changed_by": "someone"}, "invalid_field"),
    ({**STATE_BODY, "seq": -1}, "invalid_field"),
    ({**STATE_BODY, "seq": 2**63}, "invalid_field"),
    ({**STATE_BODY, "since_ms": 1.5}, "invalid_field"),
]


@pytest.mark.parametrize(("body", "reason"), STATE_CASES)
def test_breaker_state_decoder_and_schema_agree(body: dict[str, Any], reason: str | None) -> None:
    assert _reason(decode_breaker_state, json.dumps(body).encode()) == reason
    assert (not list(STATES.iter_errors(body))) == (reason is None)


COMMAND_CASES: list[tuple[dict[str, Any], str | None]] = [
    (COMMAND_BODY, None),
    ({**COMMAND_BODY, "action": "open"}, None),
    ({**COMMAND_BODY, "type": "BreakerState"}, "unknown_message_type"),
    ({**COMMAND_BODY, "v": 0}, "unsupported_version"),
    ({**COMMAND_BODY, "force": True}, "unknown_field"),
    ({k: v for k, v in COMMAND_BODY.items() if k != "operator"}, "missing_field"),
    ({**COMMAND_BODY, "command_id": COMMAND.command_id.upper()}, "invalid_field"),
    ({**COMMAND_BODY, "shard": 2000}, "invalid_field"),
    ({**COMMAND_BODY, "action": "half_open"}, "invalid_field"),
    ({**COMMAND_BODY, "reason": ""}, "invalid_field"),
    ({**COMMAND_BODY, "reason": "r" * 201}, "invalid_field"),
    ({**COMMAND_BODY, "operator": "-ana"}, "invalid_field"),
    ({**COMMAND_BODY, "operator": "a" * 65}, "invalid_field"),
]


@pytest.mark.parametrize(("body", "reason"), COMMAND_CASES)
def test_set_breaker_decoder_and_schema_agree(body: dict[str, Any], reason: str | None) -> None:
    assert _reason(decode_set_breaker, json.dumps(body).encode()) == reason
    assert (not list(COMMANDS.iter_errors(body))) == (reason is None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * (MAX_CONTROL_BYTES + 1), "too_large"),
        (b'{"type": "\xff"}', "not_utf8"),
        (b'{"a": {"b": 1}}', "nesting_too_deep"),
        (b"[[1], 2]", "nesting_too_deep"),
        (b"[1, 2]", "not_an_object"),
        (b"{", "not_json"),
        (b'{"seq": NaN}', "not_json"),
        (encode_breaker(STATE)[:-1] + b', "state": "closed"}', "not_json"),  # a duplicate key
        (b'"open"', "not_an_object"),
        (b"17", "not_an_object"),
    ],
)
def test_bad_bytes_have_stable_reasons(raw: bytes, reason: str) -> None:
    assert _reason(decode_breaker_state, raw) == reason
    assert _reason(decode_set_breaker, raw) == reason


@pytest.mark.parametrize(
    "body",
    [{**STATE_BODY, "v": 1.0}, {**STATE_BODY, "seq": 7.0}, {**STATE_BODY, "since_ms": 1e12}],
)
def test_the_decoder_is_stricter_where_json_schema_cannot_say_it(body: dict[str, Any]) -> None:
    # JSON Schema counts 1.0 as an integer; the contract's integers are written without a fraction.
    assert not list(STATES.iter_errors(body))
    assert _reason(decode_breaker_state, json.dumps(body).encode()) in (
        "unsupported_version",
        "invalid_field",
    )


def test_readers_keep_the_highest_seq() -> None:
    older = BreakerState(**{**asdict(STATE), "seq": 6, "state": "closed", "latched": False})
    assert STATE.newer_than(older)
    assert STATE.newer_than(None)
    assert not older.newer_than(STATE)
    assert not STATE.newer_than(STATE)
