"""The chaos checker with two-phase transfers: a history with a pending transfer in every end state
(posted in full, posted for less, voided, expired; a post that lost to the expiry; duplicated
posts and voids) violates nothing, and a planted violation of each pending invariant is reported."""

from __future__ import annotations

from dataclasses import replace

from coordinator.saga.reconciliation import OperationView, SagaView
from deploy.chaos.checker import (
    INVARIANTS,
    History,
    LedgerState,
    Observed,
    Resolver,
    Sent,
    ShardState,
    check,
)
from shards.domain.replay import Balance, replay
from tests.unit.test_chaos_checker import ISSUER, T, chained, post

# P1 same-shard A->B posted in full by Q1; P2 cross-shard A->C posted for 60 by Q2 (sent twice);
# P3 cross-shard A->C voided by V3 (sent twice); P4 same-shard A->B expired, Q4 lost to the expiry.
Rows = list[tuple[str, str, str, str, int]]
Ops = dict[tuple[str, str], OperationView]


def pending_shard(rows: Rows, ops: Ops) -> ShardState:
    journal = chained(rows)
    held = [(o.account_id, o.amount) for (_, k), o in ops.items() if k == "hold" and o.state == "held"]
    credits = [(o.account_id, o.amount) for (_, k), o in ops.items() if k == "credit" and o.state == "held"]
    balances = replay(((e.account_id, e.amount) for e in journal), held, credits)
    return ShardState(journal, ops, balances, floors={ISSUER: -(10**12), T: -(10**12)})


def world() -> tuple[History, LedgerState]:
    shard0 = pending_shard(
        post("fund", "transfer", ISSUER, "A", 1_000) + post("P1", "transfer", "A", "B", 100)
        + post("P2", "commit", "A", T, 60),
        {
            ("fund", "transfer"): OperationView(ISSUER, 1_000, "committed"),
            ("P1", "hold"): OperationView("A", 100, "committed"),
            ("P1", "credit"): OperationView("B", 100, "committed"),
            ("P2", "hold"): OperationView("A", 100, "committed"),
            ("P3", "hold"): OperationView("A", 100, "released"),
            ("P4", "hold"): OperationView("A", 100, "released"),
            ("P4", "credit"): OperationView("B", 100, "released"),
        },
    )  # fmt: skip
    shard1 = pending_shard(
        post("P2", "credit", T, "C", 60),
        {
            ("P2", "credit"): OperationView("C", 100, "committed"),
            ("P3", "credit"): OperationView("C", 100, "released"),
        },
    )
    sagas = {
        "fund": SagaView("fund", "completed", ISSUER, "A", 1_000, "EUR", 0, 0),
        "P1": SagaView("P1", "completed", "A", "B", 100, "EUR", 0, 0, pending=True, post_amount=100),
        "P2": SagaView("P2", "completed", "A", "C", 100, "EUR", 0, 1, pending=True, post_amount=60),
        "P3": SagaView("P3", "voided", "A", "C", 100, "EUR", 0, 1, pending=True),
        "P4": SagaView("P4", "expired", "A", "B", 100, "EUR", 0, 0, pending=True),
    }
    resolvers = {
        "Q1": Resolver("P1", "completed", 100),
        "Q2": Resolver("P2", "completed", 60),
        "V3": Resolver("P3", "voided", 100),
        "Q4": Resolver("P4", "rejected", 100),
    }
    sent = [Sent(p, f"fp-{p}", command="pending", amount=100) for p in ("P1", "P2", "P3", "P4")]
    sent += [
        Sent("Q1", "fp-Q1", command="post", pending_id="P1"),
        Sent("Q2", "fp-Q2", command="post", amount=60, pending_id="P2"),
        Sent("Q2", "fp-Q2", "duplicate", command="post", amount=60, pending_id="P2"),
        Sent("V3", "fp-V3", command="void", pending_id="P3"),
        Sent("V3", "fp-V3", "duplicate", command="void", pending_id="P3"),
        Sent("Q4", "fp-Q4", command="post", pending_id="P4"),
    ]
    results = [Observed(p, f"h-{p}", "pending", None, f"fp-{p}", 100) for p in ("P1", "P2", "P3", "P4")]
    results += [
        Observed("P1", "f-P1", "completed", None, "fp-P1", 100),
        Observed("Q1", "r-Q1", "completed", None, "fp-Q1", 100, "P1"),
        Observed("P2", "f-P2", "completed", None, "fp-P2", 100),
        Observed("Q2", "r-Q2", "completed", None, "fp-Q2", 60, "P2"),
        Observed("P3", "f-P3", "voided", None, "fp-P3", 100),
        Observed("V3", "r-V3", "voided", None, "fp-V3", 100, "P3"),
        Observed("P4", "f-P4", "expired", None, "fp-P4", 100),
        Observed("Q4", "r-Q4", "rejected", "pending_transfer_expired", "fp-Q4", 100, "P4"),
    ]
    history = History({"EUR": 1_000}, frozenset({ISSUER}), sent, results)
    fingerprints = {t: f"fp-{t}" for t in [*sagas, *resolvers]}
    ledger = LedgerState(sagas, fingerprints, {0: shard0, 1: shard1}, resolvers=resolvers)
    return history, ledger


