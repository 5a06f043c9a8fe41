"""Shard commands and replies: the Python side of schemas/json/shard-command.json and shard-reply.json.

These messages travel only between the coordinator and the shard workers, thousands a second, so
they are decoded by the strict checks below (about 5 µs) rather than by a JSON Schema validator
(about 35 µs each, measured). tests/unit/test_shard_messages.py holds the two to the same verdicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

import orjson

from schemas.currencies import CURRENCIES
from schemas.errors import LedgerError
from schemas.ids import url_uuid5
from schemas.json_bounds import too_deep

MAX_AMOUNT: Final = 2**63 - 1  # PostgreSQL BIGINT
VERSION: Final = 1
MAX_INTERNAL_BYTES: Final = 64 * 1024
"""The largest valid message, an OpenAccount with 16 metadata entries of the longest keys and
values, every character written as an escaped surrogate pair (12 bytes), is under 64 KiB."""
MAX_INTERNAL_DEPTH: Final = 3
"""An ApplyLegs command's legs are the deepest a valid message goes: the top-level object is
depth 1, its list of legs 2, each leg 3 (a command's metadata is 2)."""
MAX_LEGS: Final = 100
"""Legs of one linked batch, and so at most on one shard."""
LEG_STEPS: Final = frozenset({
    "reserve", "credit", "commit", "release", "cancel", "hold_credit", "settle", "post_hold",
})  # fmt: skip
"""What an ApplyLegs command does to each of its legs: the single-leg command of that name."""

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidMessage(LedgerError):
    """A message does not match its contract. Retrying the same bytes cannot help.

    `reason` is a dead-letter reason code (schemas.dead_letters.DEAD_LETTER_REASONS)."""

    retriable = False

    def __init__(self, detail: str, reason: str = "invalid_field") -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OpenAccount:
    message_id: str
    account_id: str
    currency: str
    overdraft_limit: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChangeAccountStatus:
    message_id: str
    account_id: str
    status: str


@dataclass(frozen=True, slots=True)
class PostTransfer:
    message_id: str
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class ReserveFunds:
    message_id: str
    transfer_id: str
    account_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class CreditFunds:
    message_id: str
    transfer_id: str
    account_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class CommitReservation:
    message_id: str
    transfer_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class ReleaseReservation:
    message_id: str
    transfer_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class CancelCredit:
    message_id: str
    transfer_id: str
    account_id: str


# --- two-phase transfers: a hold now, posted (in full or in part) or voided later ----------------


@dataclass(frozen=True, slots=True)
class HoldTransfer:
    """A same-shard pending transfer: hold on the debit account and pending credit on the credit
    account, in one transaction."""

    message_id: str
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class HoldCredit:
    """The credit side of a cross-shard pending transfer: shown as pending, not yet spendable."""

    message_id: str
    transfer_id: str
    account_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class PostHold:
    """Post `amount` (at most the hold) of a pending transfer's hold to transit; release the rest."""

    message_id: str
    transfer_id: str
    account_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class SettleCredit:
    """Post `amount` (at most the pending credit) from transit to the account; clear the pending credit."""

    message_id: str
    transfer_id: str
    account_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class PostPending:
    """A same-shard pending transfer posted: `amount` moves, both holds clear, in one transaction."""

    message_id: str
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int


@dataclass(frozen=True, slots=True)
class VoidPending:
    """A same-shard pending transfer voided (or expired): both holds clear, nothing moves."""

    message_id: str
    transfer_id: str
    debit_account: str
    credit_account: str


# --- linked batches: one step for every leg a shard holds, all or none ------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a linked batch as a shard sees it: its own transfer id, and this shard's side."""

    transfer_id: str
    account_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class ApplyLegs:
    """One step (LEG_STEPS) of a linked batch for every leg on this shard, in one transaction: all
    legs, or (when one is refused) none, and the reply names the refused leg."""

    message_id: str
    transfer_id: str  # the batch's id: the reply carries it to the coordinator that owns the saga
    step: str
    legs: tuple[Leg, ...]


ShardCommand = (
    OpenAccount
    | ChangeAccountStatus
    | PostTransfer
    | ReserveFunds
    | CreditFunds
    | CommitReservation
    | ReleaseReservation
    | CancelCredit
    | HoldTransfer
    | HoldCredit
    | PostHold
    | SettleCredit
    | PostPending
    | VoidPending
    | ApplyLegs
)


def accounts_of(command: ShardCommand) -> tuple[str, ...]:
    """The accounts a command names: debit then credit for the one-shard transfer commands, each
    leg's in order for ApplyLegs."""
    if isinstance(command, (PostTransfer, HoldTransfer, PostPending, VoidPending)):
        return command.debit_account, command.credit_account
    if isinstance(command, ApplyLegs):
        return tuple(leg.account_id for leg in command.legs)
    return (command.account_id,)


# The names on the wire (each message's "type", a reply's "command"), written out rather than
# taken from the classes, so renaming a class cannot change the contract (shard-command.json).
COMMAND_TYPES: Final[dict[str, type[ShardCommand]]] = {
    "OpenAccount": OpenAccount,
    "ChangeAccountStatus": ChangeAccountStatus,
    "PostTransfer": PostTransfer,
    "ReserveFunds": ReserveFunds,
    "CreditFunds": CreditFunds,
    "CommitReservation": CommitReservation,
    "ReleaseReservation": ReleaseReservation,
    "CancelCredit": CancelCredit,
    "HoldTransfer": HoldTransfer,
    "HoldCredit": HoldCredit,
    "PostHold": PostHold,
    "SettleCredit": SettleCredit,
    "PostPending": PostPending,
    "VoidPending": VoidPending,
    "ApplyLegs": ApplyLegs,
}


@dataclass(frozen=True, slots=True)
class ShardReply:
    """Exactly what a command did. `outcome` is past tense; `reason` is a stable code."""

    message_id: str
    in_reply_to: str
    command: str
    shard: int
    account_id: str
    transfer_id: str | None
    outcome: str
    reason: str | None = None
    journal_seq: int | None = None
    leg: str | None = None
    """For ApplyLegs refused: the transfer id of the leg that was refused (absent otherwise)."""

    @property
    def rejected(self) -> bool:
        return self.outcome == "rejected"


def reply_id(command_message_id: str) -> str:
    """The reply's id is derived from the command's, so a re-sent reply is recognisably the same:
    `uuid.uuid5(NAMESPACE_URL, "ledger:reply:" + id)`."""
    return url_uuid5("ledger:reply:" + command_message_id)


# --- decoding: one check per field name, mirroring the $defs of shard-command.json -----------


def _uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None  # `$` alone allows a final \n


def _account_id(value: object) -> bool:
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None


def _amount(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_AMOUNT


def _limit(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_AMOUNT


def _currency(value: object) -> bool:
    return isinstance(value, str) and value in CURRENCIES


def _status(value: object) -> bool:
    return value in ("active", "frozen", "closed")


def _metadata(value: object) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= 16
        and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 256
            for k, v in value.items()
        )
    )


_LEG_FIELDS: Final = frozenset({"transfer_id", "account_id", "amount", "currency"})


def _legs(value: object) -> bool:
    """1 to MAX_LEGS legs, each exactly its four fields, valid, with distinct transfer ids."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LEGS:
        return False
    for leg in value:
        if not (isinstance(leg, dict) and leg.keys() == _LEG_FIELDS):
            return False
        if not (_uuid(leg["transfer_id"]) and _account_id(leg["account_id"])):
            return False
        if not (_amount(leg["amount"]) and _currency(leg["currency"])):
            return False
    return len({leg["transfer_id"] for leg in value}) == len(value)


FIELD_CHECKS: Final[dict[str, Callable[[object], bool]]] = {
    "step": lambda v: isinstance(v, str) and v in LEG_STEPS,
    "legs": _legs,
    "message_id": _uuid,
    "transfer_id": _uuid,
    "account_id": _account_id,
    "debit_account": _account_id,
    "credit_account": _account_id,
    "amount": _amount,
    "overdraft_limit": _limit,
    "currency": _currency,
    "status": _status,
    "metadata": _metadata,
}

_FIELDS: Final = {name: tuple(f.name for f in fields(cls)) for name, cls in COMMAND_TYPES.items()}
_ENCODED_FIELDS: Final = _FIELDS | {"ShardReply": tuple(f.name for f in fields(ShardReply))}
WIRE_NAME: Final[dict[type, str]] = {cls: name for name, cls in COMMAND_TYPES.items()} | {
    ShardReply: "ShardReply"
}


def _read(raw: bytes) -> Any:
    """Bytes -> a JSON value, bounded in size and nesting before orjson reads them."""
    if len(raw) > MAX_INTERNAL_BYTES:
        raise InvalidMessage(f"{len(raw)} bytes, at most {MAX_INTERNAL_BYTES}", "too_large")
    try:
        raw.decode("utf-8")  # orjson says "not JSON" for both; a dead letter tells them apart
    except UnicodeDecodeError as e:
        raise InvalidMessage(f"not UTF-8: {e}", "not_utf8") from None
    if too_deep(raw, MAX_INTERNAL_DEPTH):
        raise InvalidMessage(f"nested more than {MAX_INTERNAL_DEPTH} deep", "nesting_too_deep")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidMessage(f"not JSON: {e}", "not_json") from None


def decode_command(raw: bytes) -> ShardCommand:
    """Bytes from Kafka -> a typed command, or InvalidMessage saying exactly what is wrong."""
    return command_from_dict(_read(raw))


def command_from_dict(data: Any) -> ShardCommand:
    if not isinstance(data, dict):
        raise InvalidMessage("not a JSON object", "not_an_object")
    kind = data.get("type")
    cls = COMMAND_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidMessage(f"unknown command type {kind!r:.80}", "unknown_message_type")
    if data.get("v") != VERSION or isinstance(data.get("v"), bool):  # True == 1 in Python, not in JSON
        raise InvalidMessage(f"unsupported version {data.get('v')!r:.20} of {kind}", "unsupported_version")
    names = _FIELDS[WIRE_NAME[cls]]
    _check_fields(WIRE_NAME[cls], data, names, FIELD_CHECKS)
    if cls is ApplyLegs:
        legs = tuple(Leg(**leg) for leg in data["legs"])
        return ApplyLegs(data["message_id"], data["transfer_id"], data["step"], legs)
    return cls(**{name: data[name] for name in names})


def _check_fields(
    kind: str, data: dict[str, Any], names: tuple[str, ...], checks: Mapping[str, Callable[[Any], bool]]
) -> None:
    """Exactly these fields besides type and v, each passing its check; else InvalidMessage."""
    extra = data.keys() - {"type", "v", *names}
    if extra:
        raise InvalidMessage(f"unknown fields in {kind}: {sorted(extra)!r:.200}", "unknown_field")
    for name in names:
        if name not in data:
            raise InvalidMessage(f"{kind} lacks {name}", "missing_field")
        if not checks[name](data[name]):
            raise InvalidMessage(f"{kind}.{name} is invalid: {data[name]!r:.80}")


def encode(message: ShardCommand | ShardReply) -> bytes:
    """A reply's `leg` is written only when set (a refused ApplyLegs)."""
    kind = WIRE_NAME[type(message)]
    body = {name: getattr(message, name) for name in _ENCODED_FIELDS[kind]}
    if kind == "ShardReply" and body["leg"] is None:
        del body["leg"]
    return orjson.dumps({"type": kind, "v": VERSION, **body})


REPLY_OUTCOMES: Final = frozenset({
    "account_opened", "account_status_changed", "transfer_posted", "funds_reserved", "funds_credited",
    "reservation_committed", "reservation_released", "credit_cancelled", "rejected",
    "funds_held", "credit_held", "hold_posted", "credit_settled", "pending_posted", "pending_voided",
    "legs_applied",
})  # fmt: skip
REPLY_REASONS: Final = frozenset({
    "insufficient_funds", "account_not_found", "account_frozen", "account_closed", "account_exists",
    "account_not_empty", "currency_mismatch", "amount_overflow", "same_account", "wrong_shard",
    "reservation_not_found", "reservation_released", "reservation_committed", "amount_mismatch",
    "invalid_command", "already_applied", "credit_cancelled", "credit_applied", "credit_not_found",
    "amount_exceeds_hold",
})  # fmt: skip
_REPLY_CHECKS: Final[dict[str, Callable[[object], bool]]] = {
    "message_id": _uuid,
    "in_reply_to": _uuid,
    "command": lambda v: isinstance(v, str) and v in COMMAND_TYPES,
    "shard": lambda v: type(v) is int and 0 <= v <= 1023,
    "account_id": lambda v: isinstance(v, str) and len(v) <= 64,
    "transfer_id": lambda v: v is None or _uuid(v),
    "outcome": lambda v: isinstance(v, str) and v in REPLY_OUTCOMES,
    "reason": lambda v: v is None or (isinstance(v, str) and v in REPLY_REASONS),
    "journal_seq": lambda v: v is None or (type(v) is int and 1 <= v <= MAX_AMOUNT),
    "leg": lambda v: v is None or _uuid(v),
}


def decode_reply(raw: bytes) -> ShardReply:
    """Bytes from Kafka -> a ShardReply whose every field is of its contract's kind (a reply with a
    string for a shard number would fail deep in the coordinator), or InvalidMessage."""
    return reply_from_dict(_read(raw))


def reply_from_dict(data: Any) -> ShardReply:
    """A parsed JSON value -> a ShardReply, or InvalidMessage (a reply inside an envelope)."""
    version = data.get("v") if isinstance(data, dict) else None
    if not isinstance(data, dict):
        raise InvalidMessage("not a JSON object", "not_an_object")
    if data.get("type") != "ShardReply":
        raise InvalidMessage(f"not a ShardReply: type {data.get('type')!r:.80}", "unknown_message_type")
    if version != VERSION or version is True:
        raise InvalidMessage(f"unsupported version {version!r:.20} of ShardReply", "unsupported_version")
    names = _ENCODED_FIELDS["ShardReply"]
    if "leg" not in data:  # optional: written only by a refused ApplyLegs
        data = {**data, "leg": None}
    _check_fields("ShardReply", data, names, _REPLY_CHECKS)
    return ShardReply(**{name: data[name] for name in names})
