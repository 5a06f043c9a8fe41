"""Parsing the public contract: bytes from ledger.transfers and ledger.account-commands to the
typed commands of schemas/public.py, or a PublicRejection with one stable reason code.

Anything may arrive on the public topics, so a payload is read in a fixed order, each step
guarding the next: the bytes to a JSON object (schemas/json_reading.py: size (16 KiB), strict
UTF-8, nesting depth (8), JSON with unique keys and no NaN/Infinity, an object) -> the JSON
Schema (the first error, in the schema's keyword order, names the reason) -> what JSON Schema
cannot say -> business rules.

Unlike the shard messages, public commands are checked against the JSON Schema files themselves,
the contract other teams read. Twice over: fastjsonschema compiles the files into Python once, a
check of about 10 µs that every valid command takes; only a command it (or the strict checks)
refuses goes on to the jsonschema validator, about 250 µs, whose first error names the reason. So
verdicts and reasons are exactly the jsonschema validator's (tests/unit/test_compiled_contract.py),
and a valid command costs a tenth of what it did (tests/bench/codec_cost.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource

from schemas.currencies import JSON_DIR
from schemas.json_reading import Unreadable, read_object
from schemas.public import (
    ACCOUNT_COMMAND_TYPES,
    LEG_FIELDS,
    MAX_BATCH_PAYLOAD_BYTES,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    MESSAGE_FIELDS,
    PENDING_COMMAND_TYPES,
    WIRE_TYPES,
    AccountCommand,
    BatchLeg,
    PendingCommand,
    PublicRejection,
    TransferBatch,
    TransferCommand,
    TransferFunds,
)

# --- the validators, compiled once ----------------------------------------------------------------


def _load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


PUBLIC_SCHEMAS: Final = {
    name: _load(name)
    for name in (
        "transfer-command.json",
        "pending-command.json",
        "batch-command.json",
        "account-command.json",
        "transfer-result.json",
        "currency.json",
    )
}
REGISTRY: Final[Registry[Any]] = Registry().with_resources(
    (name, Resource.from_contents(schema)) for name, schema in PUBLIC_SCHEMAS.items()
)


def _inline_defs(node: Any, document: dict[str, Any]) -> Any:
    """A copy of a schema with each `$ref` into a `$defs` replaced by the definition it names.

    The same verdicts and the same first error, for two thirds of the cost: the jsonschema package
    looks a `$ref` up anew on every validation. currency.json, a whole document, stays a `$ref`.
    """
    if isinstance(node, list):
        return [_inline_defs(item, document) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and "#/$defs/" in ref:
        name, _, definition = ref.partition("#/$defs/")
        target = PUBLIC_SCHEMAS[name] if name else document
        siblings = {key: _inline_defs(value, document) for key, value in node.items() if key != "$ref"}
        return {**_inline_defs(target["$defs"][definition], target), **siblings}
    return {key: value if key == "$defs" else _inline_defs(value, document) for key, value in node.items()}


def _validator(document: str, definition: str | None = None) -> Draft202012Validator:
    schema = PUBLIC_SCHEMAS[document]
    root = schema if definition is None else {"$ref": f"#/$defs/{definition}"}
    return Draft202012Validator(_inline_defs(root, schema), registry=REGISTRY)


_TRANSFER_VALIDATOR: Final = _validator("transfer-command.json")
_BATCH_VALIDATOR: Final = _validator("batch-command.json")
_PENDING_VALIDATORS: Final = {
    name: _validator("pending-command.json", name) for name in PENDING_COMMAND_TYPES
}
_ACCOUNT_VALIDATORS: Final = {
    name: _validator("account-command.json", name) for name in ACCOUNT_COMMAND_TYPES
}


def _no_fetch(uri: str) -> Any:
    raise LookupError(f"{uri}: the contracts refer only to each other, never to the network")


def _compiled(document: str, definition: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """The same contract compiled to Python by fastjsonschema: True when `data` passes it.

    Only ever a shortcut to acceptance: what it refuses goes to the jsonschema validator, which
    names the reason. So it may be stricter (its `$` is Python's `\\Z`), never laxer: whatever it
    and the strict checks pass, the jsonschema validator passes too (tests hold it to that).
    """
    schema = PUBLIC_SCHEMAS[document]
    if definition is not None:
        schema = {key: schema[key] for key in ("$schema", "$id", "$defs")} | {"$ref": f"#/$defs/{definition}"}
    validate = fastjsonschema.compile(
        schema,
        handlers={"": PUBLIC_SCHEMAS.__getitem__, "http": _no_fetch, "https": _no_fetch},
        use_default=False,  # the overdraft_limit default must not be written into the payload
        use_formats=False,
    )

    def passes(data: dict[str, Any]) -> bool:
        try:
            validate(data)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return passes


_TRANSFER_CHECK: Final = _compiled("transfer-command.json")
_BATCH_CHECK: Final = _compiled("batch-command.json")
_PENDING_CHECKS: Final = {name: _compiled("pending-command.json", name) for name in PENDING_COMMAND_TYPES}
_ACCOUNT_CHECKS: Final = {name: _compiled("account-command.json", name) for name in ACCOUNT_COMMAND_TYPES}

# The reason for an error in a field; `amount` says more, by the keyword that failed.
_FIELD_REASONS: Final = {
    "type": "unknown_message_type",
    "v": "unsupported_version",
    "transfer_id": "invalid_transfer_id",
    "command_id": "invalid_command_id",
    "account_id": "invalid_account_id",
    "debit_account": "invalid_account_id",
    "credit_account": "invalid_account_id",
    "amount": "invalid_amount",
    "overdraft_limit": "invalid_overdraft_limit",
    "currency": "unknown_currency",
    "metadata": "invalid_metadata",
    "pending": "invalid_pending",
    "pending_id": "invalid_pending_id",
    "batch_id": "invalid_batch_id",
    "transfers": "invalid_batch_size",
    "linked": "invalid_linked",
}
_AMOUNT_REASONS: Final = {"minimum": "amount_not_positive", "maximum": "amount_above_limit"}
_OBJECT_REASONS: Final = {"required": "missing_field", "additionalProperties": "unknown_field"}


def _reason_for(error: ValidationError) -> str:
    if not error.path:
        return _OBJECT_REASONS.get(str(error.validator), "not_an_object")
    path = list(error.path)
    if path[0] == "transfers" and len(path) == 2:  # a leg that is no object, or lacks or adds a field
        return _OBJECT_REASONS.get(str(error.validator), "invalid_batch_size")
    if path[0] == "transfers" and len(path) > 2:  # a leg's field: the reason a transfer's would get
        path = path[2:]
    name = str(path[0])
    if name == "amount":
        return _AMOUNT_REASONS.get(str(error.validator), "invalid_amount")
    return _FIELD_REASONS[name]


# --- what JSON Schema (as the jsonschema package runs it) lets through ---------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A UUID as other tools write it: any case, optional urn:uuid:, optional braces, dashes or none.
_OTHER_UUID_SPELLING = re.compile(
    r"(?:urn:uuid:)?(\{)?[0-9a-f]{8}(-?)[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12}(?(1)\})",
    re.IGNORECASE,
)


def _uuid(value: object) -> bool:
    # fullmatch: the schema's `$` is Python's here, which also matches before a final "\n"
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def _account_id(value: object) -> bool:
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None


def _integer(value: object) -> bool:
    # JSON Schema counts 1000.0 (and 1e3, read as 1000.0) as an integer; the contract does not
    return type(value) is int


def _storable(value: object) -> bool:
    """Metadata must be text PostgreSQL can store (accounts keep theirs in a jsonb column): JSON
    may write a lone surrogate ("\\ud800", which UTF-8 cannot carry) or NUL ("\\u0000", which
    jsonb refuses), and a shard would then fail on the command instead of rejecting it."""
    if not isinstance(value, dict):
        return False
    try:
        for key, text in value.items():
            if "\x00" in key or "\x00" in text:
                return False
            key.encode()
            text.encode()
    except UnicodeEncodeError:
        return False
    return True


_STRICT_CHECKS: Final[dict[str, Callable[[object], bool]]] = {
    "v": _integer,
    "transfer_id": _uuid,
    "command_id": _uuid,
    "account_id": _account_id,
    "debit_account": _account_id,
    "credit_account": _account_id,
    "amount": _integer,
    "overdraft_limit": _integer,
    "metadata": _storable,
    "pending": lambda v: isinstance(v, dict) and _integer(v.get("timeout_ms")),
    "pending_id": _uuid,
}


def _strictly_invalid(data: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The first field, in contract order, that the schema accepted but the contract does not."""
    for name in names:
        check = _STRICT_CHECKS.get(name)  # none for currency: the enum compares exactly
        if check is not None and name in data and not check(data[name]):
            return name
    return None


def _read_object(raw: bytes, id_field: str, limit: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    return read_object(raw, id_field, limit=limit, max_depth=MAX_DEPTH, valid_id=_uuid)


def _readable(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if _uuid(value) else None


def _spelled_otherwise(data: dict[str, Any], name: str) -> str | None:
    """The id as sent when it is a UUID in a spelling other than the contract's (at most 47
    characters, printable ASCII: safe to echo in a result)."""
    value = data.get(name)
    if isinstance(value, str) and not _uuid(value) and _OTHER_UUID_SPELLING.fullmatch(value):
        return value
    return None


def _schema_reason(
    check: Callable[[dict[str, Any]], bool],
    validator: Draft202012Validator,
    data: dict[str, Any],
    names: tuple[str, ...],
) -> tuple[str, str] | None:
    """(reason, detail) for the first thing wrong, or None. `check` (compiled) clears the common
    case, a valid command; anything else is judged by `validator` and the strict checks alone."""
    if check(data) and _strictly_invalid(data, names) is None:
        return None
    return _reference_reason(validator, data, names)


def _reference_reason(
    validator: Draft202012Validator, data: dict[str, Any], names: tuple[str, ...]
) -> tuple[str, str] | None:
    error = next(validator.iter_errors(data), None)
    if error is not None:
        return _reason_for(error), error.message[:300]
    name = _strictly_invalid(data, names)
    if name is not None:
        return _FIELD_REASONS[name], f"{name} is invalid: {data[name]!r:.200}"
    return None


# --- the parsers -----------------------------------------------------------------------------------

_TRANSFER_FIELDS: Final = (
    "v", "transfer_id", "debit_account", "credit_account", "amount", "currency", "metadata", "pending",
)  # fmt: skip


def parse_transfer(raw: bytes, *, max_amount: int) -> TransferCommand:
    """Bytes from ledger.transfers -> a TransferFunds (or a post or void of a pending one), or
    PublicRejection with a stable reason.

    `max_amount` is the per-transfer limit, at most 2**63-1 (which the schema enforces anyway).
    """
    try:
        # Read up to a batch's bound; any other command is refused above its own once its type is
        # known, with the verdict it always had (a payload too large has no readable id).
        data = _read_object(raw, "transfer_id", MAX_BATCH_PAYLOAD_BYTES)
    except Unreadable as e:
        if len(raw) > MAX_PAYLOAD_BYTES:  # too large for anything but a batch, and no batch
            raise _too_large(raw) from None
        raise PublicRejection(e.reason, e.readable_id, e.detail, dead_letter_reason=e.letter) from None
    kind = data.get("type")
    if kind == "TransferBatch":
        return _batch_command(data, max_amount)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise _too_large(raw)
    if isinstance(kind, str) and kind in PENDING_COMMAND_TYPES:
        return _pending_command(data, PENDING_COMMAND_TYPES[kind], max_amount)
    failure = _schema_reason(_TRANSFER_CHECK, _TRANSFER_VALIDATOR, data, _TRANSFER_FIELDS)
    if failure is not None:
        raise PublicRejection(
            failure[0], _readable(data, "transfer_id"), failure[1],
            id_as_sent=_spelled_otherwise(data, "transfer_id"),
        )  # fmt: skip
    command = TransferFunds(
        transfer_id=data["transfer_id"],
        debit_account=data["debit_account"],
        credit_account=data["credit_account"],
        amount=data["amount"],
        currency=data["currency"],
        metadata=data.get("metadata", {}),
        pending_timeout_ms=data["pending"]["timeout_ms"] if "pending" in data else None,
    )
    if command.debit_account == command.credit_account:
        raise PublicRejection("same_account", command.transfer_id, f"{command.debit_account} on both sides")
    if command.amount > max_amount:
        raise PublicRejection(
            "amount_above_limit", command.transfer_id, f"{command.amount} is above the limit {max_amount}"
        )
    return command


def _pending_command(data: dict[str, Any], cls: type[PendingCommand], max_amount: int) -> PendingCommand:
    kind = WIRE_TYPES[cls]
    names = ("v", *MESSAGE_FIELDS[cls])
    failure = _schema_reason(_PENDING_CHECKS[kind], _PENDING_VALIDATORS[kind], data, names)
    if failure is not None:
        raise PublicRejection(
            failure[0], _readable(data, "transfer_id"), failure[1],
            id_as_sent=_spelled_otherwise(data, "transfer_id"),
        )  # fmt: skip
    command = cls(**{name: data[name] for name in MESSAGE_FIELDS[cls] if name in data})
    amount = getattr(command, "amount", None)
    if amount is not None and amount > max_amount:
        raise PublicRejection(
            "amount_above_limit", command.transfer_id, f"{amount} is above the limit {max_amount}"
        )
    return command


def _too_large(raw: bytes) -> PublicRejection:
    return PublicRejection("payload_too_large", None, f"{len(raw)} bytes, at most {MAX_PAYLOAD_BYTES}")


_BATCH_FIELDS: Final = ("v", "batch_id", "transfers", "linked", "metadata", "pending")


def _batch_command(data: dict[str, Any], max_amount: int) -> TransferBatch:
    """A TransferBatch, or PublicRejection (under the batch id when readable): the schema, then
    each leg's fields as strictly as a transfer's, then what no schema says."""
    failure = _schema_reason(_BATCH_CHECK, _BATCH_VALIDATOR, data, _BATCH_FIELDS)
    batch_id = _readable(data, "batch_id")
    if failure is not None:
        raise PublicRejection(
            failure[0], batch_id, failure[1], id_as_sent=_spelled_otherwise(data, "batch_id")
        )
    assert batch_id is not None  # the schema requires a valid one
    legs = data["transfers"]
    for i, leg in enumerate(legs):
        name = _strictly_invalid(leg, LEG_FIELDS)
        if name is not None:
            raise PublicRejection(_FIELD_REASONS[name], batch_id, f"transfers[{i}].{name} is invalid")
        if leg["debit_account"] == leg["credit_account"]:
            raise PublicRejection(
                "same_account", batch_id, f"transfers[{i}]: {leg['debit_account']} on both sides"
            )
        if leg["amount"] > max_amount:
            raise PublicRejection(
                "amount_above_limit", batch_id, f"transfers[{i}]: above the limit {max_amount}"
            )
    ids = [leg["transfer_id"] for leg in legs]
    if len(set(ids)) != len(ids) or batch_id in ids:
        raise PublicRejection("duplicate_leg_id", batch_id, "two legs (or a leg and the batch) share an id")
    return TransferBatch(
        batch_id, tuple(BatchLeg(**{n: leg[n] for n in LEG_FIELDS}) for leg in legs), True,
        metadata=data.get("metadata", {}),
        pending_timeout_ms=data["pending"]["timeout_ms"] if "pending" in data else None,
    )  # fmt: skip


def parse_account_command(raw: bytes) -> AccountCommand:
    """Bytes from ledger.account-commands -> a typed command, or PublicRejection (transfer_id None;
    command_id and account_id set when readable)."""
    try:
        data = _read_object(raw, "command_id")
    except Unreadable as e:
        raise PublicRejection(
            e.reason, None, e.detail, command_id=e.readable_id, dead_letter_reason=e.letter
        ) from None
    outcome = _account_command(data)
    if not isinstance(outcome, tuple):
        return outcome
    account_id = data.get("account_id")
    raise PublicRejection(
        outcome[0],
        None,
        outcome[1],
        command_id=_readable(data, "command_id"),
        account_id=account_id if _account_id(account_id) else None,
    )


def _account_command(data: dict[str, Any]) -> AccountCommand | tuple[str, str]:
    """The command, or (reason, detail). The type picks the schema, so it is judged first."""
    if "type" not in data:
        return "missing_field", "'type' is a required property"
    kind = data["type"]
    if not isinstance(kind, str) or kind not in ACCOUNT_COMMAND_TYPES:
        return "unknown_message_type", f"type {kind!r:.100}"
    cls = ACCOUNT_COMMAND_TYPES[kind]
    failure = _schema_reason(
        _ACCOUNT_CHECKS[kind], _ACCOUNT_VALIDATORS[kind], data, ("v", *MESSAGE_FIELDS[cls])
    )
    if failure is not None:
        return failure
    return cls(**{name: data[name] for name in MESSAGE_FIELDS[cls] if name in data})
