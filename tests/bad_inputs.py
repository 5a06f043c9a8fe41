"""Bad public transfer commands, as the raw bytes a producer might send, and what each must become.

One table for two kinds of test: the unit tests feed each case to `parse_transfer(raw,
max_amount=TEST_MAX_AMOUNT)`; the integration tests send the same bytes through Kafka and expect a
`rejected` TransferResult with `reason` for `readable_id` when it is set, else a dead letter.

Every case carries its own transfer id (a uuid5 of its name), so one run can send the whole table
to one ledger without two cases sharing an id. All name the accounts DEBIT_ACCOUNT and
CREDIT_ACCOUNT in CURRENCY, which an integration test opens first.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Final

TEST_MAX_AMOUNT: Final = 10**12
DEBIT_ACCOUNT: Final = "alice"
CREDIT_ACCOUNT: Final = "bob"
CURRENCY: Final = "EUR"
MAX_PAYLOAD_BYTES: Final = 16 * 1024  # as schemas.public says; restated so the table stands alone

_NAMESPACE: Final = uuid.UUID("9a4f3c2e-1b7d-4e8a-9c6f-2d5b8e1a7f30")
_LITERAL: Final = "@literal@"


@dataclass(frozen=True, slots=True)
class BadInput:
    name: str
    raw: bytes
    reason: str
    readable_id: str | None
    """The transfer id a rejected result is published for (for a UUID in another spelling, the id
    as sent); None when the bytes are dead-lettered."""


def transfer_id_for(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name))


def transfer(name: str, **changes: object) -> dict[str, Any]:
    """A valid TransferFunds payload of its own id, with `changes` applied."""
    payload: dict[str, Any] = {
        "type": "TransferFunds",
        "v": 1,
        "transfer_id": transfer_id_for(name),
        "debit_account": DEBIT_ACCOUNT,
        "credit_account": CREDIT_ACCOUNT,
        "amount": 1050,
        "currency": CURRENCY,
    }
    return {**payload, **changes}


def encoded(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


VALID_TRANSFER: Final = encoded(transfer("valid transfer"))
VALID_TRANSFER_WITH_SQL_METADATA: Final = encoded(
    transfer("valid transfer with SQL metadata", metadata={"note": "x'; DROP TABLE accounts;--"})
)


# --- building the table ---------------------------------------------------------------------------


def _readable(name: str, reason: str, **changes: object) -> BadInput:
    """A JSON object with a valid transfer id: the ledger answers with a rejected result."""
    return BadInput(name, encoded(transfer(name, **changes)), reason, transfer_id_for(name))


def _unreadable(name: str, raw: bytes, reason: str) -> BadInput:
    return BadInput(name, raw, reason, None)


def with_literal(name: str, field: str, literal: str) -> bytes:
    """The payload with `field` written as `literal`, which json.dumps could not (or would not) write."""
    return encoded(transfer(name, **{field: _LITERAL})).replace(f'"{_LITERAL}"'.encode(), literal.encode())


def _literal(name: str, field: str, literal: str, reason: str, *, readable: bool = True) -> BadInput:
    return BadInput(
        name, with_literal(name, field, literal), reason, transfer_id_for(name) if readable else None
    )


def _without(name: str, field: str) -> BadInput:
    payload = {k: v for k, v in transfer(name).items() if k != field}
    readable = transfer_id_for(name) if field != "transfer_id" else None
    return BadInput(name, encoded(payload), "missing_field", readable)


def padded_to(name: str, size: int) -> bytes:
    raw = encoded(transfer(name))
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def _not_json() -> list[BadInput]:
    def valid(name: str) -> bytes:
        return encoded(transfer(name))

    return [
        _unreadable("not JSON", b"transfer 1050 EUR from alice to bob", "malformed_json"),
        _unreadable("empty payload", b"", "malformed_json"),
        _unreadable("only whitespace", b" \n\t ", "malformed_json"),
        _unreadable("truncated JSON", valid("truncated JSON")[:60], "malformed_json"),
        _unreadable("truncated by one byte", valid("truncated by one byte")[:-1], "malformed_json"),
        _unreadable("trailing garbage", valid("trailing garbage") + b"x", "malformed_json"),
        _unreadable("two objects", valid("two objects") * 2, "malformed_json"),
        _unreadable("single quotes", valid("single quotes").replace(b'"', b"'"), "malformed_json"),
        _unreadable(
            "invalid UTF-8", valid("invalid UTF-8").replace(b'"bob"', b'"b\xffob"'), "malformed_json"
        ),
        _unreadable(
            "UTF-8 encoded surrogate",
            encoded(transfer("UTF-8 encoded surrogate", metadata={"k": "@"})).replace(
                b'"@"', b'"\xed\xa0\x80"'
            ),
            "malformed_json",
        ),
        _unreadable("UTF-16", json.dumps(transfer("UTF-16")).encode("utf-16"), "malformed_json"),
        _unreadable(
            "UTF-8 byte order mark", b"\xef\xbb\xbf" + valid("UTF-8 byte order mark"), "malformed_json"
        ),
        _unreadable(
            "raw NUL byte in the transfer id",
            valid("raw NUL byte in the transfer id").replace(b'"transfer_id": "', b'"transfer_id": "\x00'),
            "malformed_json",
        ),
        _literal("amount NaN", "amount", "NaN", "malformed_json", readable=False),
        _literal("amount Infinity", "amount", "Infinity", "malformed_json", readable=False),
        _literal("amount -Infinity", "amount", "-Infinity", "malformed_json", readable=False),
        # Duplicate keys: which value counts would depend on the reader. The transfer id is still
        # readable when it is not one of the duplicated keys.
        BadInput(
            "duplicate amount",
            valid("duplicate amount").replace(b'"amount": 1050', b'"amount": 1, "amount": 1050'),
            "malformed_json",
            transfer_id_for("duplicate amount"),
        ),
        BadInput(
            "duplicate metadata key",
            encoded(transfer("duplicate metadata key", metadata={"k": "a"})).replace(
                b'{"k": "a"}', b'{"k": "a", "k": "b"}'
            ),
            "malformed_json",
            transfer_id_for("duplicate metadata key"),
        ),
        _unreadable(
            "duplicate transfer id",
            valid("duplicate transfer id").replace(
                b'"type"', f'"transfer_id": "{transfer_id_for("duplicate transfer id")}", "type"'.encode()
            ),
            "malformed_json",
        ),
    ]


def _not_objects() -> list[BadInput]:
    return [
        _unreadable("array", b"[" + encoded(transfer("array")) + b"]", "not_an_object"),
        _unreadable("string", b'"TransferFunds"', "not_an_object"),
        _unreadable("number", b"1050", "not_an_object"),
        _unreadable("null", b"null", "not_an_object"),
        _unreadable("true", b"true", "not_an_object"),
    ]


def _fields() -> list[BadInput]:
    cases = [
        _without(f"missing {field}", field)
        for field in ("type", "v", "transfer_id", "debit_account", "credit_account", "amount", "currency")
    ]
    cases += [
        _readable("unknown field note", "unknown_field", note="hi"),
        _readable("unknown field message_id", "unknown_field", message_id=transfer_id_for("m")),
        _readable("unknown field Amount", "unknown_field", Amount=1050),
    ]
    return cases


def _amounts() -> list[BadInput]:
    cases = [
        _readable("amount as a string", "invalid_amount", amount="1050"),
        _readable("amount as a float", "invalid_amount", amount=10.5),
        _literal("amount 1000.0", "amount", "1000.0", "invalid_amount"),
        _literal("amount 1e3", "amount", "1e3", "invalid_amount"),
        _literal("amount 1E3", "amount", "1E3", "invalid_amount"),
        _literal("amount 1e400", "amount", "1e400", "invalid_amount"),
        _readable("amount true", "invalid_amount", amount=True),
        _readable("amount false", "invalid_amount", amount=False),
        _readable("amount null", "invalid_amount", amount=None),
        _readable("amount in a list", "invalid_amount", amount=[1050]),
        _readable("amount in an object", "invalid_amount", amount={"value": 1050}),
        _readable("amount 0", "amount_not_positive", amount=0),
        _literal("amount -0", "amount", "-0", "amount_not_positive"),
        _readable("amount -1", "amount_not_positive", amount=-1),
        _readable("amount -2**63", "amount_not_positive", amount=-(2**63)),
        _readable("amount -10**30", "amount_not_positive", amount=-(10**30)),
        _readable("amount one above the limit", "amount_above_limit", amount=TEST_MAX_AMOUNT + 1),
        _readable("amount 2**63-1", "amount_above_limit", amount=2**63 - 1),
        _readable("amount 2**63", "amount_above_limit", amount=2**63),
        _readable("amount 2**64", "amount_above_limit", amount=2**64),
        _readable("amount 10**30", "amount_above_limit", amount=10**30),
        _literal("amount of 5000 digits", "amount", "9" * 5000, "amount_above_limit"),
        _readable("same account on both sides", "same_account", credit_account=DEBIT_ACCOUNT),
    ]
    return cases


def _currencies() -> list[BadInput]:
    bad: list[object] = ["ZZZ", "eur", "Eur", "EURO", "EU", "", "EUR\n", None, 978]
    return [_readable(f"currency {c!r}", "unknown_currency", currency=c) for c in bad]


def _metadata() -> list[BadInput]:
    bad: list[object] = [
        {str(i): "v" for i in range(17)},
        {"k": "v" * 257},
        {"k" * 65: "v"},
        {"k": 1},
        {"k": None},
        {"k": {"nested": "v"}},
        ["k", "v"],
        "k=v",
        None,
    ]
    cases = [_readable(f"metadata {m!r:.40}", "invalid_metadata", metadata=m) for m in bad]
    cases += [
        # "\ud800" is valid JSON but no text: UTF-8 cannot carry a lone surrogate
        _literal("metadata with a lone surrogate", "metadata", '{"k": "\\ud800"}', "invalid_metadata"),
        # NUL is valid JSON, but PostgreSQL text and jsonb cannot hold it
        _readable("metadata value with NUL", "invalid_metadata", metadata={"k": "a\x00b"}),
        _readable("metadata key with NUL", "invalid_metadata", metadata={"k\x00": "v"}),
        # the deepest a payload may go (8) is still not valid metadata
        _literal(
            "metadata nested 8 deep", "metadata", '{"k": ' + "[" * 6 + "]" * 6 + "}", "invalid_metadata"
        ),
    ]
    return cases


def _sizes() -> list[BadInput]:
    return [
        _unreadable("one byte over 16 KiB", padded_to("a", MAX_PAYLOAD_BYTES + 1), "payload_too_large"),
        _unreadable("20000-character metadata", encoded(transfer("b", metadata={"k": "v" * 20000})),
                    "payload_too_large"),
        # The size limit comes first, so the deepest payloads are simply too large ...
        _unreadable("100000 levels of [", b"[" * 100_000, "payload_too_large"),
        # ... and within 16 KiB nesting is refused before the recursive json parser sees it.
        _unreadable("16384 levels of [", b"[" * MAX_PAYLOAD_BYTES, "nesting_too_deep"),
        _unreadable("2500 levels of objects", b'{"a":' * 2500 + b"1" + b"}" * 2500, "nesting_too_deep"),
        _literal(
            "metadata nested 9 deep", "metadata", '{"k": ' + "[" * 7 + "]" * 7 + "}", "nesting_too_deep",
            readable=False,
        ),
    ]  # fmt: skip


_OTHER_SPELLINGS: Final = {2, 3, 4, 5}
"""The cases of `_ids` whose transfer id is a UUID in another spelling: upper-case, no dashes,
braces, urn:uuid:."""


def _ids() -> list[BadInput]:
    def ids(name: str) -> list[object]:
        tid = transfer_id_for(name)
        return [
            "", "not-a-uuid", tid.upper(), tid.replace("-", ""), "{" + tid + "}", "urn:uuid:" + tid,
            tid[:-1], tid + "0", tid + "\n", tid[:8] + "\x00" + tid[9:], tid[:8] + "\x07" + tid[9:],
            "x'; DROP TABLE transfers;--", 123, None, True,
        ]  # fmt: skip

    cases = []
    for i, bad in enumerate(ids("transfer id")):
        name = f"transfer id {i}: {bad!r:.50}"
        raw = encoded(transfer(name, transfer_id=bad))
        if i in _OTHER_SPELLINGS:  # a UUID still: answered under the id as sent (issue 13, item 6)
            assert isinstance(bad, str)
            cases.append(BadInput(name, raw, "invalid_transfer_id", bad))
        else:
            cases.append(_unreadable(name, raw, "invalid_transfer_id"))
    bad_accounts: list[object] = [
        "", "a:b", "transit:EUR", "a" * 65, "-abc", "ab c", "é", "bob\x00", "bob\x00x", "bob\x1b[31m",
        "bob\n", "bob\t", "x'; DROP TABLE accounts;--", 7, None,
    ]  # fmt: skip
    for side in ("debit_account", "credit_account"):
        cases += [_readable(f"{side} {a!r:.40}", "invalid_account_id", **{side: a}) for a in bad_accounts]
    return cases


def _envelopes() -> list[BadInput]:
    types: list[object] = ["OpenAccount", "TransferResult", "transferFunds", "TransferFunds ", "", None, 1]
    versions: list[object] = [2, 0, -1, "1", True, None, 1.5]
    cases = [_readable(f"type {t!r}", "unknown_message_type", type=t) for t in types]
    cases += [_readable(f"version {v!r}", "unsupported_version", v=v) for v in versions]
    cases += [_literal("version 1.0", "v", "1.0", "unsupported_version")]
    return cases


def pending_command(name: str, kind: str = "PostPendingTransfer", **changes: object) -> dict[str, Any]:
    """A valid post (or void) of a pending transfer, of its own id, with `changes` applied."""
    payload = {
        "type": kind,
        "v": 1,
        "transfer_id": transfer_id_for(name),
        "pending_id": transfer_id_for("held"),
    }
    return {**payload, **changes}


def _pending() -> list[BadInput]:
    timeouts: list[object] = [0, -1, 30 * 24 * 3600 * 1000 + 1, "1000", None, True, {}, []]
    cases = [
        _readable(f"pending timeout {t!r}", "invalid_pending", pending={"timeout_ms": t}) for t in timeouts
    ]
    cases += [
        _readable("pending without timeout", "invalid_pending", pending={}),
        _readable("pending with another key", "invalid_pending", pending={"timeout_ms": 5, "then": "post"}),
        _readable("pending as a number", "invalid_pending", pending=30000),
        _literal("pending timeout 1000.0", "pending", '{"timeout_ms": 1000.0}', "invalid_pending"),
    ]

    def command(name: str, reason: str, kind: str = "PostPendingTransfer", **changes: object) -> BadInput:
        return BadInput(name, encoded(pending_command(name, kind, **changes)), reason, transfer_id_for(name))

    for kind in ("PostPendingTransfer", "VoidPendingTransfer"):
        cases += [
            command(f"{kind} pending_id {p!r}", "invalid_pending_id", kind, pending_id=p)
            for p in ("", "not-a-uuid", transfer_id_for("x").upper(), 5, None)
        ]
        cases += [
            command(f"{kind} debit_account 'a:b'", "invalid_account_id", kind, debit_account="a:b"),
            command(f"{kind} with a currency", "unknown_field", kind, currency="EUR"),
            command(f"{kind} metadata 5", "invalid_metadata", kind, metadata=5),
            command(f"{kind} version 2", "unsupported_version", kind, v=2),
        ]
        payload = {
            k: v for k, v in pending_command(f"{kind} without pending_id", kind).items() if k != "pending_id"
        }
        cases.append(BadInput(f"{kind} without pending_id", encoded(payload), "missing_field",
                              transfer_id_for(f"{kind} without pending_id")))  # fmt: skip
    cases += [
        command("post amount 0", "amount_not_positive", amount=0),
        command("post amount 1.5", "invalid_amount", amount=1.5),
        command("post amount over the limit", "amount_above_limit", amount=TEST_MAX_AMOUNT + 1),
        command("void with an amount", "unknown_field", "VoidPendingTransfer", amount=5),
    ]
    return cases


def batch_command(name: str, legs: int = 2, **changes: object) -> dict[str, Any]:
    """A valid linked batch of its own id, `legs` legs between the table's two accounts."""
    body = [
        {"transfer_id": transfer_id_for(f"{name} leg {i}"), "debit_account": DEBIT_ACCOUNT,
         "credit_account": CREDIT_ACCOUNT, "amount": 10 + i, "currency": CURRENCY}
        for i in range(legs)
    ]  # fmt: skip
    payload = {
        "type": "TransferBatch",
        "v": 1,
        "batch_id": transfer_id_for(name),
        "transfers": body,
        "linked": True,
    }
    return {**payload, **changes}


