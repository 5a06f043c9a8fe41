"""Packing a batch's internal messages into envelopes before they enter the outbox (schemas/envelopes.py).

One outbox row, one Kafka record and one MAC per destination, instead of one per message. The
destination of a record is its topic and partition, so messages are grouped by exactly that: a
shard's command topic has one partition, and a reply goes to the partition Kafka's default
partitioner picks for its key (the envelope takes its first message's key, which maps there too),
so a saga's reply still reaches the coordinator that owns the saga's partition.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Final

from aiokafka.partitioner import murmur2

from infra.outbox import OutboxMessage
from infra.tracing import TRACEPARENT
from schemas import envelopes

_OVERHEAD: Final = 256
"""Bytes of an envelope besides its messages and trace context (type, v, id, brackets), rounded up."""
_RECORD_MARGIN: Final = 1024
"""Room the record needs beside its value (key, MAC header, batch framing) under max.message.bytes."""
_PER_TRACE: Final = 72  # "1234":"<55 characters>",


def key_partition(key: bytes | None, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed record (murmur2, as the Java client)."""
    return 0 if key is None else (murmur2(key) & 0x7FFFFFFF) % partitions


def pack(
    messages: Sequence[OutboxMessage],
    kind: str,
    destination: Callable[[OutboxMessage], Hashable | None],
    max_message_bytes: int,
) -> list[OutboxMessage]:
    """`messages` with every one that has a destination (None: sent as it is) packed into envelopes
    of `kind`, one per destination, split where a record would exceed `max_message_bytes` (the
    topics' max.message.bytes) or an envelope MAX_MESSAGES. A message too large to share a record
    goes alone in its envelope.
    Messages keep their order within a destination; unpacked ones come first, in their order."""
    single: list[OutboxMessage] = []
    groups: dict[Hashable, list[OutboxMessage]] = {}
    for m in messages:
        where = destination(m)
        if where is None:
            single.append(m)
        else:
            groups.setdefault(where, []).append(m)
    packed = single
    for group in groups.values():
        packed += [_envelope(kind, chunk) for chunk in _chunks(group, max_message_bytes - _RECORD_MARGIN)]
    return packed


def _chunks(group: list[OutboxMessage], max_bytes: int) -> list[list[OutboxMessage]]:
    chunks: list[list[OutboxMessage]] = [[]]
    size = _OVERHEAD
    for m in group:
        cost = len(m.payload) + 1 + (_PER_TRACE if TRACEPARENT in m.headers else 0)
        if chunks[-1] and (size + cost > max_bytes or len(chunks[-1]) == envelopes.MAX_MESSAGES):
            chunks.append([])
            size = _OVERHEAD
        chunks[-1].append(m)
        size += cost
    return chunks


def _envelope(kind: str, chunk: list[OutboxMessage]) -> OutboxMessage:
    traces = {i: m.headers[TRACEPARENT] for i, m in enumerate(chunk) if TRACEPARENT in m.headers}
    payload = envelopes.encode(kind, [m.payload for m in chunk], traces)
    return OutboxMessage(chunk[0].topic, chunk[0].key, payload, {})
