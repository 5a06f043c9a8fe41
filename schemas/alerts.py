"""LiquidityAlert: the Python side of schemas/json/liquidity-alert.json (topic ledger.alerts).

An alert says a liquidity rule became crossed for a subject (one account in one currency), or
cleared. Delivery is at least once, so each alert carries an id derived from what it is about (the
rule, the subject, the journal seq at which the episode began, fired or cleared): a monitor that
replays the same balance observations, after a restart say, writes the same id, and a consumer
drops what it has seen. Decoded by the strict checks below, held to the JSON Schema by
tests/unit/test_liquidity_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

from schemas.currencies import CURRENCIES
from schemas.ids import url_uuid5
from schemas.liquidity_rules import (
    ACCOUNT_ID,
    KINDS,
    RULE_ID,
    SEVERITIES,
    UUID,
    InvalidLiquidityMessage,
    check_fields,
    check_version,
    fullmatch,
    read_json_object,
)

VERSION: Final = 1
MAX_ALERT_BYTES: Final = 4096
"""The longest valid alert, every character of its ids escaped, is under 2 KiB."""
INT64: Final = (-(2**63), 2**63 - 1)
STATES: Final = ("fired", "cleared")
CLEAR_REASONS: Final = ("rule_removed", "rule_changed")
"""Why an alert cleared other than the balance coming back: its rule was removed, or changed so
that it no longer judges the subject (another kind, currency or scope)."""
ALERT_REASONS: Final = frozenset({
    "too_large", "not_utf8", "not_json", "nesting_too_deep", "not_an_object",
    "unknown_message_type", "unsupported_version", "missing_field", "unknown_field", "invalid_field",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class LiquidityAlert:
    alert_id: str
    rule_id: str
    state: str
    """fired or cleared."""
    severity: str
    account_id: str
    currency: str
    kind: str
    observed: int
    """What the rule compares, in minor units: available (available_below), the net outflow over
    the window (net_outflow_above), pending_debits (pending_above_share)."""
    threshold: int
    """What it is compared to, in minor units: the floor, the limit, or share_bp/10000 of posted
    rounded down (so `observed > threshold` exactly when the share is exceeded)."""
    journal_seq: int
    """The seq of the balance observation that decided this alert (for a rule removed, the last seen).
    0 is one: a shard whose journal is still empty publishes the accounts it opens at seq 0."""
    at_ms: int
    reason: str | None = None
    """Only on a cleared alert the balance did not clear: rule_removed or rule_changed."""


def liquidity_alert_id(rule_id: str, account_id: str, currency: str, episode_seq: int, state: str) -> str:
    """uuid5 of the episode (the seq at which the rule became crossed) and whether it fired or cleared.
    Neither rule ids nor account ids hold ':', so the name is unambiguous."""
    return url_uuid5(f"ledger:liquidity:{rule_id}:{account_id}:{currency}:{episode_seq}:{state}")


_FIELDS: Final = tuple(f.name for f in fields(LiquidityAlert))


def _int64(value: object) -> bool:
    return type(value) is int and INT64[0] <= value <= INT64[1]


_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "alert_id": lambda v: fullmatch(UUID, v),
    "rule_id": lambda v: fullmatch(RULE_ID, v),
    "state": lambda v: v in STATES,
    "severity": lambda v: v in SEVERITIES,
    "account_id": lambda v: fullmatch(ACCOUNT_ID, v),
    "currency": lambda v: isinstance(v, str) and v in CURRENCIES,
    "kind": lambda v: v in KINDS,
    "observed": _int64,
    "threshold": _int64,
    "journal_seq": lambda v: _int64(v) and v >= 0,  # as balance-changed.json, whose seq it carries
    "at_ms": lambda v: _int64(v) and v >= 0,
    "reason": lambda v: v in CLEAR_REASONS,
}


def encode_alert(alert: LiquidityAlert) -> bytes:
    """Every field; reason only when set."""
    body = {name: getattr(alert, name) for name in _FIELDS}
    if alert.reason is None:
        del body["reason"]
    return orjson.dumps({"type": "LiquidityAlert", "v": VERSION, **body})


def decode_alert(raw: bytes) -> LiquidityAlert:
    """Bytes from ledger.alerts -> a LiquidityAlert, or InvalidLiquidityMessage (ALERT_REASONS)."""
    return alert_from_dict(read_json_object(raw, MAX_ALERT_BYTES, 1))


def alert_from_dict(data: dict[str, Any]) -> LiquidityAlert:
    if data.get("type") != "LiquidityAlert":
        raise InvalidLiquidityMessage("unknown_message_type", f"type {data.get('type')!r:.80}")
    check_fields("LiquidityAlert", data, ("type", "v", *_FIELDS[:-1]), ("reason",))
    check_version("LiquidityAlert", data)
    for name in _FIELDS:
        if name in data and not _CHECKS[name](data[name]):
            raise InvalidLiquidityMessage("invalid_field", f"LiquidityAlert.{name} {data[name]!r:.80}")
    if data.get("reason") is not None and data["state"] != "cleared":
        raise InvalidLiquidityMessage("invalid_field", "LiquidityAlert.reason on a fired alert")
    return LiquidityAlert(**{name: data[name] for name in _FIELDS if name in data})
