"""The short chaos run CI makes: every fault kind at least once against a 3-broker, 4-shard,
2-coordinator local stack, then every invariant checked. Longer runs: `ledger chaos --duration`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.chaos.checker import INVARIANTS
from deploy.chaos.iptables import unavailable_reason
from deploy.chaos.schedule import CUT_KINDS, FAULT_KINDS, every_kind_once_s
from tests.engines import REPO

LEDGER = str(Path(sys.executable).with_name("ledger"))
pytestmark = pytest.mark.chaos


def test_a_short_chaos_run_violates_no_invariant(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("LEDGER_DATABASE_URL"):
        pytest.skip("the chaos suite kills brokers and PostgreSQL it starts itself; external servers are set")
    env = {**os.environ, "LEDGER_HOME": str(tmp_path), "LEDGER_CACHE_DIR": str(REPO / ".ledger" / "cache")}
    out = tmp_path / "chaos.json"
    # Every kind once: a first calm, then a 5 s fault and a 2 s calm per kind (98 s for 14 kinds).
    duration = f"{every_kind_once_s(len(FAULT_KINDS), fault_s=5, calm_s=2):g}"
    command = [LEDGER, "chaos", "--duration", duration, "--fault-s", "5", "--calm-s", "2", "--settle", "150",
               "--seed", "7", "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["violations"] == {
        name: {"invariant": v["invariant"], "count": 0, "examples": []}
        for name, v in report["violations"].items()
    }, done.stdout[-3000:]
    assert set(report["violations"]) == set(INVARIANTS)  # I9-I12: pending transfers
    # Network cuts need root and iptables; without them they are skipped, with the reason.
    skipped = report["skipped_kinds"]
    assert skipped == ({} if unavailable_reason() is None else dict.fromkeys(CUT_KINDS, unavailable_reason()))
    assert {k for k, n in report["faults_by_kind"].items() if n} == set(FAULT_KINDS) - set(skipped)
    controller = [f for f in report["faults"] if f["kind"] == "kill_controller"]
    assert controller
    assert "(the active controller)" in controller[0]["detail"]
    assert not [f for f in report["faults"] if f["error"]]
    # A corrupted shard: isolated and alerted while corrupted (D1), its latch closed after the heal.
    assert report["detections"]["D1"]["count"] == 0, report["detections"]
    (corrupted,) = [p for p in report["breakers"]["per_fault"] if p["kind"] == "corrupt_shard"]
    assert corrupted["isolated_and_alerted"], corrupted
    assert corrupted["closed_after_heal_s"] is not None, corrupted
    assert report["transfers"]["all_answered_within_bound"]
    assert report["passed"]
    assert done.returncode == 0
