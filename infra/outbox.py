"""An outbox row's message, and a committed row as its writer hands it to the relay (no Kafka
client here: the read-only commands load this without one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: bytes | None
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Committed:
    """An outbox row as its writer committed it: its place (a shard's seq, a coordinator's id) and
    the message. The writer hands these to its relay right after the commit, so they go out without
    being read back from the database."""

    seq: int
    message: OutboxMessage
