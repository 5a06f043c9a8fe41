"""`ledger dev up` supervises what it starts, and a second `dev up` resumes a stopped stack
(issue 13, items 3 and 4), driven from subprocesses as a developer runs them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.processes import ProcessRecord
from deploy.stack import recorded_kafka_security
from infra.config import LedgerConfig
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.integration.test_dev_cli import _ledger
from tests.ledger_harness import ResultCollector, new_id, produce_raw

KILLED = ("shard-0", "coordinator", "status-api")


def _state(home: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((home / "stack.json").read_text())
    return state


def _records(state: dict[str, Any]) -> dict[str, ProcessRecord]:
    records = {p["name"]: ProcessRecord.from_json(p) for p in state["processes"]}
    if state.get("supervisor"):
        records["supervisor"] = ProcessRecord.from_json(state["supervisor"])
    return records


def _status(home: Path) -> dict[str, Any]:
    done = _ledger(home, "dev", "status")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _wait_restarted(home: Path, old: dict[str, ProcessRecord], within_s: float = 60) -> dict[str, Any]:
    """`dev status` once each killed process runs again under a new pid, restarted once."""
    deadline = time.monotonic() + within_s
    while True:
        shown = _status(home)["processes"]
        back = {
            n: n in shown
            and shown[n]["alive"]
            and shown[n]["pid"] != old[n].pid
            and shown[n]["restarts"] == 1
            for n in KILLED
        }
        if all(back.values()):
            return dict(shown)
        assert time.monotonic() < deadline, f"not back after {within_s}s: {back}\n{shown}"
        time.sleep(1)


async def _transfer(state: dict[str, Any], *, open_accounts: bool) -> dict[str, object]:
    endpoints = state["endpoints"]
    config = LedgerConfig(
        endpoints["database_url"], endpoints["kafka_bootstrap_servers"],
        kafka_security=recorded_kafka_security(state),
    )  # fmt: skip
    async with ResultCollector(config) as results:
        if open_accounts:
            opens = [
                OpenAccountRequest(new_id(), "issuer", "EUR", 10**9),
                OpenAccountRequest(new_id(), "alice", "EUR"),
            ]
            await produce_raw(config, config.namespace.account_commands,
                              [(o.account_id.encode(), encode_public(o)) for o in opens])  # fmt: skip
            await results.wait_for([o.command_id for o in opens], within_s=90)
        tid = new_id()
        transfer = TransferFunds(tid, "issuer", "alice", 1050, "EUR")
        await produce_raw(config, config.namespace.transfers, [(tid.encode(), encode_public(transfer))])
        return (await results.wait_for([tid], within_s=90))[tid]


def test_killed_processes_come_back_and_down_stops_every_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # PostgreSQL runs unprivileged when the tests run as root: every parent of its folder must be
    # searchable by it, which pytest's tmp_path (0700) is not.
    data = Path(tempfile.mkdtemp(prefix="ledger-dev-supervise-")) / "data"
    data.parent.chmod(0o711)
    seen: list[ProcessRecord] = []  # every process the stack ever ran: none may outlive `dev down`
    up = _ledger(home, "dev", "up", "--shards", "2", "--data-dir", str(data))
    try:
        assert up.returncode == 0, up.stderr
        first = _state(home)
        before = _records(first)
        seen += before.values()
        assert before["supervisor"].alive()
        assert all(r.alive() for r in before.values())

        for name in KILLED:
            os.kill(before[name].pid, signal.SIGKILL)
        shown = _wait_restarted(home, before)
        for name in KILLED:
            assert shown[name]["last_restart"] is not None
        seen += _records(_state(home)).values()
        log = (data / "logs" / "supervisor.log").read_text()
        for name in KILLED:
            assert any(name in line and "killed by SIGKILL" in line for line in log.splitlines()), log

        assert asyncio.run(_transfer(_state(home), open_accounts=True))["state"] == "completed"

        again = _ledger(home, "dev", "up", "--data-dir", str(data))
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stdout

        # A supervisor that died is replaced by the next `dev up`, which keeps the processes running.
        os.kill(before["supervisor"].pid, signal.SIGKILL)
        running = _records(_state(home))
        healed = _ledger(home, "dev", "up", "--data-dir", str(data))
        assert healed.returncode == 0, healed.stderr
        after = _records(_state(home))
        seen += after.values()
        assert after["supervisor"].pid != before["supervisor"].pid
        assert after["supervisor"].alive()
        assert {n: r.pid for n, r in after.items() if n != "supervisor"} == {
            n: r.pid for n, r in running.items() if n != "supervisor"
        }
    finally:
        down = _ledger(home, "dev", "down")
    assert down.returncode == 0, down.stderr
    alive = [f"{r.name} ({r.pid})" for r in seen if r.alive()]
    assert not alive, f"left running by `dev down`: {alive}"

    # A second `dev up` on the stopped stack's folder resumes it: same ports, same data.
    resumed = _ledger(home, "dev", "up", "--shards", "2", "--data-dir", str(data))
    try:
        assert resumed.returncode == 0, resumed.stderr
        assert "resum" in resumed.stderr
        state = _state(home)
        assert state["endpoints"]["kafka_bootstrap_servers"] == first["endpoints"]["kafka_bootstrap_servers"]
        assert state["endpoints"]["database_url"] == first["endpoints"]["database_url"]
        seen += _records(state).values()
        # The accounts opened before the stop are still there.
        assert asyncio.run(_transfer(state, open_accounts=False))["state"] == "completed"
    finally:
        purged = _ledger(home, "dev", "down", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not [r for r in seen if r.alive()]
    assert not data.exists()
    shutil.rmtree(data.parent, ignore_errors=True)


def test_a_data_folder_that_cannot_be_resumed_says_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "postgres" / "data").mkdir(parents=True)
    (data / "postgres" / "data" / "PG_VERSION").write_text("15\n")
    up = _ledger(tmp_path / "home", "dev", "up", "--data-dir", str(data))
    assert up.returncode == 2
    assert "Traceback" not in up.stderr
    assert "initdb" not in up.stderr
    assert "choose another --data-dir" in up.stderr
    assert not (tmp_path / "home" / "stack.json").exists()
