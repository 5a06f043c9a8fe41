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
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [LEDGER, "bench", "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] >= 1
    ledger, baseline = report["runs"]
    for run in (ledger, baseline):
        assert run["passed"]
        assert run["missing"] == 0
        assert run["answered"] == run["sent"] > 0
        assert set(run["latency_ms"]["all"]) == {"p50", "p95", "p99", "p99.9", "max"}
    assert {"coordinator", "kafka-1", "postgres", "shard-0"} <= set(ledger["processes"])
    # The same seeded workload: the ledger and the baseline agree on every outcome.
    expected = {"completed": baseline["outcomes"]["completed"]}
    expected["rejected (insufficient_funds)"] = baseline["outcomes"]["rejected"]
    assert ledger["outcomes"] == expected
    assert "ledger / baseline throughput" in done.stdout
