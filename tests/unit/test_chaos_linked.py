"""The chaos checker with linked batches: a history with batches in every end state (completed,
rejected, compensated by a refused credit and by a timeout, a pending batch that expired; one batch
sent twice) violates nothing, and a planted violation of each part of I13 is reported."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from coordinator.saga.reconciliation import OperationView, SagaView
from deploy.chaos.checker import INVARIANTS, History, LedgerState, Observed, Sent, check
from deploy.chaos.linked_checker import BatchRow, LegOutcome
from schemas.public import BatchLeg
from tests.unit.test_chaos_checker import ISSUER, T, post
from tests.unit.test_chaos_pending import pending_shard

# Shard 0 holds the issuer, A and B; shard 1 holds C. Every leg goes through transit (a commit on
# its debit shard, a credit on its credit shard), same-shard legs too.
# B1 completed: L1a A->C 100 (cross-shard), L1b A->B 50 (same shard); sent twice.
# B2 rejected: L2b A->B too large (insufficient_funds); L2a A->C 10 held, then released.
# B3 compensated: L3b A->C refused by frozen C (account_frozen); L3a A->B 20 undone.
# B4 compensated by a timeout (credit_timeout, no failed leg): L4a A->C 5, L4b B->C 5.
# B5 a pending batch that expired: L5a A->C 7, L5b A->B 8.
LEGS = {
    "B1": (("L1a", "A", "C", 100, (0, 1)), ("L1b", "A", "B", 50, (0, 0))),
    "B2": (("L2a", "A", "C", 10, (0, 1)), ("L2b", "A", "B", 10**9, (0, 0))),
    "B3": (("L3a", "A", "B", 20, (0, 0)), ("L3b", "A", "C", 30, (0, 1))),
    "B4": (("L4a", "A", "C", 5, (0, 1)), ("L4b", "B", "C", 5, (0, 1))),
    "B5": (("L5a", "A", "C", 7, (0, 1)), ("L5b", "A", "B", 8, (0, 0))),
}
ENDS = {
    "B1": ("completed", None, None),
    "B2": ("rejected", "insufficient_funds", "L2b"),
    "B3": ("compensated", "account_frozen", "L3b"),
    "B4": ("compensated", "credit_timeout", None),
    "B5": ("expired", None, None),
}


def rows0() -> list[tuple[str, str, str, str, int]]:
    return (
        post("fund", "transfer", ISSUER, "A", 1_000) + post("fundB", "transfer", ISSUER, "B", 100)
        + post("L1a", "commit", "A", T, 100) + post("L1b", "commit", "A", T, 50)
        + post("L1b", "credit", T, "B", 50)
    )  # fmt: skip


def ops0() -> dict[tuple[str, str], OperationView]:
    return {
        ("fund", "transfer"): OperationView(ISSUER, 1_000, "committed"),
        ("fundB", "transfer"): OperationView(ISSUER, 100, "committed"),
        ("L1a", "hold"): OperationView("A", 100, "committed"),
        ("L1b", "hold"): OperationView("A", 50, "committed"),
        ("L1b", "credit"): OperationView("B", 50, "committed"),
        ("L2a", "hold"): OperationView("A", 10, "released"),
        ("L3a", "hold"): OperationView("A", 20, "released"),
        ("L3a", "credit"): OperationView("B", 20, "released"),
        ("L3b", "hold"): OperationView("A", 30, "released"),
        ("L4a", "hold"): OperationView("A", 5, "released"),
        ("L4b", "hold"): OperationView("B", 5, "released"),
        ("L5a", "hold"): OperationView("A", 7, "released"),
        ("L5b", "hold"): OperationView("A", 8, "released"),
        ("L5b", "credit"): OperationView("B", 8, "released"),
    }


def ops1() -> dict[tuple[str, str], OperationView]:
    return {
        ("L1a", "credit"): OperationView("C", 100, "committed"),
        ("L2a", "credit"): OperationView("C", 10, "released"),
        ("L4a", "credit"): OperationView("C", 5, "released"),
        ("L4b", "credit"): OperationView("C", 5, "released"),
        ("L5a", "credit"): OperationView("C", 7, "released"),
    }


def outcomes(batch: str, state: str | None = None) -> tuple[LegOutcome, ...]:
    """The legs as the batch's result lists them (in `state`, else the batch's end state)."""
    end, reason, failed = ENDS[batch]
    state = state or end

    def why(leg: str) -> str | None:
        if state not in ("rejected", "compensated"):
            return None
        return reason if failed in (None, leg) else "linked_transfer_failed"

    return tuple(LegOutcome(leg[0], state, why(leg[0])) for leg in LEGS[batch])


def world() -> tuple[History, LedgerState]:
    sagas = {
        "fund": SagaView("fund", "completed", ISSUER, "A", 1_000, "EUR", 0, 0),
        "fundB": SagaView("fundB", "completed", ISSUER, "B", 100, "EUR", 0, 0),
    }
    sent = [Sent(t, f"fp-{t}") for t in ("fund", "fundB")]
    results = [Observed(t, f"r-{t}", "completed", None, f"fp-{t}") for t in ("fund", "fundB")]
    batches: dict[str, BatchRow] = {}
    for b, legs in LEGS.items():
        end, reason, failed = ENDS[b]
        for t, debit, credit, amount, (d, c) in legs:
            sagas[t] = SagaView(t, end, debit, credit, amount, "EUR", d, c, pending=True, linked=True)
        batches[b] = BatchRow(end, frozenset(leg[0] for leg in legs))
        body = tuple(BatchLeg(t, d, c, a, "EUR") for t, d, c, a, _ in legs)
        sent.append(Sent(b, f"fp-{b}", command="batch", legs=body))
        if b == "B5":
            results.append(Observed(b, f"p-{b}", "pending", None, f"fp-{b}", legs=outcomes(b, "pending")))
        results.append(Observed(b, f"r-{b}", end, reason, f"fp-{b}", legs=outcomes(b), failed_leg=failed))
    sent.append(replace(sent[-5], kind="duplicate"))  # B1 again, same id and body
    shards = {0: pending_shard(rows0(), ops0()), 1: pending_shard(post("L1a", "credit", T, "C", 100), ops1())}
    fingerprints = {t: f"fp-{t}" for t in [*sagas, *batches]}
    ledger = LedgerState(sagas, fingerprints, shards, batches=batches)
    return History({"EUR": 1_100}, frozenset({ISSUER}), sent, results), ledger


def found(history: History, ledger: LedgerState) -> dict[str, list[str]]:
    return {name: v for name, v in check(history, ledger).items() if v}


def with_result(history: History, batch: str, **changes: Any) -> History:
    """The history with the batch's final result changed."""
    results = [replace(r, **changes) if r.message_id == f"r-{batch}" else r for r in history.results]
    return replace(history, results=results)


