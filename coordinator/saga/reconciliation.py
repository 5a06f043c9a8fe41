"""Reconciliation: do the shards' journals agree with the sagas? Pure: views in, violations out.

Checked, for a consistent read of the coordinator and every shard:
- each shard's journal sums to zero per currency;
- each saga's legs on the shards are a valid prefix of its flow: a completed saga has every leg
  exactly once, a rejected or compensated one nets to zero with no leg applied, and no saga ever
  has a credit applied while its hold was released, or a commit without its credit;
- every leg on a shard belongs to a saga the coordinator knows;
- every journal entry belongs to a saga, on the shard, of the kind and leg, and with the account,
  signed amount and currency that saga would write (its two entries for a same-shard transfer; for
  a cross-shard one, the commit against transit on the debit shard and the credit against transit
  on the credit shard), exactly once, and none at all for a rejected or compensated saga. Account
  commands and issuance write no entries of their own (issuance is an ordinary transfer), so an
  entry that fits no saga is a forgery or a bug;
- every shard operation of a known saga is the one that saga would ask of that shard;
- the transit accounts hold exactly what in-flight sagas have credited but not yet committed;
- no reservation (and no pending credit) outlives its saga.

A pending (two-phase) transfer is held to the same checks with what it moved: nothing while it is
pending, voided or expired; the posted amount, at most the hold, once posted. Its hold and pending
credit are operations for the held amount, and must be released or committed when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from shards.domain.model import transit_account

FAILED = ("rejected", "compensated", "voided", "expired")  # saga outcomes that leave no entries
OPEN = ("in_flight", "pending")  # a saga that may still hold funds


@dataclass(frozen=True)
class SagaView:
    transfer_id: str
    status: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    debit_shard: int
    credit_shard: int
    pending: bool = False
    post_amount: int | None = None  # what a post of a pending transfer moves
    linked: bool = False
    """A leg of a linked batch: held, then credited and posted through transit like a cross-shard
    transfer, on one shard or two."""

    @property
    def moved(self) -> int:
        """What the saga moves once it completes: a post's amount, else the whole amount."""
        return self.post_amount if self.post_amount is not None else self.amount


@dataclass(frozen=True)
class OperationView:
    account_id: str
    amount: int
    state: str  # held | committed | released


class EntryGroup(NamedTuple):
    """What a journal entry says, but its seq, message and hash: the entries of one shard grouped."""

    transfer_id: str
    kind: str  # transfer | credit | commit: the shard operation that wrote it
    leg: str  # debit | credit
    account_id: str
    currency: str


class EntryTotal(NamedTuple):
    entries: int
    amount: int  # signed: credit +, debit -


@dataclass
class ShardView:
    journal_by_currency: dict[str, int] = field(default_factory=dict)
    operations: dict[tuple[str, str], OperationView] = field(default_factory=dict)  # (transfer, kind)
    net: dict[tuple[str, str], int] = field(default_factory=dict)  # (transfer, account) -> journal sum
    transit: dict[str, int] = field(default_factory=dict)  # currency -> transit posted balance
    entries: dict[EntryGroup, EntryTotal] = field(default_factory=dict)

    def add_entries(self, group: EntryGroup, count: int, amount: int) -> None:
        """Count `count` journal entries of `group` summing to `amount` (the sums follow)."""
        before = self.entries.get(group, EntryTotal(0, 0))
        self.entries[group] = EntryTotal(before.entries + count, before.amount + amount)
        key = (group.transfer_id, group.account_id)
        self.net[key] = self.net.get(key, 0) + amount
        self.journal_by_currency[group.currency] = self.journal_by_currency.get(group.currency, 0) + amount


@dataclass(frozen=True)
class Violation:
    check: str
    subject: str
    detail: str


