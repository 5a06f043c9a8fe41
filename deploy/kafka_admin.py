"""Creating topics on purpose (auto-creation is off): explicit partitions, replication and configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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


_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs v1+ config_source: set on the topic itself


async def align_topic_configs(kafka_args: Mapping[str, Any], specs: Sequence[TopicSpec]) -> list[str]:
    """Bring each existing topic's configs to its spec (a topic made before a setting changed, or
    before the ledger set it); return the topics changed. Nothing is sent for a topic already
    right, so running it again changes nothing.

    AlterConfigs replaces every config set on a topic, so the ones set there and not in the spec
    (an operator's retention.ms, say) are sent back with it unchanged."""
    wanted = {s.name: dict(s.configs) for s in specs if s.configs}
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=30000)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
        )
        changes: dict[str, dict[str, str]] = {}
        for response in described:
            for code, message, _type, name, entries in response.resources:
                if code != 0:
                    error = for_code(code)
                    raise TopicCreationFailed(name, message or error.__name__, bool(error.retriable))
                current = {e[0]: e[1] for e in entries}
                if any(current.get(k) != v for k, v in wanted[name].items()):
                    kept = {e[0]: e[1] for e in entries if _set_on_topic(e, response.API_VERSION)}
                    changes[name] = kept | wanted[name]
        if changes:
            altered = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, configs) for name, configs in changes.items()]
            )
            for response in altered:
                for code, message, _type, name in response.resources:
                    if code != 0:
                        error = for_code(code)
                        raise TopicCreationFailed(name, message or error.__name__, bool(error.retriable))
    finally:
        await admin.close()
    return sorted(changes)


def _set_on_topic(entry: tuple[Any, ...], version: int) -> bool:
    """A DescribeConfigs entry set on the topic itself (v0 says only "not a default")."""
    _name, value, read_only, source_or_default = entry[:4]
    if value is None or read_only:
        return False
    return source_or_default == _DYNAMIC_TOPIC_CONFIG if version >= 1 else not source_or_default
