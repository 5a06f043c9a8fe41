"""The two ways load is offered, and the record of every transfer's answer.

- Open loop: transfers are due at a fixed rate whatever the system does, and each one's latency
  runs from when it was DUE, not when it was sent, so a stall shows as latency instead of hiding
  as a lower send rate (no coordinated omission).
- Closed loop: N clients each keep one transfer outstanding and send the next when it is
  answered. With N large enough the system runs flat out: that is its maximum sustained rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Protocol

from tqdm import tqdm

from deploy.bench.workload import Move, Workload


class Target(Protocol):
    name: str

    def submit(self, move: Move) -> Awaitable[asyncio.Future[str]]:
        """Send one transfer (a two-phase one: its hold, then its post or void; a linked batch: all
        its legs at once); the future resolves to its terminal outcome."""
        ...

    def resends(self) -> Awaitable[int]:
        """Internal commands sent again so far because an answer was late (retry load)."""
        ...


@dataclass(frozen=True)
class Sample:
    started: float
    """Monotonic seconds: when the transfer was due (open loop) or sent (closed loop)."""
    finished: float
    cross_shard: bool
    shard: int
    """The debit account's shard."""
    outcome: str
    two_phase: bool = False
    """A hold then its post or void: latency runs to the end of the whole two-phase path."""
    legs: int = 1
    """Transfers it moves money for: a linked batch's legs (latency runs to the batch's result)."""


class Recorder:
    """Every submitted transfer and, once it is answered, its sample."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.submitted = 0
        self.legs_submitted = 0
        """Transfers submitted, a linked batch counting its every leg."""
        self.open: set[asyncio.Future[str]] = set()

    def track(self, move: Move, started: float, answer: asyncio.Future[str]) -> None:
        self.submitted += 1
        self.legs_submitted += len(move.legs)
        self.open.add(answer)
        answer.add_done_callback(lambda f: self._answered(move, started, f))

    def _answered(self, move: Move, started: float, answer: asyncio.Future[str]) -> None:
        finished = time.monotonic()
        self.open.discard(answer)
        if answer.cancelled():
            return  # left unanswered when the run gave up: counted as missing
        if (error := answer.exception()) is not None:
            self.errors.append(f"{type(error).__name__}: {error}")
            return
        two_phase = move.pending is not None
        self.samples.append(
            Sample(
                started, finished, move.cross_shard, move.debit_shard, answer.result(), two_phase,
                len(move.legs),
            )
        )  # fmt: skip

    async def drain(self, within_s: float) -> int:
        """Wait for the answers still due; return how many never came."""
        if self.open:
            await asyncio.wait(set(self.open), timeout=within_s)
        missing = len(self.open)
        for answer in list(self.open):
            answer.cancel()
        return missing


async def open_loop(
    target: Target, workload: Workload, rate: float, seconds: float, recorder: Recorder
) -> float:
    """Offer `rate` transfers/s for `seconds`; return the start time (monotonic)."""
    count = round(rate * seconds)
    t0 = time.monotonic()
    with _progress(f"{target.name} @ {rate:.0f}/s", seconds, recorder):
        i = 0
        while i < count:
            due_now = min(count, int((time.monotonic() - t0) * rate) + 1)
            while i < due_now:
                move = workload.next()
                recorder.track(move, t0 + i / rate, await target.submit(move))
                i += 1
            await asyncio.sleep(0.001)
    return t0


async def closed_loop(
    target: Target, workload: Workload, clients: int, seconds: float, recorder: Recorder
) -> float:
    """`clients` clients, one transfer outstanding each, for `seconds`; return the start time."""
    t0 = time.monotonic()
    end = t0 + seconds

    async def client() -> None:
        while (started := time.monotonic()) < end:
            move = workload.next()
            answer = await target.submit(move)
            recorder.track(move, started, answer)
            await asyncio.shield(answer)  # a client given up on below leaves its answer open

    with _progress(f"{target.name}, {clients} clients", seconds, recorder):
        running = [asyncio.ensure_future(client()) for _ in range(clients)]
        # Past the end, clients still waiting are given up on; the drain counts their answers.
        await asyncio.wait(running, timeout=seconds + 1.0)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return t0


@contextlib.contextmanager
def _progress(label: str, seconds: float, recorder: Recorder) -> Iterator[None]:
    """A progress bar over the run's seconds (shown on a terminal only), with live counts."""
    bar = tqdm(total=round(seconds), desc=label, unit="s", disable=None, leave=False)

    async def tick() -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            bar.n = min(round(seconds), int(time.monotonic() - start))
            bar.set_postfix(sent=recorder.submitted, answered=len(recorder.samples), open=len(recorder.open))

    ticker = asyncio.ensure_future(tick())
    try:
        yield
    finally:
        ticker.cancel()
        bar.close()
