"""The public contract of linked batches: what a TransferBatch may be, and each refusal's reason."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from schemas.public import MAX_PAYLOAD_BYTES, BatchLeg, PublicRejection, TransferBatch, encode_public
from schemas.public_parse import parse_transfer
from tests.bad_inputs import TEST_MAX_AMOUNT, encoded, padded_to, transfer_id_for

BATCH_ID = transfer_id_for("batch")


def leg(i: int, **changes: object) -> dict[str, Any]:
    body = {"transfer_id": transfer_id_for(f"leg {i}"), "debit_account": f"payer-{i}",
            "credit_account": f"payee-{i}", "amount": 100 + i, "currency": "EUR"}  # fmt: skip
    return {**body, **changes}


def batch(legs: object, **changes: object) -> dict[str, Any]:
    return {
        "type": "TransferBatch",
        "v": 1,
        "batch_id": BATCH_ID,
        "transfers": legs,
        "linked": True,
        **changes,
    }


def refusal(payload: object, raw: bytes | None = None) -> PublicRejection:
    with pytest.raises(PublicRejection) as caught:
        parse_transfer(raw or encoded(payload), max_amount=TEST_MAX_AMOUNT)
    return caught.value


def test_a_batch_reads_and_writes_itself() -> None:
    command = parse_transfer(
        encoded(batch([leg(1), leg(2)], pending={"timeout_ms": 5000})), max_amount=TEST_MAX_AMOUNT
    )
    assert command == TransferBatch(
        BATCH_ID,
        (BatchLeg(transfer_id_for("leg 1"), "payer-1", "payee-1", 101, "EUR"),
         BatchLeg(transfer_id_for("leg 2"), "payer-2", "payee-2", 102, "EUR")),
        True, pending_timeout_ms=5000,
    )  # fmt: skip
    assert parse_transfer(encode_public(command), max_amount=TEST_MAX_AMOUNT) == command
    assert command.transfer_id == BATCH_ID


def test_a_hundred_legs_fit_though_a_transfer_may_not_be_that_large() -> None:
    big = encoded(batch([leg(i, debit_account="d" * 64, credit_account="c" * 64) for i in range(100)]))
    assert len(big) > MAX_PAYLOAD_BYTES
    command = parse_transfer(big, max_amount=TEST_MAX_AMOUNT)
    assert isinstance(command, TransferBatch)
    assert len(command.transfers) == 100
    assert refusal(None, padded_to("large transfer", MAX_PAYLOAD_BYTES + 1)).reason == "payload_too_large"
    assert refusal(None, big[:-1] + b" " * 70_000 + b"}").reason == "payload_too_large"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (batch([]), "invalid_batch_size"),
        (batch([leg(i) for i in range(101)]), "invalid_batch_size"),
        (batch("legs"), "invalid_batch_size"),
        (batch([leg(1), leg(2, transfer_id=transfer_id_for("leg 1"))]), "duplicate_leg_id"),
        (batch([leg(1, transfer_id=BATCH_ID)]), "duplicate_leg_id"),
        (batch([leg(1), leg(2, credit_account="payer-2")]), "same_account"),
        (batch([leg(1, amount=0)]), "amount_not_positive"),
        (batch([leg(1, amount=TEST_MAX_AMOUNT + 1)]), "amount_above_limit"),
        (batch([leg(1, amount="5")]), "invalid_amount"),
        (batch([leg(1, currency="XYZ")]), "unknown_currency"),
        (batch([leg(1, debit_account="a:b")]), "invalid_account_id"),
        (batch([leg(1, transfer_id="not-a-uuid")]), "invalid_transfer_id"),
        (batch([leg(1, metadata={})]), "unknown_field"),
        (batch([{k: v for k, v in leg(1).items() if k != "amount"}]), "missing_field"),
        (batch([leg(1), 7]), "invalid_batch_size"),
        (batch([leg(1)], linked=False), "invalid_linked"),
        (batch([leg(1)], pending={"timeout_ms": 0}), "invalid_pending"),
        ({k: v for k, v in batch([leg(1)]).items() if k != "linked"}, "missing_field"),
    ],
)
def test_each_bad_batch_is_refused_under_its_id_with_its_reason(payload: object, reason: str) -> None:
    refused = refusal(payload)
    assert (refused.reason, refused.transfer_id) == (reason, BATCH_ID)


def test_a_leg_amount_written_as_a_float_is_refused() -> None:
    raw = json.dumps(batch([leg(1, amount="@")])).replace('"@"', "100.0").encode()
    assert refusal(None, raw).reason == "invalid_amount"


def test_a_batch_whose_id_cannot_be_read_is_dead_lettered() -> None:
    refused = refusal(batch([leg(1)], batch_id=str(uuid.uuid4()).upper()))
    assert (refused.reason, refused.transfer_id) == ("invalid_batch_id", None)
    assert refused.id_as_sent is not None  # answered under the id as sent, recorded nowhere
