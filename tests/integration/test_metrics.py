"""A real `ledger shard run --metrics-port P` serves its series on /metrics over HTTP, and a real
Prometheus (the Debian package, where installed) scrapes them and answers a query for them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deploy.ledger_init import init_ledger
from deploy.processes import ProcessRecord, spawn
from infra.config import LedgerConfig
from schemas.shard_messages import OpenAccount
from tests.ledger_harness import fresh_config, new_id, send

pytestmark = pytest.mark.integration
LEDGER = str(Path(sys.executable).with_name("ledger"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # a local test endpoint
        return str(response.read().decode())


async def _until(url: str, found: str, within_s: float, process: ProcessRecord | None = None) -> str:
    """The text at `url` once it contains `found` (asked every 0.2 s)."""
    deadline, text = time.monotonic() + within_s, ""
    while time.monotonic() < deadline:
        if process is not None:
            assert process.alive(), process.log_tail()
        try:
            text = await asyncio.to_thread(_get, url)
        except OSError:
            text = ""
        if found in text:
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"{found!r} not at {url} within {within_s}s; last answer:\n{text[-2000:]}")


@pytest.fixture
async def metered_shard(kafka_bootstrap: str, database_url: str) -> AsyncIterator[tuple[LedgerConfig, int]]:
    """A one-shard ledger whose worker runs as a process serving metrics; yields (config, port)."""
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 1)
    port = _free_port()
    log = Path(tempfile.mkdtemp(prefix="ledger-metrics-")) / "worker.log"
    argv = [LEDGER, "shard", "run", "--shard", "0", "--metrics-port", str(port)]
    worker = spawn("shard-0", argv, log, tie_to_owner=True, env={**os.environ, **config.as_env()})
    try:
        await _until(f"http://127.0.0.1:{port}/metrics", "ledger_shard_batches_total{", 60, worker)
        yield config, port
    finally:
        # Its exit code is not this test's subject (tests/integration/test_shard_crash.py checks it).
        worker.stop(signal.SIGTERM)


async def test_a_shard_worker_serves_its_series_on_metrics(metered_shard: tuple[LedgerConfig, int]) -> None:
    config, port = metered_shard
    await send(
        config, 0, [OpenAccount(new_id(), "metered-1", "EUR"), OpenAccount(new_id(), "metered-2", "EUR")]
    )
    text = await _until(
        f"http://127.0.0.1:{port}/metrics", 'otel_scope_version="",outcome="applied",shard="0"} 2.0', 60
    )
    for series in (
        "ledger_shard_batch_duration_seconds_bucket{",
        "ledger_shard_retries_total{",
        "ledger_shard_consumer_lag{",
        'service_name="ledger-shard"',
    ):
        assert series in text


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="no prometheus binary (apt-get install prometheus)"
)
async def test_a_real_prometheus_scrapes_a_shard_worker(metered_shard: tuple[LedgerConfig, int]) -> None:
    config, port = metered_shard
    await send(config, 0, [OpenAccount(new_id(), "scraped-1", "EUR")])
    home = Path(tempfile.mkdtemp(prefix="ledger-prometheus-"))
    (home / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: ledger-shard\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    web = _free_port()
    prometheus = subprocess.Popen(  # noqa: ASYNC220 (started once; the Debian package's binary, found on PATH)
        [
            "prometheus", f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL, stderr=(home / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:
        query = urllib.parse.urlencode({"query": 'ledger_shard_commands_total{outcome="applied",shard="0"}'})
        answer = await _until(f"http://127.0.0.1:{web}/api/v1/query?{query}", '"value"', 60)
        (result,) = json.loads(answer)["data"]["result"]
        assert result["metric"]["job"] == "ledger-shard"
        assert float(result["value"][1]) >= 1
    finally:
        prometheus.terminate()
        prometheus.wait(30)