def test_batches_in_every_end_state_violate_nothing() -> None:
    assert "I13" in INVARIANTS
    history, ledger = world()
    assert (history.sent[-1].kind, history.sent[-1].transfer_id) == ("duplicate", "B1")
    assert check(history, ledger) == {name: [] for name in INVARIANTS}


def test_a_batch_with_one_leg_posted_and_another_not_is_caught() -> None:
    history, ledger = world()  # each leg agrees with its own row (I3 is content); the batch does not
    rows = [r for r in rows0() if r[0] != "L1b"]
    ops = {**ops0(), ("L1b", "hold"): OperationView("A", 50, "released")}
    del ops[("L1b", "credit")]
    ledger.shards[0] = pending_shard(rows, ops)
    ledger.sagas["L1b"] = replace(ledger.sagas["L1b"], status="rejected")
    violations = found(replace(history, issued={"EUR": 1_100}), ledger)
    assert set(violations) == {"I13"}
    assert any("B1" in v and "L1b" in v and "not posted" in v for v in violations["I13"])
    assert any("L1b" in v and "rejected" in v and "completed" in v for v in violations["I13"])


def test_a_failed_batch_with_a_leg_that_moved_money_is_caught() -> None:
    history, ledger = world()  # B3 compensated, yet L3a's entries are there
    ops = {**ops0(), ("L3a", "hold"): OperationView("A", 20, "committed")}
    ops[("L3a", "credit")] = OperationView("B", 20, "committed")
    ledger.shards[0] = pending_shard(
        rows0() + post("L3a", "commit", "A", T, 20) + post("L3a", "credit", T, "B", 20), ops
    )
    ledger.sagas["L3a"] = replace(ledger.sagas["L3a"], status="completed")
    violations = found(history, ledger)
    assert set(violations) == {"I13"}
    assert any("B3" in v and "L3a" in v and "moved money" in v for v in violations["I13"])


