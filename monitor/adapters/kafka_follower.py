"""What every monitor reads whole, without a consumer group: ledger.control (the breakers),
ledger.alerts (the episodes and findings) and ledger.monitor-commands (the liquidity rules).

The faust group splits the other topics between the monitors; these three each monitor needs all
of, from any of them: the breakers another monitor changed (so that the next change, by whichever
monitor decides them then, takes the next seq), the alerts another wrote (so that an account
whose balances partition moves here carries on its episode), and the rules (so that a
SetLiquidityRules holds on every monitor's share of the balances, not only on the one that holds
the command topic's partition).

One consumer, from the topics' start: `read_to_now` for the rebuild, then `follow` feeds the
service as they grow; `caught_up` waits until everything written before the call has been handed
to the service (a monitor about to decide the breakers calls it first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from monitor.adapters import records
from monitor.service.monitor import MonitorService
from schemas.breaker import BreakerState, decode_breaker_state
from schemas.errors import LedgerError
from schemas.ledger_alert import decode_any_alert
from schemas.liquidity_rules import SetLiquidityRules
from schemas.topics import Namespace

log = logging.getLogger(__name__)

Record = ConsumerRecord[bytes, bytes]
_ATTEMPTS = 20


class KafkaFollower:
    def __init__(self, kafka_args: Mapping[str, Any], ns: Namespace) -> None:
        self._ns = ns
        # Subscribed, without a group: every partition of each, and their metadata, at start (a
        # consumer assigned by hand knows no topic's partitions until it asks for them by name).
        self._consumer = AIOKafkaConsumer(
            ns.control, ns.alerts, ns.monitor_commands,
            **kafka_args, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        )  # fmt: skip
        self._tps: list[TopicPartition] = []
        self._handled: dict[TopicPartition, int] = {}
        """Per partition, the offset up to which records went to the service."""
        self._moved = asyncio.Condition()

    async def start(self) -> None:
        await self._consumer.start()
        self._tps = sorted(self._consumer.assignment())
        if self._tps:
            await self._consumer.seek_to_beginning(*self._tps)

    async def stop(self) -> None:
        with contextlib.suppress(KafkaError, OSError):
            await self._consumer.stop()

    async def read_to_now(self) -> list[Record]:
        """Every record from where the reading stands to each partition's end as of now."""
        ends = await self._consumer.end_offsets(self._tps)
        got: list[Record] = []
        await self._note_positions()
        while not self._reached(ends):
            for batch in (await self._consumer.getmany(*self._tps, timeout_ms=500)).values():
                got += batch
            await self._note_positions()
        return got

    async def caught_up(self) -> None:
        """Once every record written before the call has been handed to the service."""
        for attempt in range(_ATTEMPTS):  # a broker moment should not cost the monitor a restart
            try:
                ends = await self._consumer.end_offsets(self._tps)
                break
            except KafkaError as e:
                if attempt + 1 == _ATTEMPTS:
                    raise
                log.warning("monitor: cannot ask where control, alerts and commands end, again: %s", e)
                await asyncio.sleep(0.5)
        async with self._moved:
            await self._moved.wait_for(lambda: self._reached(ends))

    async def follow(self, service: MonitorService, stop: asyncio.Event) -> None:
        """Hand each new record to `service` until `stop` is set."""
        while not stop.is_set():
            try:
                batches = await self._consumer.getmany(*self._tps, timeout_ms=200)
            except KafkaError as e:
                log.warning("monitor: reading control, alerts and commands failed, again: %s", e)
                await asyncio.sleep(0.5)
                continue
            for batch in batches.values():
                for record in batch:
                    await self._hand_over(service, record)
            await self._note_positions()

    def _reached(self, ends: Mapping[TopicPartition, int]) -> bool:
        return all(self._handled.get(tp, 0) >= end for tp, end in ends.items())

    async def _note_positions(self) -> None:
        for tp in self._tps:
            self._handled[tp] = await self._consumer.position(tp)
        async with self._moved:
            self._moved.notify_all()

    async def _hand_over(self, service: MonitorService, record: Record) -> None:
        value, topic = record.value or b"", record.topic
        if topic == self._ns.monitor_commands:
            try:
                command = records.monitor_command(value)
            except LedgerError:
                return  # the commands agent counts it, on the monitor that holds that partition
            if isinstance(command, SetLiquidityRules):
                await service.on_set_rules(command, record.offset, record.timestamp)
            return
        try:
            decoded = decode_breaker_state(value) if topic == self._ns.control else decode_any_alert(value)
        except LedgerError as e:
            service.on_refused("breaker state" if topic == self._ns.control else "alert", e)
            return
        if isinstance(decoded, BreakerState):
            service.resume(decoded)
        else:
            service.recall(decoded)
