"""Reconciliation of two-phase transfers: a clean ledger with pending transfers in every state,
then one planted violation at a time (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from coordinator.saga.reconciliation import OperationView, SagaView, ShardView, reconcile
from tests.unit.test_reconciliation import TRANSIT, _post

# P1 same-shard posted for 40 of 100; P2 cross-shard posted for 60 of 100; P3 cross-shard pending;
# P4 same-shard voided; P5 cross-shard expired; P6 cross-shard posted in part, its credit settled
# and its hold not yet posted (in flight).
P1, P2, P3 = ("aaaaaaa1-0000-4000-8000-00000000000" + str(i) for i in (1, 2, 3))
P4, P5, P6 = ("aaaaaaa1-0000-4000-8000-00000000000" + str(i) for i in (4, 5, 6))
Views = tuple[dict[str, SagaView], dict[int, ShardView]]


def _clean() -> Views:
    sagas = {
        P1: SagaView(P1, "completed", "alice", "dave", 100, "EUR", 0, 0, pending=True, post_amount=40),
        P2: SagaView(P2, "completed", "alice", "bob", 100, "EUR", 0, 1, pending=True, post_amount=60),
        P3: SagaView(P3, "pending", "alice", "bob", 100, "EUR", 0, 1, pending=True),
        P4: SagaView(P4, "voided", "alice", "dave", 100, "EUR", 0, 0, pending=True),
        P5: SagaView(P5, "expired", "alice", "bob", 100, "EUR", 0, 1, pending=True),
        P6: SagaView(P6, "in_flight", "alice", "bob", 100, "EUR", 0, 1, pending=True, post_amount=70),
    }
    debit = ShardView(
        operations={
            (P1, "hold"): OperationView("alice", 100, "committed"),
            (P1, "credit"): OperationView("dave", 100, "committed"),
            (P2, "hold"): OperationView("alice", 100, "committed"),
            (P3, "hold"): OperationView("alice", 100, "held"),
            (P4, "hold"): OperationView("alice", 100, "released"),
            (P4, "credit"): OperationView("dave", 100, "released"),
            (P5, "hold"): OperationView("alice", 100, "released"),
            (P6, "hold"): OperationView("alice", 100, "held"),
        },
        transit={"EUR": 60},
    )
    _post(debit, P1, "transfer", "alice", "dave", 40)
    _post(debit, P2, "commit", "alice", TRANSIT, 60)
    credit = ShardView(
        operations={
            (P2, "credit"): OperationView("bob", 100, "committed"),
            (P3, "credit"): OperationView("bob", 100, "held"),
            (P5, "credit"): OperationView("bob", 100, "released"),
            (P6, "credit"): OperationView("bob", 100, "committed"),
        },
        transit={"EUR": -60 - 70},
    )
    _post(credit, P2, "credit", TRANSIT, "bob", 60)
    _post(credit, P6, "credit", TRANSIT, "bob", 70)
    return sagas, {0: debit, 1: credit}


def test_pending_transfers_in_every_state_reconcile() -> None:
    assert reconcile(*_clean()) == []


def _posted_the_whole_hold(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    _post(v[0], P1, "transfer", "alice", "dave", 60)  # 100 moved where the post said 40


def _voided_but_moved(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    _post(v[0], P4, "transfer", "alice", "dave", 100)


def _expired_but_credit_settled(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[1].operations[(P5, "credit")] = OperationView("bob", 100, "committed")
    _post(v[1], P5, "credit", TRANSIT, "bob", 100)
    v[1].transit["EUR"] -= 100


def _hold_left_after_expiry(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[0].operations[(P5, "hold")] = OperationView("alice", 100, "held")


def _pending_credit_left_after_void(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[0].operations[(P4, "credit")] = OperationView("dave", 100, "held")


def _completed_but_hold_open(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[0].operations[(P2, "hold")] = OperationView("alice", 100, "held")
    v[0].net[(P2, "alice")] = 0


PLANTED: dict[str, tuple[Callable[[dict[str, SagaView], dict[int, ShardView]], None], str]] = {
    "posted more than the post": (_posted_the_whole_hold, P1),
    "a voided transfer moved money": (_voided_but_moved, P4),
    "an expired transfer's credit settled": (_expired_but_credit_settled, P5),
    "a hold outlives its expiry": (_hold_left_after_expiry, P5),
    "a pending credit outlives its void": (_pending_credit_left_after_void, P4),
    "completed with its hold still open": (_completed_but_hold_open, P2),
}


@pytest.mark.parametrize(("plant", "subject"), PLANTED.values(), ids=PLANTED.keys())
def test_each_planted_violation_is_found(
    plant: Callable[[dict[str, SagaView], dict[int, ShardView]], None], subject: str
) -> None:
    sagas, views = copy.deepcopy(_clean())
    plant(sagas, views)
    found = reconcile(sagas, views)
    assert found, "the checker missed it"
    assert subject in {v.subject for v in found}, found
