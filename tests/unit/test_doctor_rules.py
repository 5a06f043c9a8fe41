"""`ledger doctor`'s rules (deploy/doctor/rules.py): each kind of problem planted in a Facts snapshot
gives its finding and fix; a healthy snapshot gives none; the order is deterministic; and every
command a finding prints is one the `ledger` CLI has, with options it has."""

from __future__ import annotations

import os
import shlex
from dataclasses import replace
from pathlib import Path

import click
import psutil
import pytest

from deploy.cli import cli
from deploy.doctor import rules
from deploy.doctor.facts import (
    AlertFact,
    BreakerFact,
    ChainFact,
    Facts,
    LagFact,
    OutboxFact,
    ProcessFact,
    SagaFact,
    Unreachable,
    ViolationFact,
)
from deploy.doctor.gather import consumer_groups, firing_alerts, latest_breakers, stack_processes
from deploy.doctor.rules import Finding, diagnose, needs_action
from schemas.alerts import LiquidityAlert
from schemas.breaker import BreakerState
from schemas.topics import Namespace
from tests.unit.test_domain_purity import forbidden_in, package_of

NOW = 1_800_000_000_000
TID = "8c1d5a0e-2f4b-4c7a-9e3d-5b6f7a8c9d01"

HEALTHY = Facts(
    now_ms=NOW,
    shards=(0, 1),
    sagas=(),
    violations=(),
    chains=(),
    lags=(
        LagFact("ledger.coordinator", None, 3, stalled=False),
        LagFact("ledger.shard.00", 0, 0, stalled=False),
        LagFact("ledger.shard.01", 1, 12, stalled=False),
    ),
    outboxes=(OutboxFact("ledger_shard_00", 0, 4, 0.3, 0), OutboxFact("ledger_coordinator", None, 0, 0.0, 0)),
    breakers=(BreakerFact(0, "closed", False, "", "monitor", NOW - 5000),),
    alerts=(),
    processes=(ProcessFact("shard-0", True), ProcessFact("coordinator", True)),
    supervisor_alive=True,
    local_stack=True,
)


def _one(facts: Facts) -> Finding:
    found = diagnose(facts)
    assert len(found) == 1, found
    return found[0]


def test_a_healthy_ledger_has_no_finding() -> None:
    assert diagnose(HEALTHY) == []
    assert not needs_action([])
    assert diagnose(Facts(now_ms=NOW)) == []  # nothing looked at: nothing to say


def test_an_unreachable_source_is_critical_and_says_where() -> None:
    f = _one(
        replace(HEALTHY, unreachable=(Unreachable("postgres", "127.0.0.1:5432/ledger", "OSError: refused"),))
    )
    assert (f.severity, f.code, f.subject) == ("critical", rules.UNREACHABLE, "postgres")
    assert "127.0.0.1:5432" in f.explanation
    assert "refused" in f.explanation
    assert f.fix == "ledger dev up\nledger dev status --check"
    assert _one(replace(HEALTHY, local_stack=False, processes=None, unreachable=(
        Unreachable("kafka", "k:9092", "KafkaConnectionError"),))).fix == "ledger doctor"  # fmt: skip


def test_a_reconciliation_violation_is_critical_and_points_at_its_shard() -> None:
    v = ViolationFact("entry_without_saga", TID, "shard 1: transfer debit a -5 EUR: no saga has this id")
    f = _one(replace(HEALTHY, violations=(v,)))
    assert (f.severity, f.code) == ("critical", rules.RECONCILE_VIOLATION)
    assert f.fix == "ledger reconcile --json\nledger replay --shard 1\nledger verify"
    saga_only = ViolationFact("saga_legs", TID, "completed: no credit")
    assert f"ledger status {TID}" in _one(replace(HEALTHY, violations=(saga_only,))).fix


def test_a_broken_chain_is_critical_and_isolates_the_shard() -> None:
    f = _one(replace(HEALTHY, chains=(ChainFact(1, 7, "hash differs"),)))
    assert (f.severity, f.code, f.subject) == ("critical", rules.CHAIN_BROKEN, "shard 1")
    assert f.fix.splitlines() == [
        "ledger verify --json",
        "ledger replay --shard 1",
        'ledger breaker open --shard 1 --reason "hash chain broken at seq 7"',
    ]


