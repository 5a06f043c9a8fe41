"""The monitor service with an in-memory publisher (no sockets): liquidity alerts once per
crossing and clearing, publishing retried without loss or reordering, operators' breaker commands
applied once, breakers judged only from telemetry, and a restart that repeats nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from faust.auth import SASLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from infra.config import KafkaSecurity
from monitor.adapters import records
from monitor.adapters.faust_app import faust_credentials
from monitor.domain.anomaly import STEP_P99_MS, TelemetrySample
from monitor.domain.liquidity import BalanceObserved
from monitor.service.monitor import MonitorService, MonitorSettings
from schemas.alerts import LiquidityAlert, encode_alert, liquidity_alert_id
from schemas.balances import BalanceChanged, encode_balance
from schemas.breaker import BY_MONITOR, BY_OPERATOR, CLOSED, OPEN, BreakerState, SetBreaker, encode_breaker
from schemas.errors import LedgerError
from schemas.ledger_alert import Alert, LedgerAlert, decode_any_alert
from schemas.liquidity_rules import LiquidityRule, SetLiquidityRules, encode_set_rules
from schemas.shard_messages import CreditFunds, OpenAccount, ShardCommand
from schemas.telemetry import Sample, Telemetry, encode_telemetry
from shards.service.worker import ShardWorker, WorkerSettings
from tests.fakes import FakeCheckpoints, FakeCommandSource, FakeShardStore
from tests.unit.test_internal_auth_edges import ALICE, NS, PMAP, command_record

FLOOR = LiquidityRule("floor", "available_below", "warning", "EUR", account_id="acct", floor=100)
SETTINGS = MonitorSettings(retry_pause_s=0.0)


class Flaky(LedgerError):
    retriable = True


class FakePublisher:
    """What a broker acknowledged, in order; `fail` refusals first (retriable unless told)."""

    def __init__(self, fail: int = 0, retriable: bool = True) -> None:
        self.alerts: list[LiquidityAlert] = []
        self.ledger_alerts: list[LedgerAlert] = []
        self.states: list[BreakerState] = []
        self.fail, self.retriable, self.calls = fail, retriable, 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            error = Flaky("broker unavailable")
            error.retriable = self.retriable
            raise error

    async def publish_alerts(self, alerts: Sequence[Alert]) -> None:
        self._maybe_fail()
        self.alerts += [a for a in alerts if isinstance(a, LiquidityAlert)]
        self.ledger_alerts += [a for a in alerts if isinstance(a, LedgerAlert)]

    async def publish_breakers(self, states: Sequence[BreakerState]) -> None:
        self._maybe_fail()
        self.states += states


def balance(available: int, seq: int, account: str = "acct") -> BalanceObserved:
    return BalanceObserved(account, "EUR", available, 0, 0, available, seq, 0, seq * 1000)


async def service(publisher: FakePublisher, rules: Sequence[LiquidityRule] = (FLOOR,)) -> MonitorService:
    monitor = MonitorService([0, 1], publisher, started_ms=0, settings=SETTINGS)
    await monitor.begin(rules, now_ms=0)
    await monitor.take_duty(0, held_before=False)  # the only monitor: faust gives it every partition
    return monitor


async def test_a_rule_alerts_once_when_crossed_and_once_when_cleared_and_ignores_redeliveries() -> None:
    out = FakePublisher()
    monitor = await service(out)
    for available, seq in [(500, 1), (50, 2), (40, 3), (50, 2), (30, 4), (200, 5), (200, 5), (300, 6)]:
        await monitor.on_balance(balance(available, seq))
    assert [(a.state, a.observed, a.journal_seq) for a in out.alerts] == [
        ("fired", 50, 2),
        ("cleared", 200, 5),
    ]


async def test_a_failed_publish_is_retried_in_order_and_nothing_is_lost_or_repeated() -> None:
    out = FakePublisher(fail=2)
    monitor = await service(out)
    await monitor.on_balance(balance(50, 1))
    await monitor.on_balance(balance(500, 2))
    assert [a.state for a in out.alerts] == ["fired", "cleared"]
    assert out.calls == 4


async def test_a_publish_refused_for_good_is_raised_to_the_process() -> None:
    monitor = await service(FakePublisher(fail=1, retriable=False))
    with pytest.raises(Flaky):
        await monitor.on_balance(balance(50, 1))


async def test_run_time_rules_replace_the_file_and_an_older_command_replayed_changes_nothing() -> None:
    out = FakePublisher()
    monitor = await service(out)
    await monitor.on_balance(balance(50, 1))
    higher = LiquidityRule("floor2", "available_below", "critical", "EUR", account_id="acct", floor=1000)
    await monitor.on_set_rules(SetLiquidityRules("c1", (higher,)), offset=7, at_ms=5_000)
    assert [(a.rule_id, a.state, a.reason) for a in out.alerts] == [
        ("floor", "fired", None),
        ("floor", "cleared", "rule_removed"),
    ]
    await monitor.on_set_rules(SetLiquidityRules("c0", (FLOOR,)), offset=3, at_ms=6_000)  # a replay
    await monitor.on_balance(balance(500, 2))
    assert [(a.rule_id, a.state) for a in out.alerts[2:]] == [("floor2", "fired")]
    assert [r.rule_id for r in monitor.liquidity.rules] == ["floor2"]


async def test_an_operator_opens_and_closes_a_breaker_once_each() -> None:
    out = FakePublisher()
    monitor = await service(out)
    opened = SetBreaker("00000000-0000-4000-8000-000000000001", 1, "open", "maintenance", "alice")
    await monitor.on_set_breaker(opened, at_ms=1_000)
    await monitor.on_set_breaker(opened, at_ms=1_000)  # redelivered
    closed = SetBreaker("00000000-0000-4000-8000-000000000002", 1, "close", "done", "alice")
    await monitor.on_set_breaker(closed, at_ms=2_000)
    late = SetBreaker("00000000-0000-4000-8000-000000000003", 1, "open", "an old command", "bob")
    await monitor.on_set_breaker(late, at_ms=1_500)  # older than the breaker's last change
    assert [(s.shard, s.state, s.latched, s.changed_by, s.seq) for s in out.states] == [
        (1, OPEN, True, BY_OPERATOR, 1),
        (1, CLOSED, False, BY_OPERATOR, 2),
    ]


def samples(shards: Sequence[int], t: int) -> list[TelemetrySample]:
    return [TelemetrySample(f"shard-{s}", s, STEP_P99_MS, 10.0, t * 1000) for s in shards]


async def test_breakers_wait_for_telemetry_then_a_silent_shard_opens() -> None:
    out = FakePublisher()
    alone = MonitorService([0], out, started_ms=0, settings=SETTINGS)  # one shard: stale is its own
    await alone.take_duty(0, held_before=False)
    for t in range(1, 30):  # no telemetry at all: nothing is judged, nothing opens
        await alone.tick(t * 1000)
    assert out.states == []
    monitor = await service(out)
    for t in range(30, 60):
        for sample in samples([0, 1] if t < 40 else [1], t):  # shard 0 falls silent at 40 s
            monitor.on_telemetry(sample)
        await monitor.tick(t * 1000)
    assert [(s.shard, s.state, s.changed_by) for s in out.states] == [(0, OPEN, BY_MONITOR)]
    assert 45_000 <= out.states[0].since_ms <= 47_000, "stale after 6 s without a sample"


async def test_a_restarted_monitor_repeats_no_alert_and_keeps_its_breakers() -> None:
    first_out = FakePublisher()
    first = await service(first_out)
    await first.on_balance(balance(50, 1))
    await first.on_set_breaker(SetBreaker("00000000-0000-4000-8000-000000000001", 0, "open", "x", "alice"), 1)

    again_out = FakePublisher()
    again = MonitorService([0, 1], again_out, started_ms=10_000, settings=SETTINGS)
    for alert in first_out.alerts:
        again.recall(alert)
    for state in first_out.states:
        again.resume(state)
    await again.begin((FLOOR,), now_ms=10_000)
    await again.take_duty(10_000, held_before=False)
    await again.on_balance(balance(50, 1))  # the compacted topic's latest, read again
    await again.on_balance(balance(60, 2))
    assert again_out.alerts == []
    assert again.breakers[0].state == OPEN
    assert again.breakers[0].latched
    await again.on_balance(balance(500, 3))
    (cleared,) = again_out.alerts
    fired = first_out.alerts[0]
    assert cleared.alert_id == liquidity_alert_id("floor", "acct", "EUR", fired.journal_seq, "cleared")


async def shard_balances(store: FakeShardStore, *commands: ShardCommand) -> list[bytes]:
    """The BalanceChanged records shard 0's worker publishes for one batch of `commands`."""
    worker = ShardWorker(WorkerSettings(0), NS, store, FakeCommandSource(), FakeCheckpoints(), PMAP)
    before = len(store.outbox)
    await worker.process([command_record(c, i) for i, c in enumerate(commands)], asyncio.Event())
    return [m.payload for m in store.outbox[before:] if m.topic == NS.balances]


