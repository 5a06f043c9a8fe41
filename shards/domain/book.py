"""The rules of one shard, applied in memory to the slice of state a batch touches.

`ShardBook.apply` takes one command and returns exactly one reply; on success it also changes the
in-memory accounts and operations and appends balanced journal entries. Applying a batch is applying
its commands in order, so a batch ends exactly as one-at-a-time application would. Nothing here does
I/O: the service loads the slice, applies the batch, and writes back what `ShardBook` recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from schemas.partitioning import PartitionMap
from schemas.shard_messages import (
    WIRE_NAME,
    ApplyLegs,
    CancelCredit,
    ChangeAccountStatus,
    CommitReservation,
    CreditFunds,
    HoldCredit,
    HoldTransfer,
    Leg,
    OpenAccount,
    PostHold,
    PostPending,
    PostTransfer,
    ReleaseReservation,
    ReserveFunds,
    SettleCredit,
    ShardCommand,
    ShardReply,
    VoidPending,
    accounts_of,
    reply_id,
)
from shards.domain.model import (
    ACTIVE,
    CLOSED,
    COMMITTED,
    CREDIT,
    FROZEN,
    HELD,
    HOLD,
    MAX_BIGINT,
    NO_CURRENCY,
    RELEASED,
    TRANSFER,
    Account,
    JournalEntry,
    Operation,
    entry_hash,
    fits_bigint,
    transit_account,
)


class Rejected(Exception):
    """A business rejection, as control flow inside this module; never raised out of it."""

    def __init__(self, reason: str, leg: str | None = None) -> None:
        self.reason = reason
        self.leg = leg  # the refused leg of an ApplyLegs


@dataclass(frozen=True)
class ChangeSet:
    """Everything a batch changed: what the adapter writes, exactly."""

    created: list[Account]
    """Accounts opened in the batch (transit accounts included), as they end it."""
    changed: list[Account]
    """Accounts that existed before and whose balance or status moved, as they end it."""
    operations: list[Operation]
    """Holds and credits created or moved to another state."""
    entries: list[JournalEntry]


class ShardBook:
    """One batch's view of a shard: the accounts and operations it may touch, and its changes."""

    def __init__(
        self,
        shard: int,
        partition_map: PartitionMap,
        accounts: Iterable[Account],
        operations: Iterable[Operation],
        last_seq: int,
        last_hash: bytes,
        now_us: int,
    ) -> None:
        self.shard = shard
        self.partition_map = partition_map
        self.accounts = {a.account_id: a for a in accounts}
        self.operations = {op.key: op for op in operations}
        self.last_seq = last_seq
        self.last_hash = last_hash
        self.now_us = now_us
        # What the batch changed, for the adapter to write back.
        self.new_accounts: list[str] = []
        self.changed_accounts: set[str] = set()
        self.changed_operations: set[tuple[str, str]] = set()
        self.entries: list[JournalEntry] = []

    def changes(self) -> ChangeSet:
        created = set(self.new_accounts)
        return ChangeSet(
            [self.accounts[a] for a in self.new_accounts],
            [self.accounts[a] for a in sorted(self.changed_accounts - created)],
            [self.operations[key] for key in sorted(self.changed_operations)],
            list(self.entries),
        )

    # --- entry points ---------------------------------------------------------------------

    def apply_batch(
        self, commands: Iterable[ShardCommand], earlier: Mapping[str, ShardReply]
    ) -> list[tuple[ShardReply, bool]]:
        """Apply commands in order; (reply, first_time) for each.

        A command whose message_id has a reply already (in `earlier`, the inbox, or earlier in this
        batch) gets that reply again and changes nothing: at most one effect per message.
        """
        seen = dict(earlier)
        results: list[tuple[ShardReply, bool]] = []
        for command in commands:
            prior = seen.get(command.message_id)
            if prior is not None:
                results.append((prior, False))
                continue
            reply = self.apply(command)
            seen[command.message_id] = reply
            results.append((reply, True))
        return results

    def apply(self, command: ShardCommand) -> ShardReply:
        seq_before = self.last_seq
        try:
            outcome, note = self._dispatch(command)
        except Rejected as rejection:
            return self._reply(command, "rejected", rejection.reason, None, rejection.leg)
        return self._reply(command, outcome, note, self.last_seq if self.last_seq > seq_before else None)

    def _dispatch(self, c: ShardCommand) -> tuple[str, str | None]:
        rule: Callable[[ShardBook, Any], tuple[str, str | None]] = _RULES[type(c)]
        return rule(self, c)

    # --- rules ----------------------------------------------------------------------------

    def _open(self, c: OpenAccount) -> tuple[str, str | None]:
        self._require_owned(c.account_id)
        if c.account_id in self.accounts:
            raise Rejected("account_exists")
        self.accounts[c.account_id] = Account(
            c.account_id, c.currency, ACTIVE, c.overdraft_limit, metadata=dict(c.metadata)
        )
        self.new_accounts.append(c.account_id)
        return "account_opened", None

    def _change_status(self, c: ChangeAccountStatus) -> tuple[str, str | None]:
        account = self._account(c.account_id)
        if account.status == CLOSED and c.status != CLOSED:
            raise Rejected("account_closed")  # closing is final
        if c.status == CLOSED and (account.posted or account.reserved or account.pending_credit):
            raise Rejected("account_not_empty")
        account.status = c.status
        self.changed_accounts.add(account.account_id)
        return "account_status_changed", None

    def _post_transfer(self, c: PostTransfer) -> tuple[str, str | None]:
        if (done := self.operations.get((c.transfer_id, TRANSFER))) is not None:
            return self._repeat(done, c.debit_account, c.amount, "transfer_posted")
        if c.debit_account == c.credit_account:
            raise Rejected("same_account")
        debit = self._usable(c.debit_account, c.currency)
        credit = self._usable(c.credit_account, c.currency)
        if debit.available < c.amount:
            raise Rejected("insufficient_funds")
        self._post(c.transfer_id, TRANSFER, c.message_id, debit, credit, c.amount)
        self._record(Operation(c.transfer_id, TRANSFER, c.debit_account, c.amount, c.currency, COMMITTED))
        return "transfer_posted", None

    def _reserve(self, c: ReserveFunds) -> tuple[str, str | None]:
        hold = self.operations.get((c.transfer_id, HOLD))
        if hold is not None:
            if hold.state == RELEASED:
                raise Rejected("reservation_released")  # compensated before this (late) reserve
            return self._repeat(hold, c.account_id, c.amount, "funds_reserved")
        account = self._usable(c.account_id, c.currency)
        if account.available < c.amount:
            raise Rejected("insufficient_funds")
        if not fits_bigint(account.reserved + c.amount):
            raise Rejected("amount_overflow")
        self._hold_debit(c.transfer_id, account, c.amount)
        return "funds_reserved", None

    def _credit(self, c: CreditFunds) -> tuple[str, str | None]:
        if (done := self.operations.get((c.transfer_id, CREDIT))) is not None:
            if done.state == RELEASED:
                raise Rejected("credit_cancelled")  # the saga gave up on this credit first
            return self._repeat(done, c.account_id, c.amount, "funds_credited")
        account = self._usable(c.account_id, c.currency)
        if not fits_bigint(account.posted + c.amount):
            raise Rejected("amount_overflow")  # before _transit: a rejection must not create an account
        self._post(c.transfer_id, CREDIT, c.message_id, self._transit(c.currency), account, c.amount)
        self._record(Operation(c.transfer_id, CREDIT, c.account_id, c.amount, c.currency, COMMITTED))
        return "funds_credited", None

    def _commit(self, c: CommitReservation) -> tuple[str, str | None]:
        self._require_owned(c.account_id)
        hold = self._hold(c.transfer_id, c.account_id)
        if hold.state == COMMITTED:
            return "reservation_committed", "already_applied"
        if hold.state == RELEASED:
            raise Rejected("reservation_released")
        # No status check: the funds were already set aside when the hold was placed.
        account = self._account(c.account_id)
        self._post(c.transfer_id, "commit", c.message_id, account, self._transit(hold.currency), hold.amount)
        account.reserved -= hold.amount  # after _post: a rejection there must leave nothing changed
        hold.state = COMMITTED
        self.changed_operations.add(hold.key)
        return "reservation_committed", None

    def _release(self, c: ReleaseReservation) -> tuple[str, str | None]:
        hold = self.operations.get((c.transfer_id, HOLD))
        if hold is None:
            # A misrouted release must not be acknowledged: the hold it means lives on another shard.
            self._require_owned(c.account_id)
            # A tombstone: a reserve that arrives after its compensation must not hold funds.
            currency = self.accounts[c.account_id].currency if c.account_id in self.accounts else NO_CURRENCY
            self._record(Operation(c.transfer_id, HOLD, c.account_id, 0, currency, RELEASED))
            return "reservation_released", "reservation_not_found"
        if hold.account_id != c.account_id:
            raise Rejected("reservation_not_found")
        if hold.state == RELEASED:
            return "reservation_released", "already_applied"
        if hold.state == COMMITTED:
            raise Rejected("reservation_committed")
        self._end(hold, RELEASED)
        return "reservation_released", None

    def _cancel_credit(self, c: CancelCredit) -> tuple[str, str | None]:
        self._require_owned(c.account_id)
        done = self.operations.get((c.transfer_id, CREDIT))
        if done is None:
            # A tombstone: a credit that arrives after this must not be applied.
            currency = self.accounts[c.account_id].currency if c.account_id in self.accounts else NO_CURRENCY
            self._record(Operation(c.transfer_id, CREDIT, c.account_id, 0, currency, RELEASED))
            return "credit_cancelled", None
        if done.state == RELEASED:
            return "credit_cancelled", "already_applied"
        if done.state == HELD:  # a pending transfer's credit, never posted: just no longer shown
            self._end(done, RELEASED)
            return "credit_cancelled", None
        raise Rejected("credit_applied")  # too late to cancel: the saga must go forward

    # --- two-phase transfers: every check before the first change, so a rejection changes nothing

    def _hold_transfer(self, c: HoldTransfer) -> tuple[str, str | None]:
        if (done := self.operations.get((c.transfer_id, HOLD))) is not None:
            if done.state == RELEASED:
                raise Rejected("reservation_released")
            return self._repeat(done, c.debit_account, c.amount, "funds_held")
        if c.debit_account == c.credit_account:
            raise Rejected("same_account")
        debit = self._usable(c.debit_account, c.currency)
        credit = self._usable(c.credit_account, c.currency)
        if debit.available < c.amount:
            raise Rejected("insufficient_funds")
        if not (fits_bigint(debit.reserved + c.amount) and fits_bigint(credit.pending_credit + c.amount)):
            raise Rejected("amount_overflow")
        self._hold_debit(c.transfer_id, debit, c.amount)
        self._hold_credit_of(c.transfer_id, credit, c.amount)
        return "funds_held", None

    def _hold_credit(self, c: HoldCredit) -> tuple[str, str | None]:
        if (done := self.operations.get((c.transfer_id, CREDIT))) is not None:
            if done.state == RELEASED:
                raise Rejected("credit_cancelled")  # cancelled before this (late) hold
            return self._repeat(done, c.account_id, c.amount, "credit_held")
        account = self._usable(c.account_id, c.currency)
        if not fits_bigint(account.pending_credit + c.amount):
            raise Rejected("amount_overflow")
        self._hold_credit_of(c.transfer_id, account, c.amount)
        return "credit_held", None

    def _post_hold(self, c: PostHold) -> tuple[str, str | None]:
        self._require_owned(c.account_id)
        hold = self._open_hold(c.transfer_id, c.account_id, c.amount)
        if hold is None:
            return "hold_posted", "already_applied"
        account = self._account(c.account_id)
        self._post(c.transfer_id, "commit", c.message_id, account, self._transit(hold.currency), c.amount)
        self._end(hold, COMMITTED)
        return "hold_posted", None

    def _settle_credit(self, c: SettleCredit) -> tuple[str, str | None]:
        self._require_owned(c.account_id)
        pending = self._pending_credit(c.transfer_id, c.account_id, c.amount)
        if pending is None:
            return "credit_settled", "already_applied"
        account = self._account(c.account_id)  # no status check: the credit was accepted when held
        self._post(c.transfer_id, CREDIT, c.message_id, self._transit(pending.currency), account, c.amount)
        self._end(pending, COMMITTED)
        return "credit_settled", None

    def _post_pending(self, c: PostPending) -> tuple[str, str | None]:
        self._require_owned(c.debit_account)
        hold = self._open_hold(c.transfer_id, c.debit_account, c.amount)
        if hold is None:
            return "pending_posted", "already_applied"
        pending = self._pending_credit(c.transfer_id, c.credit_account, c.amount)
        if pending is None:  # pragma: no cover - both sides change together, in one transaction
            raise AssertionError(f"{c.transfer_id}: hold open but pending credit closed")
        debit, credit = self._account(c.debit_account), self._account(c.credit_account)
        self._post(c.transfer_id, TRANSFER, c.message_id, debit, credit, c.amount)
        self._end(hold, COMMITTED)
        self._end(pending, COMMITTED)
        return "pending_posted", None

    def _void_pending(self, c: VoidPending) -> tuple[str, str | None]:
        hold = self._hold(c.transfer_id, c.debit_account)
        pending = self.operations.get((c.transfer_id, CREDIT))
        if pending is None or pending.account_id != c.credit_account:
            raise Rejected("credit_not_found")
        if hold.state == RELEASED:
            return "pending_voided", "already_applied"
        if hold.state == COMMITTED:
            raise Rejected("reservation_committed")
        self._end(hold, RELEASED)
        self._end(pending, RELEASED)
        return "pending_voided", None

    # --- linked batches: every leg's step, or (one refused) none --------------------------------

    def _apply_legs(self, c: ApplyLegs) -> tuple[str, str | None]:
        saved = self._save(c.legs)
        repeats = 0
        for leg in c.legs:
            try:
                _, note = self._dispatch(_LEG_COMMANDS[c.step](c.message_id, leg))
            except Rejected as rejection:
                self._restore(saved)
                raise Rejected(rejection.reason, leg.transfer_id) from None
            repeats += note == "already_applied"
        return "legs_applied", "already_applied" if repeats == len(c.legs) else None

    def _save(self, legs: tuple[Leg, ...]) -> tuple[Any, ...]:
        """What applying `legs` may change, copied, so that a refused leg can undo the others."""
        ids = {leg.account_id for leg in legs} | {transit_account(leg.currency) for leg in legs}
        accounts = {a: replace(self.accounts[a]) if a in self.accounts else None for a in ids}
        keys = {(leg.transfer_id, kind) for leg in legs for kind in (HOLD, CREDIT)}
        operations = {k: replace(self.operations[k]) if k in self.operations else None for k in keys}
        sets = (set(self.changed_accounts), set(self.changed_operations))
        return (
            accounts,
            operations,
            sets,
            len(self.new_accounts),
            len(self.entries),
            self.last_seq,
            self.last_hash,
        )

    def _restore(self, saved: tuple[Any, ...]) -> None:
        accounts, operations, sets, new_accounts, entries, self.last_seq, self.last_hash = saved
        for table, copies in ((self.accounts, accounts), (self.operations, operations)):
            for key, copy in copies.items():
                if copy is None:
                    table.pop(key, None)
                else:
                    table[key] = copy
        self.changed_accounts, self.changed_operations = sets
        del self.new_accounts[new_accounts:]
        del self.entries[entries:]

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _repeat(done: Operation, account_id: str, amount: int, outcome: str) -> tuple[str, str | None]:
        """A second command for an operation already done: the same terms are a harmless repeat,
        other terms under the same transfer id are refused."""
        if done.account_id != account_id or done.amount != amount:
            raise Rejected("amount_mismatch")
        return outcome, "already_applied"

    def _require_owned(self, account_id: str) -> None:
        if self.partition_map.shard_for(account_id) != self.shard:
            raise Rejected("wrong_shard")

    def _account(self, account_id: str) -> Account:
        self._require_owned(account_id)
        account = self.accounts.get(account_id)
        if account is None:
            raise Rejected("account_not_found")
        return account

    def _usable(self, account_id: str, currency: str) -> Account:
        """An account that may take part in a new movement of `currency`."""
        account = self._account(account_id)
        if account.status == FROZEN:
            raise Rejected("account_frozen")
        if account.status == CLOSED:
            raise Rejected("account_closed")
        if account.currency != currency:
            raise Rejected("currency_mismatch")
        return account

    def _hold(self, transfer_id: str, account_id: str) -> Operation:
        hold = self.operations.get((transfer_id, HOLD))
        if hold is None or hold.account_id != account_id:
            raise Rejected("reservation_not_found")
        return hold

    def _open_hold(self, transfer_id: str, account_id: str, amount: int) -> Operation | None:
        """The held hold that `amount` may be posted from; None when it was posted already."""
        hold = self._hold(transfer_id, account_id)
        if hold.state == COMMITTED:
            return None
        if hold.state == RELEASED:
            raise Rejected("reservation_released")
        if amount > hold.amount:
            raise Rejected("amount_exceeds_hold")
        return hold

    def _pending_credit(self, transfer_id: str, account_id: str, amount: int) -> Operation | None:
        """The held pending credit that `amount` may be settled from; None when settled already."""
        pending = self.operations.get((transfer_id, CREDIT))
        if pending is None or pending.account_id != account_id:
            raise Rejected("credit_not_found")
        if pending.state == COMMITTED:
            return None
        if pending.state == RELEASED:
            raise Rejected("credit_cancelled")
        if amount > pending.amount:
            raise Rejected("amount_exceeds_hold")
        return pending

    def _hold_debit(self, transfer_id: str, account: Account, amount: int) -> None:
        account.reserved += amount
        self.changed_accounts.add(account.account_id)
        self._record(Operation(transfer_id, HOLD, account.account_id, amount, account.currency, HELD))

    def _hold_credit_of(self, transfer_id: str, account: Account, amount: int) -> None:
        account.pending_credit += amount
        self.changed_accounts.add(account.account_id)
        self._record(Operation(transfer_id, CREDIT, account.account_id, amount, account.currency, HELD))

    def _end(self, op: Operation, state: str) -> None:
        """A hold (a pending debit) or a pending credit ends, posted or released: the whole amount
        it held stops counting, even when a post moved less."""
        account = self._account(op.account_id)
        if op.kind == HOLD:
            account.reserved -= op.amount
        else:
            account.pending_credit -= op.amount
        self.changed_accounts.add(account.account_id)
        op.state = state
        self.changed_operations.add(op.key)

    def _transit(self, currency: str) -> Account:
        account_id = transit_account(currency)
        account = self.accounts.get(account_id)
        if account is None:
            # Created on first use; it may go negative without bound (within BIGINT).
            account = Account(account_id, currency, ACTIVE, overdraft_limit=MAX_BIGINT)
            self.accounts[account_id] = account
            self.new_accounts.append(account_id)
        return account

    def _record(self, op: Operation) -> None:
        self.operations[op.key] = op
        self.changed_operations.add(op.key)

    def _post(
        self, transfer_id: str, kind: str, message_id: str, debit: Account, credit: Account, amount: int
    ) -> None:
        """Move `amount` from `debit` to `credit`: two entries that sum to zero."""
        if not (fits_bigint(debit.posted - amount) and fits_bigint(credit.posted + amount)):
            raise Rejected("amount_overflow")
        debit.posted -= amount
        credit.posted += amount
        self.changed_accounts.update((debit.account_id, credit.account_id))
        self._append(transfer_id, "debit", kind, debit, -amount, message_id)
        self._append(transfer_id, "credit", kind, credit, amount, message_id)

    def _append(
        self, transfer_id: str, leg: str, kind: str, account: Account, amount: int, message_id: str
    ) -> None:
        seq = self.last_seq + 1
        digest = entry_hash(
            self.last_hash, seq, transfer_id, leg, kind, account.account_id, amount,
            account.currency, message_id, self.now_us,
        )  # fmt: skip
        self.entries.append(
            JournalEntry(
                seq, transfer_id, leg, kind, account.account_id, amount, account.currency,
                message_id, self.now_us, self.last_hash, digest,
            )
        )  # fmt: skip
        self.last_seq, self.last_hash = seq, digest

    def _reply(
        self,
        c: ShardCommand,
        outcome: str,
        reason: str | None,
        journal_seq: int | None,
        leg: str | None = None,
    ) -> ShardReply:
        account_id = accounts_of(c)[0]
        transfer_id = getattr(c, "transfer_id", None)
        return ShardReply(
            message_id=reply_id(c.message_id),
            in_reply_to=c.message_id,
            command=WIRE_NAME[type(c)],
            shard=self.shard,
            account_id=account_id,
            transfer_id=transfer_id,
            outcome=outcome,
            reason=reason,
            journal_seq=journal_seq,
            leg=leg,
        )


