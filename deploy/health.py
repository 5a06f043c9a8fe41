"""Live health checks: a real request to each engine, as a client of the stack would make."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from deploy.config import KafkaSecurity


async def kafka_health(kafka_args: Mapping[str, Any]) -> str:
    admin = AIOKafkaAdminClient(**kafka_args, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        cluster = await admin.describe_cluster()
        return "ok" if cluster["brokers"] else "no brokers registered"
    except Exception as e:  # noqa: BLE001 - reported, not raised: this is a status check
        return f"{type(e).__name__}: {e}"
    finally:
        await admin.close()


async def postgres_health(database_url: str) -> str:
    try:
        conn = await asyncpg.connect(database_url, timeout=5)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return f"{type(e).__name__}: {e}"
    try:
        await conn.fetchval("SELECT 1")
        return "ok"
    finally:
        await conn.close()


def check_endpoints(endpoints: Mapping[str, Any], kafka_security: KafkaSecurity) -> dict[str, str]:
    """{"kafka": "ok" | error, "postgres": "ok" | error} for a stack's recorded endpoints."""
    kafka_args = {"bootstrap_servers": endpoints["kafka_bootstrap_servers"], **kafka_security.client_args()}

    async def both() -> tuple[str, str]:
        return await asyncio.gather(
            kafka_health(kafka_args),
            postgres_health(endpoints["database_url"]),
        )

    kafka, postgres = asyncio.run(both())
    return {"kafka": kafka, "postgres": postgres}
