"""The coordinator: public commands in, saga steps out, one terminal result per transfer.

Each polled batch (transfer commands, account commands, shard replies) is handled in ONE
PostgreSQL transaction: the sagas it touches are locked and loaded, every message is applied in
offset order by the handler registered for its type (account commands: accounts.py; transfers
through the pure saga), and the new states, step history, inbox rows and outbox messages are
written back; only then are the Kafka offsets committed. A sweeper re-sends the current command of
sagas whose answer is overdue, for the partitions this instance owns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import trace

from coordinator.saga.batch_saga import BatchState, leg_outcomes
from coordinator.saga.shard_progress import ShardProgress
from coordinator.saga.transfer_saga import (
    PENDING,
    TERMINAL,
    Effect,
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SagaState,
    SendToShard,
    TimerFired,
    Transfer,
    command_id,
    decide,
    start,
)
from coordinator.saga.two_phase import Refusal, post, void
from coordinator.service.accounts import COMMAND_TYPES, AccountCommands
from coordinator.service.batch import BatchChanges, Handler, handles
from coordinator.service.breakers import Breakers
from coordinator.service.figures import NoFigures, SagaFigures
from coordinator.service.inbound import Inbound
from coordinator.service.linked import LinkedBatches
from coordinator.service.ports import SagaTransaction, StepUpdate, TransferRecord
from coordinator.service.step_clock import StepClock
from infra import envelopes
from infra.outbox import OutboxMessage
from infra.records import Origin, Refused
from infra.tracing import TRACEPARENT, context_from_traceparent, current_headers
from schemas.envelopes import COMMANDS
from schemas.ids import url_uuid5
from schemas.partitioning import PartitionMap
from schemas.public import (
    LegOutcome,
    PendingCommand,
    PostPendingTransfer,
    PublicRejection,
    TransferBatch,
    TransferFunds,
    TransferResult,
    VoidPendingTransfer,
    encode_public,
    request_fingerprint,
)
from schemas.shard_messages import ShardReply
from schemas.topics import Namespace

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("ledger.coordinator")


@dataclass(frozen=True)
class CoordinatorSettings:
    max_transfer_amount: int = 10**12
    """Largest amount one transfer may move, in minor units."""
    issuance_accounts: frozenset[str] = frozenset()
    """Accounts that may be opened with an overdraft limit: where money enters the ledger."""
    max_customer_overdraft: int = 0
    """Largest overdraft limit any other account may be opened with."""
    policy: SagaPolicy = field(default_factory=SagaPolicy)
    max_message_bytes: int = 256 * 1024
    """The topics' max.message.bytes (LEDGER_MAX_MESSAGE_BYTES): no envelope is larger."""


def result_id(transfer_id: str, fingerprint: str, status: str | None = None) -> str:
    """A result's id: the same request always gets the same result message. A pending transfer's
    first result (`pending`) has an id of its own: its final result is another message."""
    suffix = ":pending" if status == PENDING else ""
    return url_uuid5(f"ledger:result:{transfer_id}:{fingerprint}{suffix}")


