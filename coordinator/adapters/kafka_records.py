"""The coordinator's edge: Kafka records in, `Inbound` messages out.

Each record is authenticated (shard replies carry a shard's MAC), bounded and parsed here, once;
what cannot be parsed becomes a rejection (when it names a transfer or command to answer) or a
refusal to dead-letter. The service never sees a ConsumerRecord.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from aiokafka import ConsumerRecord

from coordinator.service.inbound import Inbound, Message
from infra.records import Origin, Refused
from infra.tracing import context_from_headers, context_from_traceparent
from schemas import envelopes
from schemas.message_auth import MessageAuthenticator, Unauthenticated
from schemas.public import PublicRejection
from schemas.public_parse import parse_account_command, parse_transfer
from schemas.shard_messages import InvalidMessage, ShardReply
from schemas.topics import Namespace


class RecordDecoder:
    def __init__(self, namespace: Namespace, authenticator: MessageAuthenticator, max_amount: int) -> None:
        self.ns = namespace
        self.authenticator = authenticator
        self.max_amount = max_amount

    def decode(self, r: ConsumerRecord[bytes, bytes]) -> list[Inbound]:
        """A record -> its messages: one, or each reply of a shard's envelope (schemas/envelopes.py)."""
        origin = Origin(r.topic, r.partition, r.offset, r.key, r.value or b"")
        if r.topic == self.ns.shard_replies:
            return self._replies(origin, r.headers)
        return [Inbound(self._public(origin), origin, context_from_headers(r.headers))]

    def _replies(self, o: Origin, headers: Sequence[tuple[str, bytes]]) -> list[Inbound]:
        try:
            self.authenticator.verify(o.topic, o.key, o.value, headers)
            unpacked = envelopes.replies(o.value)
        except (Unauthenticated, InvalidMessage) as e:
            return [Inbound(Refused(e.reason, str(e)), o, context_from_headers(headers))]
        if len(unpacked) == 1 and unpacked[0].index is None:  # one reply: its trace rides in headers
            return [Inbound(_typed(unpacked[0].message), o, context_from_headers(headers))]
        return [
            Inbound(_typed(u.message), _place(o, u), context_from_traceparent(u.traceparent))
            for u in unpacked
        ]

    def _public(self, o: Origin) -> Message:
        try:
            if o.topic == self.ns.transfers:
                return parse_transfer(o.value, max_amount=self.max_amount)
            if o.topic == self.ns.account_commands:
                return parse_account_command(o.value)
        except PublicRejection as rejection:
            if rejection.transfer_id or rejection.command_id or rejection.id_as_sent:
                return rejection
            return Refused(rejection.dead_letter_reason, str(rejection))
        return Refused("unknown_message_type", f"no handler for topic {o.topic}")


def _place(record: Origin, u: envelopes.Unpacked[ShardReply]) -> Origin:
    return replace(record, index=u.index)


def _typed(message: ShardReply | InvalidMessage) -> ShardReply | Refused:
    return Refused(message.reason, str(message)) if isinstance(message, InvalidMessage) else message
