"""Helpers for tests that drive real shard workers: a namespaced ledger, commands in, replies out."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from deploy.ledger_client import LedgerClient
from deploy.postgres_roles import RoleConfigs
from infra.config import KafkaSecurity, LedgerConfig
from schemas import envelopes
from schemas.message_auth import MessageAuthenticator
from schemas.partitioning import PartitionMap
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from schemas.shard_messages import ShardCommand, ShardReply, encode
from schemas.topics import Namespace
from shards.bootstrap import RunningShard, run_shard
from shards.service.worker import WorkerSettings
from tests.engines import SESSION_KAFKA


def new_id() -> str:
    return str(uuid.uuid4())


def fresh_config(
    kafka_bootstrap: str, database_url: str, security: KafkaSecurity | None = None
) -> LedgerConfig:
    """A ledger of its own (a fresh prefix) on the session's engines, connecting to Kafka as
    `security` (the session's super user when None: tests' own setup and in-process workers)."""
    return LedgerConfig(
        database_url, kafka_bootstrap, Namespace(f"t{uuid.uuid4().hex[:10]}_"),
        kafka_security=security or SESSION_KAFKA.security(),
        message_keys=(("test", secrets.token_bytes(32)),),  # coordinators' and shards' own, per ledger
    )  # fmt: skip


def accounts_on(pmap: PartitionMap, shard: int, count: int, prefix: str = "acct") -> list[str]:
    """`count` account ids that the partition map places on `shard`."""
    names = (f"{prefix}-{i}" for i in itertools.count())
    return list(itertools.islice((n for n in names if pmap.shard_for(n) == shard), count))


async def send(config: LedgerConfig, shard: int, commands: Iterable[ShardCommand]) -> None:
    producer = AIOKafkaProducer(**config.kafka_args(), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    try:
        topic = config.namespace.shard_commands(shard)
        auth = MessageAuthenticator(config.message_keys)  # as a coordinator would send them
        futures = [
            await producer.send(topic, raw, headers=[auth.sign(topic, None, raw)])
            for raw in (encode(c) for c in commands)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class ReplyCollector:
    """Reads the shard-replies topic from the start; `wait_for` returns the replies to given ids."""

    def __init__(self, config: LedgerConfig) -> None:
        self.consumer = AIOKafkaConsumer(
            config.namespace.shard_replies,
            **config.kafka_args(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.replies: dict[str, ShardReply] = {}
        self.deliveries: dict[str, int] = {}

    async def __aenter__(self) -> ReplyCollector:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 500) -> int:
        """Read whatever arrives within `timeout_ms`; return how many replies were read."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        records = [r for rs in batch.values() for r in rs]
        read = 0
        for r in records:
            for unpacked in envelopes.replies(r.value or b""):
                reply = unpacked.message
                assert isinstance(reply, ShardReply), reply  # a shard never sends a bad one
                self.replies.setdefault(reply.in_reply_to, reply)
                self.deliveries[reply.in_reply_to] = self.deliveries.get(reply.in_reply_to, 0) + 1
                read += 1
        return read

    async def wait_for(self, message_ids: Sequence[str], within_s: float = 60) -> dict[str, ShardReply]:
        deadline = time.monotonic() + within_s
        while not all(m in self.replies for m in message_ids):
            missing = len([m for m in message_ids if m not in self.replies])
            assert time.monotonic() < deadline, f"{missing} replies missing after {within_s}s"
            await self.poll()
        return {m: self.replies[m] for m in message_ids}


