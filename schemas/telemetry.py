"""Process telemetry: the Python side of schemas/json/telemetry.json.

Every process sends one Telemetry record a second onto `ledger.telemetry` (infra/telemetry.py); the
monitor's anomaly detection reads them (monitor/domain/anomaly.py). Figures, never money.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator

from schemas.currencies import JSON_DIR
from schemas.errors import LedgerError
from schemas.json_bounds import too_deep

VERSION: Final = 1
MAX_BYTES: Final = 32 * 1024
"""256 samples of the longest metric names and numbers fit in 30 KiB."""
MAX_SAMPLES: Final = 256


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
    if len(payload) > MAX_BYTES:
        raise NotTelemetry(f"{len(payload)} bytes, more than {MAX_BYTES}")
    if too_deep(payload, 3):
        raise NotTelemetry("nested deeper than telemetry is")
    try:
        document: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise NotTelemetry(f"not JSON: {e}") from None
    error = next(iter(_VALIDATOR.iter_errors(document)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the record"
        raise NotTelemetry(f"{where}: {error.message[:200]}")
    samples = tuple(Sample(s["metric"], float(s["value"]), s.get("shard")) for s in document["samples"])
    if not all(math.isfinite(s.value) for s in samples):
        raise NotTelemetry("a value that is not a finite number")
    return Telemetry(document["process"], document["at_ms"], samples)


_VALIDATOR: Final = Draft202012Validator(json.loads((JSON_DIR / "telemetry.json").read_text()))
