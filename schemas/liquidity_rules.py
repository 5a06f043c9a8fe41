"""Liquidity rules: the Python side of schemas/json/liquidity-rules.json.

Two documents carry the same list of rules: the rules file an operator writes
(`{"v": 1, "rules": [...]}`) and the run-time command `SetLiquidityRules` (on a command topic,
keyed by anything: the last one wins). Both are decoded by the strict checks below, held to the
JSON Schema's verdicts by tests/unit/test_liquidity_contract.py, and stricter where JSON Schema
cannot say it (integers written as floats, unique rule ids, a final newline in an id).

A document is accepted whole or refused whole: one bad rule refuses the lot, with one stable reason
(RULES_REASONS) and a detail naming the rule and field, so a new rule set is never half applied.

A rule watches subjects, one (account, currency) each, chosen by `currency` (always given: a floor
of 100000 means nothing until one knows whether it is yen or euros) and at most one of
`account_id` (that account) and `account_prefix` (every account whose id starts with it); with
neither, every account in the currency.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from schemas.currencies import CURRENCIES
from schemas.errors import LedgerError
from schemas.json_bounds import too_deep

VERSION: Final = 1
MAX_AMOUNT: Final = 2**63 - 1  # PostgreSQL BIGINT, as every amount in the ledger
MAX_RULES: Final = 1000
MAX_RULES_BYTES: Final = 512 * 1024
"""1000 rules of the longest ids, every character escaped, fit; a command this large also needs its
topic's max.message.bytes raised above Kafka's default of 1 MiB only if rules grow further."""
MAX_RULES_DEPTH: Final = 3
"""The document is depth 1, its list of rules 2, each rule 3."""
MAX_WINDOW_S: Final = 86400
KINDS: Final = ("available_below", "net_outflow_above", "pending_above_share")
SEVERITIES: Final = ("warning", "critical")

UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RULE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""No ':' in a rule id or an account id: alert ids are derived from them joined by ':'."""

RULES_REASONS: Final = frozenset({
    # reading the bytes (the dead-letter spellings)
    "too_large", "not_utf8", "not_json", "nesting_too_deep", "not_an_object",
    # the document
    "unknown_message_type", "unsupported_version", "missing_field", "unknown_field",
    "invalid_command_id", "invalid_rules", "too_many_rules",
    # a rule
    "invalid_rule_id", "duplicate_rule_id", "unknown_kind", "invalid_severity", "unknown_currency",
    "invalid_scope", "invalid_account_id", "invalid_account_prefix", "invalid_floor", "invalid_limit",
    "invalid_window", "invalid_share", "invalid_clear_margin",
})  # fmt: skip


class InvalidLiquidityMessage(LedgerError):
    """A rules file, a SetLiquidityRules command or a LiquidityAlert that cannot be accepted as
    written. Retrying the same bytes cannot help. `reason` is stable; `detail` names the place."""

    retriable = False

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class LiquidityRule:
    rule_id: str
    kind: str
    """available_below (available < floor), net_outflow_above (posted fell by more than limit
    over the last window_s seconds), pending_above_share (pending_debits > share_bp/10000 of posted)."""
    severity: str
    currency: str
    account_id: str | None = None
    account_prefix: str | None = None
    floor: int | None = None
    """available_below: minor units, 0 allowed (alert when an account dips into its overdraft)."""
    limit: int | None = None
    """net_outflow_above: minor units."""
    window_s: int | None = None
    """net_outflow_above: 1..86400 seconds."""
    share_bp: int | None = None
    """pending_above_share: basis points of posted, 1..10000."""
    clear_margin: int = 0
    """Hysteresis, in the threshold's unit (minor units; basis points for a share): a crossed rule
    clears only once it is this far back on the safe side (available >= floor + margin, outflow <=
    limit - margin, pending <= (share_bp - margin)/10000 of posted). 0: it clears as soon as it no
    longer holds."""

    @property
    def scope(self) -> str:
        """account, prefix or currency."""
        if self.account_id is not None:
            return "account"
        return "prefix" if self.account_prefix is not None else "currency"

    def matches(self, account_id: str, currency: str) -> bool:
        if currency != self.currency:
            return False
        if self.account_id is not None:
            return account_id == self.account_id
        return self.account_prefix is None or account_id.startswith(self.account_prefix)


