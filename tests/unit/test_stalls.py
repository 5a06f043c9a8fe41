"""Work that stops making progress is ended, not waited on forever.

Regression for what `ledger chaos` (seed 12) found: after a PostgreSQL restart one coordinator's
batch never returned. It kept its partitions (it still heartbeat), so their transfers waited about
90 s, until the nemesis happened to kill that coordinator. Now an attempt past its bound raises
Stalled, which the process's outermost loop answers by starting again from fresh connections."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import asyncpg
import pytest

from coordinator.bootstrap import RunSettings, _with_retries
from infra import processes
from infra.postgres_pool import close_pool
from infra.processes import _final
from schemas.errors import Stalled


async def test_chaos_seed_12_a_coordinator_batch_that_never_returns_is_stalled() -> None:
    async def wedged() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Stalled) as raised:
        await _with_retries(wedged, asyncio.Event(), RunSettings(stall_after_s=0.1))
    assert raised.value.retriable
    assert not _final(raised.value)  # the process starts its work again rather than exit


async def test_a_batch_within_its_bound_is_not_stalled() -> None:
    done = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        done.append(True)

    await _with_retries(slow, asyncio.Event(), RunSettings(stall_after_s=1.0))
    assert done == [True]


class WedgedPool:
    terminated = False

    async def close(self) -> None:
        await asyncio.Event().wait()

    def terminate(self) -> None:
        self.terminated = True


async def test_a_pool_that_will_not_close_is_terminated() -> None:
    pool = WedgedPool()
    await close_pool(cast(asyncpg.Pool, cast(Any, pool)), within_s=0.05)
    assert pool.terminated


async def test_a_failure_after_a_healthy_run_restarts_promptly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The restart pause doubles for failures in a row and starts again after a healthy run."""
    monkeypatch.setattr(processes, "FIRST_PAUSE_S", 0.01)
    now = [0.0]
    runs = iter([0.0, 0.0, 0.0, processes.HEALTHY_AFTER_S, 0.0])  # how long each run lasts
    stop = asyncio.Event()

    async def main(_stop: asyncio.Event) -> None:
        ran = next(runs, None)
        if ran is None:
            stop.set()
            return
        now[0] += ran
        raise OSError("the database went away")

    with caplog.at_level(logging.ERROR, logger="ledger"):
        await processes._restarting(main, stop, clock=lambda: now[0])
    pauses = [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records]
    assert pauses == ["0.01s", "0.02s", "0.04s", "0.01s", "0.02s"]
