"""The bench's ledger target on the linked path, against a fake broker that answers a batch once,
under its batch id, with every leg's state, as the coordinator does."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import orjson
import pytest

from deploy.bench.targets import LedgerTarget
from deploy.bench.workload import Move
from infra.config import LedgerConfig


class FakeLedger:
    """Answers a batch once, under its batch id, the way the coordinator does."""

    def __init__(self, target: LedgerTarget, legs_say: str | None = None) -> None:
        self.target = target
        self.legs_say = legs_say
        """None: every leg as the batch; else this state for each (a broken ledger)."""
        self.sent: list[dict[str, Any]] = []
        self.ids = itertools.count()

    async def enqueue(self, topic: str, key: str, value: bytes) -> None:
        command = orjson.loads(value)
        self.sent.append(command)
        legs = command["transfers"]
        failed = next((leg for leg in legs if leg["amount"] >= 1000), None)
        state = "completed" if failed is None else "rejected"
        result = {
            "transfer_id": command["batch_id"],
            "message_id": str(next(self.ids)),
            "state": state,
            "reason": None if failed is None else "insufficient_funds",
            "failed_leg": None if failed is None else failed["transfer_id"],
            "legs": [{"transfer_id": leg["transfer_id"], "state": self.legs_say or state} for leg in legs],
        }
        asyncio.get_running_loop().call_soon(self.target.client._record, orjson.dumps(result))


def _target() -> LedgerTarget:
    return LedgerTarget(LedgerConfig("postgresql://unused", "localhost:1"), [0], [], 0)


def _batch(*amounts: int) -> Move:
    first, *rest = (
        Move(f"d{i}", f"c{i}", a, cross_shard=bool(i), debit_shard=i) for i, a in enumerate(amounts)
    )
    return replace(first, linked=tuple(rest))


@pytest.mark.parametrize(
    ("amounts", "outcome"),
    [((10, 20, 30), "linked completed"), ((10, 5000), "linked rejected (insufficient_funds)")],
)
async def test_a_batch_is_sent_once_keyed_by_its_id_and_answered_once(
    amounts: tuple[int, ...], outcome: str
) -> None:
    target = _target()
    fake = FakeLedger(target)
    target.client.enqueue = fake.enqueue  # type: ignore[method-assign]
    assert await asyncio.wait_for(await target.submit(_batch(*amounts)), 1) == outcome
    (sent,) = fake.sent
    assert sent["type"] == "TransferBatch"
    assert sent["linked"] is True
    assert [(leg["debit_account"], leg["amount"]) for leg in sent["transfers"]] == [
        (f"d{i}", a) for i, a in enumerate(amounts)
    ]
    assert len({leg["transfer_id"] for leg in sent["transfers"]} | {sent["batch_id"]}) == len(amounts) + 1
    assert not target.pending


async def test_a_batch_whose_legs_disagree_with_it_fails_the_run() -> None:
    target = _target()
    target.client.enqueue = FakeLedger(target, legs_say="rejected").enqueue  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match=r"batch .* completed but its legs say"):
        await asyncio.wait_for(await target.submit(_batch(1, 2, 3)), 1)
