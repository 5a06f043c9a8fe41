"""A shard journal's hash chain, checked link by link. Pure: entries in, the first break out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shards.domain.model import GENESIS_HASH, entry_hash


@dataclass(frozen=True)
class ChainedEntry:
    """A journal row as stored, with the hashes that chain it to the previous one."""

    seq: int
    transfer_id: str
    leg: str
    kind: str
    account_id: str
    amount: int
    currency: str
    message_id: str
    created_us: int
    prev_hash: bytes
    hash: bytes


def broken_link(entry: ChainedEntry, prev_hash: bytes, expected_seq: int) -> str | None:
    """What is wrong with `entry` coming after a link whose hash is `prev_hash`, or None."""
    if entry.seq != expected_seq:
        return f"seq {expected_seq} is missing"
    if entry.prev_hash != prev_hash:
        return "prev_hash does not match the previous entry's hash"
    recomputed = entry_hash(
        prev_hash, entry.seq, entry.transfer_id, entry.leg, entry.kind, entry.account_id, entry.amount,
        entry.currency, entry.message_id, entry.created_us,
    )  # fmt: skip
    if recomputed != entry.hash:
        return "the entry's content does not match its hash"
    return None


def first_break(entries: Iterable[ChainedEntry]) -> tuple[int, str] | None:
    """(seq, problem) of the first broken link of a whole journal in seq order, or None."""
    prev, expected = GENESIS_HASH, 1
    for entry in entries:
        problem = broken_link(entry, prev, expected)
        if problem is not None:
            return entry.seq, problem
        prev, expected = entry.hash, entry.seq + 1
    return None
