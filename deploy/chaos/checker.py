"""The chaos suite's checker: what the workload saw and the ledger's final state in, the violations
of each invariant out. Pure (no I/O), so that tests can feed it histories with a planted
violation of each invariant and show that it reports each one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from coordinator.saga.reconciliation import EntryGroup, OperationView, SagaView, ShardView, reconcile
from deploy.chaos.linked_checker import BatchRow, LegOutcome, all_or_none
from schemas.public import BatchLeg
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
    "I9": "a pending transfer whose hold was placed ends exactly once: posted, voided or expired",
    "I10": "a posted amount never exceeds its hold, and is what the post asked for",
    "I11": "when every hold is resolved, no pending balance remains: nothing reserved or pending",
    "I12": "no post after a void or expiry, no void after a post or expiry",
    "I13": "a linked batch is all legs or none, its legs' rows and its result agreeing with it",
}
REUSED = "transfer_id_reused"
PENDING = "pending"  # a pending transfer's first result: its hold is in place; not terminal
ENDS = ("completed", "voided", "expired")  # how a pending transfer whose hold was placed ends
WON = {"post": "completed", "void": "voided"}  # the result of a post or void that resolved its hold
TRANSIT_PREFIX = transit_account("")  # the shards' suspense accounts may go below zero


@dataclass(frozen=True)
class Sent:
    transfer_id: str
    fingerprint: str
    """request_fingerprint of the body sent."""
    kind: str = "original"
    """original | duplicate (same id, same body) | reused (same id, another body)."""
    command: str = "transfer"
    """What was sent: transfer | pending (a hold) | post | void (of the pending transfer pending_id)."""
    amount: int | None = None
    """A pending transfer's hold; a post's amount (None: the whole hold)."""
    pending_id: str | None = None
    legs: tuple[BatchLeg, ...] = ()
    """A linked batch's legs, in order (its transfer_id is the batch_id)."""


@dataclass(frozen=True)
class Observed:
    """A result read from ledger.results."""

    transfer_id: str
    message_id: str
    state: str
    reason: str | None
    fingerprint: str
    amount: int | None = None
    """A post's result: the amount posted; a transfer's: its amount."""
    pending_id: str | None = None
    """A post's or void's result: the pending transfer it resolved (or tried to)."""
    legs: tuple[LegOutcome, ...] | None = None
    """A linked batch's result: every leg's outcome, in order."""
    failed_leg: str | None = None
    """A failed linked batch's result: the leg that failed (None for a timeout)."""


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


@dataclass(frozen=True)
class Resolver:
    """A post or void, as the coordinator keeps it (a row of its own, not a saga)."""

    pending_id: str
    status: str
    amount: int
    """A post's amount (the hold's when posted in full)."""


@dataclass
class LedgerState:
    """The ledger after healing, read in one snapshot."""

    sagas: dict[str, SagaView]
    fingerprints: dict[str, str]
    """transfer id -> the fingerprint of the body the coordinator accepted under it."""
    shards: dict[int, ShardState]
    unsettled: list[str] = field(default_factory=list)
    """Sagas still in flight (or still pending) when the liveness bound ran out."""
    resolvers: dict[str, Resolver] = field(default_factory=dict)
    """transfer id of a post or void -> its row."""
    batches: dict[str, BatchRow] = field(default_factory=dict)
    """batch id of a linked batch -> its row (its legs' rows are sagas, linked)."""


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
        "I9": _ends_once(history, ledger),
        "I10": _posted_within_hold(history, ledger),
        "I11": _nothing_pending(ledger),
        "I12": _no_resolution_after_end(history, ledger),
        "I13": all_or_none(history, ledger),
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
        if r.reason != REUSED and r.state != PENDING:
            outcomes[r.transfer_id].add((r.state, r.reason))
    found = []
    for t in sorted({s.transfer_id for s in history.sent if s.kind == "original"}):
        seen = outcomes.get(t, set())
        # A post or void is a row, not a saga; a linked batch is a row of its own, its legs sagas
        # (the legs are no transfers the workload sent: the batch is, and I13 judges its legs).
        kept = ledger.sagas.get(t) or ledger.resolvers.get(t) or ledger.batches.get(t)
        if not seen:
            found.append(f"{t}: no terminal result")
        elif len(seen) > 1:
            found.append(f"{t}: conflicting results {sorted(seen, key=str)}")
        elif kept is not None and kept.status != next(iter(seen))[0]:
            found.append(f"{t}: result {next(iter(seen))[0]}, ledger says {kept.status}")
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
    """Balances from the journal, the open holds and the open pending credits (as the shard's
    audit replays them: a credit operation still `held` is a pending transfer's, not yet posted)."""
    open_ = [(kind, op) for (_, kind), op in shard.operations.items() if op.state == "held"]
    return replay(
        ((e.account_id, e.amount) for e in shard.journal),
        [(op.account_id, op.amount) for kind, op in open_ if kind == "hold"],
        [(op.account_id, op.amount) for kind, op in open_ if kind == "credit"],
    )


# --- two-phase transfers ------------------------------------------------------------------------


def _pending_sent(history: History) -> dict[str, Sent]:
    """Each pending transfer the workload sent (its first send), by transfer id."""
    found: dict[str, Sent] = {}
    for s in history.sent:
        if s.command == "pending" and s.kind == "original":
            found.setdefault(s.transfer_id, s)
    return found


