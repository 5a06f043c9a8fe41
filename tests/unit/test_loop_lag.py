"""A process sees its own stops: a sleep that wakes late."""

from __future__ import annotations

import asyncio
import time

from infra.loop_lag import LoopLag


async def test_a_blocked_loop_is_seen_late_and_a_read_starts_again() -> None:
    lag, stop = LoopLag(tick_s=0.01), asyncio.Event()
    task = asyncio.create_task(lag.run(stop))
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop is held, as a SIGSTOP would hold it
    await asyncio.sleep(0.05)
    assert lag.read_ms() >= 250
    await asyncio.sleep(0.05)
    assert lag.read_ms() < 250, "the stop was read once"
    stop.set()
    await task
