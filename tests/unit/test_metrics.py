"""The metrics (issue 16, item 7): what a shard batch and a coordinator batch did, read back from the
Prometheus exporter's registry as a scrape would see it. No socket: tests/integration/test_metrics.py
serves them over HTTP."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry

from coordinator.adapters.otel_metrics import CoordinatorMetrics
from coordinator.bootstrap import RunSettings, _handle, _with_retries
from coordinator.failpoints import Failpoints
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from coordinator.service.ports import VersionConflict
from infra.metrics import MetricsEndpoint, capped, metrics_endpoint
from schemas.breaker import BreakerState
from schemas.errors import ConfigurationError, StoreUnavailable
from schemas.shard_messages import PostTransfer
from shards.adapters.otel_metrics import ShardMetrics
from shards.domain.model import Account
from shards.service.worker import ShardWorker, WorkerSettings
from tests.fakes import FakeCheckpoints, FakeCommandSource, FakeSagaStore, FakeShardStore
from tests.unit.test_internal_auth_edges import (
    ALICE,
    BOB,
    NS,
    PMAP,
    command_record,
    decoded,
    live_saga,
    rejection_of,
)
from tests.unit.test_services_with_fakes import reply_record


def _exporter() -> tuple[CollectorRegistry, MeterProvider]:
    registry = CollectorRegistry()
    return registry, MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])


def _samples(registry: CollectorRegistry, name: str, **labels: str) -> Iterator[float]:
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                yield s.value


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The one sample `name` with these labels (among others), None when there is none."""
    found = list(_samples(registry, name, **labels))
    assert len(found) <= 1, f"{name} {labels}: {found}"
    return found[0] if found else None


def _id() -> str:
    return str(uuid.uuid4())


def test_a_shard_batch_is_counted_by_outcome_and_timed() -> None:
    registry, provider = _exporter()
    metered = ShardMetrics(provider.get_meter("ledger.shard"))
    store = FakeShardStore([Account(ALICE, "EUR", posted=100), Account(BOB, "EUR")])
    store.fail_next_write(StoreUnavailable("connection reset (fake)"))
    worker = ShardWorker(
        WorkerSettings(0), NS, store, FakeCommandSource(), FakeCheckpoints(), PMAP, figures=metered.figures(0)
    )
    metered.watch(0, worker.stats, lambda: 42)
    paid = PostTransfer(_id(), _id(), ALICE, BOB, 40, "EUR")
    too_much = PostTransfer(_id(), _id(), ALICE, BOB, 1_000, "EUR")
    asyncio.run(worker.process([command_record(paid, 0), command_record(too_much, 1)], asyncio.Event()))

    def shard0(name: str, **labels: str) -> float | None:
        return value(registry, name, shard="0", **labels)

    assert shard0("ledger_shard_commands_total", outcome="applied") == 1
    assert shard0("ledger_shard_commands_total", outcome="rejected") == 1
    assert shard0("ledger_shard_commands_total", outcome="dead_lettered") == 0
    assert shard0("ledger_shard_batches_total") == 1
    assert shard0("ledger_shard_retries_total") == 1
    assert shard0("ledger_shard_consumer_lag") == 42
    assert shard0("ledger_shard_batch_duration_seconds_count") == 1
    assert shard0("ledger_shard_batch_duration_seconds_bucket", le="+Inf") == 1
    assert worker.figures.commands == 2, "the telemetry topic's figures still count"


def test_a_restarted_worker_replaces_its_predecessor_and_lag_unknown_is_left_out() -> None:
    registry, provider = _exporter()
    metered = ShardMetrics(provider.get_meter("ledger.shard"))
    old = ShardWorker(WorkerSettings(1), NS, FakeShardStore([]), FakeCommandSource(), FakeCheckpoints(), PMAP)
    old.stats.batches = 7
    metered.watch(1, old.stats, lambda: 3)
    new = ShardWorker(WorkerSettings(1), NS, FakeShardStore([]), FakeCommandSource(), FakeCheckpoints(), PMAP)
    metered.watch(1, new.stats, lambda: None)
    assert value(registry, "ledger_shard_batches_total", shard="1") == 0
    assert value(registry, "ledger_shard_consumer_lag", shard="1") is None


def _coordinator(metered: CoordinatorMetrics) -> Coordinator:
    return Coordinator(CoordinatorSettings(), NS, PMAP, lambda: 2_000, figures=metered)


