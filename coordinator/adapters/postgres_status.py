"""Read-side queries for the status API and the CLI: transfers with their steps, balances."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

STATES = frozenset({
    "in_flight", "needs_attention", "pending", "completed", "rejected", "compensated", "voided", "expired",
})  # fmt: skip


def _jsonable(row: asyncpg.Record) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in dict(row).items()}


async def transfer_status(pool: asyncpg.Pool, transfer_id: str) -> dict[str, Any] | None:
    """A transfer's state, reason and every saga step with its shard and timestamps. A pending
    transfer also shows when it expires and how it was resolved (post, void or expire; by which
    command; what a post moved); a post or void shows the pending transfer it names."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT transfer_id, CASE WHEN parked THEN 'needs_attention' ELSE status END AS state, status,"
            " step, reason, debit_account, credit_account, amount, currency, debit_shard, credit_shard,"
            " attempts, created_at, finished_at, pending_timeout_ms IS NOT NULL AS two_phase,"
            " CASE WHEN pending_timeout_ms IS NOT NULL"
            " THEN timestamptz 'epoch' + expires_ms * interval '1 millisecond' END AS expires_at,"
            " resolution, post_amount, resolved_by, pending_id, batch_id,"
            " batch_state ->> 'failed_leg' AS failed_leg FROM transfers WHERE transfer_id = $1",
            transfer_id,
        )
        if row is None:
            return None
        steps = await conn.fetch(
            "SELECT step, shard, command_id, sends, first_sent_at, last_sent_at, outcome, reason, answered_at"
            " FROM saga_steps WHERE transfer_id = $1 ORDER BY first_sent_at, step",
            transfer_id,
        )
        # A linked batch's legs, each a transfer of its own (its steps are the batch's, per shard).
        legs = await conn.fetch(
            "SELECT t.transfer_id, t.status AS state, t.reason, t.debit_account, t.credit_account, t.amount,"
            " t.currency, t.debit_shard, t.credit_shard"
            " FROM transfers b, jsonb_array_elements(b.batch_state -> 'batch' -> 'legs') WITH ORDINALITY"
            " AS leg(body, n) JOIN transfers t ON t.transfer_id = leg.body ->> 'transfer_id'"
            " WHERE b.transfer_id = $1 ORDER BY leg.n",
            transfer_id,
        )
    shown = _jsonable(row) | {"steps": [_jsonable(s) for s in steps]}
    return shown | {"legs": [_jsonable(leg) for leg in legs]} if legs else shown


async def list_transfers(pool: asyncpg.Pool, state: str, limit: int) -> list[dict[str, Any]]:
    """Transfers in a state (`needs_attention`: parked sagas), newest first."""
    where = "parked" if state == "needs_attention" else "status = $1 AND NOT parked"
    args: list[object] = [] if state == "needs_attention" else [state]
    rows = await pool.fetch(
        "SELECT transfer_id, CASE WHEN parked THEN 'needs_attention' ELSE status END AS state, step, reason,"
        f" amount, currency, created_at FROM transfers WHERE {where} ORDER BY created_at DESC"
        f" LIMIT {int(limit)}",
        *args,
    )
    return [_jsonable(r) for r in rows]
