"""LedgerAlert: the Python side of schemas/json/ledger-alert.json (topic ledger.alerts), and the
one reader of that topic's records, which carry a LiquidityAlert or a LedgerAlert told apart by
their "type".

A LedgerAlert says the monitor's continuous audit found the ledger disagreeing with itself (a
broken hash chain, a reconciliation violation), or that it no longer finds it. Delivery is at
least once, so its id is derived from what it is about and nothing else (kind, shard, check,
subject, fired or cleared): every monitor, and a restarted one, writes the same id for the same
finding, and a consumer drops what it has seen. A finding that comes back after it cleared has the
same ids again: a consumer dedupes within an episode (a fired after a cleared is news), not forever.
Decoded by the strict checks below, held to the JSON Schema by tests/unit/test_ledger_alert.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final

import orjson

from schemas.alerts import MAX_ALERT_BYTES, LiquidityAlert, alert_from_dict
from schemas.ids import url_uuid5
from schemas.liquidity_rules import (
    SEVERITIES,
    UUID,
    InvalidLiquidityMessage,
    check_fields,
    check_version,
    fullmatch,
    read_json_object,
)

VERSION: Final = 1
DIVERGENCE: Final = "divergence"
"""Attributed to one shard, whose breaker the monitor latched open."""
VIOLATION: Final = "violation"
"""Attributed to no single shard (a transfer, a currency): no breaker acts."""
KINDS: Final = (DIVERGENCE, VIOLATION)
STATES: Final = ("fired", "cleared")
HASH_CHAIN: Final = "hash_chain"
"""The check of a broken hash chain; the others are the reconciliation's (Violation.check)."""
CHECK: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_SUBJECT: Final = 200
MAX_DETAIL: Final = 500
MAX_SHARD: Final = 1023
MAX_LEDGER_ALERT_BYTES: Final = 8192
"""The longest valid alert, every character of its subject and detail escaped, is under 5 KiB."""


@dataclass(frozen=True, slots=True)
class LedgerAlert:
    alert_id: str
    kind: str
    """divergence or violation."""
    state: str
    """fired or cleared."""
    severity: str
    shard: int | None
    """The shard of a divergence; None for a violation."""
    check: str
    subject: str
    detail: str
    at_ms: int

    @property
    def identity(self) -> tuple[str, int | None, str, str]:
        """What the alert is about, the same for its fired and its cleared."""
        return (self.kind, self.shard, self.check, self.subject)


Alert = LiquidityAlert | LedgerAlert
"""What ledger.alerts carries."""


def ledger_alert_id(kind: str, shard: int | None, check: str, subject: str, state: str) -> str:
    """uuid5 of what it is about and whether it fired or cleared. Only the subject may hold ':',
    and it is the last part but the state (which holds none): the name is unambiguous."""
    where = "-" if shard is None else str(shard)
    return url_uuid5(f"ledger:audit:{kind}:{where}:{check}:{subject}:{state}")


_FIELDS: Final = tuple(f.name for f in fields(LedgerAlert))


def _text(limit: int, minimum: int = 0) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and minimum <= len(v) <= limit


_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "alert_id": lambda v: fullmatch(UUID, v),
    "kind": lambda v: v in KINDS,
    "state": lambda v: v in STATES,
    "severity": lambda v: v in SEVERITIES,
    "shard": lambda v: v is None or (type(v) is int and 0 <= v <= MAX_SHARD),
    "check": lambda v: fullmatch(CHECK, v),
    "subject": _text(MAX_SUBJECT, 1),
    "detail": _text(MAX_DETAIL),
    "at_ms": lambda v: type(v) is int and 0 <= v <= 2**63 - 1,
}


def encode_ledger_alert(alert: LedgerAlert) -> bytes:
    body = {name: getattr(alert, name) for name in _FIELDS}
    return orjson.dumps({"type": "LedgerAlert", "v": VERSION, **body})


def decode_ledger_alert(raw: bytes) -> LedgerAlert:
    """Bytes -> a LedgerAlert, or InvalidLiquidityMessage (schemas.alerts.ALERT_REASONS)."""
    return ledger_alert_from_dict(read_json_object(raw, MAX_LEDGER_ALERT_BYTES, 1))


def ledger_alert_from_dict(data: dict[str, Any]) -> LedgerAlert:
    if data.get("type") != "LedgerAlert":
        raise InvalidLiquidityMessage("unknown_message_type", f"type {data.get('type')!r:.80}")
    check_fields("LedgerAlert", data, ("type", "v", *_FIELDS), ())
    check_version("LedgerAlert", data)
    for name in _FIELDS:
        if not _CHECKS[name](data[name]):
            raise InvalidLiquidityMessage("invalid_field", f"LedgerAlert.{name} {data[name]!r:.80}")
    if (data["kind"] == DIVERGENCE) == (data["shard"] is None):
        raise InvalidLiquidityMessage(
            "invalid_field", f"LedgerAlert.shard {data['shard']!r} on a {data['kind']}"
        )
    return LedgerAlert(**{name: data[name] for name in _FIELDS})


def decode_any_alert(raw: bytes) -> Alert:
    """A record of ledger.alerts, whichever of the two it carries (by its "type")."""
    data = read_json_object(raw, MAX_LEDGER_ALERT_BYTES, 1)
    if data.get("type") == "LedgerAlert":
        return ledger_alert_from_dict(data)
    if len(raw) > MAX_ALERT_BYTES:  # a LiquidityAlert's own bound
        raise InvalidLiquidityMessage("too_large", f"{len(raw)} bytes, at most {MAX_ALERT_BYTES}")
    return alert_from_dict(data)
