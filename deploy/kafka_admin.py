"""Creating topics on purpose (auto-creation is off): explicit partitions, replication and configs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

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


async def create_topics(
    kafka_args: Mapping[str, Any], specs: Sequence[TopicSpec], *, leaders_within_s: float = 60.0
) -> None:
    """Create every topic that does not exist yet; an existing one is left as it is. `kafka_args`:
    bootstrap servers and credentials (LedgerConfig.kafka_args()), of a principal allowed to create.

    Returns once every partition of every topic has a leader that serves it: a client started
    while leaders were still being elected logged NotLeaderForPartitionError warnings (52 in one
    demo) and retried."""
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=30000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
             for s in specs]
        )  # fmt: skip
        expected: dict[str, int | None] = {}  # partitions of a topic made now; None: as it has
        for topic, code, *rest in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                error = for_code(code)
                message = rest[0] if rest and rest[0] else error.__name__
                raise TopicCreationFailed(topic, message, retriable=bool(error.retriable))
            expected[topic] = next(s.partitions for s in specs if s.name == topic) if code == 0 else None
        deadline = time.monotonic() + leaders_within_s
        while True:
            partitions, leaderless = _leaders(await admin.describe_topics(list(expected)), expected)
            if not leaderless:
                break
            if time.monotonic() > deadline:
                raise TopicCreationFailed(leaderless[0], f"no leader after {leaders_within_s:.0f}s", True)
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    await _until_leaders_serve(kafka_args, partitions, leaders_within_s)


def _leaders(
    described: Sequence[Mapping[str, Any]], expected: Mapping[str, int | None]
) -> tuple[list[TopicPartition], list[str]]:
    """Every partition of the topics, and `topic[partition]` for each one the metadata names no
    leader for (or does not list yet)."""
    topics = {t["topic"]: t for t in described if t["error_code"] == 0}
    every: list[TopicPartition] = []
    missing: list[str] = []
    for name, count in expected.items():
        listed = topics[name]["partitions"] if name in topics else []
        led = {p["partition"] for p in listed if p["leader"] >= 0}
        numbers = range(count) if count is not None else sorted(p["partition"] for p in listed)
        every += [TopicPartition(name, p) for p in numbers]
        missing += [f"{name}[{p}]" for p in numbers if p not in led]
        if name not in topics or (count is None and not listed):
            missing.append(name)
    return every, missing


async def _until_leaders_serve(
    kafka_args: Mapping[str, Any], partitions: Sequence[TopicPartition], within_s: float
) -> None:
    """A leader named in the metadata may still be loading the partition (it answers NOT_LEADER
    until then): asking each leader for its partitions' end offsets returns once all of them
    serve (aiokafka retries such errors quietly, within its request timeout)."""
    consumer = AIOKafkaConsumer(
        **kafka_args, enable_auto_commit=False, request_timeout_ms=int(within_s * 1000)
    )
    await consumer.start()
    try:
        await consumer.end_offsets(list(partitions))
    finally:
        await consumer.stop()


async def wait_for_group_coordinators(
    kafka_args: Mapping[str, Any], groups: Sequence[str], within_s: float = 60.0
) -> None:
    """Until the brokers name a coordinator for each consumer group. The first group of a fresh
    cluster makes them create __consumer_offsets (50 partitions); a consumer that joined while
    those were being led logged GroupCoordinatorNotAvailable and "Marking the coordinator dead"
    warnings, and retried. (aiokafka 0.14 cannot decode Kafka 4's DescribeGroups answer, so the
    coordinator's own load is not asked about.)"""
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=30000)
    await admin.start()
    try:
        deadline = time.monotonic() + within_s
        for group in groups:
            while True:
                try:
                    await admin.find_coordinator(group)
                    break
                except KafkaError as e:
                    if not e.retriable or time.monotonic() > deadline:
                        raise TopicCreationFailed(
                            "__consumer_offsets", f"no coordinator for {group}: {e}", e.retriable
                        ) from e
                    await asyncio.sleep(0.1)
    finally:
        await admin.close()


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
