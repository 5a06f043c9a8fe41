"""What `ledger doctor` knows about a ledger: one frozen snapshot, filled by deploy/doctor/gather.py
and judged by deploy/doctor/rules.py. Plain data, no I/O: a unit test plants a problem by building
one by hand.

A part that was not looked at (its source unreachable, or not applicable) is None; a part that was
looked at and is clean is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A source the doctor could not read."""

    what: str
    """postgres, kafka, shard N database, ..."""
    where: str
    """Host and port (never a password)."""
    error: str


@dataclass(frozen=True, slots=True)
class SagaFact:
    """An in-flight saga that is parked or older than the stuck threshold."""

    transfer_id: str
    step: str
    parked: bool
    age_s: float
    reason: str | None
    waiting_on: tuple[int, ...]
    """Shards whose answer to the current step has not come."""


@dataclass(frozen=True, slots=True)
class ViolationFact:
    """A reconciliation violation (coordinator/saga/reconciliation.py Violation)."""

    check: str
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class ChainFact:
    """A shard whose hash chain is broken (shards/service/audit.py ChainReport, not ok)."""

    shard: int
    first_broken_seq: int
    problem: str


@dataclass(frozen=True, slots=True)
class LagFact:
    """A consumer group of the ledger: how far behind it is and whether it moves."""

    group: str
    shard: int | None
    """None: the coordinators' group, or the monitor's."""
    lag: int
    stalled: bool
    """Behind, and its committed offsets did not move while the doctor watched: nobody consumes."""
    monitor: bool = False
    """The monitor's group (`ledger monitor run`): only there when a monitor ever ran."""


@dataclass(frozen=True, slots=True)
class OutboxFact:
    """One outbox (a shard's or the coordinator's): rows waiting and rows parked for good."""

    schema: str
    shard: int | None
    waiting: int
    oldest_s: float
    parked: int
    parked_topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakerFact:
    """A shard's latest BreakerState (the highest seq) on the control topic."""

    shard: int
    state: str
    latched: bool
    reason: str
    changed_by: str
    since_ms: int


@dataclass(frozen=True, slots=True)
class AlertFact:
    """A LiquidityAlert whose latest word for its (rule, account, currency) is `fired`."""

    rule_id: str
    severity: str
    account_id: str
    currency: str
    kind: str
    observed: int
    threshold: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class ProcessFact:
    """A process of the local stack `ledger dev up` recorded."""

    name: str
    alive: bool
    restarts: int = 0
    last_exit: str | None = None
    log: str | None = None


@dataclass(frozen=True, slots=True)
class Thresholds:
    stuck_after_s: float = 300.0
    """An unparked in-flight saga older than this is stuck."""
    lag_warning: int = 1000
    """Records a group may be behind before it is reported."""
    outbox_oldest_s: float = 60.0
    """An outbox row waiting longer than this means its relay is not publishing."""


@dataclass(frozen=True, slots=True)
class Facts:
    now_ms: int
    local_stack: bool = False
    """Whether the ledger is a `ledger dev up` stack on this machine (its restart command differs)."""
    shards: tuple[int, ...] = ()
    unreachable: tuple[Unreachable, ...] = ()
    sagas: tuple[SagaFact, ...] | None = None
    violations: tuple[ViolationFact, ...] | None = None
    chains: tuple[ChainFact, ...] | None = None
    lags: tuple[LagFact, ...] | None = None
    outboxes: tuple[OutboxFact, ...] | None = None
    breakers: tuple[BreakerFact, ...] | None = None
    alerts: tuple[AlertFact, ...] | None = None
    processes: tuple[ProcessFact, ...] | None = None
    supervisor_alive: bool | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
