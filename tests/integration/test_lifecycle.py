"""Engines started by a test session never outlive it: failure, Ctrl-C, SIGTERM or SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.processes import ProcessRecord

CASE = Path(__file__).with_name("lifecycle_case.py")


def _wait_for(path: Path, child: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while not path.exists():
        assert child.poll() is None, f"child pytest ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"engines not up in 180 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.parametrize("ending", ["test-failure", "SIGINT", "SIGTERM", "SIGKILL"])
def test_engines_stop_however_the_session_ends(tmp_path: Path, ending: str) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("LEDGER_DATABASE_URL"):
        pytest.skip("checks engines the test session starts itself; external servers are set")
    pids_file, log = tmp_path / "pids.json", tmp_path / "child.log"
    env = {
        **os.environ,
        "LEDGER_PIDS_OUT": str(pids_file),
        "LEDGER_TEST_BACKEND": "local",
        # If the child ever hangs, SIGABRT makes it print where every thread is.
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
    }
    if ending != "test-failure":
        env["LEDGER_CASE_WAIT"] = "1"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASE)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=CASE.parents[2],
        )  # fmt: skip
    try:
        _wait_for(pids_file, child, log)
        if ending != "test-failure":
            child.send_signal(getattr(signal, ending))
        try:
            returncode = child.wait(timeout=240)  # teardown stops two engines; this machine is shared
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGABRT)
            child.wait(timeout=30)
            raise AssertionError(
                f"the child session hung after {ending}:\n{log.read_text()[-6000:]}"
            ) from None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    records = [ProcessRecord.from_json(raw) for raw in json.loads(pids_file.read_text())]
    assert sorted(r.name for r in records) == ["kafka-1", "postgres"]
    deadline = time.monotonic() + 30  # after SIGKILL the kernel's parent-death signal does the work
    while any(r.alive() for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [f"{r.name} (pid {r.pid})" for r in records if r.alive()]
    assert not left, f"engines outlived a session that ended by {ending}: {left}"
    if ending == "test-failure":
        assert returncode == pytest.ExitCode.TESTS_FAILED, log.read_text()[-3000:]
    if ending == "SIGKILL":
        # Nothing ran teardown: remove the data directory the dead session left behind.
        shutil.rmtree(Path(records[0].log_path).parents[1], ignore_errors=True)
