"""The dead-letter record: the Python side of schemas/json/dead-letter.json.

A refused record may be as large as its topic allows (or larger, on a topic someone misconfigured),
so a dead letter never carries it whole: a bounded prefix, its size and its SHA-256 identify it,
and the dead letter always fits on its topic. Keeping the whole record was what let one 900 KB
record jam a coordinator's outbox for good.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from typing import Final

import orjson

VERSION: Final = 2
MAX_RAW_PREFIX: Final = 2048
MAX_KEY_PREFIX: Final = 256
MAX_DETAIL: Final = 1000

DEAD_LETTER_REASONS: Final = frozenset({
    # reading the bytes
    "too_large", "not_utf8", "not_json", "nesting_too_deep", "not_an_object",
    # the contract
    "unknown_message_type", "unsupported_version", "missing_field", "unknown_field", "invalid_field",
    # internal messages only: no valid authentication from a coordinator or a shard
    "unauthenticated",
    # public commands whose id could not be read, so no result can answer them
    "invalid_transfer_id", "invalid_command_id", "invalid_account_id", "invalid_amount",
    "amount_not_positive", "amount_above_limit", "unknown_currency", "invalid_metadata",
    "invalid_overdraft_limit", "same_account", "invalid_pending", "invalid_pending_id",
    "invalid_batch_id", "invalid_batch_size", "invalid_linked", "duplicate_leg_id",
})  # fmt: skip
_FROM_PUBLIC: Final = {"payload_too_large": "too_large", "malformed_json": "not_json"}


def from_public_reason(reason: str) -> str:
    """A public command's rejection reason, as a dead letter spells it."""
    return _FROM_PUBLIC.get(reason, reason)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    raw_size: int
    raw_sha256: str
    raw_prefix_base64: str
    key_size: int | None
    key_prefix_base64: str | None
    item: int | None = None
    """The refused message's place in its record's envelope; None when the record is refused whole."""

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offset: int,
        reason: str,
        detail: str,
        raw: bytes,
        key: bytes | None,
        item: int | None = None,
    ) -> DeadLetter:
        if reason not in DEAD_LETTER_REASONS:
            raise ValueError(f"dead-letter reason {reason!r} is not one of DEAD_LETTER_REASONS")
        return cls(
            topic, partition, offset, reason, detail[:MAX_DETAIL], len(raw), hashlib.sha256(raw).hexdigest(),
            base64.b64encode(raw[:MAX_RAW_PREFIX]).decode(),
            len(key) if key is not None else None,
            base64.b64encode(key[:MAX_KEY_PREFIX]).decode() if key is not None else None, item,
        )  # fmt: skip

    @property
    def inbox_id(self) -> str:
        """Where it came from identifies it: a redelivery is dead-lettered once, not twice."""
        place = f"dlq:{self.source_topic}:{self.partition}:{self.offset}"
        return place if self.item is None else f"{place}:{self.item}"

    def encode(self) -> bytes:
        body = asdict(self)
        if self.item is None:
            del body["item"]  # a whole record's dead letter reads as it always did
        return orjson.dumps({"type": "DeadLetter", "v": VERSION, **body})
