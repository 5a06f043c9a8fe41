"""The chaos workload reads results through the LedgerClient: each distinct result once (a
repeated delivery of one message_id is dropped: the checker judges distinct results), with when
each transfer was first answered and when each completed result arrived."""

from __future__ import annotations

import orjson

from deploy.chaos.checker import Observed
from deploy.chaos.workload import ChaosClient, ChaosWorkloadSettings
from infra.config import LedgerConfig
from schemas.partitioning import PartitionMap
from schemas.topics import Namespace


def _transfer_result(transfer_id: str, message_id: str, state: str, reason: str | None = None) -> bytes:
    return orjson.dumps(
        {"type": "TransferResult", "message_id": message_id, "transfer_id": transfer_id, "state": state,
         "reason": reason, "request_fingerprint": f"fp-{transfer_id}"}
    )  # fmt: skip


async def test_each_distinct_result_is_observed_once_with_its_times() -> None:
    config = LedgerConfig("postgresql://a@h/db", "127.0.0.1:1", Namespace("t_"))
    client = ChaosClient(config, PartitionMap.initial(2), ChaosWorkloadSettings(accounts=4))  # never started
    completed = _transfer_result("t1", "m1", "completed")
    deliveries = [
        completed,
        completed,  # the same result again (a relay restarted after sending it): dropped
        _transfer_result("t1", "m2", "rejected", "transfer_id_reused"),
        _transfer_result("t2", "m3", "rejected", "insufficient_funds"),
        orjson.dumps({"type": "AccountResult", "message_id": "m4", "command_id": "c1", "outcome": "done"}),
    ]
    for raw in deliveries:
        client.ledger._record(raw)
    assert client.results == [
        Observed("t1", "m1", "completed", None, "fp-t1"),
        Observed("t1", "m2", "rejected", "transfer_id_reused", "fp-t1"),
        Observed("t2", "m3", "rejected", "insufficient_funds", "fp-t2"),
    ]
    assert set(client.answered_at) == {"t1", "t2"}, "transfers only, each at its first result"
    assert len(client.completed_at) == 1
    assert client.answered_at["t1"] == client.completed_at[0]
    assert (client.ledger.result("c1") or {}).get("outcome") == "done"
