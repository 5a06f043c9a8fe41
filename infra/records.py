"""Where a consumed record came from, and a record refused at the edge: the types both sides'
decoders hand their services (no Kafka client type passes beyond an adapter)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """Where a message came from: its place in Kafka, and its bytes (a dead letter quotes them; a
    rejected transfer's fingerprint is their hash)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def dead_letter_id(self) -> str:
        """The inbox id of this record's dead letter: one per record, however often it comes."""
        return f"dlq:{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class Refused:
    """A record no result can answer (no readable id): it is dead-lettered with this reason."""

    reason: str
    detail: str
