"""Health checks of a stack's engines: quick (a TCP connection to each, bounded) or live (a real
request to each, as a client of the stack would make; it loads the Kafka and PostgreSQL clients)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from infra.config import KafkaSecurity


def _reachable(host: str, port: int, within_s: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=within_s):
            return "ok"
    except OSError as e:
        return f"{type(e).__name__}: {e} ({host}:{port})"


def reachable(endpoints: Mapping[str, Any], within_s: float = 1.0) -> dict[str, str]:
    """{"kafka": "ok" | error, "postgres": "ok" | error}: does each accept a connection, within
    `within_s` each. Kafka counts as up when one of its bootstrap servers does."""
    kafka = "no bootstrap server"
    for server in endpoints["kafka_bootstrap_servers"].split(","):
        host, _, port = server.strip().rpartition(":")
        kafka = _reachable(host.strip("[]"), int(port), within_s)
        if kafka == "ok":
            break
    dsn = urlsplit(endpoints["database_url"])
    postgres = _reachable(dsn.hostname or "127.0.0.1", dsn.port or 5432, within_s)
    return {"kafka": kafka, "postgres": postgres}


async def kafka_health(kafka_args: Mapping[str, Any]) -> str:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only for the live check

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
    import asyncpg  # noqa: PLC0415 - only for the live check

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
