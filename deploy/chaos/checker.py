"""The chaos suite's checker: what the workload saw and the ledger's final state in, the violations
of each invariant out. Pure (no I/O), so that tests can feed it histories with a planted
violation of each invariant and show that it reports each one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from coordinator.saga.reconciliation import EntryGroup, OperationView, SagaView, ShardView, reconcile
from shards.domain.chain import ChainedEntry, first_break
from shards.domain.model import transit_account
from shards.domain.replay import Balance, differences, replay

INVARIANTS = {
    "I1": "conservation: per currency, the money held equals the money issued, counting transit",
    "I2": "no available balance below its limit, at any read",
    "I3": "atomicity: each transfer's legs exactly once, or none; no leg for a rejected transfer",
    "I4": "no lost result: one terminal result per transfer sent, and the ledger agrees with it",
    "I5": "idempotence: duplicates changed nothing; a reused id with another body was rejected",
    "I6": "each shard's balances equal the replay of its journal",
    "I7": "every shard's hash chain verifies",
    "I8": "liveness: after healing, every saga is terminal within the bound",
}
REUSED = "transfer_id_reused"
TRANSIT_PREFIX = transit_account("")  # the shards' suspense accounts may go below zero


@dataclass(frozen=True)
class Sent:
    transfer_id: str
    fingerprint: str
    """request_fingerprint of the body sent."""
    kind: str = "original"
    """original | duplicate (same id, same body) | reused (same id, another body)."""


@dataclass(frozen=True)
class Observed:
    """A result read from ledger.results."""

    transfer_id: str
    message_id: str
    state: str
    reason: str | None
    fingerprint: str


@dataclass(frozen=True)
class BalanceRead:
    account_id: str
    available: int
    floor: int
    """The lowest the available balance may go: minus the account's overdraft limit."""


@dataclass(frozen=True)
class History:
    """What the workload did and saw."""

    issued: Mapping[str, int]
    """Per currency: the money the workload moved out of the issuance accounts."""
    issuers: frozenset[str]
    sent: list[Sent] = field(default_factory=list)
    results: list[Observed] = field(default_factory=list)
    reads: list[BalanceRead] = field(default_factory=list)


@dataclass
class ShardState:
    journal: list[ChainedEntry] = field(default_factory=list)
    """Every entry, in seq order."""
    operations: dict[tuple[str, str], OperationView] = field(default_factory=dict)
    balances: dict[str, Balance] = field(default_factory=dict)
    """As the shard keeps them (derived, cached)."""
    floors: dict[str, int] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)


@dataclass
class LedgerState:
    """The ledger after healing, read in one snapshot."""

    sagas: dict[str, SagaView]
    fingerprints: dict[str, str]
    """transfer id -> the fingerprint of the body the coordinator accepted under it."""
    shards: dict[int, ShardState]
    unsettled: list[str] = field(default_factory=list)
    """Sagas still in flight when the liveness bound ran out."""


def check(history: History, ledger: LedgerState) -> dict[str, list[str]]:
    """Violations per invariant (every key of INVARIANTS; an empty list when it holds)."""
    return {
        "I1": _conservation(history, ledger),
        "I2": _limits(history, ledger),
        "I3": [f"{v.check}: {v.subject}: {v.detail}" for v in reconcile(ledger.sagas, _views(ledger))],
        "I4": _results(history, ledger),
        "I5": _idempotence(history, ledger),
        "I6": [
            f"shard {s}: {d.account_id} kept {d.cached}, journal says {d.replayed}"
            for s, shard in sorted(ledger.shards.items())
            for d in differences(shard.balances, _replayed(shard))
        ],
        "I7": [
            f"shard {s}: seq {broken[0]}: {broken[1]}"
            for s, shard in sorted(ledger.shards.items())
            if (broken := first_break(shard.journal)) is not None
        ],
        "I8": [f"{t}: still in flight after healing" for t in sorted(ledger.unsettled)],
    }


def _conservation(history: History, ledger: LedgerState) -> list[str]:
    held: dict[str, int] = defaultdict(int)
    for shard in ledger.shards.values():
        for entry in shard.journal:
            if entry.account_id not in history.issuers:
                held[entry.currency] += entry.amount
    issued = history.issued
    return [
        f"{currency}: accounts and transit hold {held.get(currency, 0)}, issued {issued.get(currency, 0)}"
        for currency in sorted(held.keys() | issued.keys())
        if held.get(currency, 0) != issued.get(currency, 0)
    ]


def _limits(history: History, ledger: LedgerState) -> list[str]:
    found = [
        f"read {r.account_id}: available {r.available} below {r.floor}"
        for r in history.reads
        if r.available < r.floor
    ]
    for shard in ledger.shards.values():
        for account, balance in sorted(shard.balances.items()):
            floor = shard.floors.get(account, 0)
            internal = account in history.issuers or account.startswith(TRANSIT_PREFIX)
            if not internal and balance.posted - balance.reserved < floor:
                found.append(f"final {account}: available {balance.posted - balance.reserved} below {floor}")
    return found


def _results(history: History, ledger: LedgerState) -> list[str]:
    outcomes: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for r in history.results:
        if r.reason != REUSED:
            outcomes[r.transfer_id].add((r.state, r.reason))
    found = []
    for t in sorted({s.transfer_id for s in history.sent if s.kind == "original"}):
        seen = outcomes.get(t, set())
        if not seen:
            found.append(f"{t}: no terminal result")
        elif len(seen) > 1:
            found.append(f"{t}: conflicting results {sorted(seen, key=str)}")
        elif (saga := ledger.sagas.get(t)) is not None and saga.status != next(iter(seen))[0]:
            found.append(f"{t}: result {next(iter(seen))[0]}, ledger says {saga.status}")
    return found


def _idempotence(history: History, ledger: LedgerState) -> list[str]:
    original = {s.transfer_id: s.fingerprint for s in history.sent if s.kind == "original"}
    rejected_reuse = {(r.transfer_id, r.fingerprint) for r in history.results if r.reason == REUSED}
    found = []
    for s in history.sent:
        if s.kind == "reused" and (s.transfer_id, s.fingerprint) not in rejected_reuse:
            found.append(f"{s.transfer_id}: reused with another body but not rejected as reused")
        accepted = ledger.fingerprints.get(s.transfer_id)
        if s.kind != "original" and accepted is not None and accepted != original.get(s.transfer_id):
            found.append(f"{s.transfer_id}: the ledger kept another body than the first one sent")
    return found


def _views(ledger: LedgerState) -> dict[int, ShardView]:
    """What reconciliation reads, derived from the full journals."""
    views = {}
    for s, shard in ledger.shards.items():
        view = ShardView(operations=dict(shard.operations))
        for e in shard.journal:
            view.add_entries(EntryGroup(e.transfer_id, e.kind, e.leg, e.account_id, e.currency), 1, e.amount)
            if e.account_id.startswith(TRANSIT_PREFIX):
                view.transit[e.currency] = view.transit.get(e.currency, 0) + e.amount
        views[s] = view
    return views


def _replayed(shard: ShardState) -> dict[str, Balance]:
    holds = [
        (op.account_id, op.amount)
        for (_, kind), op in shard.operations.items()
        if kind == "hold" and op.state == "held"
    ]
    return replay(((e.account_id, e.amount) for e in shard.journal), holds)
