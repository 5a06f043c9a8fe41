"""Properties of two shards under random commands, duplicated, reordered and delivered in random batches.

Each batch goes to a fresh ShardBook per shard loaded with what the previous batches wrote back (the
accounts and operations the book reported as new or changed, its last seq and hash), and the inbox of
earlier replies, as the shard service does. After every batch the ledger must still be sound.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.partitioning import PartitionMap
from schemas.shard_messages import (
    ChangeAccountStatus,
    CommitReservation,
    CreditFunds,
    OpenAccount,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    ShardCommand,
    ShardReply,
)
from shards.domain.book import ShardBook
from shards.domain.model import (
    COMMITTED,
    CREDIT,
    GENESIS_HASH,
    HELD,
    HOLD,
    MAX_BIGINT,
    Account,
    JournalEntry,
    Operation,
    entry_hash,
    fits_bigint,
    transit_account,
)
from shards.domain.replay import Balance, differences, replay

MAP = PartitionMap.initial(2)
SHARDS = (0, 1)
CURRENCIES = ("EUR", "USD")
MAX = MAX_BIGINT


def _owned_by(shard: int, count: int) -> list[str]:
    names = (f"acct-{i}" for i in itertools.count())
    return list(itertools.islice((n for n in names if MAP.shard_for(n) == shard), count))


ACCOUNTS = {shard: _owned_by(shard, 3) for shard in SHARDS}
ALL_ACCOUNTS = [a for shard in SHARDS for a in ACCOUNTS[shard]]

# Everyday amounts, and ones near the BIGINT limit so overflow rejections happen too.
amounts = st.one_of(
    st.integers(1, 500),
    st.integers(1, 500),
    st.sampled_from([2**62, MAX // 2 + 1, MAX - 1, MAX]),
    st.integers(1, MAX),
)
limits = st.sampled_from([0, 0, 100, 10_000, MAX])

Delivery = tuple[int, ShardCommand]  # (destination shard, command)


@st.composite
def commands(draw: st.DrawFn) -> list[Delivery]:
    """A random stream of commands over a few accounts, each addressed to a shard."""
    ids = itertools.count(1)

    def new_id() -> str:
        return str(uuid.UUID(int=next(ids)))

    home = {account_id: draw(st.sampled_from(CURRENCIES)) for account_id in ALL_ACCOUNTS}

    def currency_of(account_id: str) -> str:
        # Mostly the account's own currency, so that most commands get past the currency check.
        return home[account_id] if draw(st.integers(0, 9)) > 0 else draw(st.sampled_from(CURRENCIES))

    def owner(account_id: str) -> int:
        # Almost always the owning shard; now and then a stale route to the other one.
        shard = MAP.shard_for(account_id)
        return 1 - shard if draw(st.integers(0, 19)) == 0 else shard

    def opening(account_id: str) -> Delivery:
        return owner(account_id), OpenAccount(new_id(), account_id, currency_of(account_id), draw(limits))

    # Most accounts get opened early, so later commands have something to act on.
    stream = [opening(account_id) for account_id in ALL_ACCOUNTS if draw(st.integers(0, 4)) > 0]
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["open", "status", "transfer", "transfer", "saga", "saga", "saga"]))
        if kind == "open":
            stream.append(opening(draw(st.sampled_from(ALL_ACCOUNTS))))
        elif kind == "status":
            account_id = draw(st.sampled_from(ALL_ACCOUNTS))
            status = draw(st.sampled_from(["active", "active", "frozen", "closed"]))
            stream.append((owner(account_id), ChangeAccountStatus(new_id(), account_id, status)))
        elif kind == "transfer":
            shard = draw(st.sampled_from(SHARDS))
            debit, credit = draw(st.sampled_from(ACCOUNTS[shard])), draw(st.sampled_from(ACCOUNTS[shard]))
            stream.append(
                (shard, PostTransfer(new_id(), new_id(), debit, credit, draw(amounts), currency_of(debit)))
            )
        else:
            stream += _saga(draw, new_id, owner, currency_of)
    return stream


def _saga(
    draw: st.DrawFn,
    new_id: Callable[[], str],
    owner: Callable[[str], int],
    currency_of: Callable[[str], str],
) -> list[Delivery]:
    """The steps of one cross-shard transfer, including conflicting and missing ones."""
    transfer_id, amount = new_id(), draw(amounts)
    debit, credit = draw(st.sampled_from(ALL_ACCOUNTS)), draw(st.sampled_from(ALL_ACCOUNTS))
    currency = currency_of(debit)
    steps: list[Delivery] = []
    if draw(st.integers(0, 9)) > 0:
        steps.append((owner(debit), ReserveFunds(new_id(), transfer_id, debit, amount, currency)))
    if draw(st.booleans()):
        steps.append((owner(credit), CreditFunds(new_id(), transfer_id, credit, amount, currency)))
    ending = draw(st.sampled_from(["commit", "commit", "release", "both", "none"]))
    if ending in ("commit", "both"):
        steps.append((owner(debit), CommitReservation(new_id(), transfer_id, debit)))
    if ending in ("release", "both"):
        steps.append((owner(debit), ReleaseReservation(new_id(), transfer_id, debit)))
    if draw(st.integers(0, 9)) == 0:  # a retry of a step under a new message_id
        steps.append((owner(debit), ReserveFunds(new_id(), transfer_id, debit, amount, currency)))
    return steps


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[Delivery]]:
    """The stream with duplicates added, reordered within a random window, cut into batches."""
    stream = draw(commands())
    for _ in range(draw(st.integers(0, max(len(stream) // 3, 1)))):
        if not stream:
            break
        original = stream[draw(st.integers(0, len(stream) - 1))]
        stream.insert(draw(st.integers(0, len(stream))), original)  # same message_id, same shard
    # window 1 keeps the order; a window as long as the stream lets any message overtake any other
    window = draw(st.sampled_from([1, 2, 5, max(len(stream), 1)]))
    jitter = draw(st.lists(st.integers(0, window - 1), min_size=len(stream), max_size=len(stream)))
    order = sorted(range(len(stream)), key=lambda i: (i + jitter[i], i))
    stream = [stream[i] for i in order]
    batches: list[list[Delivery]] = []
    while stream:
        size = draw(st.integers(1, 12))
        batches.append(stream[:size])
        stream = stream[size:]
    return batches


# --- a shard as its storage would hold it -------------------------------------------------------


@dataclass
class StoredShard:
    shard: int
    accounts: dict[str, Account] = field(default_factory=dict)
    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)
    last_seq: int = 0
    last_hash: bytes = GENESIS_HASH
    journal: list[JournalEntry] = field(default_factory=list)
    inbox: dict[str, ShardReply] = field(default_factory=dict)

    def deliver(self, batch: list[ShardCommand], now_us: int) -> None:
        book = ShardBook(
            self.shard,
            MAP,
            copy.deepcopy(list(self.accounts.values())),
            copy.deepcopy(list(self.operations.values())),
            self.last_seq,
            self.last_hash,
            now_us,
        )
        results = book.apply_batch(batch, self.inbox)

        for command, (reply, first_time) in zip(batch, results, strict=True):
            assert reply.in_reply_to == command.message_id
            if first_time:
                assert command.message_id not in self.inbox, "a message applied twice"
                self.inbox[command.message_id] = reply
            else:  # a duplicate, from an earlier batch or earlier in this one
                assert reply == self.inbox[command.message_id]
        # Write back only what the book says it created or changed, as the adapter does.
        for account_id in {*book.new_accounts, *book.changed_accounts}:
            self.accounts[account_id] = copy.deepcopy(book.accounts[account_id])
        for key in book.changed_operations:
            self.operations[key] = copy.deepcopy(book.operations[key])
        assert self.accounts == book.accounts, "the book changed an account without saying so"
        assert self.operations == book.operations, "the book changed an operation without saying so"
        self.journal += book.entries
        self.last_seq, self.last_hash = book.last_seq, book.last_hash


# --- the properties -----------------------------------------------------------------------------


def assert_sound(store: StoredShard) -> None:
    journal = store.journal

    sums: Counter[str] = Counter()
    for e in journal:
        sums[e.currency] += e.amount
    assert all(total == 0 for total in sums.values()), sums

    for account in store.accounts.values():
        assert fits_bigint(account.posted), account
        assert fits_bigint(account.reserved), account
        if not account.is_transit:
            assert account.reserved >= 0, account
            assert account.available >= 0, account

    held = [
        (op.account_id, op.amount) for op in store.operations.values() if op.kind == HOLD and op.state == HELD
    ]
    cached = {a.account_id: Balance(a.posted, a.reserved) for a in store.accounts.values()}
    assert differences(cached, replay(((e.account_id, e.amount) for e in journal), held)) == []

    # A transit account holds exactly what commits sent in minus what credits paid out.
    for currency in CURRENCIES:
        transit = store.accounts.get(transit_account(currency))
        committed = _total(store.operations.values(), HOLD, COMMITTED, currency)
        credited = _total(store.operations.values(), CREDIT, COMMITTED, currency)
        assert (transit.posted if transit else 0) == committed - credited

    # At most one effect per message: two entries at the seqs its one reply names, or none.
    entries_by_message: defaultdict[str, list[int]] = defaultdict(list)
    for e in journal:
        entries_by_message[e.message_id].append(e.seq)
    assert set(entries_by_message) <= set(store.inbox), "an effect without a reply"
    for message_id, reply in store.inbox.items():
        seqs = entries_by_message.get(message_id, [])
        if reply.journal_seq is None:
            assert seqs == [], reply
        else:
            assert seqs == [reply.journal_seq - 1, reply.journal_seq], reply

    prev_seq, prev_hash = 0, GENESIS_HASH
    for e in journal:
        assert (e.seq, e.prev_hash) == (prev_seq + 1, prev_hash)
        assert e.hash == entry_hash(
            e.prev_hash, e.seq, e.transfer_id, e.leg, e.kind, e.account_id, e.amount,
            e.currency, e.message_id, e.created_us,
        )  # fmt: skip
        prev_seq, prev_hash = e.seq, e.hash
    assert (store.last_seq, store.last_hash) == (prev_seq, prev_hash)


def _total(operations: Iterable[Operation], kind: str, state: str, currency: str) -> int:
    return sum(op.amount for op in operations if (op.kind, op.state, op.currency) == (kind, state, currency))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_two_shards_stay_sound_under_duplicates_reordering_and_batching(
    batches: list[list[Delivery]],
) -> None:
    stores = {shard: StoredShard(shard) for shard in SHARDS}
    for n, batch in enumerate(batches):
        for shard, store in stores.items():
            mine = [command for destination, command in batch if destination == shard]
            if mine:
                store.deliver(mine, now_us=1_700_000_000_000_000 + n)
            assert_sound(store)
