"""The control topic, followed: each shard's latest circuit breaker, for the coordinator's
admission of new sagas (coordinator/service/breakers.py).

It is read whole, from its start, by every coordinator (no consumer group: each needs every
shard's breaker), and kept up with from then on. The topic is compacted, so its start is each
shard's latest state. A record that is not a BreakerState is logged and skipped: the monitor's ACL
is what keeps forgeries off the topic, and one bad record must not stop admissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from coordinator.service.breakers import Breakers
from schemas.breaker import decode_breaker_state
from schemas.errors import LedgerError

log = logging.getLogger(__name__)


async def follow_breakers(
    kafka_args: Mapping[str, Any], topic: str, breakers: Breakers, stop: asyncio.Event
) -> None:
    """Feed `breakers` every BreakerState on `topic` until `stop` is set."""
    consumer = await _started(kafka_args, topic, stop)
    if consumer is None:
        return
    try:
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=200)
            except KafkaError as e:
                log.warning("control topic poll failed: %s", e)
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for r in records:
                    try:
                        breakers.heard(decode_breaker_state(r.value or b""))
                    except LedgerError as e:
                        log.warning(
                            "skipping %s[%d]@%d, not a BreakerState: %s", topic, r.partition, r.offset, e
                        )
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()


async def _started(kafka_args: Mapping[str, Any], topic: str, stop: asyncio.Event) -> AIOKafkaConsumer | None:
    """A consumer of `topic`, once it can start. Until then every shard counts as closed: a ledger
    whose control topic is missing or unreadable (not yet `ledger init`-ed for it) still moves money."""
    while not stop.is_set():
        consumer = AIOKafkaConsumer(
            topic, **kafka_args, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        try:
            await consumer.start()
            return consumer
        except KafkaError as e:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()
            log.warning("cannot follow the breakers on %s yet (%s): every shard counts as closed", topic, e)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
    return None
