"""Re-sends follow the shard, not only the clock (issue 14, item 6): the sweeper leaves a saga alone
while the shard it waits on is answering other commands, re-sends it once that shard goes quiet,
and re-sends it whatever the shard does once the saga is older than the policy's patience."""

from __future__ import annotations

import itertools
import uuid

from aiokafka import ConsumerRecord

from coordinator.adapters.kafka_records import RecordDecoder
from coordinator.adapters.postgres_sagas import PostgresSagaStore
from coordinator.saga.transfer_saga import SagaPolicy, command_id
from coordinator.service.coordinator import Coordinator, CoordinatorSettings
from deploy.ledger_init import init_ledger
from infra.postgres_pool import close_pool, open_pool
from schemas.message_auth import MessageAuthenticator
from schemas.public import TransferFunds, encode_public
from schemas.shard_messages import ShardReply, encode
from tests.ledger_harness import accounts_on, fresh_config
from tests.unit.test_internal_auth_edges import record

POLICY = SagaPolicy(base_backoff_ms=1_000, answering_within_ms=2_000, busy_patience_ms=30_000)
_offsets = itertools.count()


def _record(
    topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    return record(topic, value, key, headers, next(_offsets))


async def test_a_busy_shard_is_waited_for_and_a_quiet_one_retried(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    ns = config.namespace
    pmap = await init_ledger(config, 2)
    a, b = accounts_on(pmap, 0, 2)
    (c,) = accounts_on(pmap, 1, 1)
    auth = MessageAuthenticator(config.message_keys)
    now = [0]
    coordinator = Coordinator(CoordinatorSettings(policy=POLICY), ns, pmap, clock_ms=lambda: now[0])
    decoder = RecordDecoder(ns, auth, 10**12)
    pool = await open_pool(config.database_url, ns.coordinator_schema, max_size=2)
    store = PostgresSagaStore(pool)

    def reply(shard: int, transfer_id: str, in_reply_to: str, outcome: str) -> ConsumerRecord[bytes, bytes]:
        account = a if shard == 0 else c
        value = encode(
            ShardReply(str(uuid.uuid4()), in_reply_to, "ReserveFunds", shard, account, transfer_id, outcome)
        )
        key = transfer_id.encode()
        return _record(ns.shard_replies, key, value, [auth.sign(ns.shard_replies, key, value)])

    def another_answer(shard: int) -> ConsumerRecord[bytes, bytes]:
        """The shard answering some other saga's command (one this coordinator does not hold)."""
        return reply(shard, str(uuid.uuid4()), str(uuid.uuid4()), "funds_reserved")

    async def at(ms: int, records: list[ConsumerRecord[bytes, bytes]] | None = None) -> dict[str, int]:
        """Handle `records` (else sweep) at `ms`; each saga's sends of its current step."""
        now[0] = ms
        async with store.batch() as tx:
            if records:
                await coordinator.handle(tx, [m for r in records for m in decoder.decode(r)])
            else:
                await coordinator.sweep(tx, [0])
        async with pool.acquire() as conn:
            return {
                r["transfer_id"]: r["attempts"]
                for r in await conn.fetch("SELECT transfer_id, attempts FROM transfers")
            }

    try:
        same = TransferFunds(str(uuid.uuid4()), a, b, 100, "EUR")  # posting: waits on shard 0
        cross = TransferFunds(str(uuid.uuid4()), a, c, 100, "EUR")  # reserving on 0, then crediting on 1
        await at(
            0, [_record(ns.transfers, t.transfer_id.encode(), encode_public(t), []) for t in (same, cross)]
        )
        reserved = reply(0, cross.transfer_id, command_id(cross.transfer_id, "reserving"), "funds_reserved")
        await at(500, [reserved])  # shard 0 answers; the cross saga now waits on shard 1

        sends = await at(2_000)  # both overdue; shard 0 answered 1.5 s ago, shard 1 never
        assert sends == {same.transfer_id: 1, cross.transfer_id: 2}, "only the saga on the quiet shard"

        sends = await at(2_600)  # shard 0 silent for 2.1 s now
        assert sends == {same.transfer_id: 2, cross.transfer_id: 2}

        await at(39_000, [another_answer(0), another_answer(1)])
        sends = await at(39_500)  # both shards busy, but both sagas have waited past the patience
        assert sends == {same.transfer_id: 3, cross.transfer_id: 3}
    finally:
        await close_pool(pool)
