"""Reconciliation: do the shards' journals agree with the sagas? Pure: views in, violations out.

Checked, for a consistent read of the coordinator and every shard:
- each shard's journal sums to zero per currency;
- each saga's legs on the shards are a valid prefix of its flow: a completed saga has every leg
  exactly once, a rejected or compensated one nets to zero with no leg applied, and no saga ever
  has a credit applied while its hold was released, or a commit without its credit;
- every leg on a shard belongs to a saga the coordinator knows;
- the transit accounts hold exactly what in-flight sagas have credited but not yet committed;
- no reservation outlives its saga.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class OperationView:
    account_id: str
    amount: int
    state: str  # held | committed | released


@dataclass
class ShardView:
    journal_by_currency: dict[str, int] = field(default_factory=dict)
    operations: dict[tuple[str, str], OperationView] = field(default_factory=dict)  # (transfer, kind)
    net: dict[tuple[str, str], int] = field(default_factory=dict)  # (transfer, account) -> journal sum
    transit: dict[str, int] = field(default_factory=dict)  # currency -> transit posted balance


@dataclass(frozen=True)
class Violation:
    check: str
    subject: str
    detail: str


def reconcile(sagas: Mapping[str, SagaView], shards: Mapping[int, ShardView]) -> list[Violation]:  # noqa: PLR0912
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
            pending_credit[saga.currency] = pending_credit.get(saga.currency, 0) + saga.amount
    for shard, view in sorted(shards.items()):
        for (transfer_id, kind), op in sorted(view.operations.items()):
            owner = sagas.get(transfer_id)
            if owner is None and kind != "transfer" and op.amount > 0:
                found.append(Violation("leg_without_saga", transfer_id, f"{kind} on shard {shard}"))
            if kind == "hold" and op.state == "held" and (owner is None or owner.status != "in_flight"):
                status = owner.status if owner else "unknown"
                found.append(
                    Violation("reservation_outlives_saga", transfer_id, f"held on shard {shard}, {status}")
                )
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
    t, a = saga.transfer_id, saga.amount
    debit, credit = shards.get(saga.debit_shard, ShardView()), shards.get(saga.credit_shard, ShardView())
    debit_net, credit_net = (
        debit.net.get((t, saga.debit_account), 0),
        credit.net.get((t, saga.credit_account), 0),
    )
    if saga.debit_shard == saga.credit_shard:
        posted = (t, "transfer") in debit.operations
        if posted and (debit_net, credit_net) != (-a, a):
            return f"posted with legs {debit_net}/{credit_net}", False
        if not posted and (debit_net or credit_net):
            return "journal legs without the transfer", False
        if saga.status == "completed" and not posted:
            return "completed but not posted", False
        if saga.status in ("rejected", "compensated") and posted:
            return "posted but reported not done", False
        return None, False
    hold = debit.operations.get((t, "hold"))
    hold_state = hold.state if hold and hold.amount > 0 else "none"
    credit_op = credit.operations.get((t, "credit"))
    credited = credit_op is not None and credit_op.state == "committed"
    if debit_net != (-a if hold_state == "committed" else 0):
        return f"debit leg {debit_net} with hold {hold_state}", False
    if credit_net != (a if credited else 0):
        return f"credit leg {credit_net}, credited={credited}", False
    if credited and hold_state in ("released", "none"):
        return "credit applied but hold not kept (money created)", False
    if hold_state == "committed" and not credited:
        return "hold committed without its credit", False
    expected = {
        "completed": hold_state == "committed" and credited,
        "rejected": hold_state in ("none", "released") and not credited,
        "compensated": hold_state in ("none", "released") and not credited,
        "in_flight": True,
    }
    if not expected.get(saga.status, False):
        return f"hold {hold_state}, credited={credited}", False
    return None, credited and hold_state == "held"
