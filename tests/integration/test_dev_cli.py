"""`ledger dev up` / `status` / `down` from a subprocess, as a developer runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy.processes import ProcessRecord
from tests.engines import REPO

LEDGER = str(Path(sys.executable).with_name("ledger"))


def _http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def _wait_healthy(url: str, within_s: float = 60) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if _http_status(url) == 200:
                return True
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    return False


def _ledger(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "LEDGER_DATABASE_URL")}
    env |= {"LEDGER_HOME": str(home), "LEDGER_CACHE_DIR": str(REPO / ".ledger" / "cache")}
    return subprocess.run([LEDGER, *args], env=env, capture_output=True, text=True, timeout=240, check=False)


def test_up_status_down_round_trip(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _ledger(home, "dev", "down").stdout.strip() == "nothing was running"
    assert _ledger(home, "dev", "status").returncode == 3

    up = _ledger(home, "dev", "up", "--shards", "2")
    try:
        assert up.returncode == 0, up.stderr
        endpoints = json.loads(up.stdout)
        assert endpoints["shards"] == 2
        assert endpoints["kafka_bootstrap_servers"].startswith("127.0.0.1:")
        state = json.loads((home / "stack.json").read_text())
        assert (home / "stack.json").stat().st_mode & 0o077 == 0, "the DSN holds a password"
        records = [ProcessRecord.from_json(p) for p in state["processes"]]
        names = ["postgres", "kafka-1", "shard-0", "shard-1", "coordinator", "monitor", "status-api"]
        assert [r.name for r in records] == names
        assert all(r.alive() for r in records), "dev up must leave its engines and workers running"

        status = _ledger(home, "dev", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["health"] == {"kafka": "ok", "postgres": "ok"}

        # The stack made the API a token of its own, readable by its owner only, never printed.
        token_file = Path(endpoints["status_api_token_file"])
        assert token_file.stat().st_mode & 0o077 == 0
        token = token_file.read_text().strip()
        assert token not in up.stdout + up.stderr
        api = endpoints["status_api_url"]
        assert _wait_healthy(f"{api}/healthz")
        assert _http_status(f"{api}/transfers") == 401
        assert _http_status(f"{api}/transfers", token[:-1]) == 401
        assert _http_status(f"{api}/transfers", token) == 200

        again = _ledger(home, "dev", "up")
        assert again.returncode == 0
        assert "already up" in again.stdout
    finally:
        down = _ledger(home, "dev", "down")
    assert down.returncode == 0
    assert "kafka-1" in down.stdout
    assert "postgres" in down.stdout
    assert "shard-0" in down.stdout
    assert "shard-1" in down.stdout
    assert "coordinator" in down.stdout
    assert not any(r.alive() for r in records)
    assert not Path(state["data_dir"]).exists()
    assert _ledger(home, "dev", "down").stdout.strip() == "nothing was running"
    assert _ledger(home, "dev", "status").returncode == 3


def test_external_servers_are_used_instead_of_starting_any(
    tmp_path: Path, kafka_bootstrap: str, database_url: str
) -> None:
    env = {
        **os.environ,
        "LEDGER_HOME": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LEDGER_DATABASE_URL": database_url,
    }
    up = subprocess.run(
        [LEDGER, "dev", "up", "--no-workers"], env=env, capture_output=True, text=True, check=False
    )
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["kafka_bootstrap_servers"] == kafka_bootstrap
    assert json.loads((tmp_path / "stack.json").read_text())["processes"] == []
    assert subprocess.run([LEDGER, "dev", "down"], env=env, check=False).returncode == 0


@pytest.mark.parametrize("brokers", ["2", "0"])
def test_unsupported_broker_count_is_refused_before_anything_starts(tmp_path: Path, brokers: str) -> None:
    result = _ledger(tmp_path, "dev", "up", "--brokers", brokers)
    assert result.returncode == 2
    assert "--brokers" in result.stderr
    assert not (tmp_path / "stack.json").exists()
