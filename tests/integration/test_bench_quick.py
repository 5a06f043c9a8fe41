"""`ledger bench --quick` runs end to end (as CI's smoke test): a complete report and a passing
correctness gate for the ledger and the baseline. Speed is reported, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engines import REPO

LEDGER = str(Path(sys.executable).with_name("ledger"))


def test_quick_bench_reports_everything_and_passes_its_gate(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("LEDGER_DATABASE_URL"):
        pytest.skip("the benchmark starts its own stack; external servers are set")
    env = {**os.environ, "LEDGER_HOME": str(tmp_path), "LEDGER_CACHE_DIR": str(REPO / ".ledger" / "cache")}
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    done = subprocess.run(
        [LEDGER, "bench", "--quick", "--json", str(out), "--plot", str(plot)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] >= 1
    assert {"kafka", "postgresql", "aiokafka"} <= set(report["versions"])
    ledger, baseline = report["runs"]
    for run in (ledger, baseline):
        assert run["passed"]
        assert run["missing"] == 0
        assert sum(run["outcomes"].values()) == run["sent"] == 2000  # 200/s for 2 + 8 s
        assert 0 < run["measured"] < run["sent"]  # the warm-up is not measured
        assert set(run["latency_ms"]["all"]) == {"p50", "p95", "p99", "p99.9", "max"}
        assert {"same_shard", "cross_shard", "shard 0", "shard 3"} <= set(run["latency_ms"])
        assert sum(second["answered"] for second in run["timeline"]) == run["sent"]
    processes = {
        "coordinator-0",
        "coordinator-1",
        "kafka-1",
        "postgres",
        "shard-0",
        "shard-3",
        "load generator",
    }
    assert processes | {"(whole machine)"} <= set(ledger["processes"])
    assert ledger["statements"], "pg_stat_statements is preloaded in the local cluster"
    # The same seeded workload: the ledger and the baseline agree on every outcome.
    assert ledger["outcomes"] == baseline["outcomes"]
    assert "ledger / baseline throughput" in done.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
