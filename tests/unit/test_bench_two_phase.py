"""The bench's ledger target on the two-phase path, against a fake broker that answers as the
ledger does: a hold's `pending` result, then its post's or void's result and the hold's final one."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest

from deploy.bench.targets import LedgerTarget
from deploy.bench.workload import Move
from infra.config import LedgerConfig

ENDS = {"PostPendingTransfer": "completed", "VoidPendingTransfer": "voided"}


class FakeLedger:
    """Answers what the target enqueues, through the client's own result reading."""

    def __init__(self, target: LedgerTarget, hold_ends: str | None = None) -> None:
        self.target = target
        self.hold_ends = hold_ends
        """None: the hold ends as its post or void says; else this state (a broken ledger)."""
        self.sent: list[dict[str, Any]] = []
        self.ids = itertools.count()

    async def enqueue(self, topic: str, key: str, value: bytes) -> None:
        command = orjson.loads(value)
        self.sent.append(command)
        if command["type"] == "TransferFunds":
            state, reason = (
                ("pending", None) if command["amount"] < 1000 else ("rejected", "insufficient_funds")
            )
            self._answer(command["transfer_id"], state, reason)
        else:
            end = ENDS[command["type"]]
            self._answer(command["transfer_id"], end)
            self._answer(command["pending_id"], self.hold_ends or end)

    def _answer(self, transfer_id: str, state: str, reason: str | None = None) -> None:
        result = {
            "transfer_id": transfer_id,
            "message_id": str(next(self.ids)),
            "state": state,
            "reason": reason,
        }
        asyncio.get_running_loop().call_soon(self.target.client._record, orjson.dumps(result))


def _target() -> LedgerTarget:
    return LedgerTarget(LedgerConfig("postgresql://unused", "localhost:1"), [0], [], 0)


@pytest.mark.parametrize(
    ("resolution", "amount", "outcome", "posted"),
    [
        ("post", 800, "pending post completed", None),
        ("post_half", 801, "pending post half completed", 400),
        ("void", 800, "pending void voided", None),
        ("post", 5000, "pending hold rejected (insufficient_funds)", None),
    ],
)
async def test_a_hold_is_posted_or_voided_once_held_and_ends_with_its_resolution(
    resolution: str, amount: int, outcome: str, posted: int | None
) -> None:
    target = _target()
    fake = FakeLedger(target)
    target.client.enqueue = fake.enqueue  # type: ignore[method-assign]
    move = Move("a", "b", amount, cross_shard=False, debit_shard=0, pending=resolution)  # type: ignore[arg-type]
    assert await asyncio.wait_for(await target.submit(move), 1) == outcome
    hold = fake.sent[0]
    assert hold["pending"] == {"timeout_ms": 60_000}
    if outcome.startswith("pending hold"):
        assert len(fake.sent) == 1, "a refused hold is not posted"
        return
    assert [c["pending_id"] for c in fake.sent[1:]] == [hold["transfer_id"]]
    assert fake.sent[1].get("amount") == posted
    assert not target.pending
    assert not target.finals


async def test_a_hold_that_ends_otherwise_than_its_post_fails_the_run() -> None:
    target = _target()
    target.client.enqueue = FakeLedger(target, hold_ends="expired").enqueue  # type: ignore[method-assign]
    move = Move("a", "b", 10, cross_shard=True, debit_shard=0, pending="post")
    with pytest.raises(RuntimeError, match="ended 'expired' after its post was 'completed'"):
        await asyncio.wait_for(await target.submit(move), 1)