async def test_an_account_opened_below_its_floor_alerts_once_and_a_restart_recalls_it() -> None:
    store = FakeShardStore()  # a fresh shard: its journal is empty, so an opened account is at seq 0
    (opened,) = await shard_balances(store, OpenAccount(str(uuid.uuid4()), ALICE, "EUR"))
    credit = CreditFunds(str(uuid.uuid4()), str(uuid.uuid4()), ALICE, 500, "EUR")
    (credited,) = await shard_balances(store, credit)
    floor = LiquidityRule("floor", "available_below", "warning", "EUR", account_id=ALICE, floor=100)
    first_out = FakePublisher()
    first = await service(first_out, (floor,))
    await first.on_balance(records.balance_observed(opened, 1_000))
    (fired,) = first_out.alerts
    assert (fired.state, fired.observed, fired.journal_seq) == ("fired", 0, 0)

    again_out = FakePublisher()
    again = MonitorService([0, 1], again_out, started_ms=10_000, settings=SETTINGS)
    for alert in first_out.alerts:  # as a restarted monitor reads them back from ledger.alerts
        again.recall(decode_any_alert(encode_alert(alert)))
    await again.begin((floor,), now_ms=10_000)
    await again.take_duty(10_000, held_before=False)
    await again.on_balance(records.balance_observed(opened, 1_000))  # the compacted topic's latest
    assert again_out.alerts == []
    await again.on_balance(records.balance_observed(credited, 2_000))
    (cleared,) = again_out.alerts
    assert cleared.alert_id == liquidity_alert_id("floor", ALICE, "EUR", 0, "cleared")


