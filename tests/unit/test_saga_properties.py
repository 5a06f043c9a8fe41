"""The saga and two shard books under a hostile network: drops, duplicates, reordering, coordinator crashes.

Some transfers are pending (two-phase): held, then posted (in full or for less) or voided by a
request the coordinator decides on its committed state (two_phase.py), or expired by the timer;
posts and voids race each other and the expiry, and each must end exactly one way.

Each shard is a ShardBook carried across steps with an inbox of replies by command id, so a duplicate
is answered from the inbox and changes nothing, as the shard worker does. The coordinator keeps the
saga states it committed (the state after each `decide` it finished, with its effects handed to the
broker in the same step); a crash loses only a `decide` in progress. Messages in flight live on the
"broker" and survive crashes. After every step the ledger must balance and every finished transfer
must be all-or-nothing; at the end, with the network healed, every saga must finish.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.saga import batch_saga
from coordinator.saga.batch_saga import BatchState
from coordinator.saga.transfer_saga import (
    COMPLETED,
    EXPIRED,
    PENDING,
    POSTING,
    RESERVING,
    TERMINAL,
    VOIDED,
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SagaState,
    SendToShard,
    TimerFired,
    Transfer,
    command_for,
    decide,
    start,
)
from coordinator.saga.transfer_saga import Event as SagaEvent
from coordinator.saga.two_phase import Refusal, post, void
from schemas.partitioning import PartitionMap
from schemas.shard_messages import ChangeAccountStatus, OpenAccount, PostTransfer, ShardReply
from shards.domain.book import ShardBook
from shards.domain.model import (
    ACTIVE,
    CLOSED,
    COMMITTED,
    CREDIT,
    FROZEN,
    GENESIS_HASH,
    HELD,
    HOLD,
    RELEASED,
    Account,
)

MAP = PartitionMap.initial(2)
SHARDS = (0, 1)
NOW_US = 1_700_000_000_000_000
T0 = 1_700_000_000_000
POLICY = SagaPolicy(max_forward_attempts=3, base_backoff_ms=100, max_backoff_ms=400, park_after_ms=2_000)
MAX_TRANSFERS = 8
MISSING = "missing"  # an account id no shard has opened


def _owned_by(shard: int, count: int) -> list[str]:
    names = (f"acct-{i}" for i in itertools.count())
    return list(itertools.islice((n for n in names if MAP.shard_for(n) == shard), count))


# Per shard: two active EUR accounts (one with an overdraft), one USD, one frozen, one closed, one
# never opened, and an issuance account per currency: money enters the ledger as a local transfer
# from one of those. (account id, currency, overdraft limit, final status, funded)
ACCOUNTS: list[tuple[str, str, int, str, bool]] = []
ISSUERS: dict[tuple[int, str], str] = {}
for _shard in SHARDS:
    _a, _b, _usd, _frozen, _closed, _missing, _eur_issuer, _usd_issuer = _owned_by(_shard, 8)
    ACCOUNTS += [
        (_eur_issuer, "EUR", 10**12, ACTIVE, False),
        (_usd_issuer, "USD", 10**12, ACTIVE, False),
        (_a, "EUR", 0, ACTIVE, True),
        (_b, "EUR", 50, ACTIVE, True),
        (_usd, "USD", 0, ACTIVE, True),
        (_frozen, "EUR", 0, FROZEN, True),
        (_closed, "EUR", 0, CLOSED, False),
        (_missing, "EUR", 0, MISSING, False),
    ]
    ISSUERS |= {(_shard, "EUR"): _eur_issuer, (_shard, "USD"): _usd_issuer}
CUSTOMERS = [a for a, *_ in ACCOUNTS if a not in ISSUERS.values()]
CUSTOMER_IDS = frozenset(CUSTOMERS)
HOME = {a: (currency, status) for a, currency, _, status, _ in ACCOUNTS}
FUNDED = [a for a, *_, funded in ACCOUNTS if funded]
# Mostly cross-shard transfers between active EUR accounts, so that many sagas get far; also local
# ones, and any two accounts at all (frozen, closed, missing, another currency, the same account).
_ACTIVE_EUR = [a for a in CUSTOMERS if HOME[a] == ("EUR", ACTIVE)]
_CROSS = [(d, c) for d in _ACTIVE_EUR for c in _ACTIVE_EUR if MAP.shard_for(d) != MAP.shard_for(c)]
_LOCAL = [(d, c) for d in _ACTIVE_EUR for c in _ACTIVE_EUR if d != c and MAP.shard_for(d) == MAP.shard_for(c)]
# ... and cross-shard ones the credit shard must refuse (frozen, closed, missing, another currency).
_CROSS_REFUSED = [
    (d, c)
    for d in _ACTIVE_EUR
    for c in CUSTOMERS
    if MAP.shard_for(d) != MAP.shard_for(c) and c not in _ACTIVE_EUR
]
parties = st.one_of(
    st.sampled_from(_CROSS),
    st.sampled_from(_CROSS),
    st.sampled_from(_CROSS),
    st.sampled_from(_CROSS_REFUSED),
    st.sampled_from(_LOCAL),
    st.tuples(st.sampled_from(CUSTOMERS), st.sampled_from(CUSTOMERS)),
)
amounts = st.integers(1, 300)
timeouts = st.sampled_from([300, 3_000, 10_000])

Message = SendToShard | ShardReply  # coordinator -> shard, or shard -> coordinator


class SagaNetwork(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.books = {s: ShardBook(s, MAP, [], [], 0, GENESIS_HASH, NOW_US) for s in SHARDS}
        self.inboxes: dict[int, dict[str, ShardReply]] = {s: {} for s in SHARDS}
        self.network: list[Message] = []
        self.stalled: list[Message] = []  # held up by a partition; they arrive after it heals
        self.sagas: dict[str, SagaState] = {}  # what the coordinator committed
        self.batches: dict[str, BatchState] = {}  # linked batches (test_batch_properties adds them)
        self.batch_requests: dict[str, tuple[str, str, str | None]] = {}  # posts and voids of batches
        self.results: dict[str, list[PublishResult]] = {}
        self.requests: dict[str, tuple[str, str, str | None]] = {}
        """Posts and voids: id -> (pending transfer, post | void, refusal reason or None if accepted)."""
        self.issued: Counter[str] = Counter()
        self.now = T0
        self.healed = False
        self.heal_newest_first = False

    # --- the parts -----------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=next(self._ids)))

    def _setup(self, shard: int, command: OpenAccount | ChangeAccountStatus | PostTransfer) -> None:
        reply = self.books[shard].apply(command)
        assert not reply.rejected, reply

    def _shard_receives(self, shard: int, command: SendToShard) -> None:
        """One command through the shard's inbox: a duplicate gets its first reply again."""
        [(reply, first_time)] = self.books[shard].apply_batch([command.command], self.inboxes[shard])
        if first_time:
            self.inboxes[shard][command.command.message_id] = reply
        else:
            assert reply == self.inboxes[shard][command.command.message_id]
        self.network.append(reply)

    def _coordinator_handles(self, transfer_id: str, event: SagaEvent) -> None:
        """decide, then commit the new state and hand its effects to the broker together."""
        if transfer_id in self.batches:
            self.batches[transfer_id], effects = batch_saga.decide(self.batches[transfer_id], event, POLICY)
            self._emit(effects)
            return
        before = self.sagas[transfer_id]
        state, effects = decide(before, event, POLICY)
        if isinstance(event, ReplyArrived) and state != before:
            # Every shard here answers what it was asked, so a reply that counts moves the saga on;
            # one that changes it in place is a refusal that parked it (ledger and saga disagree).
            assert state.step != before.step, (before, event.reply, state)
        self.sagas[transfer_id] = state
        self._emit(effects)

    def _emit(self, effects: list[SendToShard | PublishResult]) -> None:
        for effect in effects:
            if isinstance(effect, SendToShard):
                self.network.append(effect)
            else:
                self.results.setdefault(effect.transfer_id, []).append(effect)

    def _deliver(self, message: Message) -> None:
        if isinstance(message, SendToShard):
            self._shard_receives(message.shard, message)
        else:
            assert message.transfer_id is not None
            self._coordinator_handles(message.transfer_id, ReplyArrived(message, self.now))

    def _fire_timers(self) -> None:
        for transfer_id in sorted([*self.sagas, *self.batches]):
            self._coordinator_handles(transfer_id, TimerFired(self.now))

    def _all_states(self) -> list[SagaState | BatchState]:
        return [*self.sagas.values(), *self.batches.values()]

    # --- rules -------------------------------------------------------------------------------

    @initialize(
        funds=st.lists(st.integers(0, 600), min_size=len(FUNDED), max_size=len(FUNDED)),
        newest_first=st.booleans(),
    )
    def open_and_fund_accounts(self, funds: list[int], newest_first: bool) -> None:
        self.heal_newest_first = newest_first  # the order the healed network delivers in, at the end
        amounts = dict(zip(FUNDED, funds, strict=True))
        for account_id, currency, limit, status, _ in ACCOUNTS:
            shard = MAP.shard_for(account_id)
            if status == MISSING:
                continue
            self._setup(shard, OpenAccount(self._new_id(), account_id, currency, limit))
            if amounts.get(account_id):  # issued: a local transfer from the shard's issuance account
                issuer, amount = ISSUERS[shard, currency], amounts[account_id]
                self._setup(
                    shard, PostTransfer(self._new_id(), self._new_id(), issuer, account_id, amount, currency)
                )
                self.issued[currency] += amount
            if status in (FROZEN, CLOSED):
                self._setup(shard, ChangeAccountStatus(self._new_id(), account_id, status))

    @initialize(transfers=st.lists(st.tuples(parties, amounts), max_size=4))
    def start_a_few_transfers_at_once(self, transfers: list[tuple[tuple[str, str], int]]) -> None:
        for accounts, amount in transfers:
            self.start_transfer(accounts, amount)

    @precondition(lambda self: len(self.sagas) < MAX_TRANSFERS)
    @rule(accounts=parties, amount=amounts)
    def start_transfer(self, accounts: tuple[str, str], amount: int) -> None:
        debit, credit = accounts
        transfer = Transfer(
            self._new_id(), debit, credit, amount, HOME[debit][0], MAP.shard_for(debit), MAP.shard_for(credit)
        )
        state, effects = start(transfer, self.now, POLICY)
        self.sagas[transfer.transfer_id] = state
        self._emit(effects)

    @precondition(lambda self: len(self.sagas) < MAX_TRANSFERS)
    @rule(accounts=parties, amount=amounts, timeout=timeouts)
    def start_pending_transfer(self, accounts: tuple[str, str], amount: int, timeout: int) -> None:
        self._start_pending(accounts, amount, timeout)

    def _start_pending(self, accounts: tuple[str, str], amount: int, timeout: int) -> str:
        debit, credit = accounts
        home, shards = HOME[debit][0], (MAP.shard_for(debit), MAP.shard_for(credit))
        transfer = Transfer(self._new_id(), debit, credit, amount, home, *shards, pending_timeout_ms=timeout)
        state, effects = start(transfer, self.now, POLICY)
        self.sagas[transfer.transfer_id] = state
        self._emit(effects)
        return transfer.transfer_id

    @precondition(lambda self: len(self.sagas) < MAX_TRANSFERS)
    @rule(
        accounts=st.sampled_from(_CROSS + _LOCAL), amount=st.integers(1, 50),
        how=st.sampled_from(["post", "void"]), share=st.sampled_from([1, 3]),
    )  # fmt: skip
    def hold_settles_then_is_resolved(
        self, accounts: tuple[str, str], amount: int, how: str, share: int
    ) -> None:
        """A hold placed on a calm network (everything in flight arrives), then posted or voided."""
        transfer_id = self._start_pending(accounts, amount, 10_000)
        while self.network and self.sagas[transfer_id].status not in (PENDING, *TERMINAL):
            self.everything_in_flight_arrives()
        self._request(self.sagas[transfer_id], how, share)

    @precondition(lambda self: any(s.transfer.pending for s in self.sagas.values()))
    @rule(pick=st.integers(0, 10**6), how=st.sampled_from(["post", "void"]), share=st.sampled_from([1, 2, 5]))
    def request_post_or_void(self, pick: int, how: str, share: int) -> None:
        """A post (of the whole hold, or a share of it) or a void arrives for a pending transfer,
        whatever its state: the coordinator decides on the state it committed, in one step."""
        pending = [s for _, s in sorted(self.sagas.items()) if s.transfer.pending]
        held = [s for s in pending if s.status == PENDING]  # every other pick prefers a hold in place
        candidates = held if held and pick % 2 == 0 else pending
        self._request(candidates[pick // 2 % len(candidates)], how, share)

    def _request(self, state: SagaState, how: str, share: int) -> None:
        request_id = self._new_id()
        if how == "post":
            amount = None if share == 1 else max(1, state.transfer.amount // share)
            decided = post(state, request_id, amount, self.now, POLICY)
        else:
            decided = void(state, request_id, self.now, POLICY)
        if isinstance(decided, Refusal):
            self.requests[request_id] = (state.transfer.transfer_id, how, decided.reason)
            self.results[request_id] = [PublishResult(request_id, "rejected", decided.reason)]
            if decided.state is not None:  # it lost to the expiry, which starts now
                assert isinstance(decided.state, SagaState)
                self.sagas[state.transfer.transfer_id] = decided.state
                self._emit(decided.effects)
            return
        self.requests[request_id] = (state.transfer.transfer_id, how, None)
        self.sagas[state.transfer.transfer_id], effects = decided
        self._emit(effects)

    @precondition(lambda self: self.network)
    @rule(count=st.integers(1, 4))
    def deliver_oldest(self, count: int) -> None:
        for _ in range(min(count, len(self.network))):
            self._deliver(self.network.pop(0))

    @precondition(lambda self: self.network)
    @rule()
    def everything_in_flight_arrives(self) -> None:
        """One network hop: what is in flight now arrives, in order; what that sends is in flight."""
        arriving, self.network = self.network, []
        for message in arriving:
            self._deliver(message)

    @precondition(lambda self: self.network)
    @rule(shard=st.sampled_from(SHARDS))
    def shard_catches_up(self, shard: int) -> None:
        """A shard works through every command in flight to it; its replies queue up behind."""
        commands = [m for m in self.network if isinstance(m, SendToShard) and m.shard == shard]
        self.network = [m for m in self.network if m not in commands]
        for command in commands:
            self._deliver(command)

    @precondition(lambda self: self.network)
    @rule(pick=st.integers(0, 10**6))
    def deliver_any(self, pick: int) -> None:
        """Out of order: any message in flight may overtake the others."""
        self._deliver(self.network.pop(pick % len(self.network)))

    @precondition(lambda self: self.network)
    @rule(pick=st.integers(0, 10**6))
    def delay(self, pick: int) -> None:
        """A message held up behind everything else in flight."""
        self.network.append(self.network.pop(pick % len(self.network)))

    @precondition(lambda self: self.network)
    @rule(shard=st.sampled_from(SHARDS))
    def partition_a_shard(self, shard: int) -> None:
        """Commands in flight to `shard` are stuck; whatever is sent from now on gets through first."""
        stuck = [m for m in self.network if isinstance(m, SendToShard) and m.shard == shard]
        self.network = [m for m in self.network if m not in stuck]
        self.stalled += stuck

    @precondition(lambda self: self.stalled)
    @rule()
    def partition_heals(self) -> None:
        self.network += self.stalled
        self.stalled = []

    @precondition(lambda self: any(_awaits_a_shard(s) for s in self.sagas.values()))
    @rule(pick=st.integers(0, 10**6), ms=st.sampled_from([500, 1_000, 2_500]))
    def a_shard_stalls_while_time_passes(self, pick: int, ms: int) -> None:
        """The shard an unfinished saga is waiting on stalls: the commands in flight to it arrive only
        after the timeouts, and after whatever the saga sent instead."""
        self.partition_a_shard(command_for(self._pick_in_flight(pick)).shard)
        self.advance_clock_and_fire_timers(ms)
        self.partition_heals()

    @precondition(lambda self: any(isinstance(m, ShardReply) for m in self.network))
    @rule(pick=st.integers(0, 10**6), ms=st.sampled_from([500, 1_000, 2_500]))
    def replies_lag_while_time_passes(self, pick: int, ms: int) -> None:
        """A shard did the work, but the coordinator hears of it only after its timeouts."""
        replies = [m for m in self.network if isinstance(m, ShardReply)]
        further = [m for m in replies if m.command not in ("ReserveFunds", "PostTransfer")]
        candidates = further if further and pick % 2 == 0 else replies
        lagging = [m for m in replies if m.transfer_id == candidates[pick // 2 % len(candidates)].transfer_id]
        self.network = [m for m in self.network if m not in lagging]
        self.advance_clock_and_fire_timers(ms)
        self.network += lagging

    @precondition(lambda self: self.network and not self.healed)
    @rule(pick=st.integers(0, 10**6))
    def drop(self, pick: int) -> None:
        self.network.pop(pick % len(self.network))

    @precondition(lambda self: self.network)
    @rule(pick=st.integers(0, 10**6), where=st.integers(0, 10**6))
    def duplicate(self, pick: int, where: int) -> None:
        message = self.network[pick % len(self.network)]
        self.network.insert(where % (len(self.network) + 1), message)

    @rule(ms=st.sampled_from([0, 50, 100, 250, 500]))
    def advance_clock_and_fire_timers(self, ms: int) -> None:
        """Time passes; each timer fires when it comes due (several times, if the gap is long)."""
        until = self.now + ms
        while due := [
            s.next_attempt_ms for s in self._all_states() if not s.terminal and s.next_attempt_ms <= until
        ]:
            self.now = max(self.now, min(due))
            self._fire_timers()
        self.now = until
        self._fire_timers()

    @rule(pick=st.integers(0, 10**6), in_sweep=st.booleans(), resend=st.booleans())
    def crash_coordinator(self, pick: int, in_sweep: bool, resend: bool) -> None:
        """The coordinator dies while deciding (on a reply, or in a timer sweep): that decide and its
        effects are lost together (one transaction), the reply stays on the broker (its offset was not
        committed), and it restarts from the states it committed. With `resend`, recovery re-sends
        every unfinished saga's current command at once (the same ids, so harmless). A crash after
        the commit but before the offset commit redelivers the reply: that is `duplicate`."""
        replies = [m for m in self.network if isinstance(m, ShardReply)]
        if in_sweep or not replies:
            for state in self.sagas.values():
                decide(state, TimerFired(self.now + POLICY.max_backoff_ms), POLICY)  # then lost
            for batch in self.batches.values():
                batch_saga.decide(batch, TimerFired(self.now + POLICY.max_backoff_ms), POLICY)
        elif (reply := replies[pick % len(replies)]).transfer_id in self.batches:
            batch_saga.decide(self.batches[str(reply.transfer_id)], ReplyArrived(reply, self.now), POLICY)
        else:
            assert reply.transfer_id is not None
            decide(self.sagas[reply.transfer_id], ReplyArrived(reply, self.now), POLICY)  # then lost
        if resend:
            for state in self.sagas.values():
                if _awaits_a_shard(state):
                    self.network.append(command_for(state))
            for batch in self.batches.values():
                if not batch.terminal:
                    sends = batch_saga.commands_for(batch, batch.waiting)
                    self.network += [e for e in sends if isinstance(e, SendToShard)]

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def each_journal_balances_per_currency_and_matches_the_balances(self) -> None:
        for book in self.books.values():
            sums: Counter[str] = Counter()
            posted: Counter[str] = Counter()
            for e in book.entries:
                sums[e.currency] += e.amount
                posted[e.account_id] += e.amount
            assert all(v == 0 for v in sums.values()), (book.shard, sums)
            held: Counter[str] = Counter()
            pending_credit: Counter[str] = Counter()
            for op in book.operations.values():
                if op.kind == HOLD and op.state == HELD:
                    held[op.account_id] += op.amount
                if op.kind == CREDIT and op.state == HELD:
                    pending_credit[op.account_id] += op.amount
            for account in book.accounts.values():
                assert (account.posted, account.reserved, account.pending_credit) == (
                    posted[account.account_id],
                    held[account.account_id],
                    pending_credit[account.account_id],
                )

    @invariant()
    def no_account_is_below_its_limit(self) -> None:
        for account in (a for b in self.books.values() for a in b.accounts.values() if not a.is_transit):
            assert account.reserved >= 0, account
            assert account.available >= 0, account

    @invariant()
    def money_is_neither_created_nor_destroyed(self) -> None:
        everything: Counter[str] = Counter()
        issuers: Counter[str] = Counter()
        transit: Counter[str] = Counter()
        for book in self.books.values():
            for account in book.accounts.values():
                everything[account.currency] += account.posted
                if account.is_transit:
                    transit[account.currency] += account.posted
                elif account.account_id in ISSUERS.values():
                    issuers[account.currency] += account.posted
        assert all(v == 0 for v in everything.values()), everything  # both shards, transit included
        assert issuers == Counter({c: -v for c, v in self.issued.items()})  # only issuance moved them
        # Customers hold what was issued, plus credits already paid whose debit is not yet committed
        # (exactly what the two transit accounts owe between them); such a credit is always covered
        # by a live hold on the debit side.
        customers: Counter[str] = Counter()
        for account in self._customers():
            customers[account.currency] += account.posted
        in_flight = self._in_flight()
        for currency in everything:
            assert customers[currency] == self.issued[currency] + in_flight[currency], currency
            assert transit[currency] == -in_flight[currency], currency

    @invariant()
    def transfers_are_all_or_nothing_and_published_once(self) -> None:
        for transfer_id, state in self.sagas.items():
            t = state.transfer
            moved = state.post_amount or t.amount
            assert moved <= t.amount, state  # a post never moves more than its hold
            legs = self._customer_legs(transfer_id)
            assert legs[t.debit_account, -moved] <= 1, legs  # each leg at most once, ever
            assert legs[t.credit_account, moved] <= 1, legs
            published = self.results.get(transfer_id, [])
            held = [r for r in published if r.status == PENDING]
            assert held in ([], [PublishResult(transfer_id, PENDING, None)]), published
            finals = [r for r in published if r.status != PENDING]
            if not state.terminal:
                assert finals == [], (state, published)
                continue
            assert finals == [PublishResult(transfer_id, state.status, state.reason)], (state, published)
            # a pending transfer's hold was placed exactly when it ends posted, voided or expired
            assert bool(held) == (t.pending and state.status in (COMPLETED, VOIDED, EXPIRED)), (
                state,
                published,
            )
            hold = self.books[t.debit_shard].operations.get((transfer_id, HOLD))
            credit_op = self.books[t.credit_shard].operations.get((transfer_id, CREDIT))
            if state.status == COMPLETED:
                assert legs == Counter({(t.debit_account, -moved): 1, (t.credit_account, moved): 1}), legs
                assert HOME[t.debit_account][1] == ACTIVE, state
                assert HOME[t.credit_account] == (t.currency, ACTIVE), state
                if t.cross_shard or t.pending:
                    assert hold is not None, state
                    assert hold.state == COMMITTED, hold
            else:  # rejected, compensated, voided or expired: no effect on either account, nothing held
                assert legs == Counter(), (state, legs)
                assert hold is None or hold.state == RELEASED, (state, hold)
                assert credit_op is None or credit_op.state != HELD, (state, credit_op)

    @invariant()
    def each_pending_transfer_ends_one_way_decided_once(self) -> None:
        accepted: Counter[str] = Counter()
        for request_id, (pending_id, how, refusal) in self.requests.items():
            state = self.sagas[pending_id]
            if refusal is not None:
                assert state.resolved_by != request_id, (request_id, state)
                continue
            accepted[pending_id] += 1
            assert state.resolved_by == request_id, (request_id, state)  # the one winner
            assert state.resolution == how, state
            if state.terminal:
                want = PublishResult(request_id, COMPLETED if how == "post" else VOIDED, None)
                assert self.results[request_id] == [want], self.results[request_id]
            else:
                assert request_id not in self.results
        assert all(n == 1 for n in accepted.values()), accepted
        for pending_id, state in self.sagas.items():
            if state.status == EXPIRED:
                assert accepted[pending_id] == 0, state
                assert state.resolved_by is None, state

    # --- the end: heal the network and let everything finish --------------------------------

    def teardown(self) -> None:
        if not self.books[0].accounts:  # hypothesis gave up before initializing
            return
        self.healed = True
        self.partition_heals()
        for _ in range(100):
            while self.network:  # every message leads to at most one more: this ends
                self._deliver(self.network.pop(-1 if self.heal_newest_first else 0))
            if all(s.terminal for s in self._all_states()):
                break
            self.now += POLICY.max_backoff_ms
            self._fire_timers()
        everyone: list[tuple[str, SagaState | BatchState]] = [*self.sagas.items(), *self.batches.items()]
        unfinished = {tid: s for tid, s in everyone if not s.terminal}
        assert unfinished == {}, unfinished
        assert self.network == []
        self.each_journal_balances_per_currency_and_matches_the_balances()
        self.no_account_is_below_its_limit()
        self.money_is_neither_created_nor_destroyed()
        self.transfers_are_all_or_nothing_and_published_once()
        self.each_pending_transfer_ends_one_way_decided_once()
        expected = {
            tid: 2 if s.pending and s.status in (COMPLETED, VOIDED, EXPIRED) else 1 for tid, s in everyone
        }
        assert {tid: len(r) for tid, r in self.results.items()} == expected | dict.fromkeys(
            [*self.requests, *self.batch_requests], 1
        )
        customers: Counter[str] = Counter()
        transit: Counter[str] = Counter()
        for book in self.books.values():
            for account in book.accounts.values():
                if account.account_id in CUSTOMER_IDS:
                    customers[account.currency] += account.posted
                elif account.is_transit:
                    transit[account.currency] += account.posted
        assert +customers == +self.issued  # nothing in flight any more: transit nets to zero
        assert +transit == Counter()
        assert not any(op.state == HELD for b in self.books.values() for op in b.operations.values())
        assert not any(
            a.reserved or a.pending_credit for b in self.books.values() for a in b.accounts.values()
        )

    # --- helpers ------------------------------------------------------------------------------

    def _customers(self) -> list[Account]:
        return [a for b in self.books.values() for a in b.accounts.values() if a.account_id in CUSTOMER_IDS]

    def _pick_in_flight(self, pick: int) -> SagaState:
        """An unfinished saga; every other pick prefers one past its first step, where it gets subtle."""
        in_flight = [s for _, s in sorted(self.sagas.items()) if _awaits_a_shard(s)]
        further = [s for s in in_flight if s.step not in (RESERVING, POSTING)]
        candidates = further if further and pick % 2 == 0 else in_flight
        return candidates[pick // 2 % len(candidates)]

    def _in_flight(self) -> Counter[str]:
        """Per currency, credits already paid whose debit is not yet posted; each such credit must
        be covered by a live hold (never a released one)."""
        in_flight: Counter[str] = Counter()
        for transfer_id, debit_shard, credit_shard, currency, moved in self._through_transit():
            credit = self.books[credit_shard].operations.get((transfer_id, CREDIT))
            hold = self.books[debit_shard].operations.get((transfer_id, HOLD))
            if credit is not None and credit.state == COMMITTED:
                assert hold is not None, ("credited without a hold", transfer_id)
                assert hold.state in (HELD, COMMITTED), ("credited, hold released", transfer_id, hold)
                if hold.state == HELD:
                    in_flight[currency] += moved
        return in_flight

    def _through_transit(self) -> list[tuple[str, int, int, str, int]]:
        """(transfer id, debit shard, credit shard, currency, amount moved) of everything that pays
        through the transit accounts: cross-shard transfers, and every leg of a linked batch."""
        found = [
            (s.transfer.transfer_id, s.transfer.debit_shard, s.transfer.credit_shard, s.transfer.currency,
             s.post_amount or s.transfer.amount)
            for s in self.sagas.values() if s.transfer.cross_shard
        ]  # fmt: skip
        for batch in self.batches.values():
            found += [
                (leg.transfer_id, leg.debit_shard, leg.credit_shard, leg.currency, leg.amount)
                for leg in batch.batch.legs
            ]
        return found

    def _cross_transfers(self) -> list[Transfer]:
        return [s.transfer for s in self.sagas.values() if s.transfer.cross_shard]

    def _customer_legs(self, transfer_id: str) -> Counter[tuple[str, int]]:
        """(customer account, signed amount) of every journal entry the transfer wrote, counted."""
        return Counter(
            (e.account_id, e.amount)
            for b in self.books.values()
            for e in b.entries
            if e.transfer_id == transfer_id and not e.account_id.startswith("transit:")
        )


def _awaits_a_shard(state: SagaState) -> bool:
    """Unfinished, with a command out (a pending transfer's hold in place waits for nobody)."""
    return not state.terminal and state.status != PENDING


SagaNetwork.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSagaNetwork = SagaNetwork.TestCase
