"""The status API (HTTP, JSON): where a transfer stands, which sagas need a person, balances.

Served with aiohttp straight from PostgreSQL, the source of truth (see the issue note on faust).
Every route but /healthz needs a bearer token (auth.py); every error is JSON (json_errors.py).
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from aiohttp import web

from coordinator.adapters.postgres_status import STATES, list_transfers, transfer_status
from coordinator.api.auth import ApiTokens, bearer_auth
from coordinator.api.json_errors import error_response, json_errors
from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool
from schemas.partitioning import PartitionMap
from shards.service.audit import account_balance

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only: int() would also take " 5", "+5" and "\u0665"

# Requests are small GETs: bound what aiohttp reads before any handler runs (it answers 400).
_REQUEST_BOUNDS = {"max_line_size": 4096, "max_field_size": 4096, "max_headers": 64}
_MAX_BODY = 1024

POOLS = web.AppKey("pools", dict)
CONFIG = web.AppKey("config", LedgerConfig)
PMAP = web.AppKey("pmap", PartitionMap)


def _error(status: int, code: str, detail: str) -> web.Response:
    return error_response(status, code, detail)


def _unknown_parameters(request: web.Request, known: frozenset[str]) -> web.Response | None:
    """A 400 for a query parameter the route does not take: a typo must not fall back to a default."""
    unknown = sorted(set(request.query) - known)
    if unknown:
        return _error(400, "unknown_parameter", f"takes only {sorted(known)}, not {unknown[0][:64]!r}")
    return None


async def healthz(request: web.Request) -> web.Response:
    # Open to anyone: says only whether the database answers (the error is logged, not shown).
    pools: dict[str, Any] = request.app[POOLS]
    await pools["coordinator"].fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


async def get_transfer(request: web.Request) -> web.Response:
    if refused := _unknown_parameters(request, frozenset()):
        return refused
    transfer_id = request.match_info["transfer_id"]
    if not _UUID.fullmatch(transfer_id):
        return _error(400, "invalid_transfer_id", "a transfer id is a lower-case UUID")
    found = await transfer_status(request.app[POOLS]["coordinator"], transfer_id)
    if found is None:
        return _error(404, "transfer_not_found", transfer_id)
    return web.json_response(found)


async def get_transfers(request: web.Request) -> web.Response:
    if refused := _unknown_parameters(request, frozenset({"state", "limit"})):
        return refused
    state = request.query.get("state", "in_flight")
    if state not in STATES:
        return _error(400, "invalid_state", f"state must be one of {sorted(STATES)}")
    raw_limit = request.query.get("limit", "100")
    if not _LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= 1000:
        return _error(400, "invalid_limit", "limit is a whole number, 1..1000")
    limit = int(raw_limit)
    rows = await list_transfers(request.app[POOLS]["coordinator"], state, limit)
    return web.json_response({"state": state, "transfers": rows})


async def get_account(request: web.Request) -> web.Response:
    if refused := _unknown_parameters(request, frozenset()):
        return refused
    account_id = request.match_info["account_id"]
    if not _ACCOUNT.fullmatch(account_id):
        return _error(400, "invalid_account_id", "1-64 of A-Z a-z 0-9 _ . -")
    shard = request.app[PMAP].shard_for(account_id)
    found = await account_balance(await _shard_pool(request.app, shard), account_id)
    if found is None:
        return _error(404, "account_not_found", account_id)
    return web.json_response(found | {"shard": shard})


async def _shard_pool(app: web.Application, shard: int) -> asyncpg.Pool:
    pools: dict[Any, asyncpg.Pool] = app[POOLS]
    if shard not in pools:
        config = app[CONFIG]
        pools[shard] = await open_pool(
            config.shard_database_url(shard), config.namespace.shard_schema(shard), 2
        )
    return pools[shard]


async def make_app(config: LedgerConfig, tokens: ApiTokens) -> web.Application:
    """The app on its own pools (closed on cleanup), serving requests that carry one of `tokens`."""
    control = await open_pool(config.database_url, config.namespace.control_schema, max_size=1)
    try:
        pmap = await PostgresControl(control).load_partition_map()
    finally:
        await control.close()
    pools = {"coordinator": await open_pool(config.database_url, config.namespace.coordinator_schema, 4)}
    return build_app(config, tokens, pools, pmap)


def build_app(
    config: LedgerConfig, tokens: ApiTokens, pools: dict[Any, asyncpg.Pool], pmap: PartitionMap
) -> web.Application:
    """Wire the routes and middlewares over pools already open (tests pass fakes)."""
    app = web.Application(
        middlewares=[json_errors, bearer_auth(tokens, open_handlers={healthz})],
        client_max_size=_MAX_BODY,
        handler_args=_REQUEST_BOUNDS,
    )
    app[CONFIG] = config
    app[PMAP] = pmap
    app[POOLS] = pools

    async def close_pools(app: web.Application) -> None:
        for pool in app[POOLS].values():
            await pool.close()

    app.on_cleanup.append(close_pools)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/transfers/{transfer_id}", get_transfer)
    app.router.add_get("/transfers", get_transfers)
    app.router.add_get("/accounts/{account_id}", get_account)
    return app
