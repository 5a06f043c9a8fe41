"""Process telemetry (issue 16, item 2): what a shard worker counts, read as once-a-second samples,
and the telemetry contract."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from jsonschema import Draft202012Validator

from coordinator.service.figures import FanOutFigures, ReplyTimes
from infra.figures import MAX_DURATIONS, MIN_COMMANDS_FOR_SHARE, Figures
from schemas.shard_messages import PostTransfer
from schemas.telemetry import (
    CONTRACT,
    REPLY_P99_MS,
    NotTelemetry,
    Sample,
    Telemetry,
    decode_telemetry,
    encode_telemetry,
)
from shards.domain.model import Account
from shards.service.worker import ShardWorker, WorkerSettings
from tests.fakes import FakeCheckpoints, FakeCommandSource, FakeShardStore
from tests.unit.test_internal_auth_edges import ALICE, BOB, NS, PMAP, command_record


def _id() -> str:
    return str(uuid.uuid4())


def test_a_worker_counts_its_commands_rejections_and_batch_time() -> None:
    store = FakeShardStore([Account(ALICE, "EUR", posted=100), Account(BOB, "EUR")])
    worker = ShardWorker(WorkerSettings(0), NS, store, FakeCommandSource(), FakeCheckpoints(), PMAP)
    ok, refused = (
        PostTransfer(_id(), _id(), ALICE, BOB, 60, "EUR"),
        PostTransfer(_id(), _id(), ALICE, BOB, 60, "EUR"),
    )
    asyncio.run(worker.process([command_record(ok, 0), command_record(refused, 1)], asyncio.Event()))

    samples = {s.metric: s for s in worker.figures.read(over_s=2.0, lag=7)}
    assert samples["commands_per_s"].value == 1.0, "2 commands over 2 s"
    assert samples["rejections_per_s"].value == 0.5, "the second had too little left"
    assert samples["batch_size"].value == 2.0
    assert "rejection_pct" not in samples, "a share of 2 commands is noise"
    assert samples["step_p99_ms"].value >= 0
    assert samples["consumer_lag"] == Sample("consumer_lag", 7.0, 0)
    assert {s.shard for s in samples.values()} == {0}
    again = {s.metric: s.value for s in worker.figures.read(over_s=1.0)}
    assert again == {"commands_per_s": 0.0, "rejections_per_s": 0.0, "errors_per_s": 0.0}, (
        "reset, no p99 of nothing"
    )


def test_the_durations_kept_between_reads_are_bounded() -> None:
    figures = Figures(0)
    for i in range(MAX_DURATIONS + 50):
        figures.batch_done(1, 0, float(i))
    assert len(figures.durations_ms) == MAX_DURATIONS


def test_telemetry_round_trips_and_is_its_json_schema() -> None:
    record = Telemetry(
        "shard-03", 1_700_000_000_000, (Sample("step_p99_ms", 12.5, 3), Sample("commands_per_s", 0.0))
    )
    Draft202012Validator.check_schema(CONTRACT.validator.schema)
    assert decode_telemetry(encode_telemetry(record)) == record


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"Telemetry","v":1,"process":"x","at_ms":1,"samples":[{"metric":"m","value":"1"}]}',
        b'{"type":"Telemetry","v":1,"process":"Shard 1","at_ms":1,"samples":[]}',
        b'{"type":"Telemetry","v":1,"process":"x","at_ms":1,"samples":[],"extra":1}',
        b'{"type":"Telemetry","v":1,"process":"x","at_ms":1,"samples":[{"metric":"m","value":1e300}]}',
        b"[[[[[]]]]]",
        b"x" * 40_000,
    ],
)
def test_what_is_not_telemetry_is_refused(payload: bytes) -> None:
    with pytest.raises(NotTelemetry):
        decode_telemetry(payload)


def test_the_share_refused_is_sent_once_there_are_enough_commands() -> None:
    figures = Figures(1)
    figures.batch_done(MIN_COMMANDS_FOR_SHARE, MIN_COMMANDS_FOR_SHARE // 4, 3.0)
    assert {s.metric: s.value for s in figures.read(over_s=1.0)}["rejection_pct"] == 25.0


def test_a_coordinator_reads_each_shards_reply_p99_once_and_nothing_for_a_shard_not_waited_on() -> None:
    replies = ReplyTimes()
    for took in range(1, 101):  # 1..100 ms from shard 2; one slow reply from shard 0
        replies.answered(2, took)
    replies.answered(0, 900)
    replies.answered(0, -5)  # a clock step back: never a negative time
    assert replies.read(1.0) == [Sample(REPLY_P99_MS, 900.0, 0), Sample(REPLY_P99_MS, 100.0, 2)]
    assert replies.read(1.0) == [], "read once, then reset"


def test_a_coordinators_figures_reach_its_metrics_and_its_telemetry() -> None:
    replies, counted = ReplyTimes(), ReplyTimes()
    both = FanOutFigures((replies, counted))
    both.answered(1, 40)
    both.finished("completed", None, 3)
    assert replies.read(1.0) == counted.read(1.0) == [Sample(REPLY_P99_MS, 40.0, 1)]
