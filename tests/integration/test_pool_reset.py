"""A pooled connection goes back to the pool without the default reset round trip (issue 14: a
transaction cost one more round trip for `RESET ALL` and friends), and still without a transaction
left open."""

from __future__ import annotations

from infra.postgres_pool import close_pool, open_pool


async def test_release_skips_the_reset_query_but_rolls_back(database_url: str) -> None:
    pool = await open_pool(database_url, "public", max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept'")  # session state the reset would undo
            await conn.execute("BEGIN")  # a transaction a caller forgot
            await conn.execute("CREATE TEMP TABLE forgotten (x int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "kept", "no RESET ALL on release"
            assert await conn.fetchval("SELECT to_regclass('pg_temp.forgotten')") is None, "rolled back"
    finally:
        await close_pool(pool)
