"""The compiled contract (fastjsonschema over schemas/json) is only a shortcut to acceptance: every
public command gets exactly the verdict, reason, ids and detail that the jsonschema validator alone
gives, the reference path schemas/public_parse.py keeps (issue 14, item 3)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import public, public_parse
from schemas.currencies import CURRENCIES
from schemas.public import PublicRejection, encode_public
from schemas.public_parse import parse_account_command, parse_transfer
from tests.bad_inputs import BAD_TRANSFERS, TEST_MAX_AMOUNT, VALID_TRANSFER, BadInput, encoded, transfer
from tests.unit.test_public_contract import BAD_ACCOUNT_COMMANDS, STRICTER, VALID_TRANSFERS, transfers

Parse = Callable[[bytes], object]


def _parse_transfer(raw: bytes) -> object:
    return parse_transfer(raw, max_amount=TEST_MAX_AMOUNT)


def _refuse(data: dict[str, Any]) -> bool:
    return False


@contextmanager
def reference_only() -> Iterator[None]:
    """The parsers as they were before the compiled check: jsonschema judges every command."""
    with (
        mock.patch.object(public_parse, "_TRANSFER_CHECK", _refuse),
        mock.patch.dict(public_parse._ACCOUNT_CHECKS, dict.fromkeys(public_parse._ACCOUNT_CHECKS, _refuse)),
    ):
        yield


@contextmanager
def jsonschema_forbidden() -> Iterator[None]:
    def called(data: object) -> None:
        raise AssertionError(f"the jsonschema validator was consulted for {data!r:.200}")

    with (
        mock.patch.object(public_parse, "_TRANSFER_VALIDATOR", mock.Mock(iter_errors=called)),
        mock.patch.dict(
            public_parse._ACCOUNT_VALIDATORS,
            {name: mock.Mock(iter_errors=called) for name in public_parse._ACCOUNT_VALIDATORS},
        ),
    ):
        yield


def verdict(parse: Parse, raw: bytes) -> tuple[object, ...]:
    try:
        return ("accepted", parse(raw))
    except PublicRejection as e:
        return (
            "rejected", e.reason, e.detail, e.transfer_id, e.id_as_sent, e.command_id, e.account_id,
            e.dead_letter_reason,
        )  # fmt: skip


def assert_same_verdict(parse: Parse, raw: bytes) -> tuple[object, ...]:
    new = verdict(parse, raw)
    with reference_only():
        old = verdict(parse, raw)
    assert new == old, raw[:300]
    return new


# --- the tables -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_TRANSFERS, ids=[c.name for c in BAD_TRANSFERS])
def test_every_bad_transfer_keeps_its_verdict(case: BadInput) -> None:
    assert assert_same_verdict(_parse_transfer, case.raw)[:2] == ("rejected", case.reason)


@pytest.mark.parametrize(("raw", "reason"), [c[1:] for c in STRICTER], ids=[c[0] for c in STRICTER])
def test_what_only_the_strict_checks_refuse_keeps_its_verdict(raw: bytes, reason: str) -> None:
    assert assert_same_verdict(_parse_transfer, raw)[:2] == ("rejected", reason)


@pytest.mark.parametrize("case", BAD_ACCOUNT_COMMANDS, ids=[c[0] for c in BAD_ACCOUNT_COMMANDS])
def test_every_bad_account_command_keeps_its_verdict(case: tuple[str, bytes, str, Any, Any]) -> None:
    assert assert_same_verdict(parse_account_command, case[1])[:2] == ("rejected", case[2])


@pytest.mark.parametrize("payload", [c[1] for c in VALID_TRANSFERS], ids=[c[0] for c in VALID_TRANSFERS])
def test_a_valid_transfer_never_reaches_jsonschema(payload: dict[str, Any]) -> None:
    expected = assert_same_verdict(_parse_transfer, encoded(payload))
    assert expected[0] == "accepted"
    with jsonschema_forbidden():
        assert verdict(_parse_transfer, encoded(payload)) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "OpenAccount", "v": 1, "command_id": transfer("x")["transfer_id"], "account_id": "alice",
         "currency": "EUR"},
        {"type": "OpenAccount", "v": 1, "command_id": transfer("y")["transfer_id"], "account_id": "alice",
         "currency": "JPY", "overdraft_limit": 2**63 - 1, "metadata": {"k": "v"}},
        {"type": "CloseAccount", "v": 1, "command_id": transfer("z")["transfer_id"], "account_id": "a.b-c"},
    ],
)  # fmt: skip
def test_a_valid_account_command_never_reaches_jsonschema(payload: dict[str, Any]) -> None:
    expected = assert_same_verdict(parse_account_command, encoded(payload))
    assert expected[0] == "accepted"
    with jsonschema_forbidden():
        assert verdict(parse_account_command, encoded(payload)) == expected


def test_the_compiled_check_leaves_the_payload_as_it_was() -> None:
    """fastjsonschema writes a schema's defaults into the data unless told not to (overdraft_limit)."""
    data = {"type": "OpenAccount", "v": 1, "command_id": transfer("d")["transfer_id"], "account_id": "a",
            "currency": "EUR"}  # fmt: skip
    assert public_parse._ACCOUNT_CHECKS["OpenAccount"](data)
    assert "overdraft_limit" not in data


