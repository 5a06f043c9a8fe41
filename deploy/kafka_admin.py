"""Creating topics on purpose (auto-creation is off): explicit partitions, replication and configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from schemas.errors import LedgerError

_TOPIC_ALREADY_EXISTS = 36


class TopicCreationFailed(LedgerError):
    """The broker refused to create a topic."""

    def __init__(self, topic: str, error: str, retriable: bool) -> None:
        super().__init__(f"cannot create topic {topic!r}: {error}")
        self.retriable = retriable


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = 1  # explicit: aiokafka cannot ask for the broker default
    configs: Mapping[str, str] = field(default_factory=dict)


async def create_topics(kafka_args: Mapping[str, Any], specs: Sequence[TopicSpec]) -> None:
    """Create every topic that does not exist yet; an existing one is left as it is. `kafka_args`:
    bootstrap servers and credentials (LedgerConfig.kafka_args()), of a principal allowed to create."""
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=30000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
             for s in specs]
        )  # fmt: skip
    finally:
        await admin.close()
    for topic, code, *rest in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            error = for_code(code)
            message = rest[0] if rest and rest[0] else error.__name__
            raise TopicCreationFailed(topic, message, retriable=bool(error.retriable))