@contextlib.asynccontextmanager
async def running_shards(
    config: LedgerConfig, shards: Sequence[int], batch_max: int = 5000, roles: RoleConfigs | None = None
) -> AsyncIterator[list[RunningShard]]:
    """Shard workers (with relays) as tasks of this test; stopped cleanly at the end. With `roles`,
    each worker connects as its shard's own database role."""
    stop = asyncio.Event()
    started: asyncio.Queue[RunningShard] = asyncio.Queue()
    tasks = [
        asyncio.create_task(
            run_shard(
                roles.shards[s] if roles else config,
                WorkerSettings(s, batch_max=batch_max),
                stop,
                started=started,
            )
        )
        for s in shards
    ]
    try:
        running = []
        for _ in shards:
            getter = asyncio.create_task(started.get())
            done, _pending = await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                for t in done:
                    t.result()  # a worker that died on start: raise its error here
            running.append(getter.result())
        yield running
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def balances(config: LedgerConfig, shard: int) -> dict[str, tuple[int, int]]:
    conn = await asyncpg.connect(config.shard_database_url(shard))
    try:
        rows = await conn.fetch(
            f'SELECT account_id, posted, reserved FROM "{config.namespace.shard_schema(shard)}".balances'
        )
        return {r[0]: (r[1], r[2]) for r in rows}
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def running_ledger(
    config: LedgerConfig, shards: Sequence[int], roles: RoleConfigs | None = None
) -> AsyncIterator[None]:
    """Shard workers and one coordinator, as tasks of this test; stopped cleanly at the end. With
    `roles`, each connects as its own database role (deploy.postgres_roles)."""
    from coordinator.bootstrap import RunSettings, run_coordinator  # noqa: PLC0415 - shard tests skip it
    from coordinator.saga.transfer_saga import SagaPolicy  # noqa: PLC0415
    from coordinator.service.coordinator import CoordinatorSettings  # noqa: PLC0415

    stop = asyncio.Event()
    settings = CoordinatorSettings(
        max_transfer_amount=10**12,
        issuance_accounts=frozenset({"issuer", "issuer-usd"}),
        policy=SagaPolicy(base_backoff_ms=500, max_forward_attempts=4, park_after_ms=30_000),
    )
    coordinator_config = roles.coordinator if roles else config
    async with running_shards(config, shards, roles=roles):
        task = asyncio.create_task(
            run_coordinator(coordinator_config, settings, stop, RunSettings(sweep_every_s=0.1))
        )
        try:
            yield
        finally:
            stop.set()
            await task


class ResultCollector(LedgerClient):
    """The test's view of ledger.results, read from the start through the LedgerClient: `by_id`
    holds each transfer id's (or command id's) distinct results, duplicates (the same message_id
    again) dropped and counted in `deliveries`; `wait_for` returns the first result of each id."""

    def __init__(self, config: LedgerConfig) -> None:
        super().__init__(config.kafka_args(), config.namespace, since="start")


async def produce_raw(
    config: LedgerConfig, topic: str, items: Iterable[tuple[bytes | None, bytes]], *, signed: bool = False
) -> None:
    """Write records as they are; `signed`: with the MAC a coordinator or shard would add."""
    auth = MessageAuthenticator(config.message_keys) if signed else None
    producer = AIOKafkaProducer(**config.kafka_args(), enable_idempotence=True, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=[auth.sign(topic, key, value)] if auth else [])
            for key, value in items
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def open_and_pay(
    config: LedgerConfig, results: ResultCollector, funds: Mapping[str, int], payee: str, payments: int
) -> dict[str, dict[str, Any]]:
    """Open the accounts of `funds` in EUR, then pay `payee` from "issuer" `payments` times (100,
    101, ...): the first results of the payments, once every one has one."""
    ns = config.namespace
    opens = [OpenAccountRequest(new_id(), account, "EUR", amount, {}) for account, amount in funds.items()]
    await produce_raw(config, ns.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens])
    await results.wait_for([o.command_id for o in opens])
    moves = [TransferFunds(new_id(), "issuer", payee, 100 + i, "EUR") for i in range(payments)]
    await produce_raw(config, ns.transfers, [(None, encode_public(m)) for m in moves])
    return await results.wait_for([m.transfer_id for m in moves])


async def dead_letters(config: LedgerConfig, want: int, within_s: float = 30) -> list[dict[str, Any]]:
    """The ledger's dead letters, decoded, once `want` have arrived (or `within_s` has passed)."""
    return [
        orjson.loads(r.value or b"{}")
        for r in await read_topic(config, config.namespace.dead_letters, want, within_s)
    ]


async def read_topic(
    config: LedgerConfig, topic: str, want: int, within_s: float = 30
) -> list[ConsumerRecord[bytes, bytes]]:
    """A topic's records from its start, once `want` have arrived (or `within_s` has passed)."""
    consumer = AIOKafkaConsumer(topic, **config.kafka_args(), auto_offset_reset="earliest")
    await consumer.start()
    got: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + within_s
        while len(got) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += records
    finally:
        await consumer.stop()
    return got


async def ledger_cli(config: LedgerConfig, *args: str) -> tuple[int, dict[str, Any]]:
    """`ledger ARGS` as a user runs it, without blocking the ledger running in this event loop."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("ledger")), *args, env={**os.environ, **config.as_env()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    try:
        return process.returncode, json.loads(out)
    except json.JSONDecodeError:
        return process.returncode, {"stdout": out.decode(), "stderr": err.decode()}
