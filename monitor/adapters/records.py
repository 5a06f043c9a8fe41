"""Kafka record values -> the monitor's typed inputs, at the edge: a handler never sees bytes.

Each function raises a LedgerError that is not retriable when the record is not what its topic
carries; the caller counts it and goes on (the monitor writes no dead letters: it only watches).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from monitor.domain.anomaly import TelemetrySample
from monitor.domain.liquidity import BalanceObserved
from schemas.balances import decode_balance
from schemas.breaker import SetBreaker, decode_set_breaker
from schemas.errors import LedgerError
from schemas.json_bounds import too_deep
from schemas.liquidity_rules import InvalidLiquidityMessage, SetLiquidityRules, decode_set_rules
from schemas.telemetry import decode_telemetry

MonitorCommand = SetLiquidityRules | SetBreaker
MAX_RESULT_BYTES: Final = 64 * 1024
"""A batch's result lists up to 100 legs; the monitor only counts it."""


class NotAResult(LedgerError):
    retriable = False


def balance_observed(raw: bytes, at_ms: int) -> BalanceObserved:
    """A BalanceChanged, stamped `at_ms` (its record's timestamp: the message carries no time)."""
    b = decode_balance(raw)
    return BalanceObserved(
        b.account_id, b.currency, b.posted, b.pending_debits, b.pending_credits, b.available,
        b.journal_seq, b.shard, at_ms,
    )  # fmt: skip


def telemetry_samples(raw: bytes) -> list[TelemetrySample]:
    """One process's second of figures (schemas/telemetry.py), a TelemetrySample each."""
    t = decode_telemetry(raw)
    return [TelemetrySample(t.process, s.shard, s.metric, s.value, t.at_ms) for s in t.samples]


def monitor_command(raw: bytes) -> MonitorCommand:
    """A SetLiquidityRules or a SetBreaker (InvalidLiquidityMessage or InvalidMessage otherwise)."""
    try:
        return decode_set_rules(raw)
    except InvalidLiquidityMessage as e:
        if e.reason != "unknown_message_type":
            raise
    return decode_set_breaker(raw)


def result_summary(raw: bytes) -> tuple[str, str | None]:
    """(state, reason) of a TransferResult, (outcome, reason) of an AccountResult."""
    if len(raw) > MAX_RESULT_BYTES or too_deep(raw, 4):
        raise NotAResult(f"a result of {len(raw)} bytes, or nested too deep")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise NotAResult(f"not JSON: {e}") from None
    state = data.get("state", data.get("outcome")) if isinstance(data, dict) else None
    reason = data.get("reason") if isinstance(data, dict) else None
    if not isinstance(state, str) or not (reason is None or isinstance(reason, str)):
        raise NotAResult("no state or outcome")
    return state[:64], None if reason is None else reason[:64]
