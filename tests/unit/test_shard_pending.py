"""A shard's two-phase rules: holds with pending credits, posted in full or in part, or voided."""

from __future__ import annotations

import pytest

from schemas.shard_messages import (
    CancelCredit,
    ChangeAccountStatus,
    HoldCredit,
    HoldTransfer,
    PostHold,
    PostPending,
    ReleaseReservation,
    SettleCredit,
    ShardCommand,
    VoidPending,
)
from shards.domain.book import ShardBook
from shards.domain.model import COMMITTED, CREDIT, HELD, HOLD, RELEASED, transit_account
from tests.unit.test_shard_domain import (
    A,
    B,
    C,
    D,
    accepted,
    assert_chain,
    credit,
    journal_sums,
    new_book,
    new_id,
    open_account,
    reserve,
    snapshot,
)


def funded(amount: int = 1_000) -> ShardBook:
    book = new_book()
    for account in (A, B, C):
        open_account(book, account)
    credit(book, A, amount)
    return book


def pending_of(book: ShardBook, account: str) -> tuple[int, int, int, int]:
    """(posted, pending debits, pending credits, available)."""
    a = book.accounts[account]
    return a.posted, a.reserved, a.pending_credit, a.available


def hold(book: ShardBook, amount: int = 300, debit: str = A, credit_to: str = B) -> str:
    transfer_id = new_id()
    accepted(book, HoldTransfer(new_id(), transfer_id, debit, credit_to, amount, "EUR"), "funds_held")
    return transfer_id


def test_a_same_shard_hold_sets_funds_aside_and_shows_the_credit_as_pending() -> None:
    book = funded()
    transfer_id = hold(book, 300)
    assert pending_of(book, A) == (1_000, 300, 0, 700)
    assert pending_of(book, B) == (0, 0, 300, 0)  # pending, not spendable
    assert book.operations[(transfer_id, HOLD)].state == HELD
    assert book.operations[(transfer_id, CREDIT)].state == HELD
    assert book.entries[-1].transfer_id != transfer_id  # nothing posted yet


def test_posting_less_than_the_hold_moves_that_much_and_releases_the_rest() -> None:
    book = funded()
    transfer_id = hold(book, 300)
    reply = accepted(book, PostPending(new_id(), transfer_id, A, B, 120), "pending_posted")
    assert pending_of(book, A) == (880, 0, 0, 880)
    assert pending_of(book, B) == (120, 0, 0, 120)
    posted = [e for e in book.entries if e.transfer_id == transfer_id]
    assert [(e.account_id, e.amount, e.kind) for e in posted] == [(A, -120, "transfer"), (B, 120, "transfer")]
    assert reply.journal_seq == posted[-1].seq
    assert_chain(book.entries)
    # once posted, the same post again is a harmless repeat and a void is refused
    accepted(book, PostPending(new_id(), transfer_id, A, B, 120), "pending_posted", "already_applied")
    accepted(book, VoidPending(new_id(), transfer_id, A, B), "rejected", "reservation_committed")


def test_voiding_a_same_shard_hold_returns_everything_and_posts_nothing() -> None:
    book = funded()
    transfer_id = hold(book, 300)
    seq = book.last_seq
    accepted(book, VoidPending(new_id(), transfer_id, A, B), "pending_voided")
    assert pending_of(book, A) == (1_000, 0, 0, 1_000)
    assert pending_of(book, B) == (0, 0, 0, 0)
    assert book.last_seq == seq
    accepted(book, VoidPending(new_id(), transfer_id, A, B), "pending_voided", "already_applied")
    accepted(book, PostPending(new_id(), transfer_id, A, B, 300), "rejected", "reservation_released")


