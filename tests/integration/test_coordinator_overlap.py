"""Two coordinators recording the same message at once (found by ledger chaos, seed 12).

A coordinator resumed from SIGSTOP still held a batch of records whose partitions the group had
given to the other coordinator meanwhile. Both recorded the same messages; the second to commit
hit the inbox's (or the transfers table's) primary key, and the UniqueViolationError restarted it,
which stalled the whole group for a session timeout. It is a version conflict: retried, the batch
finds the message already recorded and skips it.
"""

from __future__ import annotations

import asyncio

import pytest

from coordinator.adapters.postgres_sagas import PostgresSagaStore, TransferRecord, VersionConflict
from deploy.ledger_init import init_ledger
from infra.postgres_pool import close_pool, open_pool
from tests.ledger_harness import fresh_config


@pytest.mark.parametrize("what", ["inbox entry", "new transfer"])
async def test_a_message_recorded_by_two_coordinators_at_once_is_a_version_conflict(
    kafka_bootstrap: str, database_url: str, what: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 1)
    pool = await open_pool(config.database_url, config.namespace.coordinator_schema, max_size=2)
    store = PostgresSagaStore(pool)
    rejected = TransferRecord("t-1", "fingerprint", 0, None, "rejected", "invalid_amount", 0)
    changed, inbox = ([], ["message-1"]) if what == "inbox entry" else ([rejected], [])
    first_wrote, first_may_commit = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with store.batch() as tx:
            await tx.write(changed, [], inbox, [])
            first_wrote.set()
            await first_may_commit.wait()

    async def second() -> None:
        async with store.batch() as tx:
            assert await tx.seen(inbox) == set(), "not committed yet, so not seen"
            assert await tx.load(["t-1"]) == {}
            await tx.write(changed, [], inbox, [])  # waits on the first's uncommitted key

    try:
        one = asyncio.create_task(first())
        await first_wrote.wait()
        two = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not two.done(), "the second writer waits for the first to commit or roll back"
        first_may_commit.set()
        await one
        with pytest.raises(VersionConflict, match="another coordinator recorded this first"):
            await two
        async with store.batch() as tx:  # the retry: the message is seen, the transfer exists
            assert await tx.seen(inbox) == set(inbox)
            assert set(await tx.load(["t-1"])) == ({"t-1"} if changed else set())
    finally:
        await close_pool(pool)
