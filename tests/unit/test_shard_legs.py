"""A shard's side of a linked batch: one step for all the legs it holds, all or none."""

from __future__ import annotations

import pytest

from schemas.shard_messages import ApplyLegs, Leg
from shards.domain.book import ShardBook
from shards.domain.model import COMMITTED, CREDIT, HELD, HOLD, RELEASED, transit_account
from tests.unit.test_shard_domain import (
    A,
    B,
    C,
    D,
    X,
    accepted,
    credit,
    new_book,
    new_id,
    open_account,
    snapshot,
)


def funded() -> ShardBook:
    book = new_book()
    for account in (A, B, C):
        open_account(book, account)
        credit(book, account, 1_000)
    return book


def legs(*parts: tuple[str, int]) -> tuple[Leg, ...]:
    return tuple(Leg(new_id(), account, amount, "EUR") for account, amount in parts)


def step(
    book: ShardBook,
    name: str,
    these: tuple[Leg, ...],
    outcome: str = "legs_applied",
    reason: str | None = None,
) -> None:
    accepted(book, ApplyLegs(new_id(), new_id(), name, these), outcome, reason)


def test_reserve_credit_commit_every_leg_in_one_command_each() -> None:
    book = funded()
    debits = legs((A, 100), (B, 200), (C, 50))
    step(book, "reserve", debits)
    assert [book.accounts[a].reserved for a in (A, B, C)] == [100, 200, 50]
    assert all(book.operations[(leg.transfer_id, HOLD)].state == HELD for leg in debits)
    credits = tuple(
        Leg(leg.transfer_id, D if i == 0 else A, leg.amount, "EUR") for i, leg in enumerate(debits)
    )
    open_account(book, D)
    step(book, "credit", credits)
    step(book, "commit", debits)
    assert [book.accounts[a].posted for a in (A, B, C, D)] == [1_000 - 100 + 200 + 50, 800, 950, 100]
    assert all(book.operations[(leg.transfer_id, HOLD)].state == COMMITTED for leg in debits)
    assert book.accounts[transit_account("EUR")].posted == -3_000  # the funding credits only
    step(book, "commit", debits, reason="already_applied")  # a repeat changes nothing


def test_one_refused_leg_refuses_them_all_and_names_it() -> None:
    book = funded()
    debits = legs((A, 100), (B, 5_000), (C, 50))
    before = snapshot(book)
    reply = book.apply(ApplyLegs(new_id(), new_id(), "reserve", debits))
    assert (reply.outcome, reply.reason, reply.leg) == (
        "rejected",
        "insufficient_funds",
        debits[1].transfer_id,
    )
    assert snapshot(book) == before  # the first leg's hold is undone too


@pytest.mark.parametrize(
    ("name", "parts", "reason"),
    [
        ("reserve", ((A, 1), (X, 1)), "wrong_shard"),
        ("reserve", ((A, 1), (D, 1)), "account_not_found"),
        ("credit", ((A, 1), (D, 1)), "account_not_found"),
        ("commit", ((A, 1),), "reservation_not_found"),
        ("settle", ((A, 1),), "credit_not_found"),
    ],
)
def test_refusals_change_nothing(name: str, parts: tuple[tuple[str, int], ...], reason: str) -> None:
    book = funded()
    before = snapshot(book)
    these = legs(*parts)
    reply = book.apply(ApplyLegs(new_id(), new_id(), name, these))
    assert (reply.outcome, reply.reason) == ("rejected", reason)
    assert reply.leg in {leg.transfer_id for leg in these}
    assert snapshot(book) == before


def test_release_and_cancel_undo_every_leg() -> None:
    book = funded()
    debits = legs((A, 100), (B, 200))
    step(book, "reserve", debits)
    step(book, "release", debits)
    assert [book.accounts[a].reserved for a in (A, B)] == [0, 0]
    held = legs((C, 30))
    step(book, "hold_credit", held)
    assert book.accounts[C].pending_credit == 30
    step(book, "cancel", held)
    assert book.accounts[C].pending_credit == 0
    assert book.operations[(held[0].transfer_id, CREDIT)].state == RELEASED


def test_held_legs_settle_and_post() -> None:
    book = funded()
    debits = legs((A, 100))
    step(book, "reserve", debits)
    held = (Leg(debits[0].transfer_id, B, 100, "EUR"),)
    step(book, "hold_credit", held)
    step(book, "settle", held)
    step(book, "post_hold", debits)
    assert (book.accounts[A].posted, book.accounts[B].posted, book.accounts[B].pending_credit) == (
        900,
        1_100,
        0,
    )
