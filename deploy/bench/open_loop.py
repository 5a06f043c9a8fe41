"""Open-loop load: commands are due at a fixed rate whatever the system does, and latency is
measured from when each was DUE, not when it was sent (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def open_loop(rate: float, count: int, submit: Callable[[int, float], Awaitable[None]]) -> float:
    """Call `submit(i, due)` for i in 0..count-1, each at its due time (monotonic); return t0."""
    t0 = time.monotonic()
    i = 0
    while i < count:
        due_now = min(count, int((time.monotonic() - t0) * rate) + 1)
        while i < due_now:
            await submit(i, t0 + i / rate)
            i += 1
        await asyncio.sleep(0.001)
    return t0
