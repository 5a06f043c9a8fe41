"""`ledger init` bounds every topic's records (max.message.bytes), and brings topics made before
(or with another limit) to the configured one, keeping what else an operator set on them."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.kafka_admin import TopicSpec, align_topic_configs, create_topics
from deploy.ledger_init import init_ledger, ledger_topics
from tests.ledger_harness import fresh_config


async def _configs(kafka_args: dict[str, Any], topics: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(**kafka_args)
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    return {name: {e[0]: e[1] for e in entries} for r in described for _, _, _, name, entries in r.resources}


async def test_init_bounds_every_topic_and_converges_on_a_changed_limit(
    kafka_bootstrap: str, database_url: str, kafka_args: dict[str, Any]
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    names = [t.name for t in ledger_topics(config, 2)]
    assert config.namespace.transfers in names
    assert config.namespace.dead_letters in names
    got = await _configs(kafka_args, names)
    assert {n: got[n]["max.message.bytes"] for n in names} == dict.fromkeys(names, str(256 * 1024))

    larger = dataclasses.replace(config, max_message_bytes=1_153_434)
    await init_ledger(larger, 2)  # the same ledger, the limit raised: existing topics follow
    got = await _configs(kafka_args, names)
    assert {n: got[n]["max.message.bytes"] for n in names} == dict.fromkeys(names, "1153434")
    assert await align_topic_configs(kafka_args, ledger_topics(larger, 2)) == [], "already right"


async def test_aligning_keeps_what_else_was_set_on_the_topic(kafka_args: dict[str, Any]) -> None:
    name = f"test-align-{uuid.uuid4().hex[:12]}"
    await create_topics(kafka_args, [TopicSpec(name, 1, 1, {"retention.ms": "123456789"})])
    spec = TopicSpec(name, 1, 1, {"max.message.bytes": "300000"})
    assert await align_topic_configs(kafka_args, [spec]) == [name]
    got = (await _configs(kafka_args, [name]))[name]
    assert (got["max.message.bytes"], got["retention.ms"]) == ("300000", "123456789")
    assert await align_topic_configs(kafka_args, [spec]) == []