def test_a_parked_saga_names_the_transfer_and_restarts_the_shard_it_waits_on() -> None:
    saga = SagaFact(TID, "crediting", True, 45.0, None, (1,))
    f = _one(replace(HEALTHY, sagas=(saga,)))
    assert (f.severity, f.code, f.subject) == ("warning", rules.SAGA_PARKED, TID)
    assert f.fix == f"ledger status {TID}"  # shard 1's worker runs: nothing to restart
    down = replace(HEALTHY, local_stack=False, processes=None, sagas=(saga,),
                   lags=(LagFact("ledger.shard.01", 1, 5, stalled=True),))  # fmt: skip
    found = diagnose(down)
    parked = next(f for f in found if f.code == rules.SAGA_PARKED)
    assert parked.fix == f"ledger status {TID}\nledger shard run --shard 1"
    assert "shard 1 has no running worker" in parked.explanation


def test_a_saga_in_flight_past_the_threshold_is_stuck() -> None:
    young = SagaFact(TID, "reserving", False, 10.0, None, (0,))
    assert diagnose(replace(HEALTHY, sagas=(young,))) == []
    old = replace(young, age_s=301.0)
    dead_worker = (ProcessFact("shard-0", False, 3, "exit 1"), ProcessFact("coordinator", True))
    found = diagnose(replace(HEALTHY, sagas=(old,), processes=dead_worker))
    stuck = next(f for f in found if f.code == rules.SAGA_STUCK)
    assert stuck.severity == "warning"
    assert stuck.subject == TID
    assert stuck.fix == f"ledger status {TID}\nledger dev up\nledger dev status"


def test_consumer_lag_and_a_stalled_group() -> None:
    lagging = replace(HEALTHY, lags=(LagFact("ledger.shard.00", 0, 5000, stalled=False),))
    f = _one(replace(lagging, local_stack=False, processes=None))
    assert (f.code, f.subject, f.fix) == (rules.CONSUMER_LAG, "shard 0", "ledger shard run --shard 0")
    stalled = replace(HEALTHY, local_stack=False, processes=None,
                      lags=(LagFact("ledger.coordinator", None, 2, stalled=True),))  # fmt: skip
    f = _one(stalled)
    assert (f.severity, f.code, f.subject, f.fix) == (
        "warning", rules.CONSUMER_STALLED, "coordinator", "ledger coordinator run",
    )  # fmt: skip


def test_the_monitor_behind_is_judged_by_its_lag_alone() -> None:
    behind = LagFact("ledger.monitor", None, 4000, stalled=False, monitor=True)
    f = _one(replace(HEALTHY, lags=(behind,)))
    assert (f.code, f.subject, f.fix) == (rules.CONSUMER_LAG, "monitor", "ledger monitor run")
    assert "the monitor is 4000 records behind" in f.explanation
    assert diagnose(replace(HEALTHY, lags=(replace(behind, lag=40),))) == []


def test_the_groups_read_are_the_processes_own() -> None:
    groups = {g.name: g for g in consumer_groups(Namespace("t_"), [0, 1])}
    assert list(groups) == [
        "t_ledger.coordinator",
        "t_ledger.shard.00",
        "t_ledger.shard.01",
        "t_ledger.monitor",
    ]
    assert groups["t_ledger.shard.01"].topics == (Namespace("t_").shard_commands(1),)
    assert groups["t_ledger.monitor"].monitor


def test_outbox_parked_rows_and_a_backlog() -> None:
    parked = OutboxFact("ledger_shard_01", 1, 0, 0.0, 2, ("ledger.dead-letters",))
    f = _one(replace(HEALTHY, outboxes=(parked,)))
    assert (f.code, f.subject, f.fix) == (rules.OUTBOX_PARKED, "ledger_shard_01", "ledger outbox parked")
    assert "ledger.dead-letters" in f.explanation
    backlog = OutboxFact("ledger_shard_01", 1, 900, 75.0, 0)
    f = _one(replace(HEALTHY, local_stack=False, processes=None, outboxes=(backlog,)))
    assert (f.code, f.fix) == (rules.OUTBOX_BACKLOG, "ledger shard run --shard 1")
    fresh = replace(backlog, oldest_s=2.0)
    assert diagnose(replace(HEALTHY, outboxes=(fresh,))) == []


