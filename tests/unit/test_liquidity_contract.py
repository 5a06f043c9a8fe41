"""The liquidity contracts: schemas/alerts.py and schemas/liquidity_rules.py say what
schemas/json/liquidity-alert.json and liquidity-rules.json say, and refuse each bad document whole
with one precise reason."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from schemas.alerts import (
    ALERT_REASONS,
    LiquidityAlert,
    alert_from_dict,
    decode_alert,
    encode_alert,
    liquidity_alert_id,
)
from schemas.currencies import JSON_DIR
from schemas.errors import LedgerError
from schemas.liquidity_rules import (
    MAX_RULES,
    RULES_REASONS,
    InvalidLiquidityMessage,
    LiquidityRule,
    SetLiquidityRules,
    decode_rules_file,
    decode_set_rules,
    encode_rules_file,
    encode_set_rules,
)


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(_load(name)))
    for name in ("liquidity-alert.json", "liquidity-rules.json", "currency.json")
)
ALERTS = Draft202012Validator(_load("liquidity-alert.json"), registry=REGISTRY)
RULES = Draft202012Validator(_load("liquidity-rules.json"), registry=REGISTRY)
CMD = "0b9f4c1e-8a7d-4c3b-9e2f-1a2b3c4d5e6f"

FLOOR = {"rule_id": "eur-floor", "kind": "available_below", "severity": "critical", "currency": "EUR",
         "account_id": "settlement.eur", "floor": 100_000}  # fmt: skip
OUTFLOW = {"rule_id": "outflow-1", "kind": "net_outflow_above", "severity": "warning", "currency": "EUR",
           "account_prefix": "settlement.", "limit": 5_000_000, "window_s": 3600,
           "clear_margin": 1000}  # fmt: skip
SHARE = {"rule_id": "pending.share", "kind": "pending_above_share", "severity": "warning", "currency": "JPY",
         "share_bp": 2500}  # fmt: skip


def rules_file(*rules: object, **changes: Any) -> dict[str, Any]:
    return {"v": 1, "rules": list(rules), **changes}


def command(*rules: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"type": "SetLiquidityRules", "v": 1, "command_id": CMD, "rules": list(rules), **changes}


def rule(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**base, **changes}.items() if v is not ...}


def refusal(decode: Any, payload: object) -> str | None:
    try:
        decode(payload if isinstance(payload, bytes) else orjson.dumps(payload))
    except InvalidLiquidityMessage as e:
        reason = e.reason
    else:
        return None
    assert reason in RULES_REASONS | ALERT_REASONS
    return reason


# --- rules ---------------------------------------------------------------------------------------------

VALID_RULE_FILES = [
    rules_file(),
    rules_file(FLOOR),
    rules_file(FLOOR, OUTFLOW, SHARE),
    rules_file(rule(FLOOR, floor=0)),
    rules_file(rule(OUTFLOW, window_s=86400, limit=2**63 - 1)),
    rules_file(rule(SHARE, share_bp=10000, clear_margin=9999)),
]


@pytest.mark.parametrize("payload", VALID_RULE_FILES)
def test_a_valid_rules_file_is_read_and_written_back(payload: dict[str, Any]) -> None:
    assert RULES.is_valid(payload)
    rules = decode_rules_file(orjson.dumps(payload))
    assert orjson.loads(encode_rules_file(rules)) == payload
    assert decode_rules_file(encode_rules_file(rules)) == rules


def test_the_rule_says_its_scope() -> None:
    rules = decode_rules_file(orjson.dumps(rules_file(FLOOR, OUTFLOW, SHARE)))
    assert [r.scope for r in rules] == ["account", "prefix", "currency"]
    floor, outflow, share = rules
    assert floor.matches("settlement.eur", "EUR")
    assert not floor.matches("settlement.eur2", "EUR")
    assert outflow.matches("settlement.x", "EUR")
    assert not outflow.matches("settlement.x", "USD")
    assert not outflow.matches("retail.settlement.x", "EUR")
    assert share.matches("anyone", "JPY")
    assert not share.matches("anyone", "EUR")


def test_a_set_rules_command_round_trips() -> None:
    payload = command(FLOOR, SHARE)
    assert RULES.is_valid(payload)
    decoded = decode_set_rules(orjson.dumps(payload))
    assert decoded == SetLiquidityRules(CMD, decoded.rules)
    assert len(decoded.rules) == 2
    assert orjson.loads(encode_set_rules(decoded)) == payload


# (name, payload, reason): each refused whole by the decoder and by the JSON Schema.
BAD_RULES: list[tuple[str, Any, str]] = [
    ("not an object", [FLOOR], "not_an_object"),
    ("no version", {"rules": [FLOOR]}, "missing_field"),
    ("version 2", rules_file(FLOOR, v=2), "unsupported_version"),
    ("unknown top-level field", rules_file(FLOOR, note="x"), "unknown_field"),
    ("rules not a list", rules_file(rules=FLOOR), "invalid_rules"),
    ("a rule not an object", rules_file(FLOOR, "eur-floor"), "invalid_rules"),
    ("no rule id", rules_file(rule(FLOOR, rule_id=...)), "missing_field"),
    ("rule id with a colon", rules_file(rule(FLOOR, rule_id="a:b")), "invalid_rule_id"),
    ("rule id too long", rules_file(rule(FLOOR, rule_id="r" * 65)), "invalid_rule_id"),
    ("rule id a number", rules_file(rule(FLOOR, rule_id=7)), "invalid_rule_id"),
    ("unknown kind", rules_file(rule(FLOOR, kind="balance_below")), "unknown_kind"),
    ("no kind", rules_file(rule(FLOOR, kind=...)), "missing_field"),
    ("no severity", rules_file(rule(FLOOR, severity=...)), "missing_field"),
    ("severity info", rules_file(rule(FLOOR, severity="info")), "invalid_severity"),
    ("no currency", rules_file(rule(FLOOR, currency=...)), "missing_field"),
    ("unknown currency", rules_file(rule(FLOOR, currency="XXX")), "unknown_currency"),
    ("lower-case currency", rules_file(rule(FLOOR, currency="eur")), "unknown_currency"),
    ("account and prefix", rules_file(rule(FLOOR, account_prefix="settle")), "invalid_scope"),
    ("bad account id", rules_file(rule(FLOOR, account_id="-alice")), "invalid_account_id"),
    ("empty prefix", rules_file(rule(OUTFLOW, account_prefix="")), "invalid_account_prefix"),
    ("floor missing", rules_file(rule(FLOOR, floor=...)), "missing_field"),
    ("floor negative", rules_file(rule(FLOOR, floor=-1)), "invalid_floor"),
    ("floor above BIGINT", rules_file(rule(FLOOR, floor=2**63)), "invalid_floor"),
    ("floor a string", rules_file(rule(FLOOR, floor="100")), "invalid_floor"),
    ("limit zero", rules_file(rule(OUTFLOW, limit=0)), "invalid_limit"),
    ("window zero", rules_file(rule(OUTFLOW, window_s=0)), "invalid_window"),
    ("window a day and a second", rules_file(rule(OUTFLOW, window_s=86401)), "invalid_window"),
    ("no window", rules_file(rule(OUTFLOW, window_s=...)), "missing_field"),
    ("share zero", rules_file(rule(SHARE, share_bp=0)), "invalid_share"),
    ("share above 100%", rules_file(rule(SHARE, share_bp=10001)), "invalid_share"),
    ("another kind's field", rules_file(rule(FLOOR, share_bp=100)), "unknown_field"),
    ("unknown rule field", rules_file(rule(FLOOR, enabled=True)), "unknown_field"),
    ("negative margin", rules_file(rule(FLOOR, clear_margin=-1)), "invalid_clear_margin"),
    ("too many rules", rules_file(*[rule(FLOOR, rule_id=f"r{i}") for i in range(MAX_RULES + 1)]),
     "too_many_rules"),
]  # fmt: skip
# What JSON Schema cannot say: the decoder is stricter on these, on purpose.
STRICTER: list[tuple[str, Any, str]] = [
    ("duplicate rule id", rules_file(FLOOR, rule(SHARE, rule_id="eur-floor")), "duplicate_rule_id"),
    ("floor written as a float", rules_file(rule(FLOOR, floor=100000.0)), "invalid_floor"),
    ("rule id with a final newline", rules_file(rule(FLOOR, rule_id="a\n")), "invalid_rule_id"),
    # margins that would put the clearing point past zero: bounded by the limit itself
    ("outflow margin at the limit", rules_file(rule(OUTFLOW, limit=10, clear_margin=10)),
     "invalid_clear_margin"),
    ("share margin at the share", rules_file(rule(SHARE, share_bp=100, clear_margin=100)),
     "invalid_clear_margin"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "reason"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
def test_a_bad_rules_file_is_refused_with_its_reason(payload: object, reason: str) -> None:
    assert not RULES.is_valid(payload)
    assert refusal(decode_rules_file, payload) == reason


@pytest.mark.parametrize(("payload", "reason"), [c[1:] for c in STRICTER], ids=[c[0] for c in STRICTER])
def test_the_decoder_is_stricter_where_json_schema_cannot_say_it(payload: object, reason: str) -> None:
    assert refusal(decode_rules_file, payload) == reason
    assert RULES.is_valid(payload)  # if this fails, the schema caught up: move the case to BAD_RULES


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff{}", "not_utf8"),
        (b'{"v": 1, "rules": [', "not_json"),
        (b'{"v": 1, "rules": [{"a": [1]}]}', "nesting_too_deep"),
        (b'{"v": 1, "rules": []}' + b" " * (512 * 1024), "too_large"),
    ],
)
def test_unreadable_rules_bytes_are_refused(raw: bytes, reason: str) -> None:
    assert refusal(decode_rules_file, raw) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (command(FLOOR, type="SetRules"), "unknown_message_type"),
        (command(FLOOR, command_id="not-a-uuid"), "invalid_command_id"),
        (command(FLOOR, command_id=CMD.upper()), "invalid_command_id"),
        ({k: v for k, v in command(FLOOR).items() if k != "command_id"}, "missing_field"),
        (command(FLOOR, v=True), "unsupported_version"),
        (command(FLOOR, extra=1), "unknown_field"),
        (command(FLOOR, rule(SHARE, currency="ZZZ")), "unknown_currency"),
    ],
)
def test_a_bad_set_rules_command_is_refused_whole(payload: dict[str, Any], reason: str) -> None:
    assert refusal(decode_set_rules, payload) == reason
    assert not RULES.is_valid(payload)


def test_a_refusal_is_a_non_retriable_ledger_error() -> None:
    with pytest.raises(InvalidLiquidityMessage) as caught:
        decode_rules_file(orjson.dumps(rules_file(rule(FLOOR, floor=-5))))
    assert isinstance(caught.value, LedgerError)
    assert caught.value.retriable is False
    assert "rules[0] (eur-floor).floor" in caught.value.detail


def test_the_schema_lists_exactly_the_decoder_reasons_for_kinds() -> None:
    defs = _load("liquidity-rules.json")["$defs"]
    kinds = {defs[name]["properties"]["kind"]["const"] for name in ("AvailableBelow", "NetOutflowAbove",
                                                                     "PendingAboveShare")}  # fmt: skip
    assert kinds == {"available_below", "net_outflow_above", "pending_above_share"}
    assert set(defs["AvailableBelow"]["properties"]) - {"kind", "floor"} == {
        name for name in LiquidityRule.__dataclass_fields__ if name not in {"kind", "floor", "limit",
                                                                              "window_s", "share_bp"}
    }  # fmt: skip


# --- alerts --------------------------------------------------------------------------------------------


def alert(**changes: Any) -> LiquidityAlert:
    fields: dict[str, Any] = {
        "alert_id": liquidity_alert_id("eur-floor", "settlement.eur", "EUR", 42, "fired"),
        "rule_id": "eur-floor", "state": "fired", "severity": "critical", "account_id": "settlement.eur",
        "currency": "EUR", "kind": "available_below", "observed": -5, "threshold": 100_000,
        "journal_seq": 42, "at_ms": 1_700_000_000_000,
    }  # fmt: skip
    return LiquidityAlert(**{**fields, **changes})


@pytest.mark.parametrize(
    "value",
    [
        alert(),
        alert(state="cleared", reason="rule_removed"),
        alert(observed=-(2**63), threshold=2**63 - 1),
        alert(journal_seq=0, observed=0),  # an account a shard opened before its first journal entry
    ],
)
def test_an_alert_round_trips_and_satisfies_the_schema(value: LiquidityAlert) -> None:
    raw = encode_alert(value)
    assert ALERTS.is_valid(orjson.loads(raw)), ALERTS.iter_errors(orjson.loads(raw))
    assert decode_alert(raw) == value
    assert ("reason" in orjson.loads(raw)) is (value.reason is not None)


def valid_alert() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(encode_alert(alert()))
    return data


BAD_ALERTS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong type", {**valid_alert(), "type": "Alert"}, "unknown_message_type"),
    ("version 2", {**valid_alert(), "v": 2}, "unsupported_version"),
    ("unknown field", {**valid_alert(), "extra": 1}, "unknown_field"),
    *[(f"without {name}", {k: v for k, v in valid_alert().items() if k != name}, "missing_field")
      for name in valid_alert() if name not in {"type"}],
    ("state open", {**valid_alert(), "state": "open"}, "invalid_field"),
    ("observed a float", {**valid_alert(), "observed": 1.5}, "invalid_field"),
    ("observed above int64", {**valid_alert(), "observed": 2**63}, "invalid_field"),
    ("journal seq negative", {**valid_alert(), "journal_seq": -1}, "invalid_field"),
    ("journal seq above int64", {**valid_alert(), "journal_seq": 2**63}, "invalid_field"),
    ("at_ms negative", {**valid_alert(), "at_ms": -1}, "invalid_field"),
    ("unknown currency", {**valid_alert(), "currency": "EURO"}, "invalid_field"),
    ("unknown kind", {**valid_alert(), "kind": "balance_below"}, "invalid_field"),
    ("unknown reason", {**valid_alert(), "state": "cleared", "reason": "because"}, "invalid_field"),
    ("reason on a fired alert", {**valid_alert(), "reason": "rule_removed"}, "invalid_field"),
    ("alert id upper-case", {**valid_alert(), "alert_id": valid_alert()["alert_id"].upper()},
     "invalid_field"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "reason"), [c[1:] for c in BAD_ALERTS], ids=[c[0] for c in BAD_ALERTS])
def test_a_bad_alert_is_refused_by_decoder_and_schema(payload: dict[str, Any], reason: str) -> None:
    assert not ALERTS.is_valid(payload)
    assert refusal(decode_alert, payload) == reason
    with pytest.raises(InvalidLiquidityMessage):
        alert_from_dict(payload)


BALANCE = _load("balance-changed.json")["properties"]
CARRIED = [("journal_seq", "journal_seq"), ("observed", "available"), ("observed", "pending_debits")]
"""(alert field, the balance-changed.json field whose value it carries): an available_below alert
observes available, a pending_above_share one pending_debits, every alert the balance's seq."""