def test_a_finished_transfer_is_counted_once_though_its_batch_was_retried() -> None:
    registry, provider = _exporter()
    metered = CoordinatorMetrics(provider.get_meter("ledger.coordinator"))
    rec = live_saga()  # started at 1000 ms; the reply is read at 2000 ms
    store = FakeSagaStore([rec])
    store.fail_next_write(VersionConflict("another coordinator changed a saga (fake)"))
    reply = rejection_of(rec)
    batch = decoded([reply_record(reply, 7)])
    coordinator = _coordinator(metered)
    coordinator.step_clock.decided([reply.in_reply_to], 1_000)  # this process sent the step
    work = functools.partial(_handle, store, coordinator, batch, Failpoints(), lambda rows: None)
    asyncio.run(_with_retries(work, asyncio.Event(), RunSettings(max_backoff_s=0.01)))

    finished = "ledger_coordinator_transfers_finished_total"
    assert value(registry, finished, state="rejected", reason="insufficient_funds") == 1
    assert value(registry, "ledger_coordinator_step_duration_seconds_count", shard="0") == 1
    assert value(registry, "ledger_coordinator_step_duration_seconds_sum", shard="0") == 1.0


def test_a_reply_to_a_step_another_coordinator_sent_is_not_timed() -> None:
    """Regression, ledger chaos (seed 3): a coordinator that took over a dead one's partitions
    timed their replies from the saga rows, so every shard looked slow to it at once, and that
    fleet-wide "anomaly" hid a slow shard next to it."""
    registry, provider = _exporter()
    metered = CoordinatorMetrics(provider.get_meter("ledger.coordinator"))
    rec = live_saga()  # its step was decided by another process at 1000 ms
    batch = decoded([reply_record(rejection_of(rec), 7)])
    work = functools.partial(
        _handle, FakeSagaStore([rec]), _coordinator(metered), batch, Failpoints(), lambda rows: None
    )
    asyncio.run(_with_retries(work, asyncio.Event(), RunSettings(max_backoff_s=0.01)))

    assert (
        value(
            registry,
            "ledger_coordinator_transfers_finished_total",
            state="rejected",
            reason="insufficient_funds",
        )
        == 1
    )
    assert value(registry, "ledger_coordinator_step_duration_seconds_count", shard="0") in (None, 0)


def test_reasons_are_capped_to_the_known_codes() -> None:
    registry, provider = _exporter()
    metered = CoordinatorMetrics(provider.get_meter("ledger.coordinator"))
    for reason in ("shard_unavailable", "made-up-by-a-client", None):
        metered.finished("rejected", reason)
    metered.finished("completed", None)
    finished = "ledger_coordinator_transfers_finished_total"
    assert value(registry, finished, state="rejected", reason="shard_unavailable") == 1
    assert value(registry, finished, state="rejected", reason="other") == 1
    assert value(registry, finished, state="completed", reason="none") == 1
    assert capped("insufficient_funds", frozenset({"insufficient_funds"})) == "insufficient_funds"


def test_breakers_are_reported_for_every_shard() -> None:
    registry, provider = _exporter()
    metered = CoordinatorMetrics(provider.get_meter("ledger.coordinator"))
    latest = {
        1: BreakerState(1, "open", False, "slow", "monitor", 3, 0),
        2: BreakerState(2, "half_open", False, "healing", "monitor", 4, 0),
    }
    metered.follow(lambda: latest, 4)
    states = {s: value(registry, "ledger_coordinator_breaker_state", shard=str(s)) for s in range(4)}
    assert states == {0: 0, 1: 2, 2: 1, 3: 0}


class _Pool:
    def __init__(self) -> None:
        self.queries = 0

    async def fetch(self, sql: str) -> Sequence[dict[str, Any]]:
        self.queries += 1
        return [{"status": "in_flight", "count": 5}]


def test_open_sagas_are_counted_only_after_a_scrape_and_served_from_the_cache() -> None:
    registry, provider = _exporter()
    metered = CoordinatorMetrics(provider.get_meter("ledger.coordinator"))
    pool = _Pool()

    async def run_a_while() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(metered.count_open_sagas(pool, stop, every_s=0.01))
        await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(run_a_while())  # counted once at the start: the first scrape finds a number
    assert pool.queries == 1
    assert value(registry, "ledger_coordinator_sagas_open", state="in_flight") == 5
    assert value(registry, "ledger_coordinator_sagas_open", state="pending") == 0
    asyncio.run(run_a_while())  # scraped since: counted again, once
    assert pool.queries == 2


def test_the_endpoint_comes_from_the_option_or_the_standard_variables() -> None:
    assert metrics_endpoint(None, {}) is None, "off by default"
    assert metrics_endpoint(9464, {}) == MetricsEndpoint(9464, "localhost")
    env = {"OTEL_EXPORTER_PROMETHEUS_PORT": "9465", "OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0"}
    assert metrics_endpoint(None, env) == MetricsEndpoint(9465, "0.0.0.0")
    assert metrics_endpoint(9000, env) == MetricsEndpoint(9000, "0.0.0.0"), "the option wins"
    with pytest.raises(ConfigurationError):
        metrics_endpoint(None, {"OTEL_EXPORTER_PROMETHEUS_PORT": "http"})
