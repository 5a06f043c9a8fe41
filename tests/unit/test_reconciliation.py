"""The reconciliation checker catches each kind of disagreement it exists for (a checker that
cannot fail proves nothing): views of a clean ledger, then one planted violation at a time."""

from __future__ import annotations

import copy

import pytest

from coordinator.saga.reconciliation import (
    EntryGroup,
    OperationView,
    SagaView,
    ShardView,
    Violation,
    reconcile,
)

T1, T2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
T3, T4 = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
FORGED = "99999999-9999-4999-8999-999999999999"
TRANSIT = "transit:EUR"


def _post(
    view: ShardView, t: str, kind: str, debit: str, credit: str, amount: int, currency: str = "EUR"
) -> None:
    """The two journal entries a shard writes when it moves `amount` from `debit` to `credit`."""
    view.add_entries(EntryGroup(t, kind, "debit", debit, currency), 1, -amount)
    view.add_entries(EntryGroup(t, kind, "credit", credit, currency), 1, amount)


def _clean() -> tuple[dict[str, SagaView], dict[int, ShardView]]:
    """T1 completed cross-shard (alice@0 -> bob@1, 100); T2 compensated (alice -> carol@1, 50);
    T3 completed same-shard (alice -> dave@0, 30); T4 rejected same-shard (dave -> alice, 10**9)."""
    sagas = {
        T1: SagaView(T1, "completed", "alice", "bob", 100, "EUR", 0, 1),
        T2: SagaView(T2, "compensated", "alice", "carol", 50, "EUR", 0, 1),
        T3: SagaView(T3, "completed", "alice", "dave", 30, "EUR", 0, 0),
        T4: SagaView(T4, "rejected", "dave", "alice", 10**9, "EUR", 0, 0),
    }
    debit = ShardView(
        operations={
            (T1, "hold"): OperationView("alice", 100, "committed"),
            (T2, "hold"): OperationView("alice", 50, "released"),
            (T3, "transfer"): OperationView("alice", 30, "committed"),
        },
        transit={"EUR": 100},
    )
    _post(debit, T1, "commit", "alice", TRANSIT, 100)
    _post(debit, T3, "transfer", "alice", "dave", 30)
    credit = ShardView(
        operations={(T1, "credit"): OperationView("bob", 100, "committed")}, transit={"EUR": -100}
    )
    _post(credit, T1, "credit", TRANSIT, "bob", 100)
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


def _forged_same_shard_post(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    """What a PostTransfer written onto shard 0's topic by an outside producer leaves behind."""
    v[0].operations[(FORGED, "transfer")] = OperationView("alice", 12_345, "committed")
    _post(v[0], FORGED, "transfer", "alice", "dave", 12_345)


def _forged_entries_only(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    _post(v[0], FORGED, "transfer", "alice", "dave", 12_345)


def _post_under_a_known_saga(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    """A forged PostTransfer reusing cross-shard T1's id on its credit shard, between other accounts."""
    v[1].operations[(T1, "transfer")] = OperationView("erin", 12_345, "committed")
    _post(v[1], T1, "transfer", "erin", "frank", 12_345)


def _amount_differs(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    del v[1].entries[EntryGroup(T1, "credit", "debit", TRANSIT, "EUR")]
    del v[1].entries[EntryGroup(T1, "credit", "credit", "bob", "EUR")]
    v[1].net[(T1, TRANSIT)] = v[1].net[(T1, "bob")] = 0
    _post(v[1], T1, "credit", TRANSIT, "bob", 12_345)


def _currency_differs(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    """Same-shard T3 posted in USD although the coordinator recorded EUR."""
    _post(v[0], T3, "transfer", "dave", "alice", 30)  # take the EUR entries' effect out of the sums
    del v[0].entries[EntryGroup(T3, "transfer", "debit", "alice", "EUR")]
    del v[0].entries[EntryGroup(T3, "transfer", "credit", "dave", "EUR")]
    _post(v[0], T3, "transfer", "alice", "dave", 30, currency="USD")


def _credit_for_compensated(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    """T2 was compensated, yet its credit shard shows the credit (to another account: no
    operation row and a net of zero on carol, so only the entries give it away)."""
    _post(v[1], T2, "credit", TRANSIT, "erin", 50)
    v[1].transit["EUR"] -= 50
    v[0].transit["EUR"] += 50  # and the matching commit on the debit shard, keeping transit level
    _post(v[0], T2, "commit", "frank", TRANSIT, 50)


def _post_for_rejected(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    _post(v[0], T4, "transfer", "dave", "alice", 10**9)


def _repeated_entry(s: dict[str, SagaView], v: dict[int, ShardView]) -> None:
    v[1].entries[EntryGroup(T1, "credit", "credit", "bob", "EUR")] = (
        v[1].entries[EntryGroup(T1, "credit", "credit", "bob", "EUR")]._replace(entries=2)
    )


@pytest.mark.parametrize(
    ("plant", "check"),
    [
        (_forged_same_shard_post, "entry_without_saga"),
        (_forged_same_shard_post, "leg_without_saga"),
        (_forged_entries_only, "entry_without_saga"),
        (_post_under_a_known_saga, "entry_differs_from_saga"),
        (_post_under_a_known_saga, "operation_differs_from_saga"),
        (_amount_differs, "entry_differs_from_saga"),
        (_currency_differs, "entry_differs_from_saga"),
        (_credit_for_compensated, "entry_for_failed_saga"),
        (_post_for_rejected, "entry_for_failed_saga"),
        (_repeated_entry, "entry_repeated"),
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


def test_a_forged_entry_is_reported_with_what_it_moved() -> None:
    sagas, views = copy.deepcopy(_clean())
    _forged_same_shard_post(sagas, views)
    found = {v for v in reconcile(sagas, views) if v.check == "entry_without_saga"}
    assert found == {
        Violation(
            "entry_without_saga", FORGED, "shard 0: transfer debit alice -12345 EUR: no saga has this id"
        ),
        Violation(
            "entry_without_saga", FORGED, "shard 0: transfer credit dave +12345 EUR: no saga has this id"
        ),
    }


def test_an_entry_that_differs_says_what_the_saga_expected() -> None:
    sagas, views = copy.deepcopy(_clean())
    _amount_differs(sagas, views)
    found = {v.detail for v in reconcile(sagas, views) if v.check == "entry_differs_from_saga"}
    assert "shard 1: credit credit bob +12345 EUR: the saga expects bob +100 EUR here" in found


def test_an_entry_for_a_compensated_saga_names_its_status() -> None:
    sagas, views = copy.deepcopy(_clean())
    _credit_for_compensated(sagas, views)
    found = {v.detail for v in reconcile(sagas, views) if v.check == "entry_for_failed_saga"}
    assert "shard 1: credit credit erin +50 EUR: the saga was compensated, so it has no entries" in found
