"""The demo: a 4-shard ledger on a local stack, thousands of transfers, and the proof it balances.

Everything goes through the public Kafka topics with the LedgerClient, as a payment service would
use them: accounts are opened with account commands, in two currencies, money enters only by
transfers from each currency's issuance account, and the outcome of each transfer is read from the
results topic (duplicates dropped by message_id). Then the status API is queried and the whole
ledger is reconciled.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from tqdm import tqdm

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import Violation, reconcile
from deploy.demo_monitoring import monitoring
from deploy.demo_scenes import Scene, card_authorization, currency_exchange, split_payment
from deploy.ledger_client import LedgerClient
from deploy.stack import ISSUERS
from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool
from schemas.partitioning import PartitionMap
from schemas.public import FreezeAccount, OpenAccountRequest, TransferFunds

FUNDING = 1_000_000  # minor units each customer receives from its currency's issuer


@dataclass(frozen=True)
class DemoSettings:
    customers: int = 200
    """Every fourth holds USD, the others EUR."""
    transfers: int = 3000
    frozen: int = 4
    """Accounts frozen after funding: transfers to them are rejected or compensated."""
    seed: int = 7
    timeout_s: float = 300.0


@dataclass
class DemoReport:
    outcomes: Counter[tuple[str, str | None]]
    cross_shard: int
    currencies: Counter[str]
    elapsed_s: float
    latencies_ms: list[float]
    examples: dict[str, dict[str, object]]
    violations: list[Violation]
    scenes: list[Scene]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def _until(client: LedgerClient, ids: set[str], timeout_s: float, bar: tqdm[Any] | None = None) -> None:
    """Until every id has its result; the bar counts them as they come."""
    deadline = time.monotonic() + timeout_s
    while missing := len(ids - client.by_id.keys()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{missing} results missing after {timeout_s:.0f}s")
        await client.poll()
        if bar is not None:
            bar.update(len(ids) - len(ids - client.by_id.keys()) - bar.n)


def _workload(customers: dict[str, str], settings: DemoSettings, rng: random.Random) -> list[TransferFunds]:
    """Transfers between customers of one currency; one in twenty to a frozen account (rejected
    on the same shard, compensated across shards), one in ten too large (insufficient funds)."""
    frozen = list(customers)[: settings.frozen]
    active = [c for c in customers if c not in frozen]
    work = []
    for _ in range(settings.transfers):
        debit = rng.choice(active)
        currency = customers[debit]
        payees = [c for c in active if customers[c] == currency and c != debit]
        blocked = [c for c in frozen if customers[c] == currency]
        credit = rng.choice(blocked) if blocked and rng.random() < 0.05 else rng.choice(payees)
        amount = rng.randint(1, 40_000) if rng.random() < 0.9 else rng.randint(2 * FUNDING, 3 * FUNDING)
        work.append(TransferFunds(str(uuid.uuid4()), debit, credit, amount, currency))
    return work


async def run_demo(config: LedgerConfig, api_url: str, api_token: str, settings: DemoSettings) -> DemoReport:
    control = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(control).load_partition_map()
    finally:
        await control.close()
    rng = random.Random(settings.seed)  # noqa: S311 - a workload, not a secret
    customers = {f"cust-{i:04d}": "USD" if i % 4 == 3 else "EUR" for i in range(settings.customers)}
    async with LedgerClient(config.kafka_args(), config.namespace) as client:
        issuers = [OpenAccountRequest(str(uuid.uuid4()), a, c, 10**15, {}) for c, a in ISSUERS.items()]
        opens = [
            *issuers,
            *(OpenAccountRequest(str(uuid.uuid4()), a, c, 0, {}) for a, c in customers.items()),
        ]
        await _until(client, set(await client.send_account_commands(opens)), settings.timeout_s)
        funding = [TransferFunds(str(uuid.uuid4()), ISSUERS[c], a, FUNDING, c) for a, c in customers.items()]
        await _until(client, set(await client.send_transfers(funding)), settings.timeout_s)
        freezes = [FreezeAccount(str(uuid.uuid4()), a) for a in list(customers)[: settings.frozen]]
        await _until(client, set(await client.send_account_commands(freezes)), settings.timeout_s)

        work = _workload(customers, settings, rng)
        sent: dict[str, float] = {}
        started = time.monotonic()
        with tqdm(total=len(work), desc="transfers", unit="tx") as bar:
            for chunk in range(0, len(work), 500):
                batch = work[chunk : chunk + 500]
                now = time.monotonic()
                sent.update({t.transfer_id: now for t in batch})
                await client.send_transfers(batch)
            await _until(client, set(sent), settings.timeout_s, bar)
        elapsed = time.monotonic() - started
        got = {t.transfer_id: client.by_id[t.transfer_id][0] for t in work}
        arrived = dict(client.arrived)
        scenes = await _scenes(client, config, api_url, api_token, customers, settings, pmap)

    outcomes = Counter((str(got[t.transfer_id]["state"]), _reason(got[t.transfer_id])) for t in work)
    cross = sum(1 for t in work if pmap.shard_for(t.debit_account) != pmap.shard_for(t.credit_account))
    examples = await _examples(api_url, api_token, work, got, pmap)
    sagas, views, _ = await read_views(config, sorted(set(pmap.shards)))
    return DemoReport(
        outcomes,
        cross,
        Counter(t.currency for t in work),
        elapsed,
        [(arrived[i] - sent[i]) * 1000 for i in sent],
        examples,
        reconcile(sagas, views),
        scenes,
    )


async def _scenes(
    client: LedgerClient,
    config: LedgerConfig,
    api_url: str,
    api_token: str,
    customers: dict[str, str],
    settings: DemoSettings,
    pmap: PartitionMap,
) -> list[Scene]:
    """The scenes users recognize, between active EUR customers on two shards."""
    active = [c for c, currency in customers.items() if currency == "EUR"][settings.frozen :]
    cardholder = active[0]
    merchant = next(c for c in active if pmap.shard_for(c) != pmap.shard_for(cardholder))
    shards = {pmap.shard_for(cardholder)}
    payees: list[str] = []  # on shards other than the payer's and each other's, as far as there are shards
    for c in active[1:]:
        if len(payees) < 3 and (pmap.shard_for(c) not in shards or len(shards) == len(set(pmap.shards))):
            payees.append(c)
            shards.add(pmap.shard_for(c))
    frozen = set(list(customers)[: settings.frozen])
    usd_customer = next(c for c, currency in customers.items() if currency == "USD" and c not in frozen)
    bearer = {"Authorization": f"Bearer {api_token}"}
    async with aiohttp.ClientSession(headers=bearer, raise_for_status=True) as http:
        return [
            await card_authorization(client, http, api_url, cardholder, merchant),
            await split_payment(client, http, api_url, cardholder, payees),
            await currency_exchange(client, http, api_url, cardholder, usd_customer),
            await monitoring(client, config, merchant, pmap.shard_for(merchant)),
        ]


def _reason(result: dict[str, object]) -> str | None:
    reason = result.get("reason")
    return str(reason) if reason is not None else None


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
    print("currencies: " + ", ".join(f"{n} in {c}" for c, n in sorted(report.currencies.items())))
    worst = max(report.latencies_ms, default=0)
    print(f"latency, command produced -> result read: p50 {report.percentile(50):.0f} ms, "
          f"p99 {report.percentile(99):.0f} ms, max {worst:.0f} ms")  # fmt: skip
    print("outcomes:")
    for (state, reason), count in sorted(report.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {state}{f' ({reason})' if reason else ''}")
    for label, body in report.examples.items():
        print(f"\nstatus of {label}:\n{json.dumps(body, indent=2)}")
    for scene in report.scenes:
        print(f"\n{scene.title}:")
        for what, shown in scene.steps:
            print(f"  {what}: {json.dumps(shown)}")
    print(f"\nreconciliation: {len(report.violations)} violations")
    for v in report.violations[:20]:
        print(f"  {v.check}: {v.subject}: {v.detail}")
