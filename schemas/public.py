"""Public commands and results: the Python side of transfer-command.json, account-command.json and
transfer-result.json, the contract payment services produce and read: the messages, their
encoding and their request fingerprint. Reading untrusted bytes into them is
schemas/public_parse.py's; each rejection carries one stable reason code from TRANSFER_REASONS,
PENDING_REASONS or ACCOUNT_COMMAND_REASONS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

import orjson

from schemas.dead_letters import from_public_reason
from schemas.errors import LedgerError

VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 16 * 1024
MAX_BATCH_PAYLOAD_BYTES: Final = 64 * 1024
"""A TransferBatch's bound: 100 legs of the longest ids fit in 40 KiB."""
MAX_LEGS: Final = 100
MAX_DEPTH: Final = 8
"""The top-level object is depth 1, its metadata depth 2: a valid command never goes deeper."""

TRANSFER_REASONS: Final = frozenset({
    "payload_too_large", "malformed_json", "nesting_too_deep", "not_an_object",
    "unknown_message_type", "unsupported_version", "missing_field", "unknown_field",
    "invalid_transfer_id", "invalid_account_id", "invalid_amount", "amount_not_positive",
    "amount_above_limit", "unknown_currency", "invalid_metadata", "same_account",
    "invalid_pending", "invalid_pending_id",
    "invalid_batch_id", "invalid_batch_size", "invalid_linked", "duplicate_leg_id",
})  # fmt: skip
PENDING_REASONS: Final = frozenset({
    "pending_transfer_not_found", "pending_transfer_not_pending", "pending_transfer_in_flight",
    "pending_transfer_already_posted", "pending_transfer_already_voided", "pending_transfer_expired",
    "amount_exceeds_pending", "pending_account_mismatch",
})  # fmt: skip
"""Why a PostPendingTransfer or VoidPendingTransfer is refused (decided by the coordinator)."""
MAX_PENDING_TIMEOUT_MS: Final = 30 * 24 * 3600 * 1000
ACCOUNT_COMMAND_REASONS: Final = frozenset({
    "payload_too_large", "malformed_json", "nesting_too_deep", "not_an_object",
    "unknown_message_type", "unsupported_version", "missing_field", "unknown_field",
    "invalid_command_id", "invalid_account_id", "unknown_currency", "invalid_overdraft_limit",
    "invalid_metadata",
})  # fmt: skip


