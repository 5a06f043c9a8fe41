"""Process telemetry: the Python side of schemas/json/telemetry.json.

Every process sends one Telemetry record a second onto `ledger.telemetry` (infra/telemetry.py); the
monitor's anomaly detection reads them (monitor/domain/anomaly.py). Figures, never money.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import orjson

from schemas.errors import LedgerError
from schemas.json_contract import JsonContract

VERSION: Final = 1
MAX_BYTES: Final = 32 * 1024
"""256 samples of the longest metric names and numbers fit in 30 KiB."""
MAX_SAMPLES: Final = 256

REPLY_P99_MS: Final = "reply_p99_ms"
LOOP_LAG_MS: Final = "loop_lag_ms"
"""A shard worker's: the longest its event loop ran late in the last second (infra/loop_lag.py)."""
"""A coordinator's sample per shard: p99 of the time from a saga step decided to its reply read."""


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str
    value: float
    shard: int | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    process: str
    at_ms: int
    samples: tuple[Sample, ...]


class NotTelemetry(LedgerError):
    """A record on the telemetry topic that is not a valid Telemetry (never worth retrying)."""

    retriable = False


def encode_telemetry(t: Telemetry) -> bytes:
    samples = [
        {"metric": s.metric, "value": s.value, **({} if s.shard is None else {"shard": s.shard})}
        for s in t.samples
    ]
    return orjson.dumps(
        {"type": "Telemetry", "v": VERSION, "process": t.process, "at_ms": t.at_ms, "samples": samples}
    )


def decode_telemetry(payload: bytes) -> Telemetry:
    """A Telemetry, or NotTelemetry saying why not: size, nesting, JSON, then the schema."""
    document = CONTRACT.read(payload, NotTelemetry)
    samples = tuple(Sample(s["metric"], float(s["value"]), s.get("shard")) for s in document["samples"])
    if not all(math.isfinite(s.value) for s in samples):
        raise NotTelemetry("a value that is not a finite number")
    return Telemetry(document["process"], document["at_ms"], samples)


CONTRACT: Final = JsonContract("telemetry.json", MAX_BYTES, max_depth=3)
