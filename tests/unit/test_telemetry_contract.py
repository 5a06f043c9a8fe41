"""The TelemetrySample contract (schemas/json/telemetry-sample.json): what the monitor accepts on
ledger.telemetry, and that a local stack's older credentials gain the monitor's principal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.kafka_principals import MONITOR, KafkaCredentials
from schemas.telemetry import NotTelemetry, TelemetryRecord, decode_telemetry, encode_telemetry

GOOD = {"type": "TelemetrySample", "v": 1, "process": "shard-worker-3", "shard": 3, "metric": "step_p99_ms",
        "value": 12.5, "at_ms": 1_700_000_000_000}  # fmt: skip


@pytest.mark.parametrize(
    "record",
    [
        TelemetryRecord("shard-worker-3", 3, "step_p99_ms", 12.5, 1),
        TelemetryRecord("coordinator-1", None, "consumer_lag", 0.0, 0),
    ],
)
def test_a_sample_round_trips(record: TelemetryRecord) -> None:
    assert decode_telemetry(encode_telemetry(record)) == record


@pytest.mark.parametrize(
    "change",
    [
        {"shard": True},
        {"shard": -1},
        {"shard": 1024},
        {"value": "12"},
        {"value": None},
        {"at_ms": -1},
        {"at_ms": 1.5},
        {"process": ""},
        {"metric": "Step P99"},
        {"v": 2},
        {"type": "BalanceChanged"},
        {"extra": 1},
        {"value": 10**400},  # JSON allows it; it is no finite figure
    ],
)
def test_what_is_not_a_sample_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(NotTelemetry):
        decode_telemetry(json.dumps({**GOOD, **change}).encode())


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"a": {"b": 1}}', b"x" * 600])
def test_junk_is_refused(raw: bytes) -> None:
    with pytest.raises(NotTelemetry):
        decode_telemetry(raw)


def test_older_local_credentials_gain_the_monitor_and_keep_the_others(tmp_path: Path) -> None:
    path = tmp_path / "kafka-credentials.json"
    older = KafkaCredentials.generate(2)
    KafkaCredentials({k: v for k, v in older.passwords.items() if k != MONITOR}).save(path)
    completed = KafkaCredentials.load_or_generate(path, 2)
    assert MONITOR in completed.passwords
    assert {k: v for k, v in completed.passwords.items() if k != MONITOR} == {
        k: v for k, v in older.passwords.items() if k != MONITOR
    }
    assert KafkaCredentials.load(path).passwords == completed.passwords, "saved for the next start"
