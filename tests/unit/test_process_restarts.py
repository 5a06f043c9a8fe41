"""Regression, found by the chaos suite (`ledger chaos`, seed 1): a PostgreSQL restart failed a
relay's and a coordinator's connections in places no inner retry covered, the processes exited,
and no transfer was answered after the restart. A process's outermost loop now starts its work
again; only an error that says retrying is pointless ends it."""

from __future__ import annotations

import asyncio

import pytest

from infra.processes import run_until_signalled
from shards.adapters.postgres_shard_store import FencedOut


def test_a_process_outlives_a_database_restart() -> None:
    calls: list[int] = []

    async def main(stop: asyncio.Event) -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ConnectionResetError("the database restarted")
        if len(calls) == 2:
            raise ExceptionGroup("a task group", [OSError("connect call failed")])

    run_until_signalled(main)
    assert calls == [0, 1, 2]


def test_a_fenced_out_worker_still_stops() -> None:
    calls: list[int] = []

    async def main(stop: asyncio.Event) -> None:
        calls.append(1)
        raise ExceptionGroup("a task group", [FencedOut("shard 0 was claimed by epoch 2")])

    with pytest.raises(ExceptionGroup):
        run_until_signalled(main)
    assert calls == [1]
