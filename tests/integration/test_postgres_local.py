"""The private PostgreSQL cluster: durable settings, schemas, transactions, data kept across restarts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.postgres_local import LocalPostgres, find_pg_bin
from deploy.processes import unprivileged_user


@pytest.fixture
def private_postgres() -> Iterator[LocalPostgres]:
    if os.environ.get("LEDGER_DATABASE_URL"):
        pytest.skip("restart tests need a server this process starts (LEDGER_DATABASE_URL is set)")
    root = Path(tempfile.mkdtemp(prefix="ledger-pg-test-"))
    root.chmod(0o711)
    pg = LocalPostgres(root / "pg", find_pg_bin(os.environ.get("LEDGER_PG_BIN")), unprivileged_user())
    try:
        pg.init()
        pg.spawn()
        yield pg
    finally:
        pg.stop("fast")
        shutil.rmtree(root, ignore_errors=True)


async def _rows(dsn: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT 'a', n FROM a.t UNION ALL SELECT 'b', n FROM b.t ORDER BY 1, 2")
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("stop_mode", ["fast", "immediate"])
async def test_committed_data_survives_restart(private_postgres: LocalPostgres, stop_mode: str) -> None:
    pg = private_postgres
    await pg.wait_ready()
    conn = await asyncpg.connect(pg.admin_dsn)
    try:
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        assert await conn.fetchval("SHOW full_page_writes") == "on"
        await conn.execute("CREATE SCHEMA a; CREATE SCHEMA b")
        await conn.execute("CREATE TABLE a.t (n bigint); CREATE TABLE b.t (n bigint)")
        async with conn.transaction():
            await conn.execute("INSERT INTO a.t VALUES (1)")
            await conn.execute("INSERT INTO b.t VALUES (2)")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.execute("BEGIN; INSERT INTO a.t VALUES (99); SELECT 1 / 0; COMMIT")
        await conn.execute("ROLLBACK")
    finally:
        await conn.close()

    # `immediate` is a crash as far as the data is concerned: recovery replays the WAL.
    pg.stop(stop_mode)
    assert not pg.process or not pg.process.alive()
    pg.spawn()
    await pg.wait_ready()
    assert await _rows(pg.admin_dsn) == [("a", 1), ("b", 2)]
