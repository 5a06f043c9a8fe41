"""`ledger bench --linked SHARE --legs N` without servers: the workload's batches, their latency
path, the report's legs, the options, and the ledger target against a fake broker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import click
import pytest

from deploy.bench.command import bench, document_of, settings_of
from deploy.bench.load import Recorder
from deploy.bench.meter import GENERATOR, MACHINE
from deploy.bench.report import RunReport
from deploy.bench.workload import Move, Workload, WorkloadSettings
from schemas.partitioning import PartitionMap

PMAP = PartitionMap.initial(4)


def _flatten(moves: list[Move]) -> list[Move]:
    return [leg for m in moves for leg in m.legs]


def test_the_linked_share_becomes_batches_of_n_legs_deterministically_per_seed() -> None:
    """`--linked 0.3 --legs 4`: 30% of moves open a batch of four legs, the same ones per seed."""
    settings = WorkloadSettings(accounts=400, cross_fraction=0.3, linked_fraction=0.3, linked_legs=4, seed=7)
    one, other = Workload(settings, PMAP), Workload(settings, PMAP)
    moves = [one.next() for _ in range(10_000)]
    assert moves == [other.next() for _ in range(10_000)]
    batches = [m for m in moves if m.linked]
    assert 0.28 < len(batches) / len(moves) < 0.32
    assert all(len(m.legs) == 4 for m in batches)
    assert all(len(m.legs) == 1 and m.legs[0] == m for m in moves if not m.linked)
    assert all(m.pending is None for m in batches), "a batch's legs are one-shot"
    reseeded = Workload(replace(settings, seed=8), PMAP)
    assert [bool(m.linked) for m in moves[:200]] != [bool(reseeded.next().linked) for _ in range(200)]


def test_a_batch_s_legs_are_drawn_like_the_rest_of_the_mix_and_span_shards() -> None:
    settings = WorkloadSettings(accounts=400, cross_fraction=0.3, linked_fraction=1.0, linked_legs=3, seed=2)
    workload = Workload(settings, PMAP)
    legs = _flatten([workload.next() for _ in range(5000)])
    assert all(not leg.linked and leg.debit != leg.credit for leg in legs)
    assert all(leg.cross_shard == (PMAP.shard_for(leg.debit) != PMAP.shard_for(leg.credit)) for leg in legs)
    assert 0.27 < sum(leg.cross_shard for leg in legs) / len(legs) < 0.33
    batches = [workload.next() for _ in range(1000)]
    assert (
        sum(len({PMAP.shard_for(a) for leg in b.legs for a in (leg.debit, leg.credit)}) > 1 for b in batches)
        > 900
    )


def test_linked_groups_the_moves_the_seed_would_draw_anyway() -> None:
    """The same transfers with or without --linked, in the same order: only grouped into batches."""
    plain = Workload(WorkloadSettings(accounts=100, seed=5), PMAP)
    linked = Workload(WorkloadSettings(accounts=100, seed=5, linked_fraction=0.5, linked_legs=3), PMAP)
    grouped = _flatten([linked.next() for _ in range(300)])
    assert grouped == [plain.next() for _ in range(len(grouped))]


async def test_a_batch_is_its_own_latency_path_and_counts_its_legs() -> None:
    recorder, t0 = Recorder(), time.monotonic()
    workload = Workload(WorkloadSettings(accounts=50, linked_fraction=1.0, linked_legs=3), PMAP)
    batch, single = workload.next(), Workload(WorkloadSettings(accounts=50), PMAP).next()
    for move, outcome in ((batch, "linked completed"), (single, "completed")):
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        recorder.track(move, t0, answer)
        answer.set_result(outcome)
    assert await recorder.drain(1) == 0
    report = RunReport.of("ledger", "open", 1, recorder, t0, 0.0, 10.0, 0)
    assert "linked" in report.latency
    assert report.latency["linked"].get_total_count() == 1
    assert report.outcomes == Counter({"linked completed": 1, "completed": 1})
    assert (report.sent, report.legs_sent) == (2, 4)
    assert report.legs_per_s == 0.4
    document = report.to_json()
    assert "linked" in document["latency_ms"]
    assert (document["legs_sent"], document["legs_per_s"]) == (4, 0.4)
    assert "4 legs" in report.table()


def test_cpu_per_transfer_counts_each_leg_of_a_batch() -> None:
    """A batch of 3 legs moves money 3 times: CPU is per leg, and the report says so."""
    report = RunReport("ledger", "open @ 1/s", 1.0, 10.0, sent=1_000, legs_sent=2_000)
    report.processes = {
        MACHINE: {"cpu_s": 4.0, "cpu_pct": 40, "rss_mib": 0.0},
        GENERATOR: {"cpu_s": 1.0, "cpu_pct": 10, "rss_mib": 100.0},
    }
    assert report.cpu_per_transfer_ms() == {"machine": 2.0, "ledger": 1.5}
    assert "a linked batch counts as its legs" in report.table()


def test_the_linked_and_legs_options_parse_read_their_variables_and_are_in_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def parsed(*args: str) -> dict[str, Any]:
        return dict(bench.make_context("bench", list(args)).params)

    default = settings_of(parsed())[0]
    assert (default.linked_fraction, default.linked_legs) == (0.0, 3)
    workload, load = settings_of(parsed("--linked", "0.2", "--legs", "5"))
    assert (workload.linked_fraction, workload.linked_legs) == (0.2, 5)
    head = document_of(parsed("--linked", "0.2"), workload, load)["workload"]
    assert (head["linked_fraction"], head["linked_legs"]) == (0.2, 5)
    monkeypatch.setenv("LEDGER_BENCH_LINKED", "0.25")
    monkeypatch.setenv("LEDGER_BENCH_LEGS", "7")
    assert (settings_of(parsed())[0].linked_fraction, settings_of(parsed())[0].linked_legs) == (0.25, 7)
    for bad in (("--linked", "1.5"), ("--legs", "1"), ("--legs", "101")):
        with pytest.raises(click.BadParameter):
            parsed(*bad)
