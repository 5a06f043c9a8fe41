"""A shard's state: accounts with cached balances, operations (holds, credits, transfers), journal.

Amounts are signed integers in minor units: a credit to an account is positive, a debit negative,
so every balanced change sums to zero per currency. Balances must fit PostgreSQL's BIGINT.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Final

MAX_BIGINT: Final = 2**63 - 1
MIN_BIGINT: Final = -(2**63)
GENESIS_HASH: Final = bytes(32)  # prev_hash of a shard's first journal entry

ACTIVE, FROZEN, CLOSED = "active", "frozen", "closed"
HELD, COMMITTED, RELEASED = "held", "committed", "released"
HOLD, CREDIT, TRANSFER = "hold", "credit", "transfer"  # operation kinds
NO_CURRENCY: Final = "XXX"  # ISO 4217 "no currency": a release tombstone for an unknown account


def fits_bigint(value: int) -> bool:
    return MIN_BIGINT <= value <= MAX_BIGINT


def transit_account(currency: str) -> str:
    """The shard's suspense account for cross-shard legs in `currency` (':' is not in customer ids)."""
    return f"transit:{currency}"


@dataclass(slots=True)
class Account:
    account_id: str
    currency: str
    status: str = ACTIVE
    overdraft_limit: int = 0
    posted: int = 0
    reserved: int = 0
    """Pending debits: holds of cross-shard transfers in flight and of pending (two-phase) transfers."""
    metadata: dict[str, str] = field(default_factory=dict)
    pending_credit: int = 0
    """Credits of pending transfers not yet posted: shown, never spendable."""

    @property
    def available(self) -> int:
        return self.posted - self.reserved + self.overdraft_limit

    @property
    def is_transit(self) -> bool:
        return self.account_id.startswith("transit:")


@dataclass(slots=True)
class Operation:
    """What this shard did for one transfer: a hold (and its fate), a credit, or a local transfer.

    A pending transfer's credit is a `credit` operation `held` until it is settled (`committed`)
    or cancelled (`released`); its `amount` is what was held, the journal says what was posted."""

    transfer_id: str
    kind: str
    account_id: str
    amount: int
    currency: str
    state: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.transfer_id, self.kind)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One immutable posting. `hash` chains it to the previous entry of the same shard."""

    seq: int
    transfer_id: str
    leg: str  # "debit" | "credit"
    kind: str  # the operation that wrote it: transfer | credit | commit
    account_id: str
    amount: int  # signed
    currency: str
    message_id: str
    created_us: int  # microseconds since the epoch
    prev_hash: bytes
    hash: bytes


def entry_hash(
    prev_hash: bytes,
    seq: int,
    transfer_id: str,
    leg: str,
    kind: str,
    account_id: str,
    amount: int,
    currency: str,
    message_id: str,
    created_us: int,
) -> bytes:
    """SHA-256 over the previous hash and every field, length-prefixed so no two entries collide."""
    h = hashlib.sha256(prev_hash)
    h.update(struct.pack(">qqq", seq, amount, created_us))
    for text in (transfer_id, leg, kind, account_id, currency, message_id):
        raw = text.encode()
        h.update(struct.pack(">H", len(raw)))
        h.update(raw)
    return h.digest()