def test_a_leg_posted_for_another_amount_is_caught() -> None:
    history, ledger = world()  # L1a's row and entries agree on 90; the batch sent 100
    rows = [r for r in rows0() if r[0] != "L1a"] + post("L1a", "commit", "A", T, 90)
    ledger.shards[0] = pending_shard(rows, {**ops0(), ("L1a", "hold"): OperationView("A", 90, "committed")})
    ledger.shards[1] = pending_shard(
        post("L1a", "credit", T, "C", 90),
        {("L1a", "credit"): OperationView("C", 90, "committed")}
        | {k: v for k, v in ops1().items() if k[0] != "L1a"},
    )
    ledger.sagas["L1a"] = replace(ledger.sagas["L1a"], amount=90)
    violations = found(history, ledger)
    assert set(violations) == {"I13"}
    assert any("B1" in v and "L1a" in v and "not posted" in v for v in violations["I13"])


def test_a_leg_whose_status_differs_from_its_batch_is_caught() -> None:
    history, ledger = world()
    ledger.sagas["L3a"] = replace(ledger.sagas["L3a"], status="rejected")  # nothing moved: I3 content
    violations = found(history, ledger)
    assert set(violations) == {"I13"}
    assert any("L3a" in v and "rejected" in v and "compensated" in v for v in violations["I13"])


def test_a_batch_whose_leg_rows_are_not_its_legs_is_caught() -> None:
    history, ledger = world()
    ledger.batches["B2"] = BatchRow("rejected", frozenset({"L2a"}))
    del ledger.sagas["L2b"]
    assert any("B2" in v and "L2b" in v for v in found(history, ledger)["I13"])


def test_a_failed_batch_whose_result_names_no_leg_of_its_own_is_caught() -> None:
    history, ledger = world()
    violations = found(with_result(history, "B2", failed_leg="L1a"), ledger)
    assert set(violations) == {"I13"}
    assert any("B2" in v and "L1a" in v and "not one of its legs" in v for v in violations["I13"])
    violations = found(with_result(history, "B3", failed_leg=None), ledger)  # not a timeout
    assert set(violations) == {"I13"}
    assert any("B3" in v and "names no failed leg" in v for v in violations["I13"])


def test_a_result_whose_legs_disagree_with_the_batch_is_caught() -> None:
    history, ledger = world()
    legs = (replace(outcomes("B2")[0], state="completed"), outcomes("B2")[1])
    violations = found(with_result(history, "B2", legs=legs), ledger)
    assert any("B2" in v and "L2a" in v and "completed" in v for v in violations["I13"])
    violations = found(with_result(history, "B1", legs=outcomes("B1")[:1]), ledger)
    assert any("B1" in v and "L1b" in v for v in violations["I13"])
    violations = found(with_result(history, "B1", legs=None), ledger)
    assert any("B1" in v and "no legs" in v for v in violations["I13"])
    legs = (outcomes("B3")[0], replace(outcomes("B3")[1], reason="linked_transfer_failed"))
    violations = found(with_result(history, "B3", legs=legs), ledger)
    assert any("B3" in v and "L3b" in v and "account_frozen" in v for v in violations["I13"])


def test_a_completed_batch_that_names_a_failed_leg_is_caught() -> None:
    history, ledger = world()
    violations = found(with_result(history, "B1", failed_leg="L1a"), ledger)
    assert any("B1" in v and "L1a" in v for v in violations["I13"])


def test_a_batch_is_a_transfer_sent_and_its_legs_are_not() -> None:
    history, ledger = world()  # the legs have no results of their own and need none; the batch does
    history = replace(history, results=[r for r in history.results if r.transfer_id != "B4"])
    violations = found(history, ledger)
    assert set(violations) == {"I4"}
    assert violations["I4"] == ["B4: no terminal result"]
    history, ledger = world()
    ledger.batches["B2"] = replace(ledger.batches["B2"], status="compensated")
    assert any("B2" in v and "ledger says compensated" in v for v in found(history, ledger)["I4"])


def test_a_batch_in_flight_after_healing_is_left_to_liveness() -> None:
    history, ledger = world()  # B1 stuck midway: one leg credited, none committed; I8 reports it
    ledger.batches["B1"] = replace(ledger.batches["B1"], status="in_flight")
    ledger.sagas["L1a"] = replace(ledger.sagas["L1a"], status="in_flight")
    ledger.sagas["L1b"] = replace(ledger.sagas["L1b"], status="in_flight")
    ledger.unsettled.extend(["B1", "L1a", "L1b"])
    history = replace(history, results=[r for r in history.results if r.transfer_id != "B1"])
    violations = found(history, ledger)
    assert "I13" not in violations
    assert set(violations) <= {"I4", "I8"}
