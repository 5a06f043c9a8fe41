"""The chaos checker finds each invariant's violation when one is planted, and nothing in a
consistent history. A checker that cannot fail proves nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator.saga.reconciliation import OperationView, SagaView
from deploy.chaos.checker import (
    INVARIANTS,
    BalanceRead,
    History,
    LedgerState,
    Observed,
    Sent,
    ShardState,
    check,
)
from shards.domain.chain import ChainedEntry
from shards.domain.model import GENESIS_HASH, entry_hash
from shards.domain.replay import Balance, replay

ISSUER, T = "issuer", "transit:EUR"


def chained(rows: list[tuple[str, str, str, str, int]]) -> list[ChainedEntry]:
    """(transfer, leg, kind, account, signed amount) rows -> a correctly hashed journal."""
    entries, prev = [], GENESIS_HASH
    for seq, (transfer, leg, kind, account, amount) in enumerate(rows, 1):
        digest = entry_hash(prev, seq, transfer, leg, kind, account, amount, "EUR", f"m{seq}", 1_000 + seq)
        entries.append(
            ChainedEntry(
                seq, transfer, leg, kind, account, amount, "EUR", f"m{seq}", 1_000 + seq, prev, digest
            )
        )
        prev = digest
    return entries


def post(t: str, kind: str, debit: str, credit: str, amount: int) -> list[tuple[str, str, str, str, int]]:
    return [(t, "debit", kind, debit, -amount), (t, "credit", kind, credit, amount)]


def saga(t: str, status: str, debit: str, credit: str, amount: int, shards: tuple[int, int]) -> SagaView:
    return SagaView(t, status, debit, credit, amount, "EUR", *shards)


def shard(
    rows: list[tuple[str, str, str, str, int]], ops: dict[tuple[str, str], OperationView]
) -> ShardState:
    journal = chained(rows)
    held = [(o.account_id, o.amount) for (_, k), o in ops.items() if k == "hold" and o.state == "held"]
    balances = replay(((e.account_id, e.amount) for e in journal), held)
    return ShardState(journal, ops, balances, floors={ISSUER: -(10**12)})


def world() -> tuple[History, LedgerState]:
    """Shard 0 holds the issuer, A and B; shard 1 holds C. Funding, a same-shard transfer, a
    completed saga, a rejected transfer, a compensated saga, a duplicate and a reused id."""
    shard0 = shard(
        post("fund", "transfer", ISSUER, "A", 1_000) + post("t1", "transfer", "A", "B", 100)
        + post("t2", "commit", "A", T, 200),
        {
            ("fund", "transfer"): OperationView(ISSUER, 1_000, "committed"),
            ("t1", "transfer"): OperationView("A", 100, "committed"),
            ("t2", "hold"): OperationView("A", 200, "committed"),
            ("t4", "hold"): OperationView("A", 50, "released"),
        },
    )  # fmt: skip
    shard1 = shard(
        post("t2", "credit", T, "C", 200), {("t2", "credit"): OperationView("C", 200, "committed")}
    )
    sagas = {
        "fund": saga("fund", "completed", ISSUER, "A", 1_000, (0, 0)),
        "t1": saga("t1", "completed", "A", "B", 100, (0, 0)),
        "t2": saga("t2", "completed", "A", "C", 200, (0, 1)),
        "t3": saga("t3", "rejected", "A", "B", 10**9, (0, 0)),
        "t4": saga("t4", "compensated", "A", "C", 50, (0, 1)),
    }
    sent = [Sent(t, f"fp-{t}") for t in ("t1", "t2", "t3", "t4")]
    sent += [Sent("t1", "fp-t1", "duplicate"), Sent("t2", "fp-other", "reused")]
    results = [
        Observed("t1", "r1", "completed", None, "fp-t1"),
        Observed("t1", "r1", "completed", None, "fp-t1"),  # the duplicate's answer: the same result
        Observed("t2", "r2", "completed", None, "fp-t2"),
        Observed("t2", "r2b", "rejected", "transfer_id_reused", "fp-other"),
        Observed("t3", "r3", "rejected", "insufficient_funds", "fp-t3"),
        Observed("t4", "r4", "compensated", "account_frozen", "fp-t4"),
    ]
    history = History({"EUR": 1_000}, frozenset({ISSUER}), sent, results, [BalanceRead("A", 700, 0)])
    ledger = LedgerState(sagas, {t: f"fp-{t}" for t in sagas}, {0: shard0, 1: shard1})
    return history, ledger


def violated(history: History, ledger: LedgerState) -> set[str]:
    return {name for name, found in check(history, ledger).items() if found}


def test_a_consistent_history_violates_nothing() -> None:
    found = check(*world())
    assert set(found) == set(INVARIANTS)
    assert found == {name: [] for name in INVARIANTS}


def test_a_lost_credit_is_caught() -> None:
    history, ledger = world()
    credit_shard = ledger.shards[1]
    ledger.shards[1] = shard([], {})  # the credit of t2 never happened, yet its debit was committed
    assert credit_shard.journal
    # The money sits in the debit shard's transit account, so conservation counting transit
    # still holds: atomicity is what catches it.
    assert violated(history, ledger) == {"I3"}
    assert any("t2" in v and "without its credit" in v for v in check(history, ledger)["I3"])


def test_a_double_debit_is_caught() -> None:
    history, ledger = world()
    rows = post("fund", "transfer", ISSUER, "A", 1_000) + post("t1", "transfer", "A", "B", 100) * 2
    rows += post("t2", "commit", "A", T, 200)
    ledger.shards[0] = replace(ledger.shards[0], journal=chained(rows))  # balances kept as before
    assert {"I3", "I6"} <= violated(history, ledger)


def test_a_negative_balance_is_caught_at_a_read_and_at_the_end() -> None:
    history, ledger = world()
    history = replace(history, reads=[BalanceRead("B", -5, 0)])
    assert violated(history, ledger) == {"I2"}
    history, ledger = world()
    ledger.shards[0].balances["B"] = Balance(-1, 0)
    assert "I2" in violated(history, ledger)


def test_a_broken_chain_link_is_caught() -> None:
    history, ledger = world()
    journal = ledger.shards[0].journal
    journal[2] = replace(journal[2], amount=journal[2].amount - 1)  # rewritten without rehashing
    found = check(history, ledger)["I7"]
    assert found == ["shard 0: seq 3: the entry's content does not match its hash"]


def test_a_stuck_saga_is_caught() -> None:
    history, ledger = world()
    ledger.unsettled.append("t4")
    assert violated(history, ledger) == {"I8"}


@pytest.mark.parametrize("lose", ["t3", "t4"])
def test_a_lost_or_conflicting_result_is_caught(lose: str) -> None:
    history, ledger = world()
    history = replace(history, results=[r for r in history.results if r.transfer_id != lose])
    assert violated(history, ledger) == {"I4"}
    history, ledger = world()
    extra = Observed(lose, "again", "completed", None, f"fp-{lose}")
    assert violated(replace(history, results=[*history.results, extra]), ledger) == {"I4"}


def test_a_result_the_ledger_disagrees_with_is_caught() -> None:
    history, ledger = world()
    ledger.sagas["t3"] = replace(ledger.sagas["t3"], status="compensated")
    assert "I4" in violated(history, ledger)


def test_a_reused_id_that_was_not_rejected_is_caught() -> None:
    history, ledger = world()
    history = replace(history, results=[r for r in history.results if r.reason != "transfer_id_reused"])
    assert violated(history, ledger) == {"I5"}
    history, ledger = world()
    ledger.fingerprints["t2"] = "fp-other"  # the second body replaced the first
    assert violated(history, ledger) == {"I5"}


def test_money_created_from_nothing_is_caught() -> None:
    history, ledger = world()
    assert violated(replace(history, issued={"EUR": 900}), ledger) == {"I1"}
