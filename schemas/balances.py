"""The balance change stream: the Python side of schemas/json/balance-changed.json.

A shard publishes an account's balance, as a batch left it, onto the compacted `ledger.balances`
topic keyed by account id. It is the change-data stream that clients and the monitor follow instead
of polling. Readers decode it with `decode_balance`, held to the JSON Schema file itself: the
shards' ACLs are what keep forgeries off the topic, and a reader still refuses what is not one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from schemas.currencies import JSON_DIR
from schemas.errors import LedgerError
from schemas.json_bounds import too_deep

VERSION: Final = 1
MAX_BYTES: Final = 1024
"""The longest valid record (a 64-character id and five 20-digit numbers) is under 400 bytes."""
TYPE: Final = "BalanceChanged"


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    account_id: str
    currency: str
    status: str
    posted: int
    pending_debits: int
    pending_credits: int
    available: int
    journal_seq: int
    shard: int


class NotABalance(LedgerError):
    """A record on the balances topic that is not a valid BalanceChanged (never worth retrying)."""

    retriable = False


def encode_balance(change: BalanceChanged) -> bytes:
    return orjson.dumps({"type": TYPE, "v": VERSION, **asdict(change)})


def decode_balance(payload: bytes) -> BalanceChanged:
    """A BalanceChanged, or NotABalance saying why not: size, JSON, then the schema."""
    if len(payload) > MAX_BYTES:
        raise NotABalance(f"{len(payload)} bytes, more than {MAX_BYTES}")
    if too_deep(payload, 1):
        raise NotABalance("nested: a balance is one flat object")
    try:
        document: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise NotABalance(f"not JSON: {e}") from None
    error = next(iter(_VALIDATOR.iter_errors(document)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the record"
        raise NotABalance(f"{where}: {error.message[:200]}")
    return BalanceChanged(**{k: v for k, v in document.items() if k not in ("type", "v")})


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


_VALIDATOR: Final = Draft202012Validator(
    _schema("balance-changed.json"),
    registry=Registry().with_resource("currency.json", Resource.from_contents(_schema("currency.json"))),
)
