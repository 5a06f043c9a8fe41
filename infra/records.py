"""Where a consumed record came from, and a record refused at the edge: the types both sides'
decoders hand their services (no Kafka client type passes beyond an adapter)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.dead_letters import DeadLetter


@dataclass(frozen=True)
class Origin:
    """Where a message came from: its place in Kafka, and its bytes (a dead letter quotes them; a
    rejected transfer's fingerprint is their hash)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    """The record's bytes (for a message inside an envelope, the whole envelope's)."""
    index: int | None = None
    """Its place in the record's envelope (schemas/envelopes.py); None for a record of one message."""

    @property
    def dead_letter_id(self) -> str:
        """The inbox id of this message's dead letter: one per message, however often it comes."""
        place = f"dlq:{self.topic}:{self.partition}:{self.offset}"
        return place if self.index is None else f"{place}:{self.index}"

    def dead_letter(self, reason: str, detail: str) -> DeadLetter:
        """The dead letter of this message, refused for `reason`: its id is `dead_letter_id`."""
        return DeadLetter.of(
            self.topic, self.partition, self.offset, reason, detail, self.value, self.key, self.index
        )


@dataclass(frozen=True)
class Refused:
    """A record no result can answer (no readable id): it is dead-lettered with this reason."""

    reason: str
    detail: str