def _batches() -> list[BadInput]:
    def case(name: str, reason: str, payload: dict[str, Any]) -> BadInput:
        return BadInput(name, encoded(payload), reason, transfer_id_for(name))

    def with_leg(name: str, **changes: object) -> dict[str, Any]:
        payload = batch_command(name)
        payload["transfers"][1] |= changes
        return payload

    repeated = batch_command("batch with a leg id twice")
    repeated["transfers"][1]["transfer_id"] = repeated["transfers"][0]["transfer_id"]
    return [
        case("batch of no legs", "invalid_batch_size", batch_command("batch of no legs", 0)),
        case("batch of 101 legs", "invalid_batch_size", batch_command("batch of 101 legs", 101)),
        case("batch with a leg id twice", "duplicate_leg_id", repeated),
        case("batch not linked", "invalid_linked", batch_command("batch not linked", linked=False)),
        case(
            "batch leg of one account",
            "same_account",
            with_leg("batch leg of one account", credit_account=DEBIT_ACCOUNT),
        ),
        case("batch leg amount 0", "amount_not_positive", with_leg("batch leg amount 0", amount=0)),
        case(
            "batch leg in no currency",
            "unknown_currency",
            with_leg("batch leg in no currency", currency="XXY"),
        ),
        case("batch leg with metadata", "unknown_field", with_leg("batch leg with metadata", metadata={})),
        _unreadable("batch id 'x'", encoded(batch_command("batch id x", batch_id="x")), "invalid_batch_id"),
    ]


BAD_TRANSFERS: Final[list[BadInput]] = [
    *_not_json(),
    *_not_objects(),
    *_fields(),
    *_amounts(),
    *_currencies(),
    *_metadata(),
    *_sizes(),
    *_ids(),
    *_envelopes(),
    *_pending(),
    *_batches(),
]
