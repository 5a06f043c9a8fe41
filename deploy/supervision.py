"""When a supervised process of a local stack is started again: a pure policy, time passed in.

`decide(children, event, now, backoff)` returns the new state and what to do; deploy/supervisor.py
feeds it what it sees (a process started, a process exited, time passed) and carries out the
actions. Nothing here reads a clock, signals a process or writes a file.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Backoff:
    """Exponential restart delays, capped; forgiven after a healthy run."""

    first_s: float = 0.5
    """Delay before the first restart after a healthy run."""
    factor: float = 2.0
    """Each quick death in a row multiplies the delay by this."""
    cap_s: float = 30.0
    """The longest delay: a process that cannot start is tried twice a minute, not given up on."""
    healthy_s: float = 30.0
    """A process that ran at least this long before it died is restarted after `first_s` again."""

    def delay(self, failures: int) -> float:
        """The delay after `failures` (>= 1) deaths in a row."""
        return min(self.cap_s, self.first_s * self.factor ** max(0, failures - 1))


@dataclass(frozen=True)
class Child:
    """What the supervisor knows of one process it keeps running."""

    name: str
    running: bool = False
    started_at: float | None = None
    failures: int = 0
    """Deaths in a row, each after less than `Backoff.healthy_s` of running."""
    restarts: int = 0
    last_restart_at: float | None = None
    last_exit: str | None = None
    due_at: float | None = 0.0
    """When to start it (again); None while it runs or is being started."""


@dataclass(frozen=True)
class Started:
    name: str
    pid: int


@dataclass(frozen=True)
class Exited:
    name: str
    status: str
    """How it ended, for the log: `describe_exit`."""


@dataclass(frozen=True)
class Tick:
    """Time passed: start whatever is due."""


Event = Started | Exited | Tick


@dataclass(frozen=True)
class Start:
    name: str


@dataclass(frozen=True)
class Log:
    name: str
    message: str


Action = Start | Log


def describe_exit(code: int | None) -> str:
    """`exit 1`, `killed by SIGKILL`, or unknown for a process the supervisor adopted (not its child)."""
    if code is None:
        return "exited (status unknown: adopted, not a child of the supervisor)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def adopt(name: str, now: float, restarts: int = 0, last_restart_at: float | None = None) -> Child:
    """A process found running (a supervisor that starts again takes over its predecessor's)."""
    return Child(name, running=True, started_at=now, restarts=restarts, last_restart_at=last_restart_at,
                 due_at=None)  # fmt: skip


def decide(
    children: Mapping[str, Child], event: Event, now: float, backoff: Backoff
) -> tuple[dict[str, Child], list[Action]]:
    """The children after `event` at time `now`, and the actions it calls for."""
    state = dict(children)
    if isinstance(event, Tick):
        due = [c for c in state.values() if not c.running and c.due_at is not None and c.due_at <= now]
        for child in due:
            state[child.name] = replace(child, due_at=None)
        return state, [Start(c.name) for c in due]
    child = state[event.name]
    if isinstance(event, Started):
        again = child.last_exit is not None
        state[child.name] = replace(
            child, running=True, started_at=now, due_at=None,
            restarts=child.restarts + again, last_restart_at=now if again else child.last_restart_at,
        )  # fmt: skip
        what = f"restarted (restart {child.restarts + 1})" if again else "started"
        return state, [Log(child.name, f"{what}, pid {event.pid}")]
    ran = now - child.started_at if child.running and child.started_at is not None else 0.0
    failures = 1 if ran >= backoff.healthy_s else child.failures + 1
    delay = backoff.delay(failures)
    state[child.name] = replace(
        child, running=False, failures=failures, last_exit=event.status, due_at=now + delay
    )
    return state, [Log(child.name, f"{event.status} after {ran:.1f}s; next start in {delay:.1f}s")]
