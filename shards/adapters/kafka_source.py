"""A shard's command topic, consumed in order with offsets committed only after the database commit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from infra.kafka_commits import CoalescedCommits
from infra.records import Origin, Refused
from infra.tracing import context_from_headers, context_from_traceparent
from schemas import envelopes
from schemas.message_auth import MessageAuthenticator, Unauthenticated
from schemas.shard_messages import InvalidMessage, ShardCommand
from shards.service.inbound import ShardInbound
from shards.service.ports import SourceUnavailable

__all__ = ["KafkaCommandSource", "SourceUnavailable", "decode_command_record"]


class KafkaCommandSource:
    """A CommandSource (shards/service/ports.py): partition 0 of a single-partition topic, assigned
    (no rebalancing: one worker per shard)."""

    def __init__(
        self,
        kafka_args: Mapping[str, Any],
        topic: str,
        group_id: str,
        max_records: int,
        authenticator: MessageAuthenticator,
    ) -> None:
        self.authenticator = authenticator  # commands must carry a coordinator's MAC
        self.partition = TopicPartition(topic, 0)
        self.max_records = max_records
        self.consumer = AIOKafkaConsumer(
            **kafka_args,
            group_id=group_id,
            enable_auto_commit=False,  # the offset moves only after PostgreSQL has committed
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )

        self.commits = CoalescedCommits(self.consumer, topic)
        self.fetched_to: int | None = None
        """The offset after the last record fetched: what the lag is counted from."""

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign([self.partition])

    async def stop(self) -> None:
        try:
            await self.commits.flush()
        finally:
            await self.consumer.stop()

    async def poll(self, timeout_ms: int) -> list[ShardInbound]:
        """The commands of the next records, each decoded (see `decode_command_record`)."""
        records = await self._records(timeout_ms)
        return [m for r in records for m in decode_command_record(r, self.authenticator)]

    async def _records(self, timeout_ms: int) -> list[ConsumerRecord[bytes, bytes]]:
        try:
            batch = await self.consumer.getmany(
                self.partition, timeout_ms=timeout_ms, max_records=self.max_records
            )
        except KafkaError as e:
            raise SourceUnavailable(f"polling {self.partition.topic}: {e}") from e
        records: list[ConsumerRecord[bytes, bytes]] = batch.get(self.partition, [])
        if records:
            self.fetched_to = records[-1].offset + 1
        return records

    def lag(self) -> int | None:
        """Records on the topic not yet fetched (None before the first fetch tells the end)."""
        end = self.consumer.highwater(self.partition)
        if end is None or end < 0 or self.fetched_to is None:
            return None
        return max(0, end - self.fetched_to)

    def commit(self, next_offset: int) -> None:
        """Records before `next_offset` are durably processed: their offset is committed soon,
        off the processing path (see kafka_commits)."""
        self.commits.advance({self.partition: next_offset})


def decode_command_record(
    r: ConsumerRecord[bytes, bytes], authenticator: MessageAuthenticator
) -> list[ShardInbound]:
    """A record -> its commands (one, or an envelope's), each typed or a refusal to dead-letter, with
    its origin and trace context. Authenticated before it is even parsed: a leaked Kafka credential
    cannot move money. A record refused whole is one refusal; inside an authenticated envelope, a
    command that fails its checks is refused alone."""
    value = r.value or b""
    whole = Origin(r.topic, r.partition, r.offset, r.key, value)
    try:
        authenticator.verify(r.topic, r.key, value, r.headers)
        unpacked = envelopes.commands(value)
    except (Unauthenticated, InvalidMessage) as e:
        return [ShardInbound(Refused(e.reason, str(e)), whole, context_from_headers(r.headers))]
    if len(unpacked) == 1 and unpacked[0].index is None:  # a single command: its trace rides in headers
        return [ShardInbound(_typed(unpacked[0].message), whole, context_from_headers(r.headers))]
    return [
        ShardInbound(
            _typed(u.message),
            replace(whole, index=u.index),
            context_from_traceparent(u.traceparent),
        )
        for u in unpacked
    ]


def _typed(message: ShardCommand | InvalidMessage) -> ShardCommand | Refused:
    return Refused(message.reason, str(message)) if isinstance(message, InvalidMessage) else message
