"""The supervisor of a `ledger dev up` stack (`ledger dev supervise`): one detached process that keeps
the stack's processes running, restarting each that dies as deploy/supervision.py decides.

It reads what to run from the state file (`supervised`: name, argv, environment, account, log),
takes over whatever already runs (the engines `dev up` started; everything, when it replaces a
supervisor that died), starts the rest, and records after every change the current pids, restart
counts and itself in the state file. It is the file's only writer while it runs. On SIGTERM it
stops restarting and exits, leaving the processes to `ledger dev down`, which stops it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from deploy.processes import EngineError, ProcessRecord, reap, spawn
from deploy.stack import load_state, write_state
from deploy.supervision import (
    Backoff,
    Child,
    Event,
    Exited,
    Log,
    Start,
    Started,
    Tick,
    adopt,
    decide,
    describe_exit,
)

POLL_S = 0.25


@dataclass(frozen=True)
class ChildSpec:
    """How to start one supervised process: its environment is the supervisor's plus `env`."""

    name: str
    argv: tuple[str, ...]
    log_path: str
    env: Mapping[str, str]
    user: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "argv": list(self.argv), "log_path": self.log_path,
                "env": dict(self.env), "user": self.user}  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ChildSpec:
        return cls(str(raw["name"]), tuple(raw["argv"]), str(raw["log_path"]),
                   {str(k): str(v) for k, v in raw["env"].items()}, raw.get("user"))  # fmt: skip


def supervisor_log(state: Mapping[str, Any]) -> Path:
    return Path(state["data_dir"]) / "logs" / "supervisor.log"


def when(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds") if t is not None else None


class Supervisor:
    """The thin part: starts, watches and records processes; every decision is `decide`'s."""

    def __init__(self, home: Path, backoff: Backoff) -> None:
        state = load_state(home)
        if state is None or not state.get("supervised"):
            raise EngineError(f"nothing to supervise in {home / 'stack.json'}")
        self.home, self.backoff, self.state = home, backoff, state
        self.specs = {s.name: s for s in map(ChildSpec.from_json, state["supervised"])}
        self.log_path = supervisor_log(state)
        me = psutil.Process()
        self.me = ProcessRecord("supervisor", me.pid, me.create_time(), str(self.log_path))
        recorded = {p["name"]: ProcessRecord.from_json(p) for p in state.get("processes", [])}
        counts: Mapping[str, Any] = state.get("restarts", {})
        now = time.time()
        self.records: dict[str, ProcessRecord] = {}
        self.exited: dict[str, ProcessRecord] = {}
        """Processes that died and wait for their restart: `dev status` shows them as dead."""
        self.children: dict[str, Child] = {}
        for name in self.specs:
            done = counts.get(name, {})
            restarts, last = int(done.get("restarts", 0)), done.get("last_restart_at")
            record = recorded.get(name)
            if record is not None and record.alive():
                self.records[name] = record
                self.children[name] = adopt(name, now, restarts, last)
                self.log(name, f"running, pid {record.pid}: taken over")
            else:
                self.children[name] = Child(name, restarts=restarts, last_restart_at=last)
        self.stopping = False

    def log(self, name: str, message: str) -> None:
        line = f"{when(time.time())} {name}: {message}\n"
        with open(self.log_path, "a") as out:
            out.write(line)

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.log("supervisor", f"pid {self.me.pid} supervises {', '.join(self.specs)}")
        self.feed(Tick())  # start what does not run yet
        self.save()
        while not self.stopping:
            time.sleep(POLL_S)
            changed = self.watch()
            changed |= self.feed(Tick())
            if changed and not self.stopping:
                self.save()
        self.log("supervisor", "stopped (the processes are left to `ledger dev down`)")

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def watch(self) -> bool:
        """Tell the policy of every process that ended since the last look."""
        ended = False
        for name, record in list(self.records.items()):
            code = reap(record)
            if code is None and record.alive():
                continue
            self.exited[name] = self.records.pop(name)  # still shown (dead) until it runs again
            # What it forked may outlive it (PostgreSQL's backends hold its shared memory): the
            # group goes too. Its pid cannot be reused while the group still has members.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pid, signal.SIGKILL)
            self.feed(Exited(name, describe_exit(code)))
            ended = True
        return ended

    def feed(self, event: Event) -> bool:
        self.children, actions = decide(self.children, event, time.time(), self.backoff)
        for action in actions:
            if isinstance(action, Log):
                self.log(action.name, action.message)
            elif isinstance(action, Start) and not self.stopping:
                self.start(self.specs[action.name])
        return bool(actions)

    def start(self, spec: ChildSpec) -> None:
        try:
            record = spawn(spec.name, spec.argv, Path(spec.log_path), tie_to_owner=False,
                           env={**os.environ, **spec.env}, user=spec.user)  # fmt: skip
        except OSError as e:
            self.feed(Exited(spec.name, f"could not start: {e}"))
            return
        self.records[spec.name] = record
        self.exited.pop(spec.name, None)
        self.save()  # recorded at once: `dev down` must know every process, even if we die next
        self.feed(Started(spec.name, record.pid))

    def save(self) -> None:
        self.state["supervisor"] = self.me.to_json()
        shown = self.exited | self.records
        self.state["processes"] = [shown[n].to_json() for n in self.specs if n in shown]
        self.state["restarts"] = {
            c.name: {"restarts": c.restarts, "last_restart_at": c.last_restart_at, "last_exit": c.last_exit}
            for c in self.children.values()
        }
        write_state(self.home, self.state)


def supervise(home: Path, backoff: Backoff | None = None) -> None:
    """Run the supervisor of the stack recorded in HOME until SIGTERM."""
    Supervisor(home, backoff or Backoff()).run()