def reconcile(sagas: Mapping[str, SagaView], shards: Mapping[int, ShardView]) -> list[Violation]:
    found: list[Violation] = []
    for shard, view in sorted(shards.items()):
        for currency, total in sorted(view.journal_by_currency.items()):
            if total != 0:
                found.append(Violation("journal_balanced", f"shard {shard} {currency}", f"sums to {total}"))
    pending_credit: dict[str, int] = {}
    for saga in sagas.values():
        problem, credited_uncommitted = _check_saga(saga, shards)
        if problem:
            found.append(Violation("saga_legs", saga.transfer_id, f"{saga.status}: {problem}"))
        if credited_uncommitted:
            pending_credit[saga.currency] = pending_credit.get(saga.currency, 0) + saga.moved
    found.extend(_check_entries(sagas, shards))
    found.extend(_check_operations(sagas, shards))
    transit: dict[str, int] = {}
    for view in shards.values():
        for currency, posted in view.transit.items():
            transit[currency] = transit.get(currency, 0) + posted
    for currency in sorted(transit.keys() | pending_credit.keys()):
        expected = -pending_credit.get(currency, 0)
        if transit.get(currency, 0) != expected:
            found.append(
                Violation(
                    "transit_matches_in_flight",
                    currency,
                    f"transit {transit.get(currency, 0)}, expected {expected}",
                )
            )
    return found


def _check_saga(saga: SagaView, shards: Mapping[int, ShardView]) -> tuple[str | None, bool]:
    """(what is wrong, or None; whether its credit is applied and its hold not yet committed)."""
    t, a = saga.transfer_id, saga.moved
    debit, credit = shards.get(saga.debit_shard, ShardView()), shards.get(saga.credit_shard, ShardView())
    debit_net, credit_net = (
        debit.net.get((t, saga.debit_account), 0),
        credit.net.get((t, saga.credit_account), 0),
    )
    same_shard = saga.debit_shard == saga.credit_shard and not saga.linked
    if same_shard and not saga.pending and not saga.linked:
        return _check_local(saga, (t, "transfer") in debit.operations, debit_net, credit_net), False
    hold = debit.operations.get((t, "hold"))
    hold_state = hold.state if hold and hold.amount > 0 else "none"
    credit_op = credit.operations.get((t, "credit"))
    credit_state = credit_op.state if credit_op and credit_op.amount > 0 else "none"
    credited = credit_state == "committed"
    if same_shard:  # a same-shard pending transfer posts in one entry pair
        if (debit_net, credit_net) != ((-a, a) if hold_state == "committed" else (0, 0)):
            return f"legs {debit_net}/{credit_net} with hold {hold_state}", False
        if credited != (hold_state == "committed"):
            return f"hold {hold_state} but pending credit {credit_state}", False
    else:
        if debit_net != (-a if hold_state == "committed" else 0):
            return f"debit leg {debit_net} with hold {hold_state}", False
        if credit_net != (a if credited else 0):
            return f"credit leg {credit_net}, credited={credited}", False
        if credited and hold_state in ("released", "none"):
            return "credit applied but hold not kept (money created)", False
        if hold_state == "committed" and not credited:
            return "hold committed without its credit", False
    released = hold_state in ("none", "released") and not credited
    expected = {
        "completed": hold_state == "committed" and credited,
        "rejected": released,
        "compensated": released,
        "voided": released and credit_state != "held",
        "expired": released and credit_state != "held",
        "pending": hold_state == "held" and credit_state == "held",
        "in_flight": True,
    }
    if not expected.get(saga.status, False):
        return f"hold {hold_state}, credit {credit_state}", False
    return None, credited and hold_state == "held" and not same_shard


def _check_local(saga: SagaView, posted: bool, debit_net: int, credit_net: int) -> str | None:
    """What is wrong with a same-shard transfer (one PostTransfer), or None."""
    if posted and (debit_net, credit_net) != (-saga.amount, saga.amount):
        return f"posted with legs {debit_net}/{credit_net}"
    if not posted and (debit_net or credit_net):
        return "journal legs without the transfer"
    if saga.status == "completed" and not posted:
        return "completed but not posted"
    if saga.status in FAILED and posted:
        return "posted but reported not done"
    return None


def _check_operations(sagas: Mapping[str, SagaView], shards: Mapping[int, ShardView]) -> list[Violation]:
    found = []
    for shard, view in sorted(shards.items()):
        for (transfer_id, kind), op in view.operations.items():
            owner = sagas.get(transfer_id)
            if op.amount > 0 and owner is None:  # a tombstone (amount 0) is harmless by design
                found.append(Violation("leg_without_saga", transfer_id, f"{kind} on shard {shard}"))
            elif (
                op.amount > 0
                and owner is not None
                and (problem := _operation_problem(owner, shard, kind, op))
            ):
                found.append(Violation("operation_differs_from_saga", transfer_id, problem))
            open_ = kind == "hold" or (kind == "credit" and owner is not None and owner.pending)
            if open_ and op.state == "held" and (owner is None or owner.status not in OPEN):
                status = owner.status if owner else "unknown"
                found.append(
                    Violation("reservation_outlives_saga", transfer_id, f"held on shard {shard}, {status}")
                )
    return sorted(found, key=lambda v: (v.subject, v.detail))


