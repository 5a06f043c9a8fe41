"""Process records: stopping is idempotent and never signals a recycled pid."""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from pathlib import Path

from deploy.processes import ProcessRecord, spawn


def test_stop_is_idempotent_and_kills_the_whole_group(tmp_path: Path) -> None:
    # The shell forks a child sleep: both share the new process group and both must go.
    record = spawn("sh", ["sh", "-c", "sleep 60 & sleep 60"], tmp_path / "log", tie_to_owner=True)
    assert record.alive()
    record.stop(signal.SIGTERM, timeout=5)
    assert not record.alive()
    record.stop()  # again: harmless
    assert not record.alive()


def test_a_stubborn_process_is_killed_after_the_timeout(tmp_path: Path) -> None:
    record = spawn("stubborn", ["sh", "-c", "trap '' TERM; sleep 60"], tmp_path / "log", tie_to_owner=True)
    time.sleep(0.2)  # let the shell install its trap
    started = time.monotonic()
    record.stop(signal.SIGTERM, timeout=1)
    assert not record.alive()
    assert time.monotonic() - started < 10


def test_a_record_whose_pid_was_recycled_is_not_alive_and_not_signalled(tmp_path: Path) -> None:
    record = spawn("sleep", ["sleep", "60"], tmp_path / "log", tie_to_owner=True)
    try:
        impostor = replace(record, create_time=record.create_time - 1000)  # same pid, other process
        assert not impostor.alive()
        impostor.stop(signal.SIGKILL)
        assert record.alive()
    finally:
        record.stop()


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    record = ProcessRecord("x", 123, 456.5, str(tmp_path / "log"))
    assert ProcessRecord.from_json(record.to_json()) == record
