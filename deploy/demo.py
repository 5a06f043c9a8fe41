"""The demo: a 4-shard ledger on a local stack, thousands of transfers, and the proof it balances.

Everything goes through the public Kafka topics, as a payment service would use it: accounts are
opened with account commands, money enters only by transfers from the issuance account, and the
outcome of each transfer is read from the results topic. Then the status API is queried and the
whole ledger is reconciled.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tqdm import tqdm

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import Violation, reconcile
from deploy.config import LedgerConfig
from deploy.stack import ISSUER
from schemas.public import FreezeAccount, OpenAccountRequest, TransferFunds, encode_public
from shards.adapters.postgres_control import PostgresControl
from shards.bootstrap import open_pool
from shards.domain.partitioning import PartitionMap

FUNDING = 1_000_000  # minor units each customer receives from the issuer


@dataclass(frozen=True)
class DemoSettings:
    customers: int = 200
    transfers: int = 3000
    frozen: int = 4
    """Accounts frozen after funding: transfers to them are rejected or compensated."""
    seed: int = 7
    timeout_s: float = 300.0


@dataclass
class DemoReport:
    outcomes: Counter[tuple[str, str | None]]
    cross_shard: int
    elapsed_s: float
    latencies_ms: list[float]
    examples: dict[str, dict[str, object]]
    violations: list[Violation]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


class _Results:
    """Collects results from ledger.results, timing each against when its command was sent."""

    def __init__(self, config: LedgerConfig) -> None:
        self.consumer = AIOKafkaConsumer(
            config.namespace.results, **config.kafka_args(),
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        self.got: dict[str, dict[str, object]] = {}
        self.arrived: dict[str, float] = {}

    async def until(self, ids: set[str], timeout_s: float, bar: tqdm[Any] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while not ids <= self.got.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids - self.got.keys())} results missing after {timeout_s:.0f}s")
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    result = json.loads(r.value or b"{}")
                    key = str(result.get("transfer_id") or result.get("command_id"))
                    if key not in self.got:
                        self.got[key] = result
                        self.arrived[key] = time.monotonic()
                        if bar is not None and key in ids:
                            bar.update()


async def run_demo(config: LedgerConfig, api_url: str, api_token: str, settings: DemoSettings) -> DemoReport:
    control = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(control).load_partition_map()
    finally:
        await control.close()
    rng = random.Random(settings.seed)  # noqa: S311 - a workload, not a secret
    customers = [f"cust-{i:04d}" for i in range(settings.customers)]
    producer = AIOKafkaProducer(**config.kafka_args(), enable_idempotence=True,
                                acks="all", linger_ms=5)  # fmt: skip
    results = _Results(config)
    await producer.start()
    await results.consumer.start()
    try:
        opens = [OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**15 if a == ISSUER else 0, {})
                 for a in [ISSUER, *customers]]  # fmt: skip
        await _send(
            producer, config.namespace.account_commands, [(o.account_id, encode_public(o)) for o in opens]
        )
        await results.until({o.command_id for o in opens}, settings.timeout_s)
        funding = [TransferFunds(str(uuid.uuid4()), ISSUER, c, FUNDING, "EUR") for c in customers]
        await _send(
            producer, config.namespace.transfers, [(t.transfer_id, encode_public(t)) for t in funding]
        )
        await results.until({t.transfer_id for t in funding}, settings.timeout_s)
        frozen = customers[: settings.frozen]
        freezes = [FreezeAccount(str(uuid.uuid4()), a) for a in frozen]
        await _send(
            producer, config.namespace.account_commands, [(f.account_id, encode_public(f)) for f in freezes]
        )
        await results.until({f.command_id for f in freezes}, settings.timeout_s)

        work = []
        for _ in range(settings.transfers):
            debit, credit = rng.sample(customers[settings.frozen :], 2)
            if rng.random() < 0.05:
                credit = rng.choice(frozen)  # rejected (same shard) or compensated (cross-shard)
            # One in ten asks for more than any account can have: rejected for insufficient funds.
            amount = rng.randint(1, 40_000) if rng.random() < 0.9 else rng.randint(2 * FUNDING, 3 * FUNDING)
            work.append(TransferFunds(str(uuid.uuid4()), debit, credit, amount, "EUR"))
        sent: dict[str, float] = {}
        started = time.monotonic()
        with tqdm(total=len(work), desc="transfers", unit="tx") as bar:
            for chunk in range(0, len(work), 500):
                batch = work[chunk : chunk + 500]
                now = time.monotonic()
                sent.update({t.transfer_id: now for t in batch})
                await _send(
                    producer, config.namespace.transfers, [(t.transfer_id, encode_public(t)) for t in batch]
                )
            await results.until(set(sent), settings.timeout_s, bar)
        elapsed = time.monotonic() - started
    finally:
        await producer.stop()
        await results.consumer.stop()

    outcomes = Counter(
        (str(results.got[t.transfer_id]["state"]), _reason(results.got[t.transfer_id])) for t in work
    )
    cross = sum(1 for t in work if pmap.shard_for(t.debit_account) != pmap.shard_for(t.credit_account))
    examples = await _examples(api_url, api_token, work, results.got, pmap)
    sagas, views, _ = await read_views(config, sorted(set(pmap.shards)))
    return DemoReport(
        outcomes,
        cross,
        elapsed,
        [(results.arrived[i] - sent[i]) * 1000 for i in sent],
        examples,
        reconcile(sagas, views),
    )


def _reason(result: dict[str, object]) -> str | None:
    reason = result.get("reason")
    return str(reason) if reason is not None else None


async def _send(producer: AIOKafkaProducer, topic: str, items: list[tuple[str, bytes]]) -> None:
    futures = [await producer.send(topic, value, key=key.encode()) for key, value in items]
    await asyncio.gather(*futures)


async def _examples(
    api_url: str,
    api_token: str,
    work: list[TransferFunds],
    got: dict[str, dict[str, object]],
    pmap: PartitionMap,
) -> dict[str, dict[str, object]]:
    """A couple of status queries, as an operator would make them."""

    def cross_completed(t: TransferFunds) -> bool:
        cross = pmap.shard_for(t.debit_account) != pmap.shard_for(t.credit_account)
        return cross and got[t.transfer_id]["state"] == "completed"

    def compensated(t: TransferFunds) -> bool:
        return got[t.transfer_id]["state"] == "compensated"

    wanted = {"a completed cross-shard transfer": cross_completed, "a compensated transfer": compensated}
    examples: dict[str, dict[str, object]] = {}
    bearer = {"Authorization": f"Bearer {api_token}"}
    async with aiohttp.ClientSession(headers=bearer, raise_for_status=True) as http:
        for label, match in wanted.items():
            found = next((t for t in work if match(t)), None)
            if found is not None:
                async with http.get(f"{api_url}/transfers/{found.transfer_id}") as response:
                    examples[label] = await response.json()
        async with http.get(f"{api_url}/accounts/{work[0].debit_account}") as response:
            examples["an account"] = await response.json()
    return examples


def show(report: DemoReport) -> None:
    """Print the outcome counts, speed, latency, status examples and the reconciliation."""
    total = sum(report.outcomes.values())
    print(f"\n{total} transfers ({report.cross_shard} cross-shard) in {report.elapsed_s:.1f}s: "
          f"{total / report.elapsed_s:.0f} transfers/s")  # fmt: skip
    worst = max(report.latencies_ms, default=0)
    print(f"latency, command produced -> result read: p50 {report.percentile(50):.0f} ms, "
          f"p99 {report.percentile(99):.0f} ms, max {worst:.0f} ms")  # fmt: skip
    print("outcomes:")
    for (state, reason), count in sorted(report.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {state}{f' ({reason})' if reason else ''}")
    for label, body in report.examples.items():
        print(f"\nstatus of {label}:\n{json.dumps(body, indent=2)}")
    print(f"\nreconciliation: {len(report.violations)} violations")
    for v in report.violations[:20]:
        print(f"  {v.check}: {v.subject}: {v.detail}")
