"""A coordinator's OpenTelemetry metrics (served on /metrics by infra/metrics.py): transfers finished,
saga step latency per shard, sagas in flight, and each shard's circuit breaker as it sees it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import asyncpg
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from coordinator.saga.admission import SHARD_UNAVAILABLE
from infra.metrics import LATENCY_BUCKETS_S, capped
from schemas.breaker import BreakerState
from schemas.public import PENDING_REASONS, TRANSFER_REASONS
from schemas.shard_messages import REPLY_REASONS

log = logging.getLogger(__name__)

KNOWN_REASONS: Final = TRANSFER_REASONS | PENDING_REASONS | REPLY_REASONS | {
    SHARD_UNAVAILABLE, "transfer_id_reused",
}  # fmt: skip
"""Every reason code a result may carry; any other is counted as `other` (a label's values stay few)."""
BREAKER_LEVELS: Final = {"closed": 0, "half_open": 1, "open": 2}
OPEN_SAGAS_SQL: Final = (
    # The predicate of the transfers_due partial index: a count the index answers alone.
    "SELECT status, count(*) FROM transfers WHERE status IN ('in_flight', 'pending')"
    " AND pending_id IS NULL AND batch_id IS NULL GROUP BY status"
)


class CoordinatorMetrics:
    """The coordinator's instruments (SagaFigures, coordinator/service/figures.py), made once per
    process: a coordinator started again after a failure points them at its own breakers."""

    def __init__(self, meter: Meter) -> None:
        self._finished = meter.create_counter(
            "ledger.coordinator.transfers.finished", unit="{transfer}",
            description="Transfers that reached a final state, by state and reason",
        )  # fmt: skip
        self._step = meter.create_histogram(
            "ledger.coordinator.step.duration", unit="s",
            description="From a saga step's command being decided to its shard's reply being read, "
                        "both by this coordinator",
            explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS_S),
        )  # fmt: skip
        meter.create_observable_gauge(
            "ledger.coordinator.sagas.open", [self._observe_open], unit="{saga}",
            description="Sagas in flight or holding (ledger-wide, refreshed at most every 15 s)",
        )  # fmt: skip
        meter.create_observable_gauge(
            "ledger.coordinator.breaker.state", [self._observe_breakers],
            description="Each shard's circuit breaker as this coordinator follows it: "
                        "0 closed, 1 half-open, 2 open",
        )  # fmt: skip
        self._labels: dict[tuple[str, str | None], dict[str, str]] = {}
        self._shard_labels: dict[int, dict[str, int]] = {}
        self.breakers: Callable[[], Mapping[int, BreakerState]] = dict
        self.shard_count = 0
        self.open_sagas: dict[str, int] = {}
        self.scraped = True
        """Set by a scrape (a plain bool: the scrape runs on another thread), cleared by a count."""

    # --- SagaFigures ---------------------------------------------------------------------------

    def finished(self, state: str, reason: str | None, count: int = 1) -> None:
        labels = self._labels.get((state, reason))
        if labels is None:  # at most states x known reasons of them: cached, not built per transfer
            labels = self._labels[state, reason] = {"state": state, "reason": capped(reason, KNOWN_REASONS)}
        self._finished.add(count, labels)

    def answered(self, shard: int, took_ms: int) -> None:
        labels = self._shard_labels.get(shard)
        if labels is None:
            labels = self._shard_labels[shard] = {"shard": shard}
        self._step.record(max(took_ms, 0) / 1000, labels)

    # --- observed at a scrape (prometheus_client's thread: reads only) -----------------------------

    def follow(self, breakers: Callable[[], Mapping[int, BreakerState]], shard_count: int) -> None:
        """Report the breakers `breakers()` returns (a coordinator's `Breakers.latest`, a mapping it
        replaces on each change) for shards 0 to `shard_count - 1` (one never changed is closed)."""
        self.breakers, self.shard_count = breakers, shard_count

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        latest = self.breakers()
        for shard in range(self.shard_count):
            state = latest.get(shard)
            yield Observation(BREAKER_LEVELS.get(state.state, 0) if state else 0, {"shard": shard})

    def _observe_open(self, options: CallbackOptions) -> Iterable[Observation]:
        self.scraped = True
        return [Observation(n, {"state": state}) for state, n in list(self.open_sagas.items())]

    async def count_open_sagas(self, pool: asyncpg.Pool, stop: asyncio.Event, every_s: float = 15.0) -> None:
        """Every `every_s`, if a scrape read the count since, count the open sagas again: a scrape
        never waits for the database, and a process nobody scrapes never asks it."""
        while not stop.is_set():
            if self.scraped:
                self.scraped = False
                await self._count(pool)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def _count(self, pool: asyncpg.Pool) -> None:
        try:
            async with asyncio.timeout(5):
                rows = await pool.fetch(OPEN_SAGAS_SQL)
        except (OSError, TimeoutError, asyncpg.PostgresError) as e:  # a gap in a graph, no more
            log.warning("open sagas not counted: %s", e)
            return
        self.open_sagas = {"in_flight": 0, "pending": 0} | {r["status"]: int(r["count"]) for r in rows}


@functools.cache
def coordinator_metrics() -> CoordinatorMetrics:
    """This process's coordinator instruments, on the global meter (a no-op one when metrics are off)."""
    return CoordinatorMetrics(metrics.get_meter("ledger.coordinator"))
