"""Linked batches on the coordinator: a TransferBatch starts one saga (batch_saga.py) in the batch's
row, and every leg gets a row of its own whose status follows the batch.

A leg's transfer id is a transfer id like any other: one already taken refuses the batch
(`leg_id_reused`), and a transfer sent later under a leg's id is refused as `transfer_id_reused`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from coordinator.saga.batch_saga import (
    Batch,
    BatchLeg,
    BatchState,
    command_id,
    decide,
    leg_outcomes,
    refuse,
    start,
)
from coordinator.saga.batch_saga import Effect as BatchEffect
from coordinator.saga.transfer_saga import (
    PublishResult,
    ReplyArrived,
    SagaPolicy,
    SendToShard,
    TimerFired,
    Transfer,
)
from coordinator.service.batch import BatchChanges
from coordinator.service.ports import StepUpdate, TransferRecord
from infra.records import Origin
from infra.tracing import TRACEPARENT, current_headers
from schemas.partitioning import PartitionMap
from schemas.public import TransferBatch, request_fingerprint
from schemas.shard_messages import ShardReply
from schemas.topics import Namespace

Publish = Callable[[BatchChanges, TransferRecord], None]
AnsweredBefore = Callable[[BatchChanges, str, str], bool]


class LinkedBatches:
    def __init__(
        self,
        namespace: Namespace,
        partition_map: PartitionMap,
        policy: SagaPolicy,
        publish: Publish,
        answered_before: AnsweredBefore,
        resolver_done: Callable[[BatchChanges, PublishResult], None],
        refusal: Callable[[Iterable[int], int], str | None] = lambda shards, now: None,
    ) -> None:
        self.ns = namespace
        self.pmap = partition_map
        self.policy = policy
        self.publish = publish
        self.answered_before = answered_before
        self.resolver_done = resolver_done
        self.refusal = refusal
        """Why a new batch touching these shards may not start now (their breakers), or None."""

    def on_batch(self, changes: BatchChanges, cmd: TransferBatch, origin: Origin, now: int) -> None:
        fingerprint = request_fingerprint(cmd)
        if self.answered_before(changes, cmd.batch_id, fingerprint):
            return
        traceparent = current_headers().get(TRACEPARENT)
        rec = TransferRecord(
            cmd.batch_id, fingerprint, origin.partition, None, "in_flight", None, 0, traceparent
        )
        changes.records[cmd.batch_id] = changes.changed[cmd.batch_id] = rec
        if any(leg.transfer_id in changes.records for leg in cmd.transfers):
            rec.status, rec.reason = "rejected", "leg_id_reused"
            self.publish(changes, rec)
            return
        legs = tuple(
            BatchLeg(
                leg.transfer_id,
                leg.debit_account,
                leg.credit_account,
                leg.amount,
                leg.currency,
                self.pmap.shard_for(leg.debit_account),
                self.pmap.shard_for(leg.credit_account),
            )
            for leg in cmd.transfers
        )
        for leg in legs:
            terms = Transfer(
                leg.transfer_id, leg.debit_account, leg.credit_account, leg.amount, leg.currency,
                leg.debit_shard, leg.credit_shard,
            )  # fmt: skip
            row = TransferRecord(
                leg.transfer_id, fingerprint, origin.partition, None, "in_flight", None, 0, traceparent,
                terms=terms, batch_id=cmd.batch_id,
            )  # fmt: skip
            changes.records[leg.transfer_id] = changes.changed[leg.transfer_id] = row
        batch = Batch(cmd.batch_id, legs, cmd.pending_timeout_ms)
        if refusal := self.refusal({s for leg in legs for s in (leg.debit_shard, leg.credit_shard)}, now):
            self.apply(changes, rec, *refuse(batch, refusal, now))  # rows and legs, ended at once
            return
        self.apply(changes, rec, *start(batch, now, self.policy))

    def on_reply(self, changes: BatchChanges, rec: TransferRecord, reply: ShardReply, now: int) -> None:
        state = rec.batch
        assert state is not None
        current = command_id(state.batch.batch_id, state.step, reply.shard)
        if reply.in_reply_to == current and reply.shard in state.waiting and not state.terminal:
            changes.steps.append(
                StepUpdate(
                    rec.transfer_id,
                    f"{state.step}:{reply.shard}",
                    reply.shard,
                    reply.in_reply_to,
                    reply.outcome,
                    reply.reason,
                )
            )
        self.apply(changes, rec, *decide(state, ReplyArrived(reply, now), self.policy))

    def on_timer(self, changes: BatchChanges, rec: TransferRecord, now: int) -> None:
        assert rec.batch is not None
        self.apply(changes, rec, *decide(rec.batch, TimerFired(now), self.policy))

    def apply(
        self, changes: BatchChanges, rec: TransferRecord, state: BatchState, effects: list[BatchEffect]
    ) -> None:
        if state == rec.batch and not effects:
            return
        rec.batch, rec.status, rec.reason = state, state.status, state.reason
        changes.changed[rec.transfer_id] = rec
        for effect in effects:
            if isinstance(effect, SendToShard):
                topic, step = self.ns.shard_commands(effect.shard), f"{state.step}:{effect.shard}"
                changes.send(topic, rec.transfer_id, step, effect.shard, effect.command)
            elif effect.transfer_id == rec.transfer_id:
                self._legs_follow(changes, state)
                self.publish(changes, rec)
            else:
                self.resolver_done(changes, effect)

    def _legs_follow(self, changes: BatchChanges, state: BatchState) -> None:
        for leg_id, status, reason in leg_outcomes(state):
            leg = changes.records.get(leg_id)
            if leg is not None:  # loaded with its batch (coordinator._load_linked)
                leg.status, leg.reason = status, reason
                changes.changed[leg_id] = leg
