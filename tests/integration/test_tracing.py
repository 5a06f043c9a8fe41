"""One transfer is one trace: W3C context rides Kafka headers and outbox rows through every step."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy.ledger_init import init_ledger
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, produce_raw, running_ledger

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_cross_shard_transfer_is_one_trace(kafka_bootstrap: str, database_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the first and only provider this test process installs
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    (a0,), (b1,) = accounts_on(pmap, 0, 1), accounts_on(pmap, 1, 1)
    try:
        async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
            opens = [OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**9 if a == "issuer" else 0, {})
                     for a in ("issuer", a0, b1)]  # fmt: skip
            await produce_raw(
                config, config.namespace.account_commands, [(None, encode_public(o)) for o in opens]
            )
            await results.wait_for([o.command_id for o in opens])
            fund = TransferFunds(str(uuid.uuid4()), "issuer", a0, 500, "EUR")
            await produce_raw(config, config.namespace.transfers, [(None, encode_public(fund))])
            await results.wait_for([fund.transfer_id])
            move = TransferFunds(str(uuid.uuid4()), a0, b1, 200, "EUR")
            traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
            producer_headers = [("traceparent", traceparent)]
            producer = AIOKafkaProducer(**config.kafka_args())
            await producer.start()
            try:
                await producer.send_and_wait(
                    config.namespace.transfers, encode_public(move), headers=producer_headers
                )
            finally:
                await producer.stop()
            assert (await results.wait_for([move.transfer_id]))[move.transfer_id]["state"] == "completed"
        ours = [
            s for s in exporter.get_finished_spans() if s.context and f"{s.context.trace_id:032x}" == TRACE_ID
        ]
        names = sorted(s.name for s in ours)
    finally:
        exporter.shutdown()
    for expected in (
        "ledger.coordinator.TransferFunds",
        "ledger.shard.ReserveFunds",
        "ledger.shard.CreditFunds",
        "ledger.shard.CommitReservation",
    ):
        assert expected in names, names
    assert names.count("ledger.coordinator.ShardReply") == 3, names
