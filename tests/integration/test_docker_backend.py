"""The testcontainers backend: real Kafka and PostgreSQL images, only where a Docker engine runs."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.kafka_admin import TopicSpec, create_topics
from deploy.kafka_local import kafka_version
from tests.engines import docker_unavailable_reason


async def _round_trip(bootstrap: str, dsn: str) -> tuple[bytes, int]:
    # The testcontainer has no authentication: a plain client connects.
    await create_topics({"bootstrap_servers": bootstrap}, [TopicSpec("docker-smoke")])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait("docker-smoke", b"hello")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer("docker-smoke", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(dsn)
    try:
        return record.value or b"", await conn.fetchval("SELECT 41 + 1")
    finally:
        await conn.close()


def test_testcontainers_kafka_and_postgres() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"testcontainers backend not exercised: {reason}")
    from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - needs Docker
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - needs Docker

    with (
        KafkaContainer(f"apache/kafka:{kafka_version()}").with_kraft() as kafka,
        PostgresContainer("postgres:15", driver=None) as postgres,
    ):
        value, answer = asyncio.run(_round_trip(kafka.get_bootstrap_server(), postgres.get_connection_url()))
    assert value == b"hello"
    assert answer == 42
