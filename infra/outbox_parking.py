"""Outbox rows Kafka will never take: which send errors say so, and moving such a row aside.

A row that can never be sent must not hold back the rows behind it (issue 12: one oversized dead
letter, retried every 5 s forever, stopped every result and saga command queued after it). It is
moved into `outbox_parked` with its error, in the transaction that marks the rows before it sent.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedForMessageFormatError,
)

from infra.postgres_migrations import quoted_schema

log = logging.getLogger(__name__)

# Errors about one record or its topic, which sending the same bytes again cannot change. A list,
# not just `retriable is False`: aiokafka marks KafkaTimeoutError (a slow cluster) non-retriable,
# and ClusterAuthorizationFailed, OutOfOrderSequenceNumber or ProducerFenced are about the
# producer, so parking on them would park every row. UnknownTopicOrPartition says retriable (the
# topic may be being created) and is judged apart: see `refused_for_good`.
_RECORD_ERRORS: Final = (
    MessageSizeTooLargeError,  # over the producer's max_request_size, or the topic's max.message.bytes
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,  # also InvalidMessageError: same code
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
    PolicyViolationError,
    InvalidTopicError,
    TopicAuthorizationFailedError,  # ACLs are the operator's decision; a parked row can be re-queued
)


async def refused_for_good(error: BaseException, producer: AIOKafkaProducer, topic: str) -> bool:
    """True when `error` means this row can never be sent as it is."""
    if isinstance(error, UnknownTopicOrPartitionError):
        # aiokafka raises it after waiting request_timeout_ms for the topic's metadata; also when
        # no broker answered. Only a metadata answer that still lacks the topic means it is gone.
        answered = await producer.client.force_metadata_update()
        return bool(answered) and producer.client.cluster.partitions_for_topic(topic) is None
    return isinstance(error, _RECORD_ERRORS) and not getattr(error, "retriable", False)


def describe(error: BaseException) -> str:
    text = str(error)
    return (
        f"{type(error).__name__}: {text}" if text and text != type(error).__name__ else type(error).__name__
    )


# The row is still in the outbox (the relay deletes or passes it in the same transaction).
_PARK: Final = """
    INSERT INTO outbox_parked ({id}, topic, key, payload, headers, created_at, error)
    SELECT {id}, topic, key, payload, headers, created_at, $2 FROM outbox WHERE {id} = $1
    ON CONFLICT ({id}) DO NOTHING"""
_PARK_SHARD: Final = _PARK.format(id="seq")
_PARK_COORDINATOR: Final = _PARK.format(id="id")


async def park(
    conn: asyncpg.Connection, seq: int, topic: str, size: int, error: BaseException, single_writer: bool
) -> None:
    """Keep outbox row `seq` (and its error) in outbox_parked, and log it: an operator must look at it."""
    text = describe(error)[:2000]
    await conn.execute(_PARK_SHARD if single_writer else _PARK_COORDINATOR, seq, text)
    log.error("outbox row %s parked: Kafka will not take it (topic %s, %d bytes): %s", seq, topic, size, text)


async def list_parked(conn: asyncpg.Connection, schema: str) -> list[dict[str, Any]]:
    """`schema`'s parked rows, oldest first (none when its migrations predate parking)."""
    name = quoted_schema(schema)
    if await conn.fetchval("SELECT to_regclass($1)", f"{name}.outbox_parked") is None:
        return []
    # A shard's rows are numbered by seq, a coordinator's by id: the first column either way.
    rows = await conn.fetch(f"SELECT * FROM {name}.outbox_parked ORDER BY parked_at, 1")
    return [
        {
            "schema": schema,
            "seq": r[0],
            "topic": r["topic"],
            "size": len(r["payload"]),
            "error": r["error"],
            "parked_at": r["parked_at"],
        }
        for r in rows
    ]
