"""Circuit breakers: the Python side of schemas/json/breaker-state.json and set-breaker.json.

A BreakerState is the latest word on one shard's breaker, kept on the compacted `ledger.control`
topic keyed by shard; SetBreaker is an operator's command to open or close one. Both are few (a
handful a minute), so the decoder favours plain strict checks over speed, in the order the shard
messages use: size -> UTF-8 -> nesting -> JSON (unique keys) -> an object -> type -> v -> unknown,
missing, then each field. A refusal is an InvalidMessage whose reason is a dead-letter reason code
(schemas.dead_letters.DEAD_LETTER_REASONS). tests/unit/test_breaker_contract.py holds the decoders
to the JSON Schema files' verdicts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import orjson

from schemas.json_bounds import too_deep
from schemas.shard_messages import InvalidMessage

VERSION: Final = 1
MAX_CONTROL_BYTES: Final = 4 * 1024
"""The longest valid message, a BreakerState whose 256-character reason is written as escaped
surrogate pairs (12 bytes a character), is about 3.3 KiB."""
MAX_DEPTH: Final = 1
"""Both messages are flat objects."""
MAX_SHARD: Final = 1023
MAX_REASON: Final = 256
MAX_OPERATOR_REASON: Final = 200
MAX_INT: Final = 2**63 - 1

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: Final = frozenset({CLOSED, OPEN, HALF_OPEN})
BY_MONITOR: Final = "monitor"
BY_OPERATOR: Final = "operator"
ACTIONS: Final = frozenset({"open", "close"})

_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_OPERATOR: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass(frozen=True, slots=True)
class BreakerState:
    """One shard's breaker after its `seq`-th change (seq 0: never changed, closed)."""

    shard: int
    state: str  # closed | open | half_open
    latched: bool
    """Open until an operator closes it (a divergence, or an operator's open)."""
    reason: str
    changed_by: str  # monitor | operator
    seq: int
    since_ms: int

    @property
    def admits_all(self) -> bool:
        return self.state == CLOSED

    def newer_than(self, other: BreakerState | None) -> bool:
        """Whether this record should replace `other` for the same shard (a reader's rule)."""
        return other is None or self.seq > other.seq


@dataclass(frozen=True, slots=True)
class SetBreaker:
    command_id: str
    shard: int
    action: str  # open | close
    reason: str
    operator: str


def closed(shard: int) -> BreakerState:
    """A shard with no record yet: closed, never changed."""
    return BreakerState(shard, CLOSED, False, "", BY_MONITOR, 0, 0)


# --- encoding ------------------------------------------------------------------------------------


def encode_breaker(message: BreakerState | SetBreaker) -> bytes:
    kind = "BreakerState" if isinstance(message, BreakerState) else "SetBreaker"
    body = asdict(message)
    # A reason is for people: one cut to the contract's length beats a message nobody can read.
    body["reason"] = message.reason[: MAX_REASON if kind == "BreakerState" else MAX_OPERATOR_REASON]
    return orjson.dumps({"type": kind, "v": VERSION, **body})


# --- decoding ------------------------------------------------------------------------------------


def _shard(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_SHARD


def _ms(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INT


def _text(limit: int, minimum: int = 0) -> Callable[[object], bool]:
    return lambda value: isinstance(value, str) and minimum <= len(value) <= limit


_STATE_CHECKS: Final[dict[str, Callable[[object], bool]]] = {
    "shard": _shard,
    "state": lambda v: isinstance(v, str) and v in STATES,
    "latched": lambda v: type(v) is bool,
    "reason": _text(MAX_REASON),
    "changed_by": lambda v: v in (BY_MONITOR, BY_OPERATOR),
    "seq": _ms,
    "since_ms": _ms,
}
_COMMAND_CHECKS: Final[dict[str, Callable[[object], bool]]] = {
    "command_id": lambda v: isinstance(v, str) and _UUID.fullmatch(v) is not None,
    "shard": _shard,
    "action": lambda v: isinstance(v, str) and v in ACTIONS,
    "reason": _text(MAX_OPERATOR_REASON, minimum=1),
    "operator": lambda v: isinstance(v, str) and _OPERATOR.fullmatch(v) is not None,
}
_FIELDS: Final = {
    "BreakerState": tuple(f.name for f in fields(BreakerState)),
    "SetBreaker": tuple(f.name for f in fields(SetBreaker)),
}


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two readers of `{"state": "closed", "state": "open"}` may each believe another value.
    if len({key for key, _ in pairs}) != len(pairs):
        raise _DuplicateKey("duplicate keys")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _read(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_CONTROL_BYTES:
        raise InvalidMessage(f"{len(raw)} bytes, at most {MAX_CONTROL_BYTES}", "too_large")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidMessage(f"not UTF-8: {e}", "not_utf8") from None
    if too_deep(raw, MAX_DEPTH):
        raise InvalidMessage(f"nested more than {MAX_DEPTH} deep", "nesting_too_deep")
    try:
        data = _DECODER.decode(raw.decode())
    except (ValueError, _DuplicateKey) as e:  # JSONDecodeError is a ValueError
        raise InvalidMessage(f"not JSON: {e}", "not_json") from None
    if not isinstance(data, dict):
        raise InvalidMessage("not a JSON object", "not_an_object")
    return data


def _checked(kind: str, data: dict[str, Any], checks: dict[str, Callable[[object], bool]]) -> dict[str, Any]:
    if data.get("type") != kind:
        raise InvalidMessage(f"not a {kind}: type {data.get('type')!r:.80}", "unknown_message_type")
    version = data.get("v")
    if type(version) is not int or version != VERSION:  # True == 1 in Python, not in JSON
        raise InvalidMessage(f"unsupported version {version!r:.20} of {kind}", "unsupported_version")
    names = _FIELDS[kind]
    extra = data.keys() - {"type", "v", *names}
    if extra:
        raise InvalidMessage(f"unknown fields in {kind}: {sorted(extra)!r:.200}", "unknown_field")
    for name in names:
        if name not in data:
            raise InvalidMessage(f"{kind} lacks {name}", "missing_field")
        if not checks[name](data[name]):
            raise InvalidMessage(f"{kind}.{name} is invalid: {data[name]!r:.80}")
    return {name: data[name] for name in names}


def decode_breaker_state(raw: bytes) -> BreakerState:
    """Bytes from `ledger.control` -> a BreakerState, or InvalidMessage saying what is wrong."""
    state = BreakerState(**_checked("BreakerState", _read(raw), _STATE_CHECKS))
    if state.latched and state.state != OPEN:
        raise InvalidMessage(f"a latched breaker is open, not {state.state}")
    return state


def decode_set_breaker(raw: bytes) -> SetBreaker:
    """Bytes from an operator -> a SetBreaker, or InvalidMessage saying what is wrong."""
    return SetBreaker(**_checked("SetBreaker", _read(raw), _COMMAND_CHECKS))
