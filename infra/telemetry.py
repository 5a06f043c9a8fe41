"""Each process's figures, sent once a second onto the telemetry topic for the monitor's anomaly
detection (schemas/telemetry.py). Best effort, on a producer of its own: a figure lost is a gap in
a graph, so it never goes through an outbox and never shares the relay's idempotent producer (a
refused telemetry record must not cost the money path its sequence numbers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.telemetry import MAX_SAMPLES, Sample, Telemetry, encode_telemetry

__all__ = ["publish_telemetry"]

log = logging.getLogger(__name__)


async def publish_telemetry(
    kafka_args: Mapping[str, Any],
    topic: str,
    process: str,
    collect: Callable[[float], Sequence[Sample]],
    stop: asyncio.Event,
    every_s: float = 1.0,
) -> None:
    """Send `collect(seconds since the last call)` every `every_s` until `stop` is set."""
    producer: AIOKafkaProducer | None = None
    last, warned = time.monotonic(), 0.0
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
            now = time.monotonic()
            samples, last = list(collect(now - last))[:MAX_SAMPLES], now
            try:
                producer = producer or await _started(kafka_args)
                record = Telemetry(process, time.time_ns() // 1_000_000, tuple(samples))
                await producer.send(topic, encode_telemetry(record), key=process.encode())
            except KafkaError as e:
                if now - warned > 60:  # a missing topic or ACL: say so once a minute, not every second
                    log.warning("telemetry not sent to %s: %s", topic, e)
                    warned = now
    finally:
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()


async def _started(kafka_args: Mapping[str, Any]) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(**kafka_args, acks=1, linger_ms=50)
    try:
        await producer.start()
    except KafkaError:
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
        raise
    return producer
