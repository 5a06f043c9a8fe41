"""The coordinator's edge: Kafka records in, `Inbound` messages out.

Each record is authenticated (shard replies carry a shard's MAC), bounded and parsed here, once;
what cannot be parsed becomes a rejection (when it names a transfer or command to answer) or a
refusal to dead-letter. The service never sees a ConsumerRecord.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import ConsumerRecord

from coordinator.service.inbound import Inbound, Message
from infra.records import Origin, Refused
from infra.tracing import context_from_headers
from schemas.message_auth import MessageAuthenticator, Unauthenticated
from schemas.public import PublicRejection, parse_account_command, parse_transfer
from schemas.shard_messages import InvalidMessage, decode_reply
from schemas.topics import Namespace


class RecordDecoder:
    def __init__(self, namespace: Namespace, authenticator: MessageAuthenticator, max_amount: int) -> None:
        self.ns = namespace
        self.authenticator = authenticator
        self.max_amount = max_amount

    def decode(self, r: ConsumerRecord[bytes, bytes], refused_because: str | None = None) -> Inbound:
        """`refused_because`: the database would not store this record (then it is dead-lettered)."""
        origin = Origin(r.topic, r.partition, r.offset, r.key, r.value or b"")
        message: Message = (
            Refused("invalid_field", f"valid, but the database refuses it: {refused_because}")
            if refused_because
            else self._message(origin, r.headers)
        )
        return Inbound(message, origin, context_from_headers(r.headers))

    def _message(self, o: Origin, headers: Sequence[tuple[str, bytes]]) -> Message:
        try:
            if o.topic == self.ns.shard_replies:
                self.authenticator.verify(o.topic, o.key, o.value, headers)
                return decode_reply(o.value)
            if o.topic == self.ns.transfers:
                return parse_transfer(o.value, max_amount=self.max_amount)
            if o.topic == self.ns.account_commands:
                return parse_account_command(o.value)
        except PublicRejection as rejection:
            if rejection.transfer_id or rejection.command_id or rejection.id_as_sent:
                return rejection
            return Refused(rejection.dead_letter_reason, str(rejection))
        except (Unauthenticated, InvalidMessage) as e:
            return Refused(e.reason, str(e))
        return Refused("unknown_message_type", f"no handler for topic {o.topic}")
