"""Two monitors at once on real Kafka (issue 16, item 2: "several monitors may run"): they split
ledger.balances between them, yet liquidity rules changed at run time hold on every partition;
breaker changes come from one of them at a time, so each shard's BreakerStates on ledger.control
carry strictly increasing seqs whichever monitor wrote them, through an operator's commands, a
divergence the audit latches, and a failover of either monitor."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from deploy.ledger_audit import PostgresAuditor
from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from monitor.adapters.faust_app import monitor_group
from monitor.app import MonitorRun, run_monitor
from schemas.alerts import LiquidityAlert
from schemas.breaker import BY_MONITOR, OPEN, BreakerState, SetBreaker, decode_breaker_state, encode_breaker
from schemas.ledger_alert import HASH_CHAIN, LedgerAlert, decode_any_alert
from schemas.liquidity_rules import LiquidityRule, SetLiquidityRules, encode_set_rules
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import ResultCollector, fresh_config, produce_raw, read_topic, running_ledger


def _id() -> str:
    return str(uuid.uuid4())


class _Monitor:
    """`ledger monitor run` in-process, auditing every second, until `stop` (or the block's end)."""

    def __init__(self, config: LedgerConfig, audited: LedgerConfig) -> None:
        self._stop = asyncio.Event()
        run = MonitorRun(tick_s=0.2, audit_every_s=1.0)
        self._task = asyncio.create_task(run_monitor(config, run, self._stop, PostgresAuditor(audited)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 60)

    async def __aenter__(self) -> _Monitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _group_settled(config: LedgerConfig, members: int, within_s: float = 90) -> None:
    """Until the monitors' group is Stable with `members` members, plus a moment for faust to hand
    the partitions to its agents."""
    admin: Any = AIOKafkaAdminClient(**config.kafka_args())  # describe_consumer_groups is not in its stubs
    await admin.start()
    try:
        deadline = time.monotonic() + within_s
        while True:
            (response,) = await admin.describe_consumer_groups([monitor_group(config)])
            _, _, state, _, _, listed = response.groups[0][:6]
            if state == "Stable" and len(listed) == members:
                break
            assert time.monotonic() < deadline, f"group {state} with {len(listed)} members"
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    await asyncio.sleep(3)


def _one_account_per_partition(partitions: int) -> list[str]:
    """Account ids whose balances land on every partition of ledger.balances (keyed by account)."""
    by_partition: dict[int, str] = {}
    i = 0
    while len(by_partition) < partitions:
        name = f"liq-{i}"
        by_partition.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        i += 1
    return sorted(by_partition.values())


async def _transfers(
    config: LedgerConfig, results: ResultCollector, moves: list[tuple[str, str, int]]
) -> None:
    transfers = [TransferFunds(_id(), debit, credit, amount, "EUR") for debit, credit, amount in moves]
    await produce_raw(config, config.namespace.transfers, [(None, encode_public(t)) for t in transfers])
    done = await results.wait_for([t.transfer_id for t in transfers])
    assert {r["state"] for r in done.values()} == {"completed"}


async def _breaker_command(config: LedgerConfig, shard: int, action: str) -> None:
    command = SetBreaker(_id(), shard, action, f"test {action}", "alice")
    await produce_raw(
        config, config.namespace.monitor_commands, [(str(shard).encode(), encode_breaker(command))]
    )


async def _states(config: LedgerConfig, want: int, within_s: float = 60) -> list[BreakerState]:
    records = await read_topic(config, config.namespace.control, want, within_s)
    return [decode_breaker_state(r.value or b"") for r in records]


async def test_two_monitors_share_balances_and_write_breakers_with_increasing_seqs(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    ns = config.namespace
    as_monitor = dataclasses.replace(config, kafka_security=kafka_principal("monitor"))
    accounts = _one_account_per_partition(config.partitions)
    floor = LiquidityRule(
        "liq-floor", "available_below", "warning", "EUR", account_prefix="liq-", floor=1_000
    )
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        async with _Monitor(as_monitor, config), _Monitor(as_monitor, config):
            await _group_settled(config, 2)

            # Liquidity: rules set at run time hold on the accounts of both monitors' partitions.
            opens = [OpenAccountRequest(_id(), "issuer", "EUR", 10**9, {})]
            opens += [OpenAccountRequest(_id(), a, "EUR", 0, {}) for a in accounts]
            await produce_raw(
                config, ns.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
            )
            await results.wait_for([o.command_id for o in opens])
            await _transfers(config, results, [("issuer", a, 5_000) for a in accounts])
            rules = SetLiquidityRules(_id(), (floor,))
            await produce_raw(config, ns.monitor_commands, [(b"rules", encode_set_rules(rules))])
            await asyncio.sleep(3)  # every monitor hears of the rules
            await _transfers(config, results, [(a, "issuer", 4_500) for a in accounts])  # 500: crossed
            await _transfers(config, results, [("issuer", a, 4_500) for a in accounts])  # cleared
            alerts = [
                a
                for a in (
                    decode_any_alert(r.value or b"")
                    for r in await read_topic(config, ns.alerts, 2 * len(accounts), 30)
                )
                if isinstance(a, LiquidityAlert)
            ]
            assert sorted((a.account_id, a.state) for a in alerts) == sorted(
                (a, s) for a in accounts for s in ("fired", "cleared")
            ), "a monitor without the command partition kept the old rules"

            # Breakers: an operator's open and close, then a divergence the audit latches.
            for action in ("open", "close"):
                await _breaker_command(config, 1, action)
            await _states(config, want=2)
            conn = await asyncpg.connect(config.shard_database_url(1))
            try:
                await conn.execute("SET session_replication_role = replica")  # past the append-only trigger
                await conn.execute(
                    f"UPDATE {ns.shard_schema(1)}.journal SET amount = amount + 1 WHERE seq = 1"
                )
            finally:
                await conn.close()
            latched = await _states(config, want=3)
            assert (latched[2].latched, latched[2].changed_by) == (True, BY_MONITOR)
            await asyncio.sleep(5)  # a second auditor would latch it again within these seconds
            # Shard 0: an operator's open, written by whichever monitor is on duty.
            await _breaker_command(config, 0, "open")
            await _states(config, want=4)

        # Failover: a monitor joins the one left, which then stops, most likely on duty (faust leaves
        # a partition where it was): the other takes over.
        async with _Monitor(as_monitor, config) as first:
            await _group_settled(config, 1)
            async with _Monitor(as_monitor, config):
                await _group_settled(config, 2)
                await _breaker_command(config, 0, "close")
                await _states(config, want=5)
                await first.stop()
                await _group_settled(config, 1)
                await _breaker_command(config, 1, "close")  # the latch, by an operator
                await _breaker_command(config, 0, "open")
                await _states(config, want=7)
                await asyncio.sleep(3)  # anything more (a stale judgement) would show now

    states = await _states(config, want=100, within_s=5)
    for shard in (0, 1):
        seqs = [s.seq for s in states if s.shard == shard]
        assert seqs == sorted(set(seqs)), f"shard {shard}: seqs {seqs} as a coordinator reads them"
    by_monitor = [s for s in states if s.changed_by == BY_MONITOR]
    assert [(s.shard, s.state, s.latched) for s in by_monitor] == [(1, OPEN, True)], by_monitor
    assert [(s.shard, s.state) for s in states if s.changed_by != BY_MONITOR] == [
        (1, "open"), (1, "closed"), (0, "open"), (0, "closed"), (1, "closed"), (0, "open"),
    ]  # fmt: skip
    audit_alerts = [
        a
        for a in (decode_any_alert(r.value or b"") for r in await read_topic(config, ns.alerts, 100, 5))
        if isinstance(a, LedgerAlert) and a.check == HASH_CHAIN
    ]
    assert [(a.state, a.shard) for a in audit_alerts] == [("fired", 1)], "one auditor at a time"
