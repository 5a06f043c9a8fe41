"""The rules of one shard (ShardBook): every outcome, every reason code, idempotency, the journal."""

from __future__ import annotations

import copy
import itertools
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from schemas.currencies import JSON_DIR
from schemas.partitioning import PartitionMap
from schemas.shard_messages import (
    CancelCredit,
    ChangeAccountStatus,
    CommitReservation,
    CreditFunds,
    OpenAccount,
    PostHold,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    SettleCredit,
    ShardCommand,
    ShardReply,
    reply_id,
)
from shards.domain.book import ChangeSet, ShardBook
from shards.domain.model import (
    GENESIS_HASH,
    HELD,
    HOLD,
    MAX_BIGINT,
    RELEASED,
    Account,
    JournalEntry,
    entry_hash,
    transit_account,
)

MAP = PartitionMap.initial(2)
NOW_US = 1_700_000_000_000_000
MAX = MAX_BIGINT


def owned_by(shard: int, count: int) -> list[str]:
    """The first `count` account ids of the form acct-N that `MAP` puts on `shard`."""
    names = (f"acct-{i}" for i in itertools.count())
    return list(itertools.islice((n for n in names if MAP.shard_for(n) == shard), count))


A, B, C, D = owned_by(0, 4)  # shard 0
X, Y = owned_by(1, 2)  # shard 1


def new_id() -> str:
    return str(uuid.uuid4())


def new_book(shard: int = 0, now_us: int = NOW_US) -> ShardBook:
    return ShardBook(shard, MAP, [], [], 0, GENESIS_HASH, now_us)


def next_book(book: ShardBook, now_us: int = NOW_US) -> ShardBook:
    """A fresh book over a copy of `book`'s end state, as the service would load it for the next batch."""
    return ShardBook(
        book.shard,
        MAP,
        copy.deepcopy(list(book.accounts.values())),
        copy.deepcopy(list(book.operations.values())),
        book.last_seq,
        book.last_hash,
        now_us,
    )


def accepted(book: ShardBook, command: ShardCommand, outcome: str, reason: str | None = None) -> ShardReply:
    reply = book.apply(command)
    assert (reply.outcome, reply.reason) == (outcome, reason), reply
    return reply


def open_account(book: ShardBook, account_id: str, currency: str = "EUR", overdraft_limit: int = 0) -> None:
    accepted(book, OpenAccount(new_id(), account_id, currency, overdraft_limit), "account_opened")


def credit(book: ShardBook, account_id: str, amount: int, currency: str = "EUR") -> None:
    """Fund an account the way a cross-shard transfer does: a credit leg from the transit account."""
    accepted(book, CreditFunds(new_id(), new_id(), account_id, amount, currency), "funds_credited")


def reserve(book: ShardBook, account_id: str, amount: int, transfer_id: str | None = None) -> str:
    transfer_id = transfer_id or new_id()
    accepted(book, ReserveFunds(new_id(), transfer_id, account_id, amount, "EUR"), "funds_reserved")
    return transfer_id


def set_status(book: ShardBook, account_id: str, status: str) -> None:
    accepted(book, ChangeAccountStatus(new_id(), account_id, status), "account_status_changed")


def transfer(debit: str, credit: str, amount: int, currency: str = "EUR") -> PostTransfer:
    return PostTransfer(new_id(), new_id(), debit, credit, amount, currency)


def balances(book: ShardBook) -> dict[str, tuple[int, int]]:
    return {a.account_id: (a.posted, a.reserved) for a in book.accounts.values()}


def snapshot(book: ShardBook) -> Any:
    """Everything a command may change, deep-copied so later mutation cannot alter the copy."""
    return copy.deepcopy(
        (
            book.accounts,
            book.operations,
            book.entries,
            book.last_seq,
            book.last_hash,
            book.new_accounts,
            book.changed_accounts,
            book.changed_operations,
        )
    )


def journal_sums(entries: Iterable[JournalEntry]) -> dict[str, int]:
    sums: Counter[str] = Counter()
    for e in entries:
        sums[e.currency] += e.amount
    return dict(sums)


def assert_chain(entries: list[JournalEntry], start_seq: int = 1, start_hash: bytes = GENESIS_HASH) -> None:
    prev_seq, prev_hash = start_seq - 1, start_hash
    for e in entries:
        assert e.seq == prev_seq + 1
        assert e.prev_hash == prev_hash
        recomputed = entry_hash(
            e.prev_hash, e.seq, e.transfer_id, e.leg, e.kind, e.account_id, e.amount,
            e.currency, e.message_id, e.created_us,
        )  # fmt: skip
        assert e.hash == recomputed
        prev_seq, prev_hash = e.seq, e.hash