# --- the edges: records decoded before the service sees them; faust's credentials ----------------


def test_records_are_decoded_at_the_edge_and_junk_is_refused() -> None:
    change = BalanceChanged("acct", "EUR", "active", 70, 20, 0, 50, 9, 1)
    assert records.balance_observed(encode_balance(change), 1234) == BalanceObserved(
        "acct", "EUR", 70, 20, 0, 50, 9, 1, 1234
    )
    samples = records.telemetry_samples(
        encode_telemetry(Telemetry("shard-1", 7, (Sample("step_p99_ms", 2.5, 1),)))
    )
    assert samples == [TelemetrySample("shard-1", 1, "step_p99_ms", 2.5, 7)]
    rules = SetLiquidityRules("00000000-0000-4000-8000-000000000009", (FLOOR,))
    assert records.monitor_command(encode_set_rules(rules)) == rules
    breaker = SetBreaker("00000000-0000-4000-8000-000000000001", 3, "close", "ok", "alice")
    assert records.monitor_command(encode_breaker(breaker)) == breaker
    assert records.result_summary(b'{"state": "rejected", "reason": "insufficient_funds"}') == (
        "rejected", "insufficient_funds",
    )  # fmt: skip
    for junk in (b"", b"not json", b"[1]", encode_alert(balance_alert())):
        with pytest.raises(LedgerError):
            records.monitor_command(junk)
        with pytest.raises(LedgerError):
            records.balance_observed(junk, 0)


def balance_alert() -> LiquidityAlert:
    return LiquidityAlert("00000000-0000-4000-8000-000000000005", "floor", "fired", "warning", "acct", "EUR",
                          "available_below", 50, 100, 1, 0)  # fmt: skip


def test_faust_connects_with_the_ledgers_kafka_security() -> None:
    assert faust_credentials(KafkaSecurity()) is None
    security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "monitor", "secret")
    credentials = faust_credentials(security)
    assert isinstance(credentials, SASLCredentials)
    assert credentials_to_aiokafka_auth(credentials) == {**security.client_args(), "ssl_context": None}