class Coordinator:
    def __init__(
        self,
        settings: CoordinatorSettings,
        namespace: Namespace,
        partition_map: PartitionMap,
        clock_ms: Callable[[], int],
        figures: SagaFigures | None = None,
    ) -> None:
        self.settings = settings
        self.figures = figures or NoFigures()
        self.step_clock = StepClock()
        self.ns = namespace
        self.pmap = partition_map
        self.clock_ms = clock_ms
        self.progress = ShardProgress()  # re-sends follow the shards, not only the clock
        self.breakers = Breakers()
        self.accounts = AccountCommands(
            namespace, partition_map,
            issuance_accounts=settings.issuance_accounts,
            max_customer_overdraft=settings.max_customer_overdraft,
        )  # fmt: skip
        self.linked = LinkedBatches(
            namespace,
            partition_map,
            settings.policy,
            self._publish,
            self._answered_before,
            self._resolver_done,
            self.breakers.refusal,
        )
        self.handlers: dict[type[Any], Handler[Any]] = dict(
            [
                handles(ShardReply, self._on_reply),
                handles(TransferFunds, self._on_transfer),
                handles(TransferBatch, self.linked.on_batch),
                handles(PostPendingTransfer, self._on_pending_command),
                handles(VoidPendingTransfer, self._on_pending_command),
                handles(PublicRejection, self._on_invalid),
                handles(Refused, self._dead_letter),
                *(handles(kind, self.accounts.on_command) for kind in COMMAND_TYPES),
            ]
        )

    # --- a polled batch ----------------------------------------------------------------------

    async def handle(self, tx: SagaTransaction, batch: Sequence[Inbound]) -> set[str]:
        """Apply a batch of decoded records, in order; return the saga steps it moved sagas into
        (for failpoints and logs)."""
        replies: list[ShardReply] = []
        transfer_ids: set[str] = set()
        polled = self.clock_ms()  # when the batch's answers arrived: one clock read, not one per reply
        for item in batch:
            message = item.message
            if isinstance(message, ShardReply):
                self.progress.heard(message.shard, polled)
                replies.append(message)
                if message.transfer_id:
                    transfer_ids.add(message.transfer_id)
            elif isinstance(message, (TransferFunds, PublicRejection)) and message.transfer_id:
                transfer_ids.add(message.transfer_id)
            elif isinstance(message, (PostPendingTransfer, VoidPendingTransfer)):
                transfer_ids.update((message.transfer_id, message.pending_id))
            elif isinstance(message, TransferBatch):  # its legs' ids must be free
                transfer_ids.update((message.batch_id, *(leg.transfer_id for leg in message.transfers)))
        refused = [i.origin.dead_letter_id for i in batch if isinstance(i.message, Refused)]
        seen = await tx.seen([m.message_id for m in replies] + refused)
        changes = BatchChanges(await _load_linked(tx, transfer_ids), seen=seen)
        now = self.clock_ms()
        for item in batch:
            # Each message is a span of its transfer's trace: the parent comes from the message's
            # headers (a client's or a shard's), else from the saga row.
            parent, message = item.parent, item.message
            if parent is None and isinstance(message, ShardReply) and message.transfer_id in changes.records:
                parent = context_from_traceparent(changes.records[message.transfer_id].traceparent)
            with _TRACER.start_as_current_span(
                f"ledger.coordinator.{type(message).__name__}", context=parent
            ):
                self.handlers[type(message)](changes, message, item.origin, now)
        await self._write(tx, changes)
        return {r.state.step for r in changes.changed.values() if r.state is not None}

    async def sweep(self, tx: SagaTransaction, partitions: Sequence[int], limit: int = 1000) -> int:
        """Fire the timer of every overdue saga these partitions own, unless the shard it waits on is
        answering others and the saga is younger than the policy's patience; return how many."""
        now, policy = self.clock_ms(), self.settings.policy
        due = await tx.due(
            partitions, now, limit,
            answering=self.progress.answering(now, policy.answering_within_ms),
            started_before_ms=now - policy.busy_patience_ms,
        )  # fmt: skip
        changes = BatchChanges({r.transfer_id: r for r in due})
        changes.records.update(await _load_linked(tx, (), due))
        for rec in due:
            with _TRACER.start_as_current_span(
                "ledger.saga.timeout", context=context_from_traceparent(rec.traceparent)
            ):
                if rec.batch is not None:
                    self.linked.on_timer(changes, rec, now)
                    continue
                assert rec.state is not None
                self._apply(changes, rec, *decide(rec.state, TimerFired(now), self.settings.policy))
        await self._write(tx, changes)
        return len(due)

    async def _write(self, tx: SagaTransaction, changes: BatchChanges) -> None:
        """Everything the batch decided, with its shard commands packed into one envelope per shard
        (infra/envelopes.py): one outbox row and one record per shard, not one per command."""
        outbox = envelopes.pack(changes.outbox, COMMANDS, self._shard_topic, self.settings.max_message_bytes)
        await tx.write(list(changes.changed.values()), changes.steps, changes.inbox, outbox)
        # Told once the store took the writes, so a batch retried whole is not counted twice
        # (only one that fails at its very commit can be); once per outcome, not per transfer
        # (an instrument's add costs about 11 µs).
        ended = Counter((r.status, r.reason) for r in changes.changed.values() if r.status in TERMINAL)
        for (state, reason), count in ended.items():
            self.figures.finished(state, reason, count)
        now = self.clock_ms()
        for shard, took_ms in self.step_clock.replied(changes.replied, now):
            self.figures.answered(shard, took_ms)
        self.step_clock.decided(changes.decided, now)

    def _shard_topic(self, message: OutboxMessage) -> str | None:
        internal = self.ns.is_internal(message.topic) and message.topic != self.ns.shard_replies
        return message.topic if internal else None

    # --- handlers ----------------------------------------------------------------------------

    def _on_transfer(self, changes: BatchChanges, cmd: TransferFunds, origin: Origin, now: int) -> None:
        fingerprint = request_fingerprint(cmd)
        if self._answered_before(changes, cmd.transfer_id, fingerprint):
            return
        transfer = Transfer(
            cmd.transfer_id, cmd.debit_account, cmd.credit_account, cmd.amount, cmd.currency,
            self.pmap.shard_for(cmd.debit_account), self.pmap.shard_for(cmd.credit_account),
            cmd.pending_timeout_ms,
        )  # fmt: skip
        traceparent = current_headers().get(TRACEPARENT)
        if (refusal := self.breakers.refusal((transfer.debit_shard, transfer.credit_shard), now)) is not None:
            rec = TransferRecord(
                cmd.transfer_id, fingerprint, origin.partition, None, "rejected", refusal, 0, traceparent,
                terms=transfer,
            )  # fmt: skip
            changes.records[cmd.transfer_id] = changes.changed[cmd.transfer_id] = rec
            self._publish(changes, rec)
            return
        state, effects = start(transfer, now, self.settings.policy)
        rec = TransferRecord(
            cmd.transfer_id, fingerprint, origin.partition, None, "in_flight", None, 0, traceparent
        )
        changes.records[cmd.transfer_id] = rec
        self._apply(changes, rec, state, effects)

    def _on_pending_command(
        self, changes: BatchChanges, cmd: PendingCommand, origin: Origin, now: int
    ) -> None:
        """A post or void: applied to the pending transfer's saga, locked in this batch, so it and
        any rival (another post or void, the expiry) are decided one after the other (two_phase.py)."""
        fingerprint = request_fingerprint(cmd)
        if self._answered_before(changes, cmd.transfer_id, fingerprint):
            return
        held = changes.records.get(cmd.pending_id)
        rec = TransferRecord(
            cmd.transfer_id, fingerprint, origin.partition, None, "in_flight", None, 0,
            current_headers().get(TRACEPARENT), cmd.pending_id,
        )  # fmt: skip
        changes.records[cmd.transfer_id] = changes.changed[cmd.transfer_id] = rec
        target = held.state or held.batch if held is not None else None
        if held is None or target is None:
            self._finish_alone(
                changes, rec, "pending_transfer_not_found" if held is None else "pending_transfer_not_pending"
            )
            return
        amount = cmd.amount if isinstance(cmd, PostPendingTransfer) else None
        asserted = (cmd.debit_account, cmd.credit_account)
        if held.state is not None:
            t = held.state.transfer
            rec.terms = replace(t, transfer_id=cmd.transfer_id, amount=amount or t.amount)
            mismatch = asserted[0] not in (None, t.debit_account) or asserted[1] not in (
                None,
                t.credit_account,
            )
        else:
            mismatch = asserted != (None, None)  # a batch has no one pair of accounts
        if mismatch:
            self._finish_alone(changes, rec, "pending_account_mismatch")
            return
        policy = self.settings.policy
        if isinstance(cmd, PostPendingTransfer):
            decided = post(target, cmd.transfer_id, amount, now, policy)
        else:
            decided = void(target, cmd.transfer_id, now, policy)
        if isinstance(decided, Refusal):
            self._finish_alone(changes, rec, decided.reason)
            if decided.state is not None:  # it lost to the expiry, which starts now
                self._apply_any(changes, held, decided.state, decided.effects)
            return
        self._apply_any(changes, held, *decided)

    def _apply_any(
        self, changes: BatchChanges, rec: TransferRecord, state: SagaState | BatchState, effects: list[Effect]
    ) -> None:
        if isinstance(state, BatchState):
            self.linked.apply(changes, rec, state, effects)
        else:
            self._apply(changes, rec, state, effects)

    def _finish_alone(self, changes: BatchChanges, rec: TransferRecord, reason: str) -> None:
        """A post or void refused: its own row ends rejected; the pending transfer is untouched."""
        rec.status, rec.reason = "rejected", reason
        self._publish(changes, rec)

    def _on_invalid(
        self, changes: BatchChanges, rejection: PublicRejection, origin: Origin, now: int
    ) -> None:
        if origin.topic == self.ns.account_commands:
            self.accounts.on_rejection(changes, rejection)
            return
        transfer_id = rejection.transfer_id
        fingerprint = hashlib.sha256(origin.value).hexdigest()
        if transfer_id is None:
            # A UUID spelled otherwise is no transfer's id: answered, recorded nowhere, so no row
            # under it can meet the canonical spelling's transfer or fill the table with variants.
            assert rejection.id_as_sent is not None  # else it was dead-lettered
            self._unrecorded_result(changes, rejection.id_as_sent, fingerprint, rejection.reason)
            return
        if self._answered_before(changes, transfer_id, fingerprint):
            return
        rec = TransferRecord(
            transfer_id, fingerprint, origin.partition, None, "rejected", rejection.reason, 0
        )
        changes.records[transfer_id] = rec
        changes.changed[transfer_id] = rec
        self._publish(changes, rec)

    def _answered_before(self, changes: BatchChanges, transfer_id: str, fingerprint: str) -> bool:
        """Idempotency: the same request again gets its result again; another body is refused."""
        rec = changes.records.get(transfer_id)
        if rec is None:
            return False
        if rec.fingerprint == fingerprint:
            if rec.terminal or rec.status == PENDING:
                self._publish(changes, rec)
            return True
        self._unrecorded_result(changes, transfer_id, fingerprint, "transfer_id_reused")
        return True

    def _unrecorded_result(
        self, changes: BatchChanges, transfer_id: str, fingerprint: str, reason: str
    ) -> None:
        """A rejected result that no saga row holds: sent again (same message_id) each time the same
        bytes arrive again."""
        result = TransferResult(
            message_id=result_id(transfer_id, fingerprint), transfer_id=transfer_id, state="rejected",
            reason=reason, request_fingerprint=fingerprint, debit_account=None,
            credit_account=None, amount=None, currency=None, finished_at=_iso(self.clock_ms()),
        )  # fmt: skip
        changes.outbox.append(
            OutboxMessage(self.ns.results, transfer_id.encode(), encode_public(result), current_headers())
        )

    def _on_reply(self, changes: BatchChanges, reply: ShardReply, origin: Origin, now: int) -> None:
        if not changes.first_time(reply.message_id):
            return
        changes.replied.append((reply.shard, reply.in_reply_to))
        if reply.transfer_id is None:
            self.accounts.on_reply(changes, reply)
            return
        rec = changes.records.get(reply.transfer_id)
        if rec is not None and rec.batch is not None:
            self.linked.on_reply(changes, rec, reply, now)
            return
        if rec is None or rec.state is None:
            log.warning("reply %s for unknown saga %s ignored", reply.message_id, reply.transfer_id)
            return
        state = rec.state
        if reply.in_reply_to == command_id(reply.transfer_id, state.step) and not state.terminal:
            changes.steps.append(
                StepUpdate(
                    rec.transfer_id, state.step, reply.shard, reply.in_reply_to, reply.outcome, reply.reason
                )
            )
        self._apply(changes, rec, *decide(state, ReplyArrived(reply, now), self.settings.policy))

    def _dead_letter(self, changes: BatchChanges, refusal: Refused, origin: Origin, now: int) -> None:
        if not changes.first_time(origin.dead_letter_id):
            return
        letter = origin.dead_letter(refusal.reason, refusal.detail)
        changes.outbox.append(OutboxMessage(self.ns.dead_letters, None, letter.encode(), {}))

    # --- effects -----------------------------------------------------------------------------

    def _apply(
        self, changes: BatchChanges, rec: TransferRecord, state: SagaState, effects: list[Effect]
    ) -> None:
        if state == rec.state and not effects:
            return
        rec.state, rec.status, rec.reason = state, state.status, state.reason
        changes.changed[rec.transfer_id] = rec
        for effect in effects:
            if isinstance(effect, SendToShard):
                topic = self.ns.shard_commands(effect.shard)
                changes.send(topic, rec.transfer_id, state.step, effect.shard, effect.command)
            elif isinstance(effect, PublishResult) and effect.transfer_id == rec.transfer_id:
                self._publish(changes, rec)
            elif isinstance(effect, PublishResult):
                self._resolver_done(changes, effect)

    def _resolver_done(self, changes: BatchChanges, effect: PublishResult) -> None:
        """The post or void that resolved a pending transfer (or batch) ends with it."""
        resolver = changes.records[effect.transfer_id]
        resolver.status, resolver.reason = effect.status, effect.reason
        changes.changed[resolver.transfer_id] = resolver
        self._publish(changes, resolver)

    def _publish(self, changes: BatchChanges, rec: TransferRecord) -> None:
        assert rec.status in TERMINAL or rec.status == PENDING
        t = rec.shown
        legs, failed_leg = None, None
        if rec.batch is not None:
            legs = tuple(LegOutcome(*outcome) for outcome in leg_outcomes(rec.batch))
            failed_leg = rec.batch.failed_leg if rec.status in ("rejected", "compensated") else None
        result = TransferResult(
            message_id=result_id(rec.transfer_id, rec.fingerprint, rec.status), transfer_id=rec.transfer_id,
            state=rec.status, reason=rec.reason, request_fingerprint=rec.fingerprint,
            debit_account=t.debit_account if t else None, credit_account=t.credit_account if t else None,
            amount=t.amount if t else None, currency=t.currency if t else None,
            finished_at=_iso(self.clock_ms()), pending_id=rec.pending_id, legs=legs, failed_leg=failed_leg,
        )  # fmt: skip
        changes.outbox.append(
            OutboxMessage(self.ns.results, rec.transfer_id.encode(), encode_public(result), current_headers())
        )


async def _load_linked(
    tx: SagaTransaction, transfer_ids: Iterable[str], loaded: Iterable[TransferRecord] = ()
) -> dict[str, TransferRecord]:
    """The sagas of `transfer_ids`, with the rows they are linked to: a pending transfer's post or
    void, and a post's or void's pending transfer. A second read only when a batch has any."""
    records = await tx.load(transfer_ids) if transfer_ids else {}
    known = {**{r.transfer_id: r for r in loaded}, **records}
    linked = {s.resolved_by for r in known.values() if (s := r.state or r.batch) and s.resolved_by}
    linked |= {r.pending_id for r in known.values() if r.pending_id}
    linked |= {leg.transfer_id for r in known.values() if r.batch for leg in r.batch.batch.legs}
    missing = linked - known.keys()
    if missing:
        records.update(await tx.load(missing))
    return records


def _iso(ms: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).isoformat()
