"""The event loop every long-running process runs on: uvloop unless told otherwise.

uvloop moves the socket transports asyncio implements in Python (the shard worker's and the
coordinator's largest single cost after their own code: `_SelectorSocketTransport.write`) into C.
`LEDGER_EVENT_LOOP=asyncio` runs the standard loop instead, so the two can be compared in one
sitting (BENCHMARKS.md) and a uvloop problem can be ruled out in the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def loop_factory(environ: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop LEDGER_EVENT_LOOP names (uvloop by default); a name it does not know is an error."""
    name = environ.get("LEDGER_EVENT_LOOP", "uvloop")
    if name not in LOOPS:
        raise ValueError(f"LEDGER_EVENT_LOOP={name!r}: expected one of {', '.join(LOOPS)}")
    return LOOPS[name]


def run(main: Coroutine[Any, Any, T], environ: Mapping[str, str]) -> T:
    """`asyncio.run(main)` on the loop the environment chooses."""
    with asyncio.Runner(loop_factory=loop_factory(environ)) as runner:
        return runner.run(main)
