"""The continuous audit: every `every_s` seconds the Auditor reads the whole ledger and the
MonitorService judges what it found (monitor/domain/audit.py).

A plain task beside the faust app (monitor/app.py), not a faust timer: an audit reads every journal
and may take seconds on a large ledger, and nothing about it is Kafka's (no records, no offsets),
so it stays out of the app whose crash handling and shutdown are about consuming. The next audit
starts `every_s` after the last one started, but never sooner than twice the last one's time
after it ended: audits never overlap, and they take at most a third of the monitor's time, which
is also its event loop's (ledger chaos, seed 12: 2-3.5 s audits every 2 s on a grown ledger left
its telemetry unread for 40 s). One that cannot read the ledger is counted and
logged, and judges nothing: an outage clears no alert and confirms no violation. Only the monitor
on breaker duty audits (monitor/service/monitor.py): the others skip their turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from monitor.service.monitor import MonitorService
from monitor.service.ports import Auditor
from schemas.errors import LedgerError


async def audit_forever(
    service: MonitorService,
    auditor: Auditor,
    every_s: float,
    stop: asyncio.Event,
    clock_ms: Callable[[], int],
) -> None:
    """Audit at once, then every `every_s` seconds, until `stop` is set. A non-retriable error is
    raised (a bug or a configuration the process cannot outlive); retriable ones are survived."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            # Off duty another monitor audits: reading every journal twice would find nothing more.
            report = await auditor.audit() if service.on_duty else None
        except LedgerError as e:
            if not e.retriable:
                raise
            service.on_audit_failed(e)
        else:
            if report is not None:
                await service.on_audit(report, clock_ms())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause_after(every_s, time.monotonic() - started))


REST_PER_AUDIT = 2.0
"""Seconds of rest per second an audit took, at least: a third of the time auditing, at most."""


def pause_after(every_s: float, took_s: float) -> float:
    """How long to wait after an audit that took `took_s`, for one every `every_s`."""
    return max(every_s - took_s, REST_PER_AUDIT * took_s)
