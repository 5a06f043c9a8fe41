"""The balance change stream: the Python side of schemas/json/balance-changed.json.

A shard publishes an account's balance, as a batch left it, onto the compacted `ledger.balances`
topic keyed by account id. It is the change-data stream that clients and the monitor follow instead
of polling. Readers decode it with `decode_balance`, held to the JSON Schema file itself: the
shards' ACLs are what keep forgeries off the topic, and a reader still refuses what is not one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

import orjson

from schemas.errors import LedgerError
from schemas.json_contract import JsonContract

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
    """A BalanceChanged, or NotABalance saying why not: size, nesting, JSON, then the schema."""
    document = CONTRACT.read(payload, NotABalance)
    return BalanceChanged(**{k: v for k, v in document.items() if k not in ("type", "v")})


CONTRACT: Final = JsonContract("balance-changed.json", MAX_BYTES, max_depth=1)
