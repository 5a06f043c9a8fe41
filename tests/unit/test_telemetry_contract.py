"""The Telemetry contract (schemas/json/telemetry.json) as the monitor reads ledger.telemetry, and
that a local stack's older credentials gain the monitor's principal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.kafka_principals import MONITOR, KafkaCredentials
from monitor.adapters.records import telemetry_samples
from monitor.domain.anomaly import TelemetrySample
from schemas.telemetry import NotTelemetry, Sample, Telemetry, decode_telemetry, encode_telemetry

SAMPLE = {"metric": "step_p99_ms", "value": 12.5, "shard": 3}
GOOD = {"type": "Telemetry", "v": 1, "process": "shard-03", "at_ms": 1_700_000_000_000, "samples": [SAMPLE]}


def test_a_record_becomes_one_sample_per_figure() -> None:
    record = Telemetry("coordinator-1", 7, (Sample("step_p99_ms", 12.5, 3), Sample("consumer_lag", 0.0)))
    assert telemetry_samples(encode_telemetry(record)) == [
        TelemetrySample("coordinator-1", 3, "step_p99_ms", 12.5, 7),
        TelemetrySample("coordinator-1", None, "consumer_lag", 0.0, 7),
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"shard": True},
        {"shard": -1},
        {"shard": 10_000},
        {"value": "12"},
        {"value": None},
        {"metric": "Step P99"},
        {"extra": 1},
        {"value": 10**400},  # JSON allows it; it is no finite figure
    ],
)
def test_what_is_not_a_sample_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(NotTelemetry):
        decode_telemetry(json.dumps({**GOOD, "samples": [{**SAMPLE, **change}]}).encode())


@pytest.mark.parametrize(
    "change",
    [{"at_ms": -1}, {"at_ms": 1.5}, {"process": ""}, {"v": 2}, {"type": "BalanceChanged"}, {"extra": 1}],
)
def test_what_is_not_a_record_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(NotTelemetry):
        decode_telemetry(json.dumps({**GOOD, **change}).encode())


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"a": {"b": {"c": {"d": 1}}}}', b"x" * 40_000])
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
