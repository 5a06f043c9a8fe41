"""The dead-letter record: the Python side of schemas/json/dead-letter.json."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass

import orjson


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source_topic: str
    partition: int
    offset: int
    error: str
    raw_base64: str
    key_base64: str | None

    @classmethod
    def of(
        cls, topic: str, partition: int, offset: int, error: str, raw: bytes, key: bytes | None
    ) -> DeadLetter:
        return cls(
            topic, partition, offset, error[:1000], base64.b64encode(raw).decode(),
            base64.b64encode(key).decode() if key is not None else None,
        )  # fmt: skip

    @property
    def inbox_id(self) -> str:
        """Where it came from identifies it: a redelivery is dead-lettered once, not twice."""
        return f"dlq:{self.source_topic}:{self.partition}:{self.offset}"

    def encode(self) -> bytes:
        return orjson.dumps({"type": "DeadLetter", "v": 1, **asdict(self)})