class PublicRejection(LedgerError):
    """A public command that cannot be accepted as sent. Retrying the same bytes cannot help.

    `transfer_id` (transfer commands) or `command_id` and `account_id` (account commands) are set
    when the payload was read as a JSON object carrying a valid id, so the caller can publish a
    rejected result for it. `id_as_sent` is set instead when the transfer id is a UUID in another
    spelling (upper-case, braces, no dashes, urn:uuid:): the caller answers that string, so its
    sender hears back, but records nothing under it (it is no transfer's id). When all are None the
    caller dead-letters the raw bytes.
    """

    retriable = False

    def __init__(
        self,
        reason: str,
        transfer_id: str | None,
        detail: str,
        *,
        command_id: str | None = None,
        account_id: str | None = None,
        dead_letter_reason: str | None = None,
        id_as_sent: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.transfer_id = transfer_id
        self.detail = detail
        self.command_id = command_id
        self.account_id = account_id
        self.id_as_sent = id_as_sent
        self.dead_letter_reason = dead_letter_reason or from_public_reason(reason)
        """The reason a dead letter gives (schemas.dead_letters.DEAD_LETTER_REASONS): finer than
        `reason` where the public contract lumps causes together (not_utf8 and not_json are both
        malformed_json to a payment service, whose result reasons do not change)."""


# --- the messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferFunds:
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    """An absent metadata object and an empty one are the same command."""
    pending_timeout_ms: int | None = None
    """`"pending": {"timeout_ms": N}` on the wire: a two-phase transfer whose hold lasts N ms."""


@dataclass(frozen=True, slots=True)
class PostPendingTransfer:
    transfer_id: str
    pending_id: str
    amount: int | None = None
    """None: post the whole hold."""
    debit_account: str | None = None
    credit_account: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VoidPendingTransfer:
    transfer_id: str
    pending_id: str
    debit_account: str | None = None
    credit_account: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchLeg:
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class TransferBatch:
    """Linked transfers: every leg or none (batch-command.json)."""

    batch_id: str
    transfers: tuple[BatchLeg, ...]
    linked: bool  # always True: the contract has no other kind of batch
    metadata: Mapping[str, str] = field(default_factory=dict)
    pending_timeout_ms: int | None = None

    @property
    def transfer_id(self) -> str:
        """The batch's idempotency key, in the one namespace of transfer ids."""
        return self.batch_id


@dataclass(frozen=True, slots=True)
class OpenAccountRequest:
    """`OpenAccount` on the wire; named apart from the shard command it becomes."""

    command_id: str
    account_id: str
    currency: str
    overdraft_limit: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FreezeAccount:
    command_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class UnfreezeAccount:
    command_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class CloseAccount:
    command_id: str
    account_id: str


@dataclass(frozen=True, slots=True)
class LegOutcome:
    """One leg's outcome in a linked batch's result."""

    transfer_id: str
    state: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class TransferResult:
    """The one final result of a transfer. Only `transfer_id` is known for a command rejected
    before it could be read: the command's other fields are then None."""

    message_id: str
    transfer_id: str
    state: str  # completed | rejected | compensated
    reason: str | None
    request_fingerprint: str
    debit_account: str | None
    credit_account: str | None
    amount: int | None
    currency: str | None
    finished_at: str  # RFC 3339, e.g. datetime.now(UTC).isoformat()
    pending_id: str | None = None  # the pending transfer a post or void resolved
    legs: tuple[LegOutcome, ...] | None = None  # a linked batch's: every leg's outcome
    failed_leg: str | None = None  # a failed linked batch's: the leg that failed


@dataclass(frozen=True, slots=True)
class AccountResult:
    message_id: str
    command_id: str
    account_id: str | None
    outcome: str  # done | rejected
    reason: str | None


AccountCommand = OpenAccountRequest | FreezeAccount | UnfreezeAccount | CloseAccount
PendingCommand = PostPendingTransfer | VoidPendingTransfer
TransferCommand = TransferFunds | PendingCommand | TransferBatch
PublicMessage = TransferCommand | AccountCommand | TransferResult | AccountResult

WIRE_TYPES: Final[dict[type[PublicMessage], str]] = {
    TransferFunds: "TransferFunds",
    PostPendingTransfer: "PostPendingTransfer",
    VoidPendingTransfer: "VoidPendingTransfer",
    TransferBatch: "TransferBatch",
    OpenAccountRequest: "OpenAccount",
    FreezeAccount: "FreezeAccount",
    UnfreezeAccount: "UnfreezeAccount",
    CloseAccount: "CloseAccount",
    TransferResult: "TransferResult",
    AccountResult: "AccountResult",
}
ACCOUNT_COMMAND_TYPES: Final[dict[str, type[AccountCommand]]] = {
    "OpenAccount": OpenAccountRequest,
    "FreezeAccount": FreezeAccount,
    "UnfreezeAccount": UnfreezeAccount,
    "CloseAccount": CloseAccount,
}
LEG_FIELDS: Final = tuple(f.name for f in fields(BatchLeg))
PENDING_COMMAND_TYPES: Final[dict[str, type[PendingCommand]]] = {
    "PostPendingTransfer": PostPendingTransfer,
    "VoidPendingTransfer": VoidPendingTransfer,
}
MESSAGE_FIELDS: Final = {cls: tuple(f.name for f in fields(cls)) for cls in WIRE_TYPES}
# Optional fields written only when set, so a command without them reads (and fingerprints) as it
# did before they existed. TransferFunds' pending terms are an object on the wire.
_OMITTED_WHEN_NONE: Final[dict[type[PublicMessage], frozenset[str]]] = {
    TransferFunds: frozenset({"pending_timeout_ms"}),
    TransferBatch: frozenset({"pending_timeout_ms"}),
    PostPendingTransfer: frozenset({"amount", "debit_account", "credit_account"}),
    VoidPendingTransfer: frozenset({"debit_account", "credit_account"}),
    TransferResult: frozenset({"pending_id", "legs", "failed_leg"}),
}


def _body(message: PublicMessage) -> dict[str, Any]:
    cls = type(message)
    body = {name: getattr(message, name) for name in MESSAGE_FIELDS[cls]}
    if (omitted := _OMITTED_WHEN_NONE.get(cls)) is not None:
        body = {k: v for k, v in body.items() if v is not None or k not in omitted}
    timeout = body.pop("pending_timeout_ms", None)
    if timeout is not None:
        body["pending"] = {"timeout_ms": timeout}
    return body


def encode_public(message: PublicMessage) -> bytes:
    """Every field is written, metadata included ({} when empty); optional ones only when set."""
    return orjson.dumps(
        {"type": WIRE_TYPES[type(message)], "v": VERSION, **_body(message)}, default=_plain_dict
    )


def request_fingerprint(command: TransferCommand) -> str:
    """sha256 (hex) of the command's fields (not type and v) as compact JSON with sorted keys.

    A command with the same fields always has the same fingerprint, whatever the key order, spacing
    or escapes of the bytes it was read from; a change in any field, metadata included, changes it.
    A post or void also names its type, so the two never share a fingerprint.
    """
    body = _body(command)
    if not isinstance(command, TransferFunds):
        body["type"] = WIRE_TYPES[type(command)]
    canonical = orjson.dumps(body, default=_plain_dict, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _plain_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")