@pytest.mark.parametrize(("field", "source"), CARRIED)
def test_an_alert_takes_every_value_a_balance_may_carry_into_it(field: str, source: str) -> None:
    """The alert is read back by every monitor and `ledger doctor`: what a valid BalanceChanged
    puts into it must be a valid alert, to the schema and to the decoder alike."""
    low, high = BALANCE[source]["minimum"], BALANCE[source]["maximum"]
    for value in (low, high):
        payload = {**valid_alert(), field: value}
        assert ALERTS.is_valid(payload), f"{field} {value}: {source} of a balance"
        assert refusal(decode_alert, payload) is None, f"{field} {value}: {source} of a balance"


def test_an_alert_journal_seq_has_the_bounds_of_the_balance_seq_it_carries() -> None:
    seq, balance_seq = _load("liquidity-alert.json")["properties"]["journal_seq"], BALANCE["journal_seq"]
    assert (seq["minimum"], seq["maximum"]) == (balance_seq["minimum"], balance_seq["maximum"])
    below = {**valid_alert(), "journal_seq": balance_seq["minimum"] - 1}
    assert refusal(decode_alert, below) == "invalid_field"


def test_an_alert_too_large_or_nested_is_refused() -> None:
    assert refusal(decode_alert, orjson.dumps(valid_alert()) + b" " * 4096) == "too_large"
    assert refusal(decode_alert, orjson.dumps({**valid_alert(), "observed": [1]})) == "nesting_too_deep"


def test_alert_ids_name_the_episode_and_the_state() -> None:
    fired = liquidity_alert_id("r", "a", "EUR", 7, "fired")
    assert fired == liquidity_alert_id("r", "a", "EUR", 7, "fired")
    others = {
        liquidity_alert_id(*args)
        for args in [("r", "a", "EUR", 7, "cleared"), ("r", "a", "EUR", 8, "fired"),
                     ("r", "a", "USD", 7, "fired"), ("r2", "a", "EUR", 7, "fired"),
                     ("r", "b", "EUR", 7, "fired")]
    }  # fmt: skip
    assert fired not in others
    assert len(others) == 5