def _check_entries(sagas: Mapping[str, SagaView], shards: Mapping[int, ShardView]) -> list[Violation]:
    """Each group of journal entries against the saga it names: one pass over the entries."""
    found = []
    for shard, view in sorted(shards.items()):
        for group, total in view.entries.items():  # unsorted: sorting every entry cost as much as checking
            problem = _entry_problem(sagas.get(group.transfer_id), shard, group, total)
            if problem is not None:
                check, why = problem
                said = f"shard {shard}: {group.kind} {group.leg}"
                said += f" {_amount(group.account_id, total.amount, group.currency)}"
                found.append(Violation(check, group.transfer_id, f"{said}: {why}"))
    return sorted(found, key=lambda v: (v.subject, v.detail))


def _entry_problem(
    saga: SagaView | None, shard: int, group: EntryGroup, total: EntryTotal
) -> tuple[str, str] | None:
    """(check, why) when the entries of `group` on `shard` are not what `saga` would write."""
    if saga is None:
        return "entry_without_saga", "no saga has this id"
    if saga.status in FAILED:
        return "entry_for_failed_saga", f"the saga was {saga.status}, so it has no entries"
    expected = _expected_entry(saga, shard, group.kind, group.leg)
    if expected is None:
        return (
            "entry_differs_from_saga",
            f"the saga ({_describe(saga)}) writes no {group.kind} {group.leg} here",
        )
    if expected != (group.account_id, total.amount, group.currency):
        return "entry_differs_from_saga", f"the saga expects {_amount(*expected)} here"
    if total.entries != 1:
        return "entry_repeated", f"{total.entries} entries"
    return None


def _expected_entry(saga: SagaView, shard: int, kind: str, leg: str) -> tuple[str, int, str] | None:
    """(account, signed amount, currency) of the entry `saga` writes on `shard` as (kind, leg), if any."""
    if saga.debit_shard == saga.credit_shard and not saga.linked:
        on, first, second = saga.debit_shard, saga.debit_account, saga.credit_account
        if kind != "transfer":
            return None
    elif kind == "commit":  # the held funds leave the debit account for the debit shard's transit
        on, first, second = saga.debit_shard, saga.debit_account, transit_account(saga.currency)
    elif kind == "credit":  # and the credit shard's transit pays the credit account
        on, first, second = saga.credit_shard, transit_account(saga.currency), saga.credit_account
    else:
        return None
    if shard != on:
        return None
    if leg == "debit":
        return first, -saga.moved, saga.currency
    return (second, saga.moved, saga.currency) if leg == "credit" else None


def _operation_problem(saga: SagaView, shard: int, kind: str, op: OperationView) -> str | None:
    """What is wrong with a shard operation (not a tombstone) recorded under a known saga's id."""
    if saga.debit_shard == saga.credit_shard and (saga.pending or saga.linked):
        expected = {
            (saga.debit_shard, "hold"): saga.debit_account,
            (saga.debit_shard, "credit"): saga.credit_account,
        }
    elif saga.debit_shard == saga.credit_shard:
        expected = {(saga.debit_shard, "transfer"): saga.debit_account}
    else:
        expected = {
            (saga.debit_shard, "hold"): saga.debit_account,
            (saga.credit_shard, "credit"): saga.credit_account,
        }
    account = expected.get((shard, kind))
    said = f"shard {shard}: {kind} of {op.account_id} {op.amount}"
    if account is None:
        return f"{said}: the saga ({_describe(saga)}) asks for none"
    if (op.account_id, op.amount) != (account, saga.amount):
        return f"{said}: the saga asks for {account} {saga.amount}"
    return None


def _amount(account: str, signed: int, currency: str) -> str:
    return f"{account} {signed:+d} {currency}"


def _describe(saga: SagaView) -> str:
    return (
        f"{saga.debit_account}@{saga.debit_shard} -> {saga.credit_account}@{saga.credit_shard}"
        f" {saga.amount} {saga.currency}, {saga.status}"
    )
