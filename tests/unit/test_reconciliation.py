"""The reconciliation checker catches each kind of disagreement it exists for (a checker that
cannot fail proves nothing): views of a clean ledger, then one planted violation at a time."""

from __future__ import annotations

import copy

import pytest

from coordinator.saga.reconciliation import OperationView, SagaView, ShardView, reconcile

T1, T2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def _clean() -> tuple[dict[str, SagaView], dict[int, ShardView]]:
    """T1 completed cross-shard (alice@0 -> bob@1, 100); T2 compensated (alice -> carol@1, 50)."""
    sagas = {
        T1: SagaView(T1, "completed", "alice", "bob", 100, "EUR", 0, 1),
        T2: SagaView(T2, "compensated", "alice", "carol", 50, "EUR", 0, 1),
    }
    debit = ShardView(
        journal_by_currency={"EUR": 0},
        operations={
            (T1, "hold"): OperationView("alice", 100, "committed"),
            (T2, "hold"): OperationView("alice", 50, "released"),
        },
        net={(T1, "alice"): -100, (T1, "transit:EUR"): 100},
        transit={"EUR": 100},
    )
    credit = ShardView(
        journal_by_currency={"EUR": 0},
        operations={(T1, "credit"): OperationView("bob", 100, "committed")},
        net={(T1, "bob"): 100, (T1, "transit:EUR"): -100},
        transit={"EUR": -100},
    )
    return sagas, {0: debit, 1: credit}


def test_a_clean_ledger_has_no_violations() -> None:
    assert reconcile(*_clean()) == []


def _lost_credit(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    del v[1].operations[(T1, "credit")]
    v[1].net[(T1, "bob")] = 0


def _double_debit(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[0].net[(T1, "alice")] = -200
    v[0].journal_by_currency["EUR"] = -100


def _credit_after_release(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[1].operations[(T2, "credit")] = OperationView("carol", 50, "committed")
    v[1].net[(T2, "carol")] = 50


def _hold_outlives(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[0].operations[(T2, "hold")] = OperationView("alice", 50, "held")


def _leg_without_saga(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    del s[T2]
    v[0].operations[(T2, "hold")] = OperationView("alice", 50, "committed")


def _transit_drift(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[0].transit["EUR"] = 130


def _rejected_with_a_leg(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    s[T1] = SagaView(T1, "rejected", "alice", "bob", 100, "EUR", 0, 1)


@pytest.mark.parametrize(
    ("plant", "check"),
    [
        (_lost_credit, "saga_legs"),
        (_double_debit, "journal_balanced"),
        (_double_debit, "saga_legs"),
        (_credit_after_release, "saga_legs"),
        (_hold_outlives, "reservation_outlives_saga"),
        (_leg_without_saga, "leg_without_saga"),
        (_transit_drift, "transit_matches_in_flight"),
        (_rejected_with_a_leg, "saga_legs"),
    ],
)
def test_each_planted_violation_is_reported(plant: object, check: str) -> None:
    sagas, views = copy.deepcopy(_clean())
    plant(sagas, views)  # type: ignore[operator]
    assert check in {v.check for v in reconcile(sagas, views)}
