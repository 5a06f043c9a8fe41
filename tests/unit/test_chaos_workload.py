"""The chaos workload reads results through the LedgerClient: each distinct result once (a
repeated delivery of one message_id is dropped: the checker judges distinct results), with when
each transfer was first answered and when each completed result arrived."""

from __future__ import annotations

import random
from collections import Counter

import orjson

from deploy.bench.workload import Move
from deploy.chaos.checker import Observed, Sent
from deploy.chaos.linked_checker import LegOutcome
from deploy.chaos.linked_workload import LinkedSettings, plan_batch
from deploy.chaos.pending_workload import PendingSettings, plan, sent_record
from deploy.chaos.workload import ChaosClient, ChaosWorkloadSettings
from infra.config import LedgerConfig
from schemas.partitioning import PartitionMap
from schemas.public import PostPendingTransfer, TransferFunds, VoidPendingTransfer, request_fingerprint
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


def test_pending_transfers_are_planned_in_every_way_and_recorded_for_what_they_are() -> None:
    rng, settings = random.Random(5), PendingSettings()
    move = Move("chaos-000001", "chaos-000002", 500, True, 0)
    plans = [plan(move, rng, settings) for _ in range(400)]
    low, high = settings.timeout_ms
    assert all(low <= p.hold.pending_timeout_ms <= high for p in plans if p.hold.pending_timeout_ms)
    assert all(0 <= p.delay_s <= settings.resolve_within_s for p in plans)
    ways = Counter(
        "expire" if p.resolution is None
        else "void" if isinstance(p.resolution, VoidPendingTransfer)
        else "post" if p.resolution.amount is None else "post_less"
        for p in plans
    )  # fmt: skip
    assert set(ways) == {"post", "post_less", "void", "expire"}
    assert min(ways.values()) > 60
    assert all(
        0 < r.amount < 500 for p in plans if isinstance(r := p.resolution, PostPendingTransfer) and r.amount
    )
    assert 40 < sum(p.duplicate for p in plans if p.resolution is not None) < 120
    p = next(p for p in plans if isinstance(p.resolution, PostPendingTransfer) and p.resolution.amount)
    assert isinstance(p.resolution, PostPendingTransfer)
    assert sent_record(p.hold, "original") == Sent(
        p.hold.transfer_id, request_fingerprint(p.hold), "original", "pending", 500
    )
    assert sent_record(p.resolution, "duplicate") == Sent(
        p.resolution.transfer_id, request_fingerprint(p.resolution), "duplicate", "post",
        p.resolution.amount, p.hold.transfer_id,
    )  # fmt: skip
    void = VoidPendingTransfer("v", p.hold.transfer_id)
    assert sent_record(void, "original").command == "void"
    plain = TransferFunds("t", "a", "b", 5, "EUR")
    assert sent_record(plain, "original").command == "transfer"


async def test_a_post_result_is_observed_with_its_amount_and_pending_transfer() -> None:
    config = LedgerConfig("postgresql://a@h/db", "127.0.0.1:1", Namespace("t_"))
    client = ChaosClient(config, PartitionMap.initial(2), ChaosWorkloadSettings(accounts=4))  # never started
    client.ledger._record(
        orjson.dumps({"type": "TransferResult", "message_id": "m1", "transfer_id": "q1", "state": "completed",
                      "reason": None, "request_fingerprint": "fp", "amount": 60, "pending_id": "p1"})
    )  # fmt: skip
    assert client.results == [Observed("q1", "m1", "completed", None, "fp", 60, "p1")]


async def test_linked_batches_are_planned_over_shards_some_doomed_and_recorded_for_what_they_are() -> None:
    config = LedgerConfig("postgresql://a@h/db", "127.0.0.1:1", Namespace("t_"))
    settings = ChaosWorkloadSettings(accounts=12)
    client = ChaosClient(config, PartitionMap.initial(4), settings)  # never started
    moves, rng, linked = client.moves, random.Random(7), LinkedSettings()
    plans = [
        plan_batch(moves.next(), moves.next, moves.shard_of, rng, linked, max_amount=settings.max_amount,
                   too_large=settings.funding * 10, frozen=moves.accounts[3])
        for _ in range(400)
    ]  # fmt: skip
    low, high = linked.legs
    assert {len(p.batch.transfers) for p in plans} == set(range(low, high + 1))
    for p in plans:
        legs = p.batch.transfers
        assert p.batch.linked
        assert len({leg.transfer_id for leg in legs}) == len(legs), "each leg its own id"
        assert {leg.currency for leg in legs} == {"EUR"}
        assert {a for leg in legs for a in (leg.debit_account, leg.credit_account)} <= set(moves.accounts)
        assert len({moves.shard_of[a] for leg in legs for a in (leg.debit_account, leg.credit_account)}) > 1
        too_large = [leg for leg in legs if leg.amount > settings.max_amount]
        assert len(too_large) == (p.doom == "too_large"), "one doomed leg, the others ordinary"
        if p.doom == "to_frozen":
            assert any(leg.credit_account == moves.accounts[3] for leg in legs)
    dooms = Counter(p.doom for p in plans)
    assert 20 < dooms["too_large"] < 70
    assert 20 < dooms["to_frozen"] < 70
    assert 15 < sum(p.duplicate for p in plans) < 70
    p = plans[0]
    assert sent_record(p.batch, "duplicate") == Sent(
        p.batch.batch_id, request_fingerprint(p.batch), "duplicate", "batch", legs=p.batch.transfers
    )


async def test_a_batch_result_is_observed_with_its_legs_and_failed_leg() -> None:
    config = LedgerConfig("postgresql://a@h/db", "127.0.0.1:1", Namespace("t_"))
    client = ChaosClient(config, PartitionMap.initial(2), ChaosWorkloadSettings(accounts=4))  # never started
    legs = [{"transfer_id": "l1", "state": "compensated", "reason": "linked_transfer_failed"},
            {"transfer_id": "l2", "state": "compensated", "reason": "account_frozen"}]  # fmt: skip
    result = {"type": "TransferResult", "message_id": "m1", "transfer_id": "b1", "state": "compensated",
              "reason": "account_frozen", "request_fingerprint": "fp", "legs": legs,
              "failed_leg": "l2"}  # fmt: skip
    client.ledger._record(orjson.dumps(result))
    assert client.results == [
        Observed(
            "b1", "m1", "compensated", "account_frozen", "fp",
            legs=(LegOutcome("l1", "compensated", "linked_transfer_failed"),
                  LegOutcome("l2", "compensated", "account_frozen")),
            failed_leg="l2",
        )
    ]  # fmt: skip
