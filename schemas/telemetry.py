"""Telemetry: the Python side of schemas/json/telemetry-sample.json (topic ledger.telemetry).

Every process publishes its figures once a second; the monitor maps each record to the anomaly
detector's TelemetrySample (monitor/domain/anomaly.py), as it maps BalanceChanged to
BalanceObserved. Decoded against the JSON Schema file itself: a few records a second per process.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator

from schemas.currencies import JSON_DIR
from schemas.errors import LedgerError
from schemas.json_bounds import too_deep

VERSION: Final = 1
TYPE: Final = "TelemetrySample"
MAX_BYTES: Final = 512
"""The longest valid record (64-character process and metric names, a 20-digit time) is under 300 bytes."""


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    process: str
    shard: int | None
    metric: str
    value: float
    at_ms: int


class NotTelemetry(LedgerError):
    """A record on the telemetry topic that is not a valid TelemetrySample (never worth retrying)."""

    retriable = False


def encode_telemetry(record: TelemetryRecord) -> bytes:
    return orjson.dumps({"type": TYPE, "v": VERSION, **asdict(record)})


def decode_telemetry(payload: bytes) -> TelemetryRecord:
    """A TelemetryRecord, or NotTelemetry saying why not: size, JSON, then the schema."""
    if len(payload) > MAX_BYTES:
        raise NotTelemetry(f"{len(payload)} bytes, more than {MAX_BYTES}")
    if too_deep(payload, 1):
        raise NotTelemetry("nested: a sample is one flat object")
    try:
        document: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise NotTelemetry(f"not JSON: {e}") from None
    error = next(iter(_VALIDATOR.iter_errors(document)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the record"
        raise NotTelemetry(f"{where}: {error.message[:200]}")
    value = float(document["value"])
    if not math.isfinite(value):  # orjson reads no NaN, but a huge integer overflows to inf
        raise NotTelemetry(f"value: {document['value']!r:.40} is not a finite number")
    d = document
    return TelemetryRecord(d["process"], d["shard"], d["metric"], value, d["at_ms"])


_VALIDATOR: Final = Draft202012Validator(json.loads((JSON_DIR / "telemetry-sample.json").read_text()))
