"""The chaos checker's invariant for linked batches (I13): a batch is all legs or none. From the
ledger's final state: every leg's journal entries are there exactly (completed) or none of its legs
moved money (rejected, compensated, voided, expired); every leg's row has its batch's status; and
each of the batch's results agrees: its legs listed in order, each with the result's state, and a
failed batch names one of its own legs as the one that failed (none only when it timed out), that
leg with the batch's reason, every other leg `linked_transfer_failed`.

A batch still open after healing (in flight, or pending) is liveness's (I8) to report: a prefix of
its flow is what it legitimately has then.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shards.domain.model import transit_account

if TYPE_CHECKING:  # the checker imports this module; its types are only annotations here
    from deploy.chaos.checker import History, LedgerState, Observed, Sent
    from schemas.public import BatchLeg

LINKED_FAILED = "linked_transfer_failed"  # the result contract's reason for the legs that did not fail
# Failures no leg is named for: a step that timed out, or a batch a shard's breaker refused whole.
TIMEOUTS = ("reserve_timeout", "credit_timeout", "shard_unavailable")
FAILED = ("rejected", "compensated")  # a failed batch names its failed leg
UNDONE = (*FAILED, "voided", "expired")  # a batch that moved no money
OPEN = ("in_flight", "pending")
REUSED = "transfer_id_reused"  # a reused batch id's answer: I5's to judge
LEG_ID_REUSED = "leg_id_reused"  # refused before any leg was taken: its leg ids are other transfers'

Entry = tuple[int | None, str, str, str, int, str]
"""(shard, kind, leg, account, signed amount, currency) of a journal entry."""


@dataclass(frozen=True)
class LegOutcome:
    """One leg's outcome as a batch's result lists it."""

    transfer_id: str
    state: str
    reason: str | None


@dataclass(frozen=True)
class BatchRow:
    """A linked batch as the coordinator keeps it: its row's status and its legs' rows."""

    status: str
    legs: frozenset[str]
    """The transfer ids of the rows that name this batch (batch_id)."""


def all_or_none(history: History, ledger: LedgerState) -> list[str]:
    batches: dict[str, Sent] = {}
    for s in history.sent:
        if s.command == "batch" and s.kind == "original":
            batches.setdefault(s.transfer_id, s)
    results: dict[str, list[Observed]] = defaultdict(list)
    for r in history.results:
        if r.transfer_id in batches and r.reason != REUSED:
            results[r.transfer_id].append(r)
    entries = _entries_of({leg.transfer_id for s in batches.values() for leg in s.legs}, ledger)
    where = _account_shards(ledger)
    found: list[str] = []
    for b, sent in sorted(batches.items()):
        said = results.get(b, [])
        for r in said:
            found.extend(f"{b}: {problem}" for problem in _result_problems(sent, r))
        if any(r.reason == LEG_ID_REUSED for r in said):
            continue  # refused whole, no leg of it taken: its leg ids name other transfers
        row = ledger.batches.get(b)
        if row is None:
            if said:
                found.append(f"{b}: answered {said[0].state}, but the ledger has no row of it")
            continue  # unanswered and unknown: I4 reports the missing result
        if row.status in OPEN:
            continue
        found.extend(f"{b}: {problem}" for problem in _row_problems(sent, row, ledger))
        found.extend(f"{b}: {problem}" for problem in _money_problems(sent, row.status, entries, where))
    return found


def _result_problems(sent: Sent, r: Observed) -> Iterable[str]:
    """What a result of the batch says that disagrees with the batch or with itself."""
    if r.legs is None:
        if r.reason != LEG_ID_REUSED:
            yield f"result {r.state} lists no legs"
        return
    listed, legs = [leg.transfer_id for leg in r.legs], [leg.transfer_id for leg in sent.legs]
    if listed != legs:
        yield f"result lists legs {listed}, the batch has {legs}"
    for leg in r.legs:
        if leg.state != r.state:
            yield f"result {r.state} lists leg {leg.transfer_id} as {leg.state}"
    if r.state not in FAILED:
        if r.failed_leg is not None:
            yield f"result {r.state} names a failed leg {r.failed_leg}"
        yield from (f"result {r.state} gives leg {leg.transfer_id} reason {leg.reason}"
                    for leg in r.legs if leg.reason is not None)  # fmt: skip
        return
    if r.failed_leg is None and r.reason not in TIMEOUTS:
        yield f"result {r.state} ({r.reason}) names no failed leg, and it did not time out nor meet a breaker"
    elif r.failed_leg is not None and r.failed_leg not in legs:
        yield f"result {r.state} names failed leg {r.failed_leg}, not one of its legs"
    for leg in r.legs:
        named = r.failed_leg is None or leg.transfer_id == r.failed_leg
        expected = r.reason if named else LINKED_FAILED
        if leg.reason != expected:
            yield f"result {r.state} ({r.reason}): leg {leg.transfer_id} says {leg.reason}, not {expected}"


def _row_problems(sent: Sent, row: BatchRow, ledger: LedgerState) -> Iterable[str]:
    """The ledger's rows of the batch's legs against the legs sent and the batch's status."""
    legs = {leg.transfer_id for leg in sent.legs}
    if row.legs != legs:
        yield f"the ledger's leg rows {sorted(row.legs)} are not its legs {sorted(legs)}"
    for leg in sent.legs:
        saga = ledger.sagas.get(leg.transfer_id)
        if saga is None:
            yield f"leg {leg.transfer_id} has no row"
        elif saga.status != row.status:
            yield f"leg {leg.transfer_id} is {saga.status}, its batch {row.status}"
        elif not saga.linked:
            yield f"leg {leg.transfer_id}'s row is not a linked leg's"