@dataclass(frozen=True, slots=True)
class SetLiquidityRules:
    """Replace the whole rule set (a command: the monitor answers with the alerts it implies)."""

    command_id: str
    rules: tuple[LiquidityRule, ...]


# --- reading ---------------------------------------------------------------------------------------


def read_json_object(raw: bytes, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Bytes -> a JSON object, bounded in size and nesting before orjson reads them."""
    if len(raw) > max_bytes:
        raise InvalidLiquidityMessage("too_large", f"{len(raw)} bytes, at most {max_bytes}")
    try:
        raw.decode("utf-8")  # orjson says "not JSON" for both; a dead letter tells them apart
    except UnicodeDecodeError as e:
        raise InvalidLiquidityMessage("not_utf8", str(e)) from None
    if too_deep(raw, max_depth):
        raise InvalidLiquidityMessage("nesting_too_deep", f"nested more than {max_depth} deep")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidLiquidityMessage("not_json", str(e)) from None
    if not isinstance(data, dict):
        raise InvalidLiquidityMessage("not_an_object", f"a JSON {type(data).__name__}, not an object")
    return data


def check_fields(
    where: str, data: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    """Every required field present, nothing beyond required and optional ones."""
    extra = data.keys() - {*required, *optional}
    if extra:
        raise InvalidLiquidityMessage("unknown_field", f"{where}: {sorted(extra)!r:.200}")
    for name in required:
        if name not in data:
            raise InvalidLiquidityMessage("missing_field", f"{where} lacks {name}")


def check_version(kind: str, data: dict[str, Any]) -> None:
    version = data.get("v")
    if type(version) is not int or version != VERSION:  # True == 1 in Python, not in JSON
        raise InvalidLiquidityMessage("unsupported_version", f"v {version!r:.20} of {kind}")


def fullmatch(pattern: re.Pattern[str], value: object) -> bool:
    # fullmatch: the schema's `$` is Python's to jsonschema, which also matches before a final "\n"
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _int_in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high  # JSON Schema would take 100.0; we do not


_KIND_FIELDS: Final = {
    "available_below": ("floor",),
    "net_outflow_above": ("limit", "window_s"),
    "pending_above_share": ("share_bp",),
}
_COMMON: Final = ("rule_id", "kind", "severity", "currency")
_OPTIONAL: Final = ("account_id", "account_prefix", "clear_margin")
_VALUE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "floor": lambda v: _int_in(v, 0, MAX_AMOUNT),
    "limit": lambda v: _int_in(v, 1, MAX_AMOUNT),
    "window_s": lambda v: _int_in(v, 1, MAX_WINDOW_S),
    "share_bp": lambda v: _int_in(v, 1, 10000),
}


def _rule(data: object, i: int) -> LiquidityRule:
    where = f"rules[{i}]"
    if not isinstance(data, dict):
        raise InvalidLiquidityMessage("invalid_rules", f"{where} is not an object")
    if not fullmatch(RULE_ID, data.get("rule_id")):
        reason = "invalid_rule_id" if "rule_id" in data else "missing_field"
        raise InvalidLiquidityMessage(reason, f"{where}.rule_id {data.get('rule_id')!r:.80}")
    where = f"rules[{i}] ({data['rule_id']})"
    kind = data.get("kind")
    if kind not in _KIND_FIELDS:
        reason = "unknown_kind" if "kind" in data else "missing_field"
        raise InvalidLiquidityMessage(reason, f"{where}.kind {kind!r:.80}")
    check_fields(where, data, (*_COMMON, *_KIND_FIELDS[kind]), _OPTIONAL)
    if data["severity"] not in SEVERITIES:
        raise InvalidLiquidityMessage("invalid_severity", f"{where}.severity {data['severity']!r:.80}")
    if not isinstance(data["currency"], str) or data["currency"] not in CURRENCIES:
        raise InvalidLiquidityMessage("unknown_currency", f"{where}.currency {data['currency']!r:.80}")
    if "account_id" in data and "account_prefix" in data:
        raise InvalidLiquidityMessage("invalid_scope", f"{where}: account_id and account_prefix both given")
    if "account_id" in data and not fullmatch(ACCOUNT_ID, data["account_id"]):
        raise InvalidLiquidityMessage("invalid_account_id", f"{where}.account_id {data['account_id']!r:.80}")
    # A prefix is the start of an account id: 1..64 characters an account id may hold.
    if "account_prefix" in data and not fullmatch(ACCOUNT_ID, data["account_prefix"]):
        prefix = data["account_prefix"]
        raise InvalidLiquidityMessage("invalid_account_prefix", f"{where}.account_prefix {prefix!r:.80}")
    for name in _KIND_FIELDS[kind]:
        if not _VALUE_CHECKS[name](data[name]):
            reason = "invalid_share" if name == "share_bp" else f"invalid_{name.removesuffix('_s')}"
            raise InvalidLiquidityMessage(reason, f"{where}.{name} {data[name]!r:.80}")
    margin = data.get("clear_margin", 0)
    # The margin moves the clearing point to the safe side; it may not cross zero.
    margin_bound = {"available_below": MAX_AMOUNT, "net_outflow_above": data.get("limit", 0) - 1,
                    "pending_above_share": data.get("share_bp", 0) - 1}[kind]  # fmt: skip
    if not _int_in(margin, 0, margin_bound):
        raise InvalidLiquidityMessage("invalid_clear_margin", f"{where}.clear_margin {margin!r:.80}")
    return LiquidityRule(**data)


def rules_from_list(value: object) -> tuple[LiquidityRule, ...]:
    """The `rules` of either document: a list of at most MAX_RULES rules with distinct ids."""
    if not isinstance(value, list):
        raise InvalidLiquidityMessage("invalid_rules", f"rules is a {type(value).__name__}, not a list")
    if len(value) > MAX_RULES:
        raise InvalidLiquidityMessage("too_many_rules", f"{len(value)} rules, at most {MAX_RULES}")
    rules = tuple(_rule(item, i) for i, item in enumerate(value))
    seen: set[str] = set()
    for rule in rules:
        if rule.rule_id in seen:
            raise InvalidLiquidityMessage("duplicate_rule_id", f"{rule.rule_id} appears twice")
        seen.add(rule.rule_id)
    return rules


def decode_rules_file(raw: bytes) -> tuple[LiquidityRule, ...]:
    """A rules file's bytes -> its rules (possibly none), or InvalidLiquidityMessage."""
    data = read_json_object(raw, MAX_RULES_BYTES, MAX_RULES_DEPTH)
    check_fields("rules file", data, ("v", "rules"), ())
    check_version("rules file", data)
    return rules_from_list(data["rules"])


def decode_set_rules(raw: bytes) -> SetLiquidityRules:
    """A SetLiquidityRules command's bytes -> the command, or InvalidLiquidityMessage."""
    data = read_json_object(raw, MAX_RULES_BYTES, MAX_RULES_DEPTH)
    if data.get("type") != "SetLiquidityRules":
        raise InvalidLiquidityMessage("unknown_message_type", f"type {data.get('type')!r:.80}")
    check_fields("SetLiquidityRules", data, ("type", "v", "command_id", "rules"), ())
    check_version("SetLiquidityRules", data)
    if not fullmatch(UUID, data["command_id"]):
        raise InvalidLiquidityMessage("invalid_command_id", f"command_id {data['command_id']!r:.80}")
    return SetLiquidityRules(data["command_id"], rules_from_list(data["rules"]))


# --- writing ---------------------------------------------------------------------------------------


def rule_to_dict(rule: LiquidityRule) -> dict[str, Any]:
    """Only the fields the rule's kind and scope use; clear_margin only when set."""
    body: dict[str, Any] = {name: getattr(rule, name) for name in _COMMON}
    for name in ("account_id", "account_prefix", *_KIND_FIELDS[rule.kind]):
        if getattr(rule, name) is not None:
            body[name] = getattr(rule, name)
    if rule.clear_margin:
        body["clear_margin"] = rule.clear_margin
    return body


def encode_rules_file(rules: tuple[LiquidityRule, ...]) -> bytes:
    return orjson.dumps({"v": VERSION, "rules": [rule_to_dict(r) for r in rules]}, option=orjson.OPT_INDENT_2)


def encode_set_rules(command: SetLiquidityRules) -> bytes:
    return orjson.dumps({
        "type": "SetLiquidityRules", "v": VERSION, "command_id": command.command_id,
        "rules": [rule_to_dict(r) for r in command.rules],
    })  # fmt: skip