# --- every rejection ------------------------------------------------------------------------
# Each scenario prepares a fresh shard-0 book and returns the command that must be rejected.

Scenario = Callable[[ShardBook], ShardCommand]


def _insufficient_transfer(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=100)
    open_account(book, B)
    accepted(book, transfer(A, B, 100), "transfer_posted")  # exactly the overdraft limit is fine
    return transfer(A, B, 1)


def _insufficient_because_of_a_hold(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    open_account(book, B)
    credit(book, A, 100)
    reserve(book, A, 60)
    return transfer(A, B, 41)


def _insufficient_reserve(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=5)
    credit(book, A, 10)
    reserve(book, A, 15)
    return ReserveFunds(new_id(), new_id(), A, 1, "EUR")


def _not_found_debit(book: ShardBook) -> ShardCommand:
    open_account(book, B)
    return transfer(A, B, 1)


def _not_found_credit_side(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    return transfer(A, B, 1)


def _not_found_status(book: ShardBook) -> ShardCommand:
    return ChangeAccountStatus(new_id(), A, "frozen")


def _not_found_reserve(book: ShardBook) -> ShardCommand:
    return ReserveFunds(new_id(), new_id(), A, 1, "EUR")


def _not_found_credit(book: ShardBook) -> ShardCommand:
    return CreditFunds(new_id(), new_id(), A, 1, "EUR")


def _frozen_debit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    open_account(book, B)
    credit(book, A, 10)
    set_status(book, A, "frozen")
    return transfer(A, B, 1)


def _frozen_credit_side(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    open_account(book, B)
    credit(book, A, 10)
    set_status(book, B, "frozen")
    return transfer(A, B, 1)


def _frozen_reserve(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    credit(book, A, 10)
    set_status(book, A, "frozen")
    return ReserveFunds(new_id(), new_id(), A, 1, "EUR")


def _frozen_credit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    set_status(book, A, "frozen")
    return CreditFunds(new_id(), new_id(), A, 1, "EUR")


def _closed_credit_side(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    open_account(book, B)
    credit(book, A, 10)
    set_status(book, B, "closed")
    return transfer(A, B, 1)


def _closed_credit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    set_status(book, A, "closed")
    return CreditFunds(new_id(), new_id(), A, 1, "EUR")


def _closed_is_final(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    set_status(book, A, "closed")
    return ChangeAccountStatus(new_id(), A, "active")


def _closed_cannot_be_frozen(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    set_status(book, A, "closed")
    return ChangeAccountStatus(new_id(), A, "frozen")


def _exists(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    return OpenAccount(new_id(), A, "USD")


def _exists_closed(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    set_status(book, A, "closed")
    return OpenAccount(new_id(), A, "EUR")


def _not_empty_posted(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    credit(book, A, 1)
    return ChangeAccountStatus(new_id(), A, "closed")


def _not_empty_overdrawn(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    open_account(book, B)
    accepted(book, transfer(A, B, 3), "transfer_posted")
    return ChangeAccountStatus(new_id(), A, "closed")


def _not_empty_reserved(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=50)
    reserve(book, A, 50)  # posted stays 0: only the hold keeps it open
    return ChangeAccountStatus(new_id(), A, "closed")


def _currency_mismatch_transfer(book: ShardBook) -> ShardCommand:
    open_account(book, A, "EUR", overdraft_limit=10)
    open_account(book, B, "USD")
    return transfer(A, B, 1, "EUR")


def _currency_mismatch_debit(book: ShardBook) -> ShardCommand:
    open_account(book, A, "EUR", overdraft_limit=10)
    open_account(book, B, "USD")
    return transfer(A, B, 1, "USD")


def _currency_mismatch_reserve(book: ShardBook) -> ShardCommand:
    open_account(book, A, "EUR", overdraft_limit=10)
    return ReserveFunds(new_id(), new_id(), A, 1, "USD")


def _currency_mismatch_credit(book: ShardBook) -> ShardCommand:
    open_account(book, A, "EUR")
    return CreditFunds(new_id(), new_id(), A, 1, "USD")


def _overflow_transfer(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=MAX)
    open_account(book, B)
    open_account(book, C, overdraft_limit=MAX)
    accepted(book, transfer(A, B, MAX), "transfer_posted")  # B holds the largest BIGINT
    return transfer(C, B, 1)


def _overflow_credit_account(book: ShardBook) -> ShardCommand:
    # No credit has been made yet, so the transit account does not exist before this command.
    open_account(book, A, overdraft_limit=MAX)
    open_account(book, B)
    accepted(book, transfer(A, B, MAX - 1), "transfer_posted")
    return CreditFunds(new_id(), new_id(), B, 2, "EUR")


def _overflow_credit_transit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    open_account(book, B)
    credit(book, A, MAX)  # transit:EUR at -MAX; one more below MIN_BIGINT + 1 is out of range
    return CreditFunds(new_id(), new_id(), B, 2, "EUR")


def _overflow_reserve(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=MAX)
    credit(book, A, MAX)  # available 2 * MAX: the funds exist, the reserved column cannot hold them
    reserve(book, A, MAX)
    return ReserveFunds(new_id(), new_id(), A, 1, "EUR")


def _same_account(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    return transfer(A, A, 1)


def _wrong_shard_open(book: ShardBook) -> ShardCommand:
    return OpenAccount(new_id(), X, "EUR")


def _wrong_shard_status(book: ShardBook) -> ShardCommand:
    return ChangeAccountStatus(new_id(), X, "frozen")


def _wrong_shard_credit_side(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    return transfer(A, X, 1)


def _wrong_shard_debit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    return transfer(X, A, 1)


def _wrong_shard_reserve(book: ShardBook) -> ShardCommand:
    return ReserveFunds(new_id(), new_id(), X, 1, "EUR")


def _wrong_shard_credit(book: ShardBook) -> ShardCommand:
    return CreditFunds(new_id(), new_id(), Y, 1, "EUR")


def _cancelled_late_credit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    transfer_id = new_id()
    accepted(book, CancelCredit(new_id(), transfer_id, A), "credit_cancelled")
    return CreditFunds(new_id(), transfer_id, A, 10, "EUR")


def _cancel_an_applied_credit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    transfer_id = new_id()
    accepted(book, CreditFunds(new_id(), transfer_id, A, 10, "EUR"), "funds_credited")
    return CancelCredit(new_id(), transfer_id, A)


def _wrong_shard_release(book: ShardBook) -> ShardCommand:
    # A misrouted compensation must not be acknowledged: the hold lives on the owning shard.
    return ReleaseReservation(new_id(), new_id(), X)


def _hold_not_found_commit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    return CommitReservation(new_id(), new_id(), A)


def _hold_not_found_commit_other_account(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    open_account(book, B)
    transfer_id = reserve(book, A, 5)
    return CommitReservation(new_id(), transfer_id, B)


def _hold_not_found_release_other_account(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    open_account(book, B)
    transfer_id = reserve(book, A, 5)
    return ReleaseReservation(new_id(), transfer_id, B)


def _released_late_reserve(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    transfer_id = new_id()
    # Compensation overtook the reserve: the release leaves a tombstone...
    accepted(
        book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released", "reservation_not_found"
    )
    # ...so the late reserve must not hold funds that nobody will ever release.
    return ReserveFunds(new_id(), transfer_id, A, 5, "EUR")


def _released_late_reserve_unknown_account(book: ShardBook) -> ShardCommand:
    transfer_id = new_id()
    accepted(
        book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released", "reservation_not_found"
    )
    open_account(book, A, overdraft_limit=10)
    return ReserveFunds(new_id(), transfer_id, A, 5, "EUR")


def _released_commit(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    transfer_id = reserve(book, A, 5)
    accepted(book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released")
    return CommitReservation(new_id(), transfer_id, A)


def _committed_release(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    transfer_id = reserve(book, A, 5)
    accepted(book, CommitReservation(new_id(), transfer_id, A), "reservation_committed")
    return ReleaseReservation(new_id(), transfer_id, A)


def _mismatch_amount(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    transfer_id = reserve(book, A, 5)
    return ReserveFunds(new_id(), transfer_id, A, 6, "EUR")


def _mismatch_account(book: ShardBook) -> ShardCommand:
    open_account(book, A, overdraft_limit=10)
    open_account(book, B, overdraft_limit=10)
    transfer_id = reserve(book, A, 5)
    return ReserveFunds(new_id(), transfer_id, B, 5, "EUR")


def _settle_unknown_credit(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    return SettleCredit(new_id(), new_id(), A, 1)


def _post_above_the_hold(book: ShardBook) -> ShardCommand:
    open_account(book, A)
    credit(book, A, 10)
    transfer_id = reserve(book, A, 5)
    return PostHold(new_id(), transfer_id, A, 6)


REJECTIONS: dict[str, tuple[Scenario, str]] = {
    "transfer beyond the overdraft limit": (_insufficient_transfer, "insufficient_funds"),
    "transfer of funds a hold set aside": (_insufficient_because_of_a_hold, "insufficient_funds"),
    "reserve beyond available": (_insufficient_reserve, "insufficient_funds"),
    "transfer from an unknown account": (_not_found_debit, "account_not_found"),
    "transfer to an unknown account": (_not_found_credit_side, "account_not_found"),
    "status of an unknown account": (_not_found_status, "account_not_found"),
    "reserve on an unknown account": (_not_found_reserve, "account_not_found"),
    "credit to an unknown account": (_not_found_credit, "account_not_found"),
    "transfer from a frozen account": (_frozen_debit, "account_frozen"),
    "transfer to a frozen account": (_frozen_credit_side, "account_frozen"),
    "reserve on a frozen account": (_frozen_reserve, "account_frozen"),
    "credit to a frozen account": (_frozen_credit, "account_frozen"),
    "transfer to a closed account": (_closed_credit_side, "account_closed"),
    "credit to a closed account": (_closed_credit, "account_closed"),
    "reopen a closed account": (_closed_is_final, "account_closed"),
    "freeze a closed account": (_closed_cannot_be_frozen, "account_closed"),
    "open an open account": (_exists, "account_exists"),
    "open a closed account again": (_exists_closed, "account_exists"),
    "close with a positive balance": (_not_empty_posted, "account_not_empty"),
    "close while overdrawn": (_not_empty_overdrawn, "account_not_empty"),
    "close with funds on hold": (_not_empty_reserved, "account_not_empty"),
    "transfer in the debit's currency to another currency": (
        _currency_mismatch_transfer,
        "currency_mismatch",
    ),
    "transfer in the credit's currency from another currency": (
        _currency_mismatch_debit,
        "currency_mismatch",
    ),
    "reserve in another currency": (_currency_mismatch_reserve, "currency_mismatch"),
    "credit in another currency": (_currency_mismatch_credit, "currency_mismatch"),
    "transfer past BIGINT on the credit account": (_overflow_transfer, "amount_overflow"),
    "credit past BIGINT before transit exists": (_overflow_credit_account, "amount_overflow"),
    "credit that takes transit below BIGINT": (_overflow_credit_transit, "amount_overflow"),
    "reserve past BIGINT": (_overflow_reserve, "amount_overflow"),
    "transfer to itself": (_same_account, "same_account"),
    "open another shard's account": (_wrong_shard_open, "wrong_shard"),
    "status of another shard's account": (_wrong_shard_status, "wrong_shard"),
    "transfer to another shard's account": (_wrong_shard_credit_side, "wrong_shard"),
    "transfer from another shard's account": (_wrong_shard_debit, "wrong_shard"),
    "reserve on another shard's account": (_wrong_shard_reserve, "wrong_shard"),
    "credit to another shard's account": (_wrong_shard_credit, "wrong_shard"),
    "release on another shard's account": (_wrong_shard_release, "wrong_shard"),
    "commit an unknown hold": (_hold_not_found_commit, "reservation_not_found"),
    "commit a hold on another account": (_hold_not_found_commit_other_account, "reservation_not_found"),
    "release a hold on another account": (_hold_not_found_release_other_account, "reservation_not_found"),
    "late reserve after a release tombstone": (_released_late_reserve, "reservation_released"),
    "late reserve after a tombstone for an unopened account": (
        _released_late_reserve_unknown_account,
        "reservation_released",
    ),
    "commit a released hold": (_released_commit, "reservation_released"),
    "release a committed hold": (_committed_release, "reservation_committed"),
    "reserve again with another amount": (_mismatch_amount, "amount_mismatch"),
    "reserve again on another account": (_mismatch_account, "amount_mismatch"),
    "late credit after its cancellation": (_cancelled_late_credit, "credit_cancelled"),
    "cancel a credit already applied": (_cancel_an_applied_credit, "credit_applied"),
    "settle a pending credit never held": (_settle_unknown_credit, "credit_not_found"),
    "post more than a hold": (_post_above_the_hold, "amount_exceeds_hold"),
}


@pytest.mark.parametrize(("scenario", "reason"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_rejection_has_its_reason_and_changes_nothing(scenario: Scenario, reason: str) -> None:
    book = new_book()
    command = scenario(book)
    before = snapshot(book)

    reply = book.apply(command)

    assert (reply.outcome, reply.reason, reply.journal_seq) == ("rejected", reason, None)
    assert reply.rejected
    assert reply.in_reply_to == command.message_id
    assert snapshot(book) == before


def test_the_rejection_table_covers_every_reason_the_book_can_give() -> None:
    contract = json.loads((JSON_DIR / "shard-reply.json").read_text())
    reasons = set(contract["properties"]["reason"]["anyOf"][0]["enum"])
    # invalid_command comes from the decoder, already_applied is not a rejection (tested below).
    assert {reason for _, reason in REJECTIONS.values()} == reasons - {"invalid_command", "already_applied"}


# --- every outcome --------------------------------------------------------------------------


def test_open_account_replies_in_full_and_starts_at_zero() -> None:
    book = new_book()
    command = OpenAccount(new_id(), A, "EUR", overdraft_limit=250, metadata={"owner": "alice"})

    reply = book.apply(command)

    assert reply == ShardReply(
        message_id=reply_id(command.message_id),
        in_reply_to=command.message_id,
        command="OpenAccount",
        shard=0,
        account_id=A,
        transfer_id=None,
        outcome="account_opened",
        reason=None,
        journal_seq=None,
    )
    assert book.accounts[A] == Account(A, "EUR", "active", 250, 0, 0, {"owner": "alice"})
    assert book.accounts[A].available == 250
    assert book.new_accounts == [A]
    assert book.entries == []


def test_the_second_shard_owns_its_own_accounts() -> None:
    book = new_book(shard=1)
    open_account(book, X)
    credit(book, X, 10)
    assert book.accounts[X].posted == 10
    assert (book.apply(OpenAccount(new_id(), A, "EUR")).reason) == "wrong_shard"


def test_status_changes_freeze_unfreeze_and_close() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=10)
    open_account(book, B)

    set_status(book, A, "frozen")
    assert book.accounts[A].status == "frozen"
    assert book.changed_accounts == {A}
    assert book.apply(transfer(A, B, 1)).reason == "account_frozen"

    set_status(book, A, "active")
    accepted(book, transfer(A, B, 4), "transfer_posted")
    accepted(book, transfer(B, A, 4), "transfer_posted")

    set_status(book, A, "closed")  # empty again: it may close
    assert book.accounts[A].status == "closed"
    set_status(book, A, "closed")  # closing twice is harmless


def test_post_transfer_moves_money_in_two_balanced_entries() -> None:
    book = new_book()
    open_account(book, A)
    open_account(book, B)
    credit(book, A, 1_000)
    seq_before = book.last_seq
    command = transfer(A, B, 300)

    reply = accepted(book, command, "transfer_posted")

    assert reply.account_id == A
    assert reply.transfer_id == command.transfer_id
    assert reply.journal_seq == book.last_seq == seq_before + 2
    assert balances(book)[A] == (700, 0)
    assert balances(book)[B] == (300, 0)
    debit, credit_leg = book.entries[-2:]
    assert (debit.account_id, debit.amount, debit.leg, debit.kind) == (A, -300, "debit", "transfer")
    assert (credit_leg.account_id, credit_leg.amount, credit_leg.leg) == (B, 300, "credit")
    assert {e.message_id for e in book.entries[-2:]} == {command.message_id}
    assert {e.transfer_id for e in book.entries[-2:]} == {command.transfer_id}
    operation = book.operations[(command.transfer_id, "transfer")]
    assert (operation.account_id, operation.amount, operation.state) == (A, 300, "committed")


def test_the_whole_available_balance_may_be_spent() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=40)
    open_account(book, B)
    credit(book, A, 60)
    reserve(book, A, 30)
    accepted(book, transfer(A, B, 70), "transfer_posted")
    assert book.accounts[A].available == 0
    assert balances(book)[A] == (-10, 30)


def test_reserve_holds_funds_without_posting() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=20)
    credit(book, A, 100)
    entries_before = len(book.entries)
    command = ReserveFunds(new_id(), new_id(), A, 120, "EUR")

    reply = accepted(book, command, "funds_reserved")

    assert reply.journal_seq is None
    assert len(book.entries) == entries_before
    assert balances(book)[A] == (100, 120)
    assert book.accounts[A].available == 0
    hold = book.operations[(command.transfer_id, HOLD)]
    assert (hold.account_id, hold.amount, hold.currency, hold.state) == (A, 120, "EUR", HELD)


def test_credit_posts_from_the_transit_account_created_on_demand() -> None:
    book = new_book()
    open_account(book, A)
    transit = transit_account("EUR")
    assert transit not in book.accounts

    command = CreditFunds(new_id(), new_id(), A, 75, "EUR")
    reply = accepted(book, command, "funds_credited")

    assert reply.journal_seq == 2
    assert balances(book) == {A: (75, 0), transit: (-75, 0)}
    assert book.new_accounts == [A, transit]
    assert book.accounts[transit].is_transit
    assert [(e.account_id, e.amount, e.kind) for e in book.entries] == [
        (transit, -75, "credit"),
        (A, 75, "credit"),
    ]


def test_commit_turns_the_hold_into_a_debit_to_transit() -> None:
    book = new_book()
    open_account(book, A)
    credit(book, A, 100)
    transfer_id = reserve(book, A, 40)

    reply = accepted(book, CommitReservation(new_id(), transfer_id, A), "reservation_committed")

    assert reply.journal_seq == book.last_seq
    assert balances(book)[A] == (60, 0)
    assert balances(book)[transit_account("EUR")] == (-100 + 40, 0)
    assert [(e.account_id, e.amount, e.kind) for e in book.entries[-2:]] == [
        (A, -40, "commit"),
        (transit_account("EUR"), 40, "commit"),
    ]
    assert book.operations[(transfer_id, HOLD)].state == "committed"


def test_a_hold_on_a_since_frozen_account_may_still_be_committed() -> None:
    book = new_book()
    open_account(book, A)
    credit(book, A, 100)
    transfer_id = reserve(book, A, 40)
    set_status(book, A, "frozen")
    accepted(book, CommitReservation(new_id(), transfer_id, A), "reservation_committed")
    assert balances(book)[A] == (60, 0)


def test_release_returns_the_funds() -> None:
    book = new_book()
    open_account(book, A)
    credit(book, A, 100)
    transfer_id = reserve(book, A, 40)
    entries_before = len(book.entries)

    reply = accepted(book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released")

    assert reply.journal_seq is None
    assert len(book.entries) == entries_before
    assert balances(book)[A] == (100, 0)
    assert book.operations[(transfer_id, HOLD)].state == RELEASED


def test_release_of_an_unknown_hold_leaves_a_tombstone() -> None:
    book = new_book()
    open_account(book, A)
    transfer_id = new_id()
    accepted(
        book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released", "reservation_not_found"
    )
    tombstone = book.operations[(transfer_id, HOLD)]
    assert (tombstone.account_id, tombstone.amount, tombstone.currency, tombstone.state) == (
        A, 0, "EUR", RELEASED,
    )  # fmt: skip
    # The tombstone is itself idempotent.
    accepted(book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released", "already_applied")
    assert book.entries == []


# --- idempotency ----------------------------------------------------------------------------


def _repeat_transfer(book: ShardBook) -> tuple[ShardCommand, str]:
    open_account(book, A, overdraft_limit=100)
    open_account(book, B)
    first = transfer(A, B, 10)
    accepted(book, first, "transfer_posted")
    return replace(first, message_id=new_id()), "transfer_posted"


def _repeat_reserve(book: ShardBook) -> tuple[ShardCommand, str]:
    open_account(book, A, overdraft_limit=100)
    first = ReserveFunds(new_id(), new_id(), A, 10, "EUR")
    accepted(book, first, "funds_reserved")
    return replace(first, message_id=new_id()), "funds_reserved"


def _repeat_reserve_after_commit(book: ShardBook) -> tuple[ShardCommand, str]:
    open_account(book, A, overdraft_limit=100)
    first = ReserveFunds(new_id(), new_id(), A, 10, "EUR")
    accepted(book, first, "funds_reserved")
    accepted(book, CommitReservation(new_id(), first.transfer_id, A), "reservation_committed")
    return replace(first, message_id=new_id()), "funds_reserved"


def _repeat_credit(book: ShardBook) -> tuple[ShardCommand, str]:
    open_account(book, A)
    first = CreditFunds(new_id(), new_id(), A, 10, "EUR")
    accepted(book, first, "funds_credited")
    return replace(first, message_id=new_id()), "funds_credited"


def _repeat_commit(book: ShardBook) -> tuple[ShardCommand, str]:
    open_account(book, A, overdraft_limit=100)
    transfer_id = reserve(book, A, 10)
    accepted(book, CommitReservation(new_id(), transfer_id, A), "reservation_committed")
    return CommitReservation(new_id(), transfer_id, A), "reservation_committed"


def _repeat_release(book: ShardBook) -> tuple[ShardCommand, str]:
    open_account(book, A, overdraft_limit=100)
    transfer_id = reserve(book, A, 10)
    accepted(book, ReleaseReservation(new_id(), transfer_id, A), "reservation_released")
    return ReleaseReservation(new_id(), transfer_id, A), "reservation_released"


REPEATS: dict[str, Callable[[ShardBook], tuple[ShardCommand, str]]] = {
    "transfer": _repeat_transfer,
    "reserve": _repeat_reserve,
    "reserve after commit": _repeat_reserve_after_commit,
    "credit": _repeat_credit,
    "commit": _repeat_commit,
    "release": _repeat_release,
}


@pytest.mark.parametrize("scenario", REPEATS.values(), ids=REPEATS.keys())
def test_a_repeat_under_a_new_message_id_is_already_applied(
    scenario: Callable[[ShardBook], tuple[ShardCommand, str]],
) -> None:
    """The coordinator may re-send a step with a fresh message_id; the transfer_id makes it a no-op."""
    book = new_book()
    command, outcome = scenario(book)
    before = snapshot(book)[:5]  # accounts, operations, entries, seq, hash

    reply = book.apply(command)

    assert (reply.outcome, reply.reason, reply.journal_seq) == (outcome, "already_applied", None)
    assert snapshot(book)[:5] == before


def test_a_duplicate_message_gets_the_first_reply_and_no_second_effect() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=100)
    open_account(book, B)
    command = transfer(A, B, 10)

    results = book.apply_batch([command, command], {})

    assert results[0][1] is True
    assert results[1] == (results[0][0], False)
    assert balances(book)[A] == (-10, 0)
    assert len(book.entries) == 2

    # Across batches the inbox (`earlier`) decides, even when the command would now be rejected.
    later = next_book(book)
    set_status(later, A, "frozen")
    assert later.apply_batch([command], {command.message_id: results[0][0]}) == [(results[0][0], False)]
    assert later.entries == []
    assert balances(later)[A] == (-10, 0)


def test_a_duplicate_rejection_is_replayed_too() -> None:
    book = new_book()
    open_account(book, A)
    open_account(book, B)
    command = transfer(A, B, 10)
    (first, _), (second, again) = book.apply_batch([command, command], {})
    assert first.reason == "insufficient_funds"
    assert (second, again) == (first, False)


# --- cross-shard ----------------------------------------------------------------------------


def _funded_pair() -> tuple[ShardBook, ShardBook]:
    """Shard 0 with A holding 1,000 (from a local bank account), shard 1 with X empty."""
    s0, s1 = new_book(0), new_book(1)
    open_account(s0, C, overdraft_limit=10**9)  # the bank: money comes from its overdraft
    open_account(s0, A)
    accepted(s0, transfer(C, A, 1_000), "transfer_posted")
    open_account(s1, X)
    return s0, s1


def test_cross_shard_transfer_reserve_credit_commit_nets_to_zero() -> None:
    s0, s1 = _funded_pair()
    transfer_id = new_id()

    accepted(s0, ReserveFunds(new_id(), transfer_id, A, 300, "EUR"), "funds_reserved")
    assert s0.accounts[A].available == 700
    accepted(s1, CreditFunds(new_id(), transfer_id, X, 300, "EUR"), "funds_credited")
    accepted(s0, CommitReservation(new_id(), transfer_id, A), "reservation_committed")

    transit = transit_account("EUR")
    assert balances(s0)[A] == (700, 0)
    assert balances(s1)[X] == (300, 0)
    assert balances(s0)[transit] == (300, 0)
    assert balances(s1)[transit] == (-300, 0)
    # Each shard balances on its own, the transit accounts cancel, and so everything nets to zero.
    assert journal_sums(s0.entries) == journal_sums(s1.entries) == {"EUR": 0}
    assert s0.accounts[transit].posted + s1.accounts[transit].posted == 0
    everything = [*s0.accounts.values(), *s1.accounts.values()]
    assert sum(a.posted for a in everything) == 0
    assert sum(a.reserved for a in everything) == 0
    assert_chain(s0.entries)
    assert_chain(s1.entries)


def test_cross_shard_compensation_releases_the_hold() -> None:
    s0, s1 = _funded_pair()
    transfer_id = new_id()
    set_status(s1, X, "frozen")
    accepted(s0, ReserveFunds(new_id(), transfer_id, A, 300, "EUR"), "funds_reserved")
    credit_reply = s1.apply(CreditFunds(new_id(), transfer_id, X, 300, "EUR"))
    assert credit_reply.reason == "account_frozen"

    accepted(s0, ReleaseReservation(new_id(), transfer_id, A), "reservation_released")

    assert balances(s0)[A] == (1_000, 0)
    assert transit_account("EUR") not in s0.accounts
    assert transit_account("EUR") not in s1.accounts
    assert s1.entries == []


# --- the journal ----------------------------------------------------------------------------


def test_entries_form_a_hash_chain_across_batches() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=500)
    open_account(book, B)
    accepted(book, transfer(A, B, 100), "transfer_posted")
    credit(book, B, 7)
    second = next_book(book, now_us=NOW_US + 1)
    transfer_id = reserve(second, A, 50)
    accepted(second, CommitReservation(new_id(), transfer_id, A), "reservation_committed")
    accepted(second, transfer(B, A, 1), "transfer_posted")

    entries = book.entries + second.entries
    assert len(entries) == 8
    assert entries[0].prev_hash == GENESIS_HASH
    assert second.entries[0].prev_hash == book.entries[-1].hash
    assert_chain(entries)
    assert (second.last_seq, second.last_hash) == (entries[-1].seq, entries[-1].hash)
    assert len({e.hash for e in entries}) == len(entries)


def test_tampering_with_an_entry_breaks_the_chain() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=500)
    open_account(book, B)
    accepted(book, transfer(A, B, 100), "transfer_posted")
    accepted(book, transfer(A, B, 200), "transfer_posted")
    forged = [*book.entries]
    forged[1] = replace(forged[1], amount=1_000)
    with pytest.raises(AssertionError):
        assert_chain(forged)


# --- batches --------------------------------------------------------------------------------


def _hot_transfers(rng: random.Random, hot: list[str], count: int) -> list[ShardCommand]:
    """Transfers among `hot` accounts: some too large, some to itself, some repeats of every kind."""
    commands: list[ShardCommand] = []
    for _ in range(count):
        roll = rng.random()
        if commands and roll < 0.05:
            commands.append(rng.choice(commands))  # the same message again
        elif commands and roll < 0.10:
            earlier = rng.choice(commands)  # the same transfer under a new message_id
            commands.append(replace(earlier, message_id=new_id()))
        else:
            debit, credit_account = rng.choice(hot), rng.choice(hot)
            amount = rng.choice([rng.randint(1, 400), rng.randint(1, 5_000)])
            commands.append(transfer(debit, credit_account, amount))
    return commands


def test_one_batch_equals_one_command_at_a_time() -> None:
    rng = random.Random(20240601)
    setup = new_book()
    hot = [A, B, C]
    for account_id, limit in zip(hot, (0, 1_000, 10_000), strict=True):
        open_account(setup, account_id, overdraft_limit=limit)
        credit(setup, account_id, 2_000)
    commands = _hot_transfers(rng, hot, 1_000)

    batched = next_book(setup)
    batch_results = batched.apply_batch(commands, {})

    single = setup
    inbox: dict[str, ShardReply] = {}
    single_results: list[tuple[ShardReply, bool]] = []
    single_entries: list[JournalEntry] = []
    for command in commands:
        single = next_book(single)
        single_results += single.apply_batch([command], inbox)
        inbox.setdefault(command.message_id, single_results[-1][0])
        single_entries += single.entries

    assert batch_results == single_results
    assert balances(batched) == balances(single)
    assert batched.operations == single.operations
    assert batched.entries == single_entries
    assert (batched.last_seq, batched.last_hash) == (single.last_seq, single.last_hash)
    # The mix exercised what it should: postings, rejections and both kinds of repeat.
    kinds = Counter((r.outcome, r.reason, first) for r, first in batch_results)
    assert kinds[("transfer_posted", None, True)] > 100
    assert kinds[("rejected", "insufficient_funds", True)] > 10
    assert kinds[("rejected", "same_account", True)] > 10
    assert kinds[("transfer_posted", "already_applied", True)] > 5
    assert sum(n for (_, _, first), n in kinds.items() if not first) > 5
    assert journal_sums(batched.entries) == {"EUR": 0}
    assert all(batched.accounts[a].available >= 0 for a in hot)
    assert_chain(setup.entries + batched.entries)


def test_a_second_credit_or_transfer_under_the_same_id_with_other_terms_is_refused() -> None:
    book = new_book()
    open_account(book, A, overdraft_limit=10_000)
    open_account(book, B)
    t = new_id()
    accepted(book, PostTransfer(new_id(), t, A, B, 100, "EUR"), "transfer_posted")
    accepted(book, PostTransfer(new_id(), t, A, B, 100, "EUR"), "transfer_posted", "already_applied")
    accepted(book, PostTransfer(new_id(), t, A, B, 999, "EUR"), "rejected", "amount_mismatch")
    c = new_id()
    accepted(book, CreditFunds(new_id(), c, B, 50, "EUR"), "funds_credited")
    accepted(book, CreditFunds(new_id(), c, B, 50, "EUR"), "funds_credited", "already_applied")
    accepted(book, CreditFunds(new_id(), c, A, 50, "EUR"), "rejected", "amount_mismatch")
    assert balances(book)[B] == (150, 0)


def test_a_misrouted_commit_says_wrong_shard() -> None:
    book = new_book()
    accepted(book, CommitReservation(new_id(), new_id(), X), "rejected", "wrong_shard")


def test_the_change_set_is_exactly_what_the_batch_changed() -> None:
    """The adapter writes `changes()` and nothing else (issue 14, item 8: it used to re-diff)."""
    first = new_book()
    open_account(first, A, overdraft_limit=100)
    open_account(first, B)
    open_account(first, C)
    book = next_book(first)
    assert book.changes() == ChangeSet([], [], [], [])
    posted = transfer(A, B, 30)
    accepted(book, posted, "transfer_posted")
    set_status(book, C, "frozen")
    hold = reserve(book, A, 5)
    open_account(book, D)
    change = book.changes()
    assert [a.account_id for a in change.created] == [D]
    assert {a.account_id: (a.posted, a.reserved, a.status) for a in change.changed} == {
        A: (-30, 5, "active"), B: (30, 0, "active"), C: (0, 0, "frozen"),
    }  # fmt: skip
    assert {(o.transfer_id, o.state) for o in change.operations} == {
        (posted.transfer_id, "committed"), (hold, "held"),
    }  # fmt: skip
    assert change.entries == book.entries
    assert len(change.entries) == 2
