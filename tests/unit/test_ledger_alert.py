"""The LedgerAlert contract: schemas/ledger_alert.py says what schemas/json/ledger-alert.json says,
and ledger.alerts' reader tells the two kinds of alert apart by their type."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas.alerts import LiquidityAlert, encode_alert, liquidity_alert_id
from schemas.currencies import JSON_DIR
from schemas.ledger_alert import (
    LedgerAlert,
    decode_any_alert,
    decode_ledger_alert,
    encode_ledger_alert,
    ledger_alert_id,
)
from schemas.liquidity_rules import InvalidLiquidityMessage

SCHEMA = Draft202012Validator(json.loads((JSON_DIR / "ledger-alert.json").read_text()))
ALERT = LedgerAlert(
    ledger_alert_id("divergence", 1, "hash_chain", "seq 20", "fired"), "divergence", "fired", "critical", 1,
    "hash_chain", "seq 20", "hash chain broken at seq 20: the entry's content does not match its hash", 1_000,
)  # fmt: skip
GOOD = orjson.loads(encode_ledger_alert(ALERT))


def test_an_alert_round_trips_and_its_schema_accepts_it() -> None:
    assert decode_ledger_alert(encode_ledger_alert(ALERT)) == ALERT
    assert decode_any_alert(encode_ledger_alert(ALERT)) == ALERT
    assert SCHEMA.is_valid(GOOD)


def test_the_reader_of_the_topic_tells_liquidity_alerts_apart() -> None:
    liquidity = LiquidityAlert(
        liquidity_alert_id("floor", "acct", "EUR", 2, "fired"), "floor", "fired", "warning", "acct", "EUR",
        "available_below", 50, 100, 2, 2_000,
    )  # fmt: skip
    assert decode_any_alert(encode_alert(liquidity)) == liquidity
    opened = LiquidityAlert(  # an account a shard opened before its first journal entry: seq 0
        liquidity_alert_id("floor", "acct", "EUR", 0, "fired"), "floor", "fired", "warning", "acct", "EUR",
        "available_below", 0, 100, 0, 2_000,
    )  # fmt: skip
    assert decode_any_alert(encode_alert(opened)) == opened


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "divergence", "shard": None},  # a divergence names its shard
        {"kind": "violation"},  # a violation names none
        {"kind": "drift"},
        {"state": "open"},
        {"severity": "info"},
        {"shard": -1},
        {"shard": 1024},
        {"shard": True},
        {"check": "Hash-Chain"},
        {"subject": ""},
        {"subject": "x" * 201},
        {"detail": "x" * 501},
        {"at_ms": -1},
        {"at_ms": 1.5},
        {"alert_id": "not-a-uuid"},
        {"v": 2},
        {"extra": 1},
        {"detail": ...},
    ],
)
def test_the_decoder_and_the_schema_refuse_the_same_documents(changes: dict[str, Any]) -> None:
    document = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}
    assert not SCHEMA.is_valid(document)
    with pytest.raises(InvalidLiquidityMessage):
        decode_ledger_alert(orjson.dumps(document))


def test_a_violation_without_a_shard_is_valid_to_both() -> None:
    document = {**GOOD, "kind": "violation", "shard": None, "check": "saga_legs", "subject": "t-1"}
    assert SCHEMA.is_valid(document)
    assert decode_ledger_alert(orjson.dumps(document)).shard is None
