"""Proof for issue 12, "bounded everything": records of 0.5 MB, 0.9 MB, 1 MB and just over the
configured limit on each public topic. Each is dead-lettered (too large to read, so no id is
readable and no result can answer it) or refused by the broker when the producer sends it; and a
transfer sent right after completes within seconds. Before: a ~900 KB record made a 1.2 MB dead
letter that jammed the coordinator's outbox, and no result or saga command left it again."""

from __future__ import annotations

import dataclasses
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import ResultCollector, dead_letters, fresh_config, produce_raw, running_ledger

MB = 1_000_000
LARGE_LIMIT = 1_153_434  # ~1.1 MB: lets 0.5, 0.9 and 1 MB records reach the ledger


def _record(size: int) -> bytes:
    """A transfer command padded to `size` bytes: its id would be readable, were it small enough."""
    head = b'{"type":"TransferFunds","v":1,"transfer_id":"%s","pad":"' % str(uuid.uuid4()).encode()
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def _open_and_fund(config: LedgerConfig, results: ResultCollector) -> None:
    opens = [
        OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**15 if a == "issuer" else 0)
        for a in ("issuer", "a", "b")
    ]
    await produce_raw(
        config, config.namespace.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
    )
    await results.wait_for([o.command_id for o in opens])
    fund = TransferFunds(str(uuid.uuid4()), "issuer", "a", 1_000_000, "EUR")
    await produce_raw(config, config.namespace.transfers, [(None, encode_public(fund))])
    assert (await results.wait_for([fund.transfer_id]))[fund.transfer_id]["state"] == "completed"


async def _a_transfer_completes_quickly(config: LedgerConfig, results: ResultCollector) -> float:
    t = TransferFunds(str(uuid.uuid4()), "a", "b", 7, "EUR")
    started = time.monotonic()
    await produce_raw(config, config.namespace.transfers, [(None, encode_public(t))])
    assert (await results.wait_for([t.transfer_id], within_s=10))[t.transfer_id]["state"] == "completed"
    return time.monotonic() - started


async def _send_big(config: LedgerConfig, topic: str, value: bytes) -> None:
    """As a client whose producer lets the broker judge the size (max_request_size above it)."""
    producer = AIOKafkaProducer(**config.kafka_args(), acks="all", max_request_size=4 * MB)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def test_large_records_are_dead_lettered_and_the_ledger_goes_on(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = dataclasses.replace(fresh_config(kafka_bootstrap, database_url), max_message_bytes=LARGE_LIMIT)
    await init_ledger(config, 2)
    ns = config.namespace
    sent: list[tuple[str, int]] = []
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        await _open_and_fund(config, results)
        for topic in (ns.transfers, ns.account_commands):
            for size in (MB // 2, 9 * MB // 10, MB):
                await _send_big(config, topic, _record(size))
                sent.append((topic, size))
                await _a_transfer_completes_quickly(config, results)
            with pytest.raises(MessageSizeTooLargeError):
                await _send_big(config, topic, _record(LARGE_LIMIT + 1))
            await _a_transfer_completes_quickly(config, results)
        letters = await dead_letters(config, len(sent))
    assert sorted((d["source_topic"], d["raw_size"], d["reason"]) for d in letters) == sorted(
        (topic, size, "too_large") for topic, size in sent
    )
    assert all(len(orjson.dumps(d)) < 8 * 1024 for d in letters), "every dead letter is bounded"


async def test_the_default_limit_refuses_half_a_megabyte_at_the_broker(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    assert config.max_message_bytes == 256 * 1024
    await init_ledger(config, 2)
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        await _open_and_fund(config, results)
        for topic in (config.namespace.transfers, config.namespace.account_commands):
            for size in (256 * 1024 + 1, MB // 2, 9 * MB // 10, MB):
                with pytest.raises(MessageSizeTooLargeError):
                    await _send_big(config, topic, _record(size))
            await _send_big(config, topic, _record(200_000))  # under the limit: read, and dead-lettered
            await _a_transfer_completes_quickly(config, results)
        letters = await dead_letters(config, 2)
    assert sorted((d["source_topic"], d["reason"]) for d in letters) == sorted(
        (t, "too_large") for t in (config.namespace.transfers, config.namespace.account_commands)
    )
