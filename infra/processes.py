"""A long-running process's outermost loop: started again after failures, stopped by signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from infra import event_loop
from schemas.errors import LedgerError

log = logging.getLogger("ledger")


def _final(error: BaseException) -> bool:
    """Whether `error` (or any error in a task group's) says retrying is pointless."""
    if isinstance(error, BaseExceptionGroup):
        return any(_final(e) for e in error.exceptions)
    return isinstance(error, LedgerError) and not error.retriable


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)`; SIGTERM or Ctrl-C sets `stop`, so the work in hand is finished cleanly.

    This is a process's outermost loop: when `main` fails it is started again, from fresh
    connections, after a growing pause. A database restart or a broker lost mid-call can fail it
    in places no inner retry covers, and the process must outlive those. Only an error that says
    it is not worth retrying (a newer worker fenced this one out, bad configuration) ends it.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await _restarting(main, stop)
        finally:
            # uvloop does not give the signals back when it closes: a process (or a test session)
            # that goes on would keep a closed loop's handler, and Ctrl-C would do nothing.
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    event_loop.run(runner(), os.environ)


FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 30.0
HEALTHY_AFTER_S = 60.0
"""A run that lasted this long before it failed was healthy: the next restart is prompt again."""


async def _restarting(
    main: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    pause = FIRST_PAUSE_S
    while True:
        started = clock()
        try:
            await main(stop)
            return
        except Exception as e:
            if stop.is_set() or _final(e):
                raise
            if clock() - started >= HEALTHY_AFTER_S:
                # The pause grows for failures in a row, not over a process's life: otherwise a
                # worker that met six faults in an hour waits 30 s after every later one.
                pause = FIRST_PAUSE_S
            log.exception("stopped by %s; starting again in %.2gs", type(e).__name__, pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return
        pause = min(pause * 2, LONGEST_PAUSE_S)
