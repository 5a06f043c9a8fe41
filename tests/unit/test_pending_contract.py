"""The public contract of two-phase transfers: the pending option, post and void, their results."""

from __future__ import annotations

import hashlib
import json

import orjson

from schemas.public import (
    PostPendingTransfer,
    TransferFunds,
    TransferResult,
    VoidPendingTransfer,
    encode_public,
    request_fingerprint,
)
from schemas.public_parse import parse_transfer
from tests.bad_inputs import TEST_MAX_AMOUNT, encoded, pending_command, transfer, transfer_id_for


def parse(payload: object) -> object:
    return parse_transfer(encoded(payload), max_amount=TEST_MAX_AMOUNT)


def test_a_pending_transfer_reads_and_writes_its_timeout_as_an_object() -> None:
    command = parse(transfer("hold", pending={"timeout_ms": 30_000}))
    assert isinstance(command, TransferFunds)
    assert command.pending_timeout_ms == 30_000
    assert orjson.loads(encode_public(command))["pending"] == {"timeout_ms": 30_000}
    assert parse_transfer(encode_public(command), max_amount=TEST_MAX_AMOUNT) == command


def test_a_plain_transfer_has_the_fingerprint_it_had_before_pending_existed() -> None:
    command = parse(transfer("plain"))
    assert isinstance(command, TransferFunds)
    assert "pending" not in orjson.loads(encode_public(command))
    body = {k: v for k, v in transfer("plain").items() if k not in ("type", "v")} | {"metadata": {}}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert request_fingerprint(command) == hashlib.sha256(canonical).hexdigest()
    held = parse(transfer("plain", pending={"timeout_ms": 1}))
    assert isinstance(held, TransferFunds)
    assert request_fingerprint(held) != request_fingerprint(command)


def test_post_and_void_parse_with_and_without_their_optional_fields() -> None:
    post = parse(pending_command("post"))
    assert post == PostPendingTransfer(transfer_id_for("post"), transfer_id_for("held"))
    partial = parse(pending_command("partial", amount=120, debit_account="alice", credit_account="bob"))
    assert partial == PostPendingTransfer(
        transfer_id_for("partial"), transfer_id_for("held"), 120, "alice", "bob"
    )
    void = parse(pending_command("void", "VoidPendingTransfer", metadata={"why": "customer"}))
    assert void == VoidPendingTransfer(
        transfer_id_for("void"), transfer_id_for("held"), metadata={"why": "customer"}
    )
    for command in (post, partial, void):
        assert isinstance(command, (PostPendingTransfer, VoidPendingTransfer))
        assert parse_transfer(encode_public(command), max_amount=TEST_MAX_AMOUNT) == command


def test_a_post_and_a_void_with_the_same_fields_are_different_requests() -> None:
    post = PostPendingTransfer(transfer_id_for("same"), transfer_id_for("held"))
    void = VoidPendingTransfer(transfer_id_for("same"), transfer_id_for("held"))
    assert request_fingerprint(post) != request_fingerprint(void)


def test_a_result_names_the_pending_transfer_only_when_it_resolved_one() -> None:
    plain = TransferResult("m", "t", "completed", None, "f" * 64, "a", "b", 1, "EUR", "2026-01-01T00:00:00Z")
    assert "pending_id" not in orjson.loads(encode_public(plain))
    post = TransferResult(
        "m", "t", "completed", None, "f" * 64, "a", "b", 1, "EUR", "2026-01-01T00:00:00Z", "p"
    )
    assert orjson.loads(encode_public(post))["pending_id"] == "p"
