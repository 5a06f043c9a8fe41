"""Telemetry on real Kafka (issue 16, item 2): shard workers send their own figures, and the
coordinator sends each shard's reply time as it waits on it, from which the monitor tells a slow
shard (a worker stopped and resumed in short cycles keeps its own batches quick)."""

from __future__ import annotations

from deploy.ledger_init import init_ledger
from schemas.telemetry import LOOP_LAG_MS, REPLY_P99_MS, decode_telemetry
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    fresh_config,
    open_and_pay,
    read_topic,
    running_ledger,
)


async def test_the_coordinator_sends_each_shards_reply_time_and_each_shard_its_own_figures(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    ns = config.namespace
    (payee,) = accounts_on(pmap, 1 - pmap.shard_for("issuer"), 1, prefix="payee")
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        done = await open_and_pay(config, results, {"issuer": 10**9, payee: 0}, payee, payments=5)
        assert {r["state"] for r in done.values()} == {"completed"}
        records = await read_topic(config, ns.telemetry, want=10**6, within_s=3)

    sent = [decode_telemetry(r.value or b"") for r in records]
    replies = {
        (s.shard, s.value) for t in sent if t.process.startswith("coordinator-") for s in t.samples
        if s.metric == REPLY_P99_MS
    }  # fmt: skip
    assert {shard for shard, _ in replies} == {0, 1}, "both shards answered a cross-shard saga"
    assert all(0 <= took < 60_000 for _, took in replies)
    own = {(s.shard, s.metric) for t in sent if t.process.startswith("shard-") for s in t.samples}
    assert {shard for shard, _ in own} == {0, 1}
    assert {(0, LOOP_LAG_MS), (1, LOOP_LAG_MS)} <= own, "each worker says how late its loop ran"