def test_a_post_above_the_hold_is_refused_and_changes_nothing() -> None:
    book = funded()
    transfer_id = hold(book, 300)
    before = snapshot(book)
    accepted(book, PostPending(new_id(), transfer_id, A, B, 301), "rejected", "amount_exceeds_hold")
    assert snapshot(book) == before


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (lambda: HoldTransfer(new_id(), new_id(), A, B, 1_001, "EUR"), "insufficient_funds"),
        (lambda: HoldTransfer(new_id(), new_id(), A, A, 1, "EUR"), "same_account"),
        (lambda: HoldTransfer(new_id(), new_id(), A, D, 1, "EUR"), "account_not_found"),
        (lambda: HoldTransfer(new_id(), new_id(), A, B, 1, "USD"), "currency_mismatch"),
        (lambda: PostPending(new_id(), new_id(), A, B, 1), "reservation_not_found"),
        (lambda: VoidPending(new_id(), new_id(), A, B), "reservation_not_found"),
        (lambda: SettleCredit(new_id(), new_id(), B, 1), "credit_not_found"),
        (lambda: PostHold(new_id(), new_id(), A, 1), "reservation_not_found"),
    ],
)
def test_two_phase_rejections_change_nothing(command: object, reason: str) -> None:
    book = funded()
    before = snapshot(book)
    made = command()  # type: ignore[operator]
    assert isinstance(made, ShardCommand)
    accepted(book, made, "rejected", reason)
    assert snapshot(book) == before


def test_a_hold_on_a_frozen_credit_account_is_refused_with_nothing_held() -> None:
    book = funded()
    accepted(book, ChangeAccountStatus(new_id(), B, "frozen"), "account_status_changed")
    before = snapshot(book)
    accepted(book, HoldTransfer(new_id(), new_id(), A, B, 10, "EUR"), "rejected", "account_frozen")
    assert snapshot(book) == before


def test_an_account_with_a_pending_credit_cannot_be_closed() -> None:
    book = funded()
    hold(book, 10, A, B)
    accepted(book, ChangeAccountStatus(new_id(), B, "closed"), "rejected", "account_not_empty")


def test_cross_shard_credit_side_held_then_settled_for_less() -> None:
    book = funded()
    transfer_id = new_id()
    accepted(book, HoldCredit(new_id(), transfer_id, B, 500, "EUR"), "credit_held")
    accepted(book, HoldCredit(new_id(), transfer_id, B, 500, "EUR"), "credit_held", "already_applied")
    assert pending_of(book, B) == (0, 0, 500, 0)
    accepted(book, SettleCredit(new_id(), transfer_id, B, 501), "rejected", "amount_exceeds_hold")
    accepted(book, SettleCredit(new_id(), transfer_id, B, 200), "credit_settled")
    assert pending_of(book, B) == (200, 0, 0, 200)
    assert book.accounts[transit_account("EUR")].posted == -1_000 - 200  # funding credit and this one
    assert book.operations[(transfer_id, CREDIT)].state == COMMITTED
    accepted(book, SettleCredit(new_id(), transfer_id, B, 200), "credit_settled", "already_applied")
    accepted(book, CancelCredit(new_id(), transfer_id, B), "rejected", "credit_applied")


def test_cross_shard_credit_side_held_then_cancelled() -> None:
    book = funded()
    transfer_id = new_id()
    accepted(book, HoldCredit(new_id(), transfer_id, B, 500, "EUR"), "credit_held")
    accepted(book, CancelCredit(new_id(), transfer_id, B), "credit_cancelled")
    assert pending_of(book, B) == (0, 0, 0, 0)
    assert book.operations[(transfer_id, CREDIT)].state == RELEASED
    accepted(book, SettleCredit(new_id(), transfer_id, B, 500), "rejected", "credit_cancelled")
    # a hold that arrives after its cancellation must not show a pending credit
    late = new_id()
    accepted(book, CancelCredit(new_id(), late, B), "credit_cancelled")
    accepted(book, HoldCredit(new_id(), late, B, 5, "EUR"), "rejected", "credit_cancelled")


def test_cross_shard_debit_side_posted_in_part_releases_the_rest() -> None:
    book = funded()
    transfer_id = reserve(book, A, 400)
    accepted(book, PostHold(new_id(), transfer_id, A, 401), "rejected", "amount_exceeds_hold")
    accepted(book, PostHold(new_id(), transfer_id, A, 150), "hold_posted")
    assert pending_of(book, A) == (850, 0, 0, 850)
    accepted(book, PostHold(new_id(), transfer_id, A, 150), "hold_posted", "already_applied")
    accepted(book, ReleaseReservation(new_id(), transfer_id, A), "rejected", "reservation_committed")
    sums = journal_sums(book.entries)
    assert sum(sums.values()) == 0


def test_pending_amounts_are_part_of_what_the_batch_writes_back() -> None:
    book = funded()
    hold(book, 70)
    changed = {a.account_id: a for a in book.changes().created}
    assert changed[B].pending_credit == 70
