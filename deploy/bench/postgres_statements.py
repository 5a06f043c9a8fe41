"""Where PostgreSQL's time goes during a run: the top statements from pg_stat_statements.

The local cluster preloads the extension; on a server without it the report says so and the run
goes on (it is a profile, not a measurement the gate depends on).
"""

from __future__ import annotations

import asyncpg


async def reset(dsn: str) -> bool:
    """Start counting from zero; False when the server does not have pg_stat_statements loaded."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()
    return True


async def top(dsn: str, limit: int = 8) -> list[dict[str, object]]:
    """The statements with the most execution time since `reset`, heaviest first."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT calls, rows, round(total_exec_time::numeric, 1) AS total_ms,
                      round((total_exec_time / greatest(calls, 1))::numeric, 3) AS mean_ms,
                      left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query
               FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1""",
            limit,
        )
    except asyncpg.PostgresError:
        return []
    finally:
        await conn.close()
    return [{k: (float(v) if k.endswith("_ms") else v) for k, v in r.items()} for r in rows]
