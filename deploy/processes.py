"""Engine processes: each in its own process group, stoppable by a record that survives its owner.

A `ProcessRecord` is plain data (pid, start time, log), so `ledger dev down` can stop processes that
an earlier `ledger dev up` started. The start time guards against signalling a recycled pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from schemas.errors import LedgerError

_PR_SET_PDEATHSIG = 1

# Children this process started, kept so they are reaped (not left as zombies) when stopped.
_OWNED: dict[int, subprocess.Popen[bytes]] = {}


class EngineError(LedgerError):
    """A local engine could not be fetched, started or stopped. The message names its log."""

    retriable = False


def free_port() -> int:
    """A loopback port that was free a moment ago (the engine's bind is the real check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child after fork (and after any setuid, which would clear it). If the owner
    # dies, even by SIGKILL, the kernel kills the engine: tests and the demo can never leak one.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class ProcessRecord:
    """What is needed to find, signal and diagnose a started engine process later."""

    name: str
    pid: int
    create_time: float
    log_path: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            log_path=str(raw["log_path"]),
        )

    def _process(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(self.pid)
            # A recycled pid belongs to some other process: never signal that one.
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                proc.wait(timeout=0)
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            return None

    def alive(self) -> bool:
        return self._process() is not None

    def send(self, sig: signal.Signals) -> None:
        """Signal the whole process group (the engine and every child it forked)."""
        if self._process() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Ask the group to stop with `sig`; SIGKILL whatever is left after `timeout`.

        Returns the exit code when this process started it (negative: killed by that signal).
        Stopping a process that is already gone is harmless.
        """
        proc = self._process()
        code = self._stop_group(proc, sig, timeout) if proc is not None else None
        owned = _OWNED.pop(self.pid, None)
        if owned is not None:
            owned.poll()  # reap it, if psutil did not already
        return code

    def _stop_group(self, proc: psutil.Process, sig: signal.Signals, timeout: float) -> int | None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        code: int | None = None
        try:
            code = proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            code = proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        # Children that outlived the leader (PostgreSQL backends) share its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return code

    def log_tail(self, lines: int = 30) -> str:
        return tail(Path(self.log_path), lines)


def reap(record: ProcessRecord) -> int | None:
    """The exit code (negative: killed by that signal) of a process started here, once it has ended;
    None while it runs, and for a process this one did not start (see `ProcessRecord.alive`)."""
    popen = _OWNED.get(record.pid)
    if popen is None:
        return None
    code = popen.poll()
    if code is not None:
        del _OWNED[record.pid]
    return code


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    tie_to_owner: bool,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> ProcessRecord:
    """Start `argv` in a new session (its own process group) with output appended to `log_path`.

    `tie_to_owner=True` makes the kernel kill it when the calling thread's process dies; call it
    from the main thread. `ledger dev up` passes False because its engines outlive the command.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(  # noqa: S603 - argv is built by this package, never from input
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tie_to_owner else None,  # noqa: PLW1509
            env=dict(env) if env is not None else None,
            user=user,
        )
    _OWNED[popen.pid] = popen
    create_time = psutil.Process(popen.pid).create_time()
    return ProcessRecord(name=name, pid=popen.pid, create_time=create_time, log_path=str(log_path))


def run_checked(argv: Sequence[str], what: str, *, user: str | None = None, timeout: float = 300) -> str:
    """Run a short set-up command; raise EngineError with its output if it fails."""
    try:
        done = subprocess.run(  # noqa: S603
            list(argv), capture_output=True, text=True, timeout=timeout, user=user, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineError(f"{what} failed: {' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        raise EngineError(
            f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def unprivileged_user() -> str | None:
    """The account engines run as: None (ourselves) unless we are root.

    PostgreSQL refuses to run as root; Debian's postgresql package creates a `postgres` account.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise EngineError(
            "running as root needs an unprivileged account for PostgreSQL: "
            "apt-get install postgresql-15 creates `postgres` (or run as a normal user)"
        ) from None
    return "postgres"


def wait_until(deadline: float, interval: float = 0.2) -> bool:
    """Sleep one interval; False once the monotonic deadline has passed."""
    if time.monotonic() >= deadline:
        return False
    time.sleep(interval)
    return True
