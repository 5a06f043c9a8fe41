"""Untrusted bytes to a JSON object, each step guarding the next: size -> strict UTF-8 -> nesting
depth -> JSON (unique keys, no NaN/Infinity, no integer longer than any BIGINT converted) -> an
object. What the object must hold is the caller's contract (schemas/public_parse.py)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from schemas.dead_letters import from_public_reason
from schemas.json_bounds import too_deep


class _DuplicateKey(Exception):
    pass


class _NotANumber(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        raise _DuplicateKey(sorted(key for key, n in counts.items() if n > 1))
    return obj


def _reject_constant(name: str) -> Any:
    raise _NotANumber(name)


def _bounded_int(digits: str) -> int:
    """Integers longer than any BIGINT are read as ±10**20: invalid wherever an integer is allowed
    (so the reason stays e.g. amount_above_limit), and no 4300-digit conversion is attempted."""
    if len(digits) <= 20:
        return int(digits)
    return -(10**20) if digits.startswith("-") else 10**20


class _Pairs(list[tuple[str, Any]]):
    """An object read without judging its keys, to find a readable id in a rejected payload."""


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_reject_constant, parse_int=_bounded_int
)
_PAIRS_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_Pairs, parse_constant=_reject_constant, parse_int=_bounded_int
)


class Unreadable(Exception):
    """The bytes are not a JSON object the contract can read; `readable_id` as PublicRejection says,
    `letter` the finer dead-letter reason (not_utf8 or not_json where the result says malformed_json)."""

    def __init__(
        self, reason: str, detail: str, readable_id: str | None = None, letter: str | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.reason, self.detail, self.readable_id = reason, detail, readable_id
        self.letter = letter or from_public_reason(reason)


def read_object(
    raw: bytes, id_field: str, *, limit: int, max_depth: int, valid_id: Callable[[object], bool]
) -> dict[str, Any]:
    """Bytes -> a JSON object with unique keys, or Unreadable (with no readable id, except for
    duplicate keys in an object whose `id_field` is itself unique and `valid_id`)."""
    if len(raw) > limit:
        raise Unreadable("payload_too_large", f"{len(raw)} bytes, at most {limit}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unreadable("malformed_json", f"not UTF-8: {e}", letter="not_utf8") from None
    if too_deep(raw, max_depth):  # before the recursive json parser ever sees it
        raise Unreadable("nesting_too_deep", f"nested more than {max_depth} deep")
    try:
        data = _DECODER.decode(text)
    except _DuplicateKey as e:
        raise Unreadable(
            "malformed_json", f"duplicate keys {e}", _id_despite_duplicates(text, id_field, valid_id)
        ) from None
    except _NotANumber as e:
        raise Unreadable("malformed_json", f"{e} is not JSON") from None
    except json.JSONDecodeError as e:
        raise Unreadable("malformed_json", str(e)) from None
    except RecursionError:  # the depth bound should make this unreachable
        raise Unreadable("nesting_too_deep", "nested too deep to read") from None
    if not isinstance(data, dict):
        raise Unreadable("not_an_object", f"a JSON {type(data).__name__}, not an object")
    return data


def _id_despite_duplicates(text: str, id_field: str, valid_id: Callable[[object], bool]) -> str | None:
    pairs = _PAIRS_DECODER.decode(text)  # decoded once already: cannot fail but for keys
    if not isinstance(pairs, _Pairs):
        return None
    ids = [value for key, value in pairs if key == id_field]
    return ids[0] if len(ids) == 1 and valid_id(ids[0]) else None