def test_a_latched_breaker_is_closed_only_after_checking() -> None:
    latched = BreakerFact(2, "open", True, "chain mismatch on shard 2", "monitor", NOW - 60_000)
    f = _one(replace(HEALTHY, breakers=(latched,)))
    assert (f.severity, f.code, f.subject) == ("critical", rules.BREAKER_LATCHED, "shard 2")
    assert f.fix.splitlines() == [
        "ledger verify",
        "ledger reconcile",
        'ledger breaker close --shard 2 --reason "verify and reconcile clean"',
    ]
    assert "60 s" in f.explanation
    assert "chain mismatch" in f.explanation


def test_an_open_breaker_that_closes_by_itself_is_a_warning() -> None:
    half = BreakerFact(1, "half_open", False, "latency", "monitor", NOW - 1000)
    f = _one(replace(HEALTHY, breakers=(half,)))
    assert (f.severity, f.code, f.subject) == ("warning", rules.BREAKER_OPEN, "shard 1")
    assert f.fix.splitlines()[0] == "ledger breaker status --shard 1"


def test_an_alert_still_firing() -> None:
    alert = AlertFact("eur-floor", "critical", "settlement-eur", "EUR", "available_below", 900, 1000, NOW)
    f = _one(replace(HEALTHY, alerts=(alert,)))
    assert (f.severity, f.code, f.subject) == ("warning", rules.ALERT_FIRING, "eur-floor: settlement-eur")
    assert f.fix == "ledger balance settlement-eur"


def test_a_dead_process_with_and_without_its_supervisor() -> None:
    dead = (ProcessFact("shard-1", False, 4, "exit 1", "/tmp/logs/shard-1.log"),)
    f = _one(replace(HEALTHY, processes=dead))
    assert (f.code, f.subject) == (rules.PROCESS_DOWN, "shard-1")
    assert f.fix == "ledger dev status\ntail -n 50 /tmp/logs/shard-1.log"
    found = diagnose(replace(HEALTHY, processes=dead, supervisor_alive=False))
    assert [(f.code, f.fix) for f in found] == [
        (rules.PROCESS_DOWN, "ledger dev up\nledger dev status"),
        (rules.SUPERVISOR_DOWN, "ledger dev up\nledger dev status"),
    ]


def test_findings_are_ordered_critical_first_then_by_code_and_subject() -> None:
    facts = replace(
        HEALTHY,
        sagas=(
            SagaFact("b", "reserving", True, 1.0, None, ()),
            SagaFact("a", "reserving", True, 1.0, None, ()),
        ),
        chains=(ChainFact(1, 3, "x"), ChainFact(0, 9, "y")),
        alerts=(AlertFact("r", "warning", "acct", "EUR", "available_below", 1, 2, NOW),),
        unreachable=(Unreachable("kafka", "k:1", "down"),),
    )
    order = [(f.severity, f.code, f.subject) for f in diagnose(facts)]
    assert order == [
        ("critical", rules.CHAIN_BROKEN, "shard 0"),
        ("critical", rules.CHAIN_BROKEN, "shard 1"),
        ("critical", rules.UNREACHABLE, "kafka"),
        ("warning", rules.ALERT_FIRING, "r: acct"),
        ("warning", rules.SAGA_PARKED, "a"),
        ("warning", rules.SAGA_PARKED, "b"),
    ]
    assert diagnose(replace(facts, sagas=tuple(reversed(facts.sagas or ())))) == diagnose(facts)
    assert needs_action(diagnose(facts))


# --- what the gatherer keeps of the topics -------------------------------------------------------


def test_the_latest_breaker_per_shard_is_the_highest_seq() -> None:
    states = [
        BreakerState(0, "open", True, "divergence", "monitor", 2, 100),
        BreakerState(0, "closed", False, "", "operator", 3, 200),
        BreakerState(1, "open", False, "latency", "monitor", 5, 300),
        BreakerState(1, "closed", False, "", "monitor", 4, 250),  # older, read later
    ]
    assert [(b.shard, b.state) for b in latest_breakers(states)] == [(0, "closed"), (1, "open")]


def _alert(state: str, at_ms: int, account: str = "acct-1") -> LiquidityAlert:
    return LiquidityAlert(f"id-{state}-{at_ms}", "floor", state, "warning", account, "EUR",
                          "available_below", 5, 10, at_ms, at_ms)  # fmt: skip


