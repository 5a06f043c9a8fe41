"""A connection to PostgreSQL that goes silent mid-transaction cannot wedge a worker for good.

Regression for the 15-minute `ledger chaos` run of issue 15 (seed 12): after a fault, one
coordinator's sweeper stopped firing timers without a word, and 98 holds in its partitions never
expired. The stall bound (`asyncio.timeout` around each attempt) cancelled the attempt, but
asyncpg answers a cancelled query by sending PostgreSQL a cancel request and, before the
connection can be rolled back or released, waits for the old connection to answer, with no
bound unless the pool has a `command_timeout`. Over a link that drops packets (no FIN, no RST)
that wait never ends, so neither did the attempt, and Stalled was never raised.

The link here is a proxy that stops forwarding while keeping both sockets open: the same silence
an `iptables` DROP or a broken route gives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from coordinator.adapters.postgres_sagas import PostgresSagaStore
from coordinator.bootstrap import RunSettings, _with_retries, saga_pool
from infra.postgres_pool import close_pool
from schemas.errors import Stalled


class Blackhole:
    """A TCP proxy to PostgreSQL that can go silent: bytes are held, sockets stay open."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.silent = asyncio.Event()
        self.healed = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        self.writers += [client_w, server_w]
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await r.read(65536):
                if self.silent.is_set():
                    await self.healed.wait()
                w.write(data)
                await w.drain()
        w.close()

    def close(self) -> None:
        self.healed.set()
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def blackhole(database_url: str) -> AsyncIterator[tuple[Blackhole, str]]:
    url = urlsplit(database_url)
    if url.hostname is None or url.port is None:
        pytest.skip(f"a TCP DSN is needed here, not {database_url}")
    hole = Blackhole(url.hostname, url.port)
    port = await hole.start()
    netloc = url.netloc.rsplit("@", 1)
    proxied = f"{netloc[0]}@127.0.0.1:{port}" if len(netloc) == 2 else f"127.0.0.1:{port}"
    try:
        yield hole, urlunsplit(url._replace(netloc=proxied))
    finally:
        hole.close()


async def test_a_transaction_on_a_link_gone_silent_is_stalled_not_waited_on_forever(
    blackhole: tuple[Blackhole, str],
) -> None:
    hole, dsn = blackhole
    run = RunSettings(stall_after_s=1.0)
    pool = await saga_pool(dsn, "public", run)
    store = PostgresSagaStore(pool)

    async def attempt() -> None:
        async with store.batch() as tx:
            await tx.conn.fetchval("SELECT 1")
            hole.silent.set()  # the link goes quiet mid-transaction
            await tx.conn.fetchval("SELECT 2")

    task = asyncio.ensure_future(_with_retries(attempt, asyncio.Event(), run))
    try:
        # The bound: the stall (1 s), then the statement bound twice at most (the query, then its
        # cancel request), with room for a loaded machine.
        done, _ = await asyncio.wait({task}, timeout=run.stall_after_s + 2 * run.statement_timeout_s + 10)
        assert done, "the attempt was neither finished nor given up: the worker would wait forever"
        with pytest.raises(Stalled):
            task.result()
    finally:
        hole.close()  # frees whatever still waits on the link
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        pool.terminate()
        await close_pool(pool, within_s=1)