def found(history: History, ledger: LedgerState) -> dict[str, list[str]]:
    return {name: v for name, v in check(history, ledger).items() if v}


def test_pending_transfers_in_every_end_state_violate_nothing() -> None:
    assert {"I9", "I10", "I11", "I12"} <= set(INVARIANTS)
    assert check(*world()) == {name: [] for name in INVARIANTS}


def test_a_pending_transfer_resolved_twice_is_caught() -> None:
    history, ledger = world()  # a second post, another id, also completed for P1: posted twice
    ledger.resolvers["Q1b"] = Resolver("P1", "completed", 100)
    ledger.fingerprints["Q1b"] = "fp-Q1b"
    history.sent.append(Sent("Q1b", "fp-Q1b", command="post", pending_id="P1"))
    history.results.append(Observed("Q1b", "r-Q1b", "completed", None, "fp-Q1b", 100, "P1"))
    assert set(found(history, ledger)) == {"I9"}
    assert any("P1" in v and "Q1" in v and "Q1b" in v for v in found(history, ledger)["I9"])


def test_a_pending_transfer_with_two_finals_or_none_is_caught() -> None:
    history, ledger = world()
    history.results.append(Observed("P3", "f2-P3", "expired", None, "fp-P3", 100))
    assert "I9" in found(history, ledger)
    history, ledger = world()
    history = replace(history, results=[r for r in history.results if r.message_id != "f-P4"])
    assert any("P4" in v and "no final" in v for v in found(history, ledger)["I9"])


def test_a_final_the_saga_row_disagrees_with_is_caught() -> None:
    history, ledger = world()
    ledger.sagas["P4"] = replace(ledger.sagas["P4"], status="voided")
    assert any("P4" in v and "ledger says voided" in v for v in found(history, ledger)["I9"])


def test_a_post_beyond_its_hold_is_caught() -> None:
    history, ledger = world()  # the ledger agrees with itself, but 120 moved from a hold of 100
    rows = post("fund", "transfer", ISSUER, "A", 1_000) + post("P1", "transfer", "A", "B", 100)
    ledger.shards[0] = pending_shard(rows + post("P2", "commit", "A", T, 120), ledger.shards[0].operations)
    ledger.shards[1] = pending_shard(post("P2", "credit", T, "C", 120), ledger.shards[1].operations)
    ledger.sagas["P2"] = replace(ledger.sagas["P2"], post_amount=120)
    ledger.resolvers["Q2"] = Resolver("P2", "completed", 120)
    history = replace(
        history, results=[replace(r, amount=120) if r.message_id == "r-Q2" else r for r in history.results]
    )
    assert set(found(history, ledger)) == {"I10"}
    assert any("P2" in v and "120" in v for v in found(history, ledger)["I10"])