# --- generated near misses ----------------------------------------------------------------------------

_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)
_text = st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\n", "-", "é"]), max_size=70)


def _uuid_like() -> st.SearchStrategy[object]:
    canonical = st.uuids().map(str)
    return st.one_of(
        canonical,
        canonical,
        canonical.map(str.upper),
        canonical.map(lambda u: u.replace("-", "")),
        canonical.map(lambda u: u + "\n"),
        canonical.map(lambda u: "{" + u + "}"),
        canonical.map(lambda u: u[1:]),
        _text,
        _junk,
    )


_account = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,64}\n?", fullmatch=True),
    _text,
    _junk,
)
_boundaries = [0, 1, -1, TEST_MAX_AMOUNT, TEST_MAX_AMOUNT + 1, 2**63 - 1, 2**63, 10**20, -(10**20)]
_number = st.one_of(
    st.sampled_from(_boundaries),
    st.integers(-5, 10**13),
    st.sampled_from([1000.0, 1.5, 0.0, 1e20, True, False]),
    _junk,
)
_currency = st.one_of(
    st.sampled_from(sorted(CURRENCIES)), st.sampled_from(sorted(CURRENCIES)).map(str.lower), _text, _junk
)
_metadata = st.one_of(
    st.dictionaries(_text, _text, max_size=17),
    st.dictionaries(st.text(max_size=66), st.text(max_size=258) | _junk, max_size=17),
    st.dictionaries(st.sampled_from(["k" * 64, "k" * 65, "a"]), st.sampled_from(["v" * 256, "v" * 257, ""])),
    _junk,
)  # fmt: skip
_version = st.sampled_from([1, 1, 1, 1.0, True, 2, 0, "1", None])


def _near_miss(
    fields: dict[str, st.SearchStrategy[object]], good: dict[str, object]
) -> st.SearchStrategy[bytes]:
    """A payload whose every field is mostly good, sometimes a near miss; fields may go missing or
    unknown ones appear; written compactly or not, ASCII-escaped or not."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        payload: dict[str, object] = {}
        for name, strategy in fields.items():
            if draw(st.integers(0, 19)) == 0:
                continue  # missing
            payload[name] = draw(strategy) if draw(st.integers(0, 3)) == 0 else good[name]
        if draw(st.integers(0, 19)) == 0:
            payload[draw(st.sampled_from(["note", "message_id", "Amount", "status"]))] = draw(_junk)
        text = json.dumps(payload, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
        return text.encode("utf-8", "surrogatepass")  # a lone surrogate unescaped is not UTF-8: a case too

    return build()


_TRANSFER_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "type": st.sampled_from(["TransferFunds", "OpenAccount", "transferFunds", "", None, 1]),
    "v": _version,
    "transfer_id": _uuid_like(),
    "debit_account": _account,
    "credit_account": _account,
    "amount": _number,
    "currency": _currency,
    "metadata": _metadata,
}
_GOOD_TRANSFER = {**json.loads(VALID_TRANSFER), "metadata": {"order": "A-1"}}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_near_miss(_TRANSFER_FIELDS, _GOOD_TRANSFER))
def test_a_generated_transfer_gets_the_reference_verdict(raw: bytes) -> None:
    assert_same_verdict(_parse_transfer, raw)


_STATUS_FIELDS: dict[str, st.SearchStrategy[object]] = {
    "type": st.sampled_from([*public.ACCOUNT_COMMAND_TYPES, "TransferFunds", None]),
    "v": _version,
    "command_id": _uuid_like(),
    "account_id": _account,
}
_OPEN_FIELDS = {**_STATUS_FIELDS, "currency": _currency, "overdraft_limit": _number, "metadata": _metadata}
_GOOD_OPEN: dict[str, object] = {
    "type": "OpenAccount", "v": 1, "command_id": transfer("g")["transfer_id"], "account_id": "alice",
    "currency": "EUR", "overdraft_limit": 0, "metadata": {},
}  # fmt: skip
_account_commands = _near_miss(_OPEN_FIELDS, _GOOD_OPEN) | st.sampled_from(
    ["FreezeAccount", "UnfreezeAccount", "CloseAccount"]
).flatmap(lambda kind: _near_miss(_STATUS_FIELDS, {**_GOOD_OPEN, "type": kind}))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_account_commands)
def test_a_generated_account_command_gets_the_reference_verdict(raw: bytes) -> None:
    assert_same_verdict(parse_account_command, raw)


@settings(max_examples=100, deadline=None)
@given(transfers)
def test_every_valid_transfer_takes_the_compiled_path(command: public.TransferFunds) -> None:
    with jsonschema_forbidden():
        assert parse_transfer(encode_public(command), max_amount=TEST_MAX_AMOUNT) == command
