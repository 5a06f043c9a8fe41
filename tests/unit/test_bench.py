"""The benchmark's own logic, without servers: workload, measured window, report, sweeps, profiles."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any

import click
import pytest

from deploy.bench.command import _parse_sweep, bench, document_of, settings_of, sweep_row, sweep_table
from deploy.bench.load import Recorder, closed_loop, open_loop
from deploy.bench.meter import GENERATOR, MACHINE
from deploy.bench.profiler import hot_functions
from deploy.bench.report import RunReport
from deploy.bench.workload import Move, Workload, WorkloadSettings
from schemas.partitioning import PartitionMap

PMAP = PartitionMap.initial(4)


def test_the_workload_is_seeded_and_keeps_its_proportions() -> None:
    settings = WorkloadSettings(accounts=400, cross_fraction=0.3, reject_fraction=0.2, seed=7)
    one, other = Workload(settings, PMAP), Workload(settings, PMAP)
    moves = [one.next() for _ in range(5000)]
    assert moves == [other.next() for _ in range(5000)]
    assert all(m.debit != m.credit for m in moves)
    assert all(m.cross_shard == (PMAP.shard_for(m.debit) != PMAP.shard_for(m.credit)) for m in moves)
    assert 0.27 < sum(m.cross_shard for m in moves) / len(moves) < 0.33
    assert 0.17 < sum(m.amount > settings.funding for m in moves) / len(moves) < 0.23


def test_hot_merchants_take_their_share_and_the_cross_share_holds() -> None:
    """`--hot 3:0.3`: three merchant accounts receive 30% of transfers and pay none."""
    settings = WorkloadSettings(accounts=400, cross_fraction=0.1, hot_accounts=3, hot_share=0.3, seed=3)
    workload = Workload(settings, PMAP)
    moves = [workload.next() for _ in range(20_000)]
    hot = set(workload.hot)
    assert len({PMAP.shard_for(a) for a in hot}) == 3, "three accounts, spread over the shards"
    assert 0.28 < sum(m.credit in hot for m in moves) / len(moves) < 0.32
    assert not any(m.debit in hot for m in moves)
    assert all(m.debit != m.credit for m in moves)
    assert all(m.cross_shard == (PMAP.shard_for(m.debit) != PMAP.shard_for(m.credit)) for m in moves)
    assert 0.08 < sum(m.cross_shard for m in moves) / len(moves) < 0.12


def test_without_merchants_the_seeded_sequence_is_unchanged() -> None:
    plain = Workload(WorkloadSettings(accounts=100, seed=5), PMAP)
    none_hot = Workload(WorkloadSettings(accounts=100, seed=5, hot_accounts=0, hot_share=0.5), PMAP)
    assert [plain.next() for _ in range(500)] == [none_hot.next() for _ in range(500)]


def test_log_amounts_are_integers_spread_over_every_magnitude() -> None:
    w = Workload(WorkloadSettings(amounts="log", max_amount=99_999, reject_fraction=0), PMAP)
    amounts = [w.next().amount for _ in range(5000)]
    assert all(isinstance(a, int) and 1 <= a <= 99_999 for a in amounts)
    digits = Counter(len(str(a)) for a in amounts)
    assert set(digits) == {1, 2, 3, 4, 5}
    assert min(digits.values()) > 800


class Instant:
    """A target that answers every transfer after `delay` seconds."""

    name = "instant"

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def submit(self, move: Move) -> asyncio.Future[str]:
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(self.delay, answer.set_result, "completed")
        return answer

    async def resends(self) -> int:
        return 0


async def test_open_loop_offers_the_rate_and_measures_only_the_window() -> None:
    recorder = Recorder()
    workload = Workload(WorkloadSettings(accounts=50), PMAP)
    t0 = await open_loop(Instant(0.01), workload, rate=400, seconds=1.0, recorder=recorder)
    assert await recorder.drain(5) == 0
    report = RunReport.of("instant", "open", 400, recorder, t0, warmup_s=0.5, duration_s=0.5, missing=0)
    assert report.sent == 400
    assert report.outcomes == Counter(completed=400)
    assert 190 <= report.measured <= 210  # due in the second half only
    assert report.percentiles_ms()["p50"] >= 10  # latency runs from the due time
    assert report.passed


async def test_closed_loop_keeps_each_client_to_one_outstanding_transfer() -> None:
    recorder = Recorder()
    workload = Workload(WorkloadSettings(accounts=50), PMAP)
    t0 = await closed_loop(Instant(0.02), workload, clients=5, seconds=0.5, recorder=recorder)
    assert await recorder.drain(5) == 0
    # 5 clients x 0.5 s / 20 ms = about 125 transfers: a sixth client would show as more.
    assert 90 <= recorder.submitted <= 130
    report = RunReport.of("instant", "closed", None, recorder, t0, 0.0, 0.5, 0)
    assert 150 <= report.achieved_per_s <= 260


async def test_an_unanswered_transfer_fails_the_gate() -> None:
    recorder = Recorder()
    never: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    move = Workload(WorkloadSettings(accounts=50), PMAP).next()
    recorder.track(move, 0.0, never)
    missing = await recorder.drain(0.05)
    report = RunReport.of("lossy", "open", 1, recorder, 0.0, 0.0, 1.0, missing)
    assert missing == 1
    assert not report.passed


def test_sweeps_are_validated() -> None:
    assert _parse_sweep("cross=0,0.1, 1.0") == ("cross", ["0", "0.1", "1.0"])
    assert _parse_sweep("shards=1,2,4") == ("shards", ["1", "2", "4"])
    for bad in ("cross=1.5", "shards=0", "rate=1,2", "cross=", "shards=two"):
        with pytest.raises(click.BadParameter):
            _parse_sweep(bad)


def test_a_sweep_row_compares_the_flat_out_runs() -> None:
    def run(name: str, answered: int) -> RunReport:
        return RunReport(name, "closed, 10 clients", None, 10.0, finished_in_window=answered)

    row = sweep_row("0.1", [run("ledger", 3000), run("ledger", 2100), run("baseline (32 connections)", 1000)])
    assert row["ledger_per_s"] == 300
    assert row["baseline_per_s"] == 100
    assert row["ratio"] == 3.0
    assert "0.1" in sweep_table("cross", [row])


def test_hot_functions_put_idle_time_first_and_rank_the_rest() -> None:
    collapsed = "\n".join(
        [
            "main (a.py:1);run (b.py:2);EpollSelector.select (selectors.py:468) 50",
            "main (a.py:1);handle (c.py:3);validate (d.py:4) 30",
            "main (a.py:1);handle (c.py:3) 20",
        ]
    )
    assert hot_functions(collapsed, 2) == [
        " 50.0% idle in the event loop",
        " 30.0% validate (d.py:4)",
        " 20.0% handle (c.py:3)",
    ]


def test_cpu_per_transfer_is_given_with_and_without_the_load_generator() -> None:
    report = RunReport("ledger", "closed, 10 clients", None, 10.0, sent=2_000)
    report.processes = {
        MACHINE: {"cpu_s": 4.0, "cpu_pct": 40, "rss_mib": 0.0},
        GENERATOR: {"cpu_s": 1.0, "cpu_pct": 10, "rss_mib": 100.0},
    }
    assert report.cpu_per_transfer_ms() == {"machine": 2.0, "ledger": 1.5}
    assert report.to_json()["cpu_per_transfer_ms"] == {"machine": 2.0, "ledger": 1.5}
    assert "cpu per transfer: 2.00 ms the machine, 1.50 ms without the load generator" in report.table()
    assert RunReport("idle", "open @ 1/s", 1.0, 1.0).cpu_per_transfer_ms() == {}


def test_the_pending_share_is_held_then_posted_or_voided_deterministically_per_seed() -> None:
    """`--pending 0.3`: 30% of transfers are holds; of those, 1 in 5 posted for half, 1 in 10 voided."""
    settings = WorkloadSettings(accounts=400, pending_fraction=0.3, seed=7)
    one, other = Workload(settings, PMAP), Workload(settings, PMAP)
    moves = [one.next() for _ in range(20_000)]
    assert moves == [other.next() for _ in range(20_000)]
    held = [m for m in moves if m.pending is not None]
    assert 0.28 < len(held) / len(moves) < 0.32
    ends = Counter(m.pending for m in held)
    assert set(ends) == {"post", "post_half", "void"}
    assert 0.17 < ends["post_half"] / len(held) < 0.23
    assert 0.08 < ends["void"] / len(held) < 0.12
    reseeded = Workload(WorkloadSettings(accounts=400, pending_fraction=0.3, seed=8), PMAP)
    assert [m.pending for m in moves[:200]] != [reseeded.next().pending for _ in range(200)]


def test_pending_only_marks_moves_the_seed_would_draw_anyway() -> None:
    """The same transfers with or without --pending (same accounts, amounts): only some become holds."""
    plain = Workload(WorkloadSettings(accounts=100, seed=5), PMAP)
    pending = Workload(WorkloadSettings(accounts=100, seed=5, pending_fraction=0.5), PMAP)
    before = [plain.next() for _ in range(500)]
    after = [pending.next() for _ in range(500)]
    assert all(m.pending is None for m in before)
    assert [replace(m, pending=None) for m in after] == before


async def test_two_phase_transfers_are_their_own_latency_path() -> None:
    recorder = Recorder()
    workload = Workload(WorkloadSettings(accounts=50, pending_fraction=1.0), PMAP)
    move = workload.next()
    assert move.pending is not None
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    recorder.track(move, 0.0, answer)
    answer.set_result("pending post completed")
    assert await recorder.drain(1) == 0
    report = RunReport.of("ledger", "open", 1, recorder, 0.0, 0.0, 1e9, 0)
    assert set(report.latency) == {"all", "pending", f"shard {move.debit_shard}"}
    assert report.outcomes == Counter({"pending post completed": 1})
    assert "pending" in report.to_json()["latency_ms"]


def test_the_pending_option_parses_reads_its_variable_and_is_in_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def parsed(*args: str) -> dict[str, Any]:
        return dict(bench.make_context("bench", list(args)).params)

    assert settings_of(parsed())[0].pending_fraction == 0.0
    workload, load = settings_of(parsed("--pending", "0.3"))
    assert workload.pending_fraction == 0.3
    assert document_of(parsed("--pending", "0.3"), workload, load)["workload"]["pending_fraction"] == 0.3
    monkeypatch.setenv("LEDGER_BENCH_PENDING", "0.25")
    assert settings_of(parsed())[0].pending_fraction == 0.25
    with pytest.raises(click.BadParameter):
        parsed("--pending", "1.5")