def test_a_post_that_moved_another_amount_than_posted_is_caught() -> None:
    history, ledger = world()  # Q2 posted 60, the whole 100 moved
    rows = post("fund", "transfer", ISSUER, "A", 1_000) + post("P1", "transfer", "A", "B", 100)
    ledger.shards[0] = pending_shard(rows + post("P2", "commit", "A", T, 100), ledger.shards[0].operations)
    ledger.shards[1] = pending_shard(post("P2", "credit", T, "C", 100), ledger.shards[1].operations)
    assert any("P2" in v and "60" in v for v in found(history, ledger)["I10"])


def test_a_hold_left_after_everything_settled_is_caught() -> None:
    history, ledger = world()  # P5 still held, its pending credit still shown, after healing
    ops0 = {**ledger.shards[0].operations, ("P5", "hold"): OperationView("A", 70, "held")}
    ops1 = {**ledger.shards[1].operations, ("P5", "credit"): OperationView("C", 70, "held")}
    ledger.shards[0] = pending_shard([(e.transfer_id, e.leg, e.kind, e.account_id, e.amount)
                                      for e in ledger.shards[0].journal], ops0)  # fmt: skip
    ledger.shards[1] = pending_shard([(e.transfer_id, e.leg, e.kind, e.account_id, e.amount)
                                      for e in ledger.shards[1].journal], ops1)  # fmt: skip
    ledger.sagas["P5"] = SagaView("P5", "pending", "A", "C", 70, "EUR", 0, 1, pending=True)
    violations = found(history, ledger)
    assert set(violations) == {"I11"}, "a replay that counts pending credits agrees (I6)"
    assert any("A" in v and "reserved 70" in v for v in violations["I11"])
    assert any("C" in v and "pending credit 70" in v for v in violations["I11"])
    assert any("P5" in v and "held" in v for v in violations["I11"])


def test_a_post_after_a_void_is_caught() -> None:
    history, ledger = world()  # P3 was voided by V3, then Q3 posted it
    ledger.resolvers["Q3"] = Resolver("P3", "completed", 100)
    ledger.fingerprints["Q3"] = "fp-Q3"
    history.sent.append(Sent("Q3", "fp-Q3", command="post", pending_id="P3"))
    history.results.append(Observed("Q3", "r-Q3", "completed", None, "fp-Q3", 100, "P3"))
    assert any("Q3" in v and "P3" in v and "voided" in v for v in found(history, ledger)["I12"])


def test_a_void_after_an_expiry_or_a_post_is_caught() -> None:
    history, ledger = world()
    history.sent.append(Sent("V4", "fp-V4", command="void", pending_id="P4"))
    history.results.append(Observed("V4", "r-V4", "voided", None, "fp-V4", 100, "P4"))
    ledger.resolvers["V4"] = Resolver("P4", "voided", 100)
    ledger.fingerprints["V4"] = "fp-V4"
    assert any("V4" in v and "expired" in v for v in found(history, ledger)["I12"])
    history, ledger = world()
    history.sent.append(Sent("V1", "fp-V1", command="void", pending_id="P1"))
    history.results.append(Observed("V1", "r-V1", "voided", None, "fp-V1", 100, "P1"))
    assert any("V1" in v and "completed" in v for v in found(history, ledger)["I12"])


def test_a_lost_or_disputed_result_of_a_post_is_caught() -> None:
    history, ledger = world()  # the posts and voids are transfers with results of their own
    history = replace(history, results=[r for r in history.results if r.transfer_id != "V3"])
    assert any("V3" in v and "no terminal result" in v for v in found(history, ledger)["I4"])
    history, ledger = world()
    ledger.resolvers["Q4"] = replace(ledger.resolvers["Q4"], status="completed")
    assert any("Q4" in v and "ledger says completed" in v for v in found(history, ledger)["I4"])


def test_pending_credit_is_not_spendable() -> None:
    history, ledger = world()
    ledger.shards[1].balances["C"] = Balance(-50, 0, 100)  # spent what was only a pending credit
    assert "I2" in found(history, ledger)