def test_an_alert_fires_until_a_later_clear() -> None:
    cleared = [_alert("fired", 1), _alert("cleared", 2), _alert("fired", 3, "acct-2")]
    assert [a.account_id for a in firing_alerts(cleared)] == ["acct-2"]
    refired = [_alert("cleared", 2), _alert("fired", 1), _alert("fired", 5)]
    assert [(a.account_id, a.at_ms) for a in firing_alerts(refired)] == [("acct-1", 5)]


def test_a_recorded_stack_dead_and_alive_processes() -> None:
    me = psutil.Process()
    alive = {"name": "coordinator", "pid": me.pid, "create_time": me.create_time(), "log_path": "/l/c.log"}
    gone = {
        "name": "shard-1",
        "pid": os.getpid(),
        "create_time": me.create_time() - 100,
        "log_path": "/l/s.log",
    }
    state = {
        "processes": [alive, gone],
        "restarts": {"shard-1": {"restarts": 2, "last_exit": "exit 1"}},
        "supervised": [{"name": "shard-1"}],
    }
    processes, supervisor = stack_processes(state)
    assert processes == (
        ProcessFact("coordinator", True, 0, None, "/l/c.log"),
        ProcessFact("shard-1", False, 2, "exit 1", "/l/s.log"),  # its pid now someone else's
    )
    assert supervisor is False  # supervised processes, no supervisor recorded
    assert stack_processes(state | {"supervisor": alive})[1] is True
    assert stack_processes({"processes": []}) == ((), None)


# --- every printed command exists; the rules stay pure ---------------------------------------------

EVERY_KIND = replace(
    HEALTHY,
    local_stack=False,
    unreachable=(Unreachable("postgres", "h:1", "e"),),
    violations=(ViolationFact("journal_balanced", "shard 0 EUR", "sums to 5"),),
    chains=(ChainFact(0, 1, "x"),),
    sagas=(
        SagaFact(TID, "crediting", True, 1.0, None, (1,)),
        SagaFact("t2", "reserving", False, 999.0, None, (0,)),
    ),
    lags=(
        LagFact("ledger.shard.01", 1, 9, stalled=True),
        LagFact("ledger.coordinator", None, 5000, stalled=False),
        LagFact("ledger.monitor", None, 5000, stalled=False, monitor=True),
    ),
    outboxes=(
        OutboxFact("ledger_shard_00", 0, 5, 99.0, 1, ("t",)),
        OutboxFact("ledger_coordinator", None, 5, 99.0, 0),
    ),
    breakers=(
        BreakerFact(0, "open", True, "r", "monitor", 0),
        BreakerFact(1, "open", False, "r", "monitor", 0),
    ),
    alerts=(AlertFact("r", "warning", "acct", "EUR", "available_below", 1, 2, NOW),),
    processes=(ProcessFact("shard-1", False, log="/tmp/x.log"),),
    supervisor_alive=False,
)


def test_every_kind_of_finding_is_planted_here() -> None:
    assert {f.code for f in diagnose(EVERY_KIND)} == set(rules.CODES)
    assert {f.code for f in diagnose(replace(EVERY_KIND, local_stack=True))} == set(rules.CODES)


def _check_exists(words: list[str]) -> None:
    command: click.Command = cli
    ctx = click.Context(cli)
    rest = words[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {' '.join(words)}"
        command, rest = sub, rest[1:]
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    for word in rest:
        if word.startswith("--"):
            assert word in options, f"{' '.join(words)}: no option {word}"


@pytest.mark.parametrize("local", [False, True])
def test_every_printed_ledger_command_exists(local: bool) -> None:
    for finding in diagnose(replace(EVERY_KIND, local_stack=local)):
        for line in finding.fix.splitlines():
            words = shlex.split(line, comments=True)
            if words[0] != "ledger":
                assert words[0] == "tail", line
                continue
            _check_exists(words)


def test_the_rules_and_facts_import_no_io() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("rules.py", "facts.py"):
        path = root / "deploy/doctor" / name
        found = forbidden_in(path.read_text(), package_of(path))
        assert {m for m in found if not m.startswith("deploy.doctor")} == set(), name