def _money_problems(
    sent: Sent, status: str, entries: Mapping[str, Counter[Entry]], where: Mapping[str, int]
) -> Iterable[str]:
    """A completed batch: every leg's entries exactly; one that failed: no entry under any leg."""
    posted = [leg.transfer_id for leg in sent.legs if entries.get(leg.transfer_id) == _expected(leg, where)]
    moved = [leg.transfer_id for leg in sent.legs if entries.get(leg.transfer_id)]
    if status == "completed" and len(posted) != len(sent.legs):
        missing = [leg.transfer_id for leg in sent.legs if leg.transfer_id not in posted]
        yield f"completed, yet legs {missing} not posted exactly (posted: {posted})"
    elif status in UNDONE and moved:
        yield f"{status}, yet legs {moved} moved money"
    elif status not in ("completed", *UNDONE):
        yield f"ended {status}, which a linked batch cannot"


def _expected(leg: BatchLeg, where: Mapping[str, int]) -> Counter[Entry]:
    """A posted leg's entries: its debit account to its debit shard's transit (commit), and its
    credit shard's transit to its credit account (credit), on one shard or two."""
    d, c = where.get(leg.debit_account), where.get(leg.credit_account)
    a, cur, transit = leg.amount, leg.currency, transit_account(leg.currency)
    return Counter(
        [
            (d, "commit", "debit", leg.debit_account, -a, cur),
            (d, "commit", "credit", transit, a, cur),
            (c, "credit", "debit", transit, -a, cur),
            (c, "credit", "credit", leg.credit_account, a, cur),
        ]
    )


def _entries_of(legs: set[str], ledger: LedgerState) -> dict[str, Counter[Entry]]:
    found: dict[str, Counter[Entry]] = defaultdict(Counter)
    for s, shard in ledger.shards.items():
        for e in shard.journal:
            if e.transfer_id in legs:
                found[e.transfer_id][(s, e.kind, e.leg, e.account_id, e.amount, e.currency)] += 1
    return found


def _account_shards(ledger: LedgerState) -> dict[str, int]:
    """Account -> the shard it lives on (transit accounts, on every shard, aside)."""
    prefix = transit_account("")
    return {
        account: s
        for s, shard in ledger.shards.items()
        for account in [*shard.balances, *shard.currencies]
        if not account.startswith(prefix)
    }
