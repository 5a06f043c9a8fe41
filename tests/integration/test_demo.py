"""The README's main command runs here as a user runs it, and passes its own reconciliation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engines import REPO

LEDGER = str(Path(sys.executable).with_name("ledger"))


def test_the_demo_runs_and_reconciles(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("LEDGER_DATABASE_URL"):
        pytest.skip("the demo starts its own stack; external servers are set")
    env = {**os.environ, "LEDGER_HOME": str(tmp_path), "LEDGER_CACHE_DIR": str(REPO / ".ledger" / "cache")}
    done = subprocess.run(
        [LEDGER, "demo", "--transfers", "2000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "2000 transfers" in out
    assert "reconciliation: 0 violations" in out
    for outcome in ("completed", "rejected (insufficient_funds)", "compensated (account_frozen)"):
        assert outcome in out, outcome
    assert '"state": "compensated"' in out, "a status query of a compensated saga is shown"
    # The card authorization scene: held (pending), settled for less, balances at each moment.
    assert "card authorization:" in out
    assert '"state": "pending"' in out
    assert '"state": "completed", "reason": null, "amount": 9500' in out
    assert '"pending_debits": 12000' in out, "the hold shows as a pending debit"
    assert '"pending_credits": 12000' in out, "and as the merchant's pending credit"
    # The linked scenes: a three-way split across shards and an EUR->USD pair, each whole.
    assert "split payment:" in out
    assert "exchange:" in out
    assert out.count('"state": "completed", "reason": null, "amount": null') >= 2, "both batches completed"
    assert "reserving:" in out
    # The monitoring scene: a floor crossed and cleared twice (one alert each time), a breaker.
    assert "monitoring:" in out
    assert out.count('"state": "fired"') == 2
    assert out.count('"state": "cleared"') == 2
    assert '"reason": "shard_unavailable"' in out, "a payment to the open shard, refused at once"
    assert '"state": "open", "latched": true' in out
    assert "stack stopped" in out
    assert " in EUR" in out, "customers hold two currencies, each funded by its own issuance account"
    assert " in USD" in out
    # Quiet start (issue 13, item 5): topics are led before any client starts.
    noise = [
        line
        for line in (out + done.stderr).splitlines()
        if "NotLeaderForPartition" in line or "Unable connect" in line
    ]
    assert noise == [], noise[:5]
