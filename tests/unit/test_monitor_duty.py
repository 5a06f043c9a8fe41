"""Breaker duty with several monitors (issue 16, item 2), on the service with an in-memory publisher:
only the monitor on duty writes breaker states, audits and rule-change clears; one that takes duty
continues from the breakers another wrote (the next seq), and liquidity alerts another monitor
wrote carry on an episode here without disturbing one this monitor judged itself."""

from __future__ import annotations

import asyncio

from monitor.domain.audit import AuditReport
from monitor.service.monitor import MonitorService
from schemas.breaker import BY_MONITOR, BY_OPERATOR, OPEN, BreakerState, SetBreaker
from schemas.liquidity_rules import SetLiquidityRules
from tests.unit.test_monitor_audit import BROKEN, report
from tests.unit.test_monitor_service import FLOOR, SETTINGS, FakePublisher, balance, samples

OPEN_BY_OTHER = BreakerState(0, OPEN, True, "operator bob: disk", BY_OPERATOR, 2, 5_000)


def command(n: int, action: str, shard: int = 0) -> SetBreaker:
    return SetBreaker(f"00000000-0000-4000-8000-{n:012d}", shard, action, "test", "alice")


def broken_chain() -> AuditReport:
    """Shard 1's hash chain broken."""
    return report(BROKEN)


async def off_duty(out: FakePublisher) -> MonitorService:
    monitor = MonitorService([0, 1], out, started_ms=0, settings=SETTINGS)
    await monitor.begin((FLOOR,), now_ms=0)
    return monitor


async def test_a_monitor_off_duty_writes_no_breaker_state_whatever_it_hears() -> None:
    out = FakePublisher()
    monitor = await off_duty(out)
    for t in range(1, 30):  # shard 0 silent: on duty, it would open
        for sample in samples([1], t):
            monitor.on_telemetry(sample)
        await monitor.tick(t * 1000)
    await monitor.on_set_breaker(command(1, "open"), 30_000)
    await monitor.on_audit(broken_chain(), 31_000)
    assert (out.states, out.ledger_alerts) == ([], [])


async def test_taking_duty_continues_from_the_breakers_another_monitor_wrote() -> None:
    out = FakePublisher()
    monitor = await off_duty(out)
    monitor.resume(OPEN_BY_OTHER)  # heard on ledger.control while off duty
    await monitor.take_duty(10_000, held_before=False)
    await monitor.on_set_breaker(command(2, "close"), 11_000)
    await monitor.on_audit(broken_chain(), 12_000)
    assert [(s.shard, s.state, s.seq) for s in out.states] == [(0, "closed", 3), (1, OPEN, 1)]
    assert out.states[1].changed_by == BY_MONITOR


async def test_a_breaker_command_that_comes_while_catching_up_waits_for_the_duty() -> None:
    out = FakePublisher()
    monitor = await off_duty(out)
    monitor.hold_inputs()  # partitions assigned: faust may deliver before the catching up is done
    early = asyncio.create_task(monitor.on_set_breaker(command(3, "close"), 11_000))
    await asyncio.sleep(0.01)
    monitor.resume(OPEN_BY_OTHER)  # read to the end of ledger.control
    await monitor.take_duty(10_000, held_before=False)
    monitor.release_inputs()
    await early
    assert [(s.shard, s.state, s.seq) for s in out.states] == [(0, "closed", 3)]


async def test_dropping_duty_stops_judging_and_a_fresh_holder_waits_for_telemetry() -> None:
    out = FakePublisher()
    monitor = await off_duty(out)
    await monitor.take_duty(0, held_before=False)
    for t in range(1, 10):
        for sample in samples([0, 1], t):
            monitor.on_telemetry(sample)
        await monitor.tick(t * 1000)
    await monitor.drop_duty()
    for t in range(10, 40):  # the telemetry partition went elsewhere: everything falls silent here
        await monitor.tick(t * 1000)
    assert out.states == []
    await monitor.take_duty(40_000, held_before=False)
    for t in range(40, 45):  # back on duty: nothing is stale before its figures flow again
        await monitor.tick(t * 1000)
    assert out.states == []


async def test_rule_clears_off_duty_are_left_to_the_monitor_on_duty_unless_none_wrote_them() -> None:
    judge_out, other_out = FakePublisher(), FakePublisher()
    judge = await off_duty(judge_out)  # observes the account
    await judge.on_balance(balance(50, 1))
    (fired,) = judge_out.alerts
    other = await off_duty(other_out)
    other.recall(fired)  # heard on ledger.alerts
    judge.recall(fired)  # its own alert, read back: changes nothing
    await judge.take_duty(0, held_before=False)
    removed = SetLiquidityRules("c1", ())
    await judge.on_set_rules(removed, offset=1, at_ms=2_000)
    await other.on_set_rules(removed, offset=1, at_ms=2_000)
    (cleared,) = judge_out.alerts[1:]
    assert (cleared.state, cleared.reason) == ("cleared", "rule_removed")
    assert other_out.alerts == []
    other.recall(cleared)  # written by the one on duty: nothing left to write on taking it
    await other.take_duty(3_000, held_before=False)
    assert other_out.alerts == []

    lost_out = FakePublisher()
    lost = await off_duty(lost_out)  # a rule change while nobody was on duty
    lost.recall(fired)
    await lost.on_set_rules(removed, offset=1, at_ms=2_000)
    assert lost_out.alerts == []
    await lost.take_duty(3_000, held_before=False)
    assert [(a.alert_id, a.state) for a in lost_out.alerts] == [(cleared.alert_id, "cleared")]
