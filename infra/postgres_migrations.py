"""Versioned SQL migrations from schemas/migrations/<kind>/, applied once per schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import asyncpg

import schemas
from schemas.errors import ConfigurationError

MIGRATIONS = Path(schemas.__file__).parent / "migrations"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quoted_schema(name: str) -> str:
    """A schema name from configuration, checked before it is put into SQL text."""
    if not _SCHEMA_NAME.match(name):
        raise ConfigurationError(f"not a valid schema name: {name!r}")
    return f'"{name}"'


async def migrate(
    conn: asyncpg.Connection, schema: str, kind: Literal["control", "shard", "coordinator"]
) -> list[str]:
    """Create `schema` if needed and apply its pending migrations; return the versions applied.

    Concurrent callers serialise on an advisory lock, so each migration runs exactly once.
    """
    name = quoted_schema(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
        await conn.execute(f"SET LOCAL search_path TO {name}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in sorted((MIGRATIONS / kind).glob("*.sql")):
            if path.stem not in done:
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
                applied_now.append(path.stem)
    return applied_now
