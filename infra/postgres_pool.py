"""Connection pools to one schema of the ledger's PostgreSQL (no Kafka: read-only commands use it)."""

from __future__ import annotations

import asyncio

import asyncpg

from schemas.errors import StoreUnavailable

__all__ = ["TRANSIENT_ERRORS", "StoreUnavailable", "close_pool", "keep_session", "open_pool"]


async def open_pool(
    dsn: str, schema: str, max_size: int = 4, statement_timeout_s: float | None = None
) -> asyncpg.Pool:
    """A pool whose sessions see `schema`. A worker's pool bounds each statement: asyncpg then
    also bounds the cancel request that ends a statement, which it otherwise waits for forever
    when the link has gone silent (tests/integration/test_blackholed_postgres.py)."""
    # The application name says whose connections these are (pg_stat_activity, pg_terminate_backend).
    settings = {"search_path": schema, "application_name": f"ledger {schema}"}
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, server_settings=settings, reset=keep_session,
        command_timeout=statement_timeout_s,
    )  # fmt: skip
    return pool


async def keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: the ledger's sessions hold no state
    (settings are SET LOCAL, no cursors or LISTEN; the relay unlocks its advisory lock itself). The
    default reset (unlock all, CLOSE ALL, UNLISTEN *, RESET ALL) cost a round trip per transaction.
    An open transaction is still rolled back by the pool before this is called."""


async def close_pool(pool: asyncpg.Pool, within_s: float = 10.0) -> None:
    """Close gracefully if that is quick; a pool wedged by a fault is terminated instead."""
    try:
        await asyncio.wait_for(pool.close(), within_s)
    except TimeoutError:
        pool.terminate()


# Errors after which retrying the same batch can succeed: the connection, the server, or a
# concurrency conflict. Anything else (a constraint violated) is a bug and must stop the worker.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.QueryCanceledError,
)