# The single-leg command each step of an ApplyLegs applies to each leg.
_LEG_COMMANDS: Final[dict[str, Callable[[str, Leg], ShardCommand]]] = {
    "reserve": lambda m, leg: ReserveFunds(m, leg.transfer_id, leg.account_id, leg.amount, leg.currency),
    "credit": lambda m, leg: CreditFunds(m, leg.transfer_id, leg.account_id, leg.amount, leg.currency),
    "commit": lambda m, leg: CommitReservation(m, leg.transfer_id, leg.account_id),
    "release": lambda m, leg: ReleaseReservation(m, leg.transfer_id, leg.account_id),
    "cancel": lambda m, leg: CancelCredit(m, leg.transfer_id, leg.account_id),
    "hold_credit": lambda m, leg: HoldCredit(m, leg.transfer_id, leg.account_id, leg.amount, leg.currency),
    "settle": lambda m, leg: SettleCredit(m, leg.transfer_id, leg.account_id, leg.amount),
    "post_hold": lambda m, leg: PostHold(m, leg.transfer_id, leg.account_id, leg.amount),
}

# The rule for each command type (a table, not a match: one line per command).
_RULES: Final[dict[type, Callable[[ShardBook, Any], tuple[str, str | None]]]] = {
    OpenAccount: ShardBook._open,
    ChangeAccountStatus: ShardBook._change_status,
    PostTransfer: ShardBook._post_transfer,
    ReserveFunds: ShardBook._reserve,
    CreditFunds: ShardBook._credit,
    CommitReservation: ShardBook._commit,
    ReleaseReservation: ShardBook._release,
    CancelCredit: ShardBook._cancel_credit,
    HoldTransfer: ShardBook._hold_transfer,
    HoldCredit: ShardBook._hold_credit,
    PostHold: ShardBook._post_hold,
    SettleCredit: ShardBook._settle_credit,
    PostPending: ShardBook._post_pending,
    VoidPending: ShardBook._void_pending,
    ApplyLegs: ShardBook._apply_legs,
}
