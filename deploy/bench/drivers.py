"""Drive the same seeded workload through the ledger (its public Kafka topics) and the baseline."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.bench import baseline
from deploy.bench.open_loop import open_loop
from deploy.bench.report import RunReport
from deploy.bench.workload import Move, Workload, WorkloadSettings
from deploy.config import LedgerConfig
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from shards.domain.partitioning import PartitionMap

ISSUER = "issuer"  # the issuance account `ledger dev up` / LocalStack.start_ledger configure


@dataclass(frozen=True)
class LoadSettings:
    rate: float = 500.0
    """Offered transfers per second (open loop)."""
    duration_s: float = 30.0
    warmup_s: float = 5.0
    drain_s: float = 120.0
    """How long to wait for the last results after the last command."""
    connections: int = 32
    """Baseline only: concurrent PostgreSQL connections."""


def _moves(workload: WorkloadSettings, pmap: PartitionMap, load: LoadSettings) -> tuple[Workload, list[Move]]:
    generator = Workload(workload, pmap)
    return generator, [generator.next() for _ in range(int(load.rate * (load.warmup_s + load.duration_s)))]


async def bench_ledger(
    config: LedgerConfig, pmap: PartitionMap, workload: WorkloadSettings, load: LoadSettings
) -> RunReport:
    generator, moves = _moves(workload, pmap, load)
    report = RunReport("ledger", load.rate, load.duration_s)
    results = AIOKafkaConsumer(config.namespace.results, bootstrap_servers=config.kafka_bootstrap_servers,
                               auto_offset_reset="latest", enable_auto_commit=False)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka_bootstrap_servers, enable_idempotence=True,
                                acks="all", linger_ms=2)  # fmt: skip
    arrived: dict[str, tuple[float, dict[str, object]]] = {}
    await results.start()
    await producer.start()
    try:
        await results.seek_to_end()
        collector = asyncio.create_task(_collect(results, arrived))
        await _prepare(config, producer, arrived, generator.accounts, workload.funding)
        ids = [str(uuid.uuid4()) for _ in moves]
        due: dict[str, float] = {}

        async def submit(i: int, at: float) -> None:
            m, tid = moves[i], ids[i]
            due[tid] = at
            command = TransferFunds(tid, m.debit, m.credit, m.amount, "EUR")
            await producer.send(config.namespace.transfers, encode_public(command), key=tid.encode())

        t0 = await open_loop(load.rate, len(moves), submit)
        await producer.flush()
        deadline = time.monotonic() + load.drain_s
        while len(arrived.keys() & due.keys()) < len(due) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # the collector task fills `arrived`
        collector.cancel()
    finally:
        await producer.stop()
        await results.stop()
    measured_from = t0 + load.warmup_s
    for move, tid in zip(moves, ids, strict=True):
        if due[tid] < measured_from:
            continue
        report.sent += 1
        if tid not in arrived:
            report.missing += 1
            continue
        at, result = arrived[tid]
        report.answered += 1
        report.outcomes[
            f"{result['state']}" + (f" ({result['reason']})" if result.get("reason") else "")
        ] += 1
        report.record("cross_shard" if move.cross_shard else "same_shard", at - due[tid])
    sagas, views, _ = await read_views(config, sorted(set(pmap.shards)))
    report.violations = [f"{v.check}: {v.subject}: {v.detail}" for v in reconcile(sagas, views)]
    if report.missing:
        report.violations.append(f"{report.missing} transfers got no result within {load.drain_s:.0f}s")
    return report


async def _collect(consumer: AIOKafkaConsumer, arrived: dict[str, tuple[float, dict[str, object]]]) -> None:
    while True:
        for records in (await consumer.getmany(timeout_ms=100)).values():
            now = time.monotonic()
            for r in records:
                result = orjson.loads(r.value or b"{}")
                key = str(result.get("transfer_id") or result.get("command_id"))
                arrived.setdefault(key, (now, result))


async def _prepare(
    config: LedgerConfig, producer: AIOKafkaProducer, arrived: dict[str, tuple[float, dict[str, object]]],
    accounts: list[str], funding: int,
) -> None:  # fmt: skip
    """Open the issuer and every account, and fund them, through the public topics."""
    opens = [
        OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**17 if a == ISSUER else 0, {})
        for a in [ISSUER, *accounts]
    ]
    await asyncio.gather(
        *[
            await producer.send(
                config.namespace.account_commands, encode_public(o), key=o.account_id.encode()
            )
            for o in opens
        ]
    )
    await _wait(arrived, [o.command_id for o in opens])
    funds = [TransferFunds(str(uuid.uuid4()), ISSUER, a, funding, "EUR") for a in accounts]
    await asyncio.gather(
        *[
            await producer.send(config.namespace.transfers, encode_public(t), key=t.transfer_id.encode())
            for t in funds
        ]
    )
    await _wait(arrived, [t.transfer_id for t in funds])


async def _wait(
    arrived: dict[str, tuple[float, dict[str, object]]], ids: list[str], within_s: float = 300
) -> None:
    """Wait for set-up results; any that is not a success fails the run before it starts."""
    deadline = time.monotonic() + within_s
    while not all(i in arrived for i in ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(i not in arrived for i in ids)} set-up results missing")
        await asyncio.sleep(0.1)
    failed = [
        arrived[i][1]
        for i in ids
        if arrived[i][1].get("state", arrived[i][1].get("outcome")) not in ("completed", "done")
    ]
    if failed:
        raise RuntimeError(f"{len(failed)} set-up commands failed, e.g. {failed[0]}")


async def bench_baseline(
    dsn: str, pmap: PartitionMap, workload: WorkloadSettings, load: LoadSettings
) -> RunReport:
    generator, moves = _moves(workload, pmap, load)
    schema = "bench_baseline"
    await baseline.create_baseline(dsn, schema, generator.accounts, workload.funding)
    report = RunReport(f"baseline ({load.connections} connections)", load.rate, load.duration_s)
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=load.connections, max_size=load.connections,
                                                    server_settings={"search_path": schema})  # fmt: skip
    done: dict[int, tuple[float, str]] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        async with pool.acquire() as conn:
            outcome = await baseline.transfer(conn, moves[i])
        done[i] = (time.monotonic(), outcome)

    async def submit(i: int, at: float) -> None:
        tasks.append(asyncio.create_task(one(i)))

    try:
        t0 = await open_loop(load.rate, len(moves), submit)
        await asyncio.wait_for(asyncio.gather(*tasks), load.drain_s)
    finally:
        await pool.close()
    for i, move in enumerate(moves):
        due = t0 + i / load.rate
        if due < t0 + load.warmup_s:
            continue
        report.sent += 1
        at, outcome = done[i]
        report.answered += 1
        report.outcomes[outcome] += 1
        report.record("cross_shard" if move.cross_shard else "same_shard", at - due)
    expected = workload.funding * workload.accounts
    if (money := await baseline.total(dsn, schema)) != expected:
        report.violations.append(f"baseline holds {money}, funded {expected}")
    return report
