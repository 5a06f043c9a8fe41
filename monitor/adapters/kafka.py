"""The monitor's Publisher (alerts, breaker states) on a plain Kafka producer. What it reads
outside faust's group is kafka_follower.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.alerts import LiquidityAlert, encode_alert
from schemas.breaker import BreakerState, encode_breaker
from schemas.errors import LedgerError
from schemas.ledger_alert import Alert, encode_ledger_alert
from schemas.topics import Namespace


class PublishFailed(LedgerError):
    """The broker did not take an alert or a breaker state; `retriable` as the driver says."""

    def __init__(self, what: str, error: KafkaError) -> None:
        super().__init__(f"cannot publish {what}: {type(error).__name__}: {error}")
        self.retriable = bool(getattr(error, "retriable", True))


class KafkaPublisher:
    """Publisher on an idempotent producer (acks=all): each call returns once all are written."""

    def __init__(self, producer: AIOKafkaProducer, ns: Namespace) -> None:
        self._producer = producer
        self._ns = ns

    async def publish_alerts(self, alerts: Sequence[Alert]) -> None:
        items = [
            (
                a.alert_id.encode(),
                encode_alert(a) if isinstance(a, LiquidityAlert) else encode_ledger_alert(a),
            )
            for a in alerts
        ]
        await self._send("alerts", self._ns.alerts, items)

    async def publish_breakers(self, states: Sequence[BreakerState]) -> None:
        items = [(str(s.shard).encode(), encode_breaker(s)) for s in states]
        await self._send("breaker states", self._ns.control, items)

    async def _send(self, what: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
        try:
            sent: list[Awaitable[Any]] = [await self._producer.send(topic, v, key=k) for k, v in items]
            await asyncio.gather(*sent)
        except KafkaError as e:
            raise PublishFailed(what, e) from e