def _finals(history: History) -> dict[str, set[str]]:
    """Transfer id -> the distinct non-pending states of its results (reused ids' answers aside)."""
    found: dict[str, set[str]] = defaultdict(set)
    for r in history.results:
        if r.reason != REUSED and r.state != PENDING:
            found[r.transfer_id].add(r.state)
    return found


def _winners(history: History, ledger: LedgerState) -> dict[str, set[str]]:
    """Pending transfer id -> the posts and voids that resolved it, by their results (a completed
    post, a voided void) and by the ledger's rows of them."""
    resolving = {s.transfer_id: s for s in history.sent if s.command in WON and s.pending_id is not None}
    found: dict[str, set[str]] = defaultdict(set)
    for r in history.results:
        if (s := resolving.get(r.transfer_id)) is not None and r.state == WON[s.command]:
            found[s.pending_id or ""].add(r.transfer_id)
    for t, row in ledger.resolvers.items():
        if row.status in WON.values():
            found[row.pending_id].add(t)
    return found


def _ends_once(history: History, ledger: LedgerState) -> list[str]:
    placed = {r.transfer_id for r in history.results if r.state == PENDING}
    finals, winners = _finals(history), _winners(history, ledger)
    found = []
    for t in sorted(_pending_sent(history)):
        ends = finals.get(t, set()) & set(ENDS)
        if t not in placed and not ends:
            continue  # its hold was never placed (rejected): I4 judges its one result
        if t not in placed:
            found.append(f"{t}: ended {sorted(ends)} without a pending result first")
        if not ends:
            found.append(f"{t}: hold placed, no final result (completed, voided or expired)")
        elif len(finals[t]) > 1:
            found.append(f"{t}: ended more than once: {sorted(finals[t])}")
        elif (saga := ledger.sagas.get(t)) is not None and saga.status not in (*ends, "in_flight"):
            found.append(f"{t}: ended {next(iter(ends))}, ledger says {saga.status}")
        by = sorted(winners.get(t, ()))
        if len(by) > 1:
            found.append(f"{t}: resolved by more than one post or void: {by}")
        elif ends == {"expired"} and by:
            found.append(f"{t}: expired, yet {by[0]} resolved it")
        elif ends & set(WON.values()) and not by:
            found.append(f"{t}: {next(iter(ends))} by no post or void that says so")
    return found


def _posted_within_hold(history: History, ledger: LedgerState) -> list[str]:
    """What moved under a pending transfer's id (its journal entries on accounts, transit aside)
    against its hold and against the amount its winning post reports."""
    moved: dict[str, tuple[int, int]] = {}  # transfer id -> (paid out, paid in)
    for shard in ledger.shards.values():
        for e in shard.journal:
            if not e.account_id.startswith(TRANSIT_PREFIX):
                out, in_ = moved.get(e.transfer_id, (0, 0))
                moved[e.transfer_id] = (out - min(e.amount, 0), in_ + max(e.amount, 0))
    posts = {s.transfer_id: s.pending_id for s in history.sent if s.command == "post"}
    posted = {
        r.pending_id or posts[r.transfer_id]: r.amount
        for r in history.results
        if r.transfer_id in posts and r.state == "completed"
    }
    found = []
    for t, sent in sorted(_pending_sent(history).items()):
        out, in_ = moved.get(t, (0, 0))
        hold = sent.amount or 0
        if max(out, in_) > hold:
            found.append(f"{t}: {max(out, in_)} moved from a hold of {hold}")
        if t in posted and (out, in_) != (posted[t], posted[t]):
            found.append(f"{t}: posted {posted[t]}, moved {out} out and {in_} in")
    return found


def _nothing_pending(ledger: LedgerState) -> list[str]:
    """Every hold resolved (after healing): no balance reserved or pending, no operation held. A
    saga still open then is I8's to report; what it still holds is reported here as well."""
    found = []
    for s, shard in sorted(ledger.shards.items()):
        for account, b in sorted(shard.balances.items()):
            if b.reserved or b.pending_credit:
                found.append(
                    f"shard {s}: {account}: reserved {b.reserved}, pending credit {b.pending_credit}"
                )
        for (t, kind), op in sorted(shard.operations.items()):
            if op.state == "held":
                found.append(f"shard {s}: {t}: {kind} of {op.account_id} {op.amount} still held")
    return found


def _no_resolution_after_end(history: History, ledger: LedgerState) -> list[str]:
    """A post that completed (or a void that voided) a pending transfer that ended otherwise."""
    finals = _finals(history)
    found = []
    for s in history.sent:
        if s.command not in WON or s.kind != "original" or s.pending_id is None:
            continue
        row = ledger.resolvers.get(s.transfer_id)
        won = WON[s.command] in finals.get(s.transfer_id, ()) or (
            row is not None and row.status == WON[s.command]
        )
        saga = ledger.sagas.get(s.pending_id)
        ended = (finals.get(s.pending_id, set()) & set(ENDS)) | ({saga.status} if saga else set())
        other = sorted(ended & set(ENDS) - {WON[s.command]})
        if won and other:
            found.append(f"{s.transfer_id}: {s.command} of {s.pending_id} succeeded, which ended {other[0]}")
    return found
