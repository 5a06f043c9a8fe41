"""Two-phase transfers end to end on real Kafka and PostgreSQL: holds same-shard and cross-shard,
a post for less, a void, an expiry, the losers of each race, bad posts and voids, and the books."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.public import (
    OpenAccountRequest,
    PostPendingTransfer,
    TransferCommand,
    TransferFunds,
    VoidPendingTransfer,
)
from tests.ledger_harness import ResultCollector, accounts_on, fresh_config, ledger_cli, running_ledger


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def ledger(kafka_bootstrap: str, database_url: str) -> LedgerConfig:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, shard_count=2)
    return config


async def _pending_balances(config: LedgerConfig, shard: int) -> dict[str, tuple[int, int, int]]:
    """account -> (posted, pending debits, pending credits)."""
    conn = await asyncpg.connect(config.shard_database_url(shard))
    try:
        schema = config.namespace.shard_schema(shard)
        rows = await conn.fetch(
            f'SELECT account_id, posted, reserved, pending_credit FROM "{schema}".balances'
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}
    finally:
        await conn.close()


async def _send(results: ResultCollector, commands: list[TransferCommand], *, final: bool) -> dict[str, Any]:
    await results.send_transfers(commands)
    got = await results.wait_for([c.transfer_id for c in commands], within_s=60, final=final)
    return {c.transfer_id: (got[c.transfer_id]["state"], got[c.transfer_id]["reason"]) for c in commands}


async def test_holds_posted_for_less_voided_and_expired_with_every_loser_told_why(
    ledger: LedgerConfig,
) -> None:
    pmap = await init_ledger(ledger, 2)
    a0, b0 = accounts_on(pmap, 0, 2, prefix="card")
    (c1,) = accounts_on(pmap, 1, 1, prefix="card")
    async with running_ledger(ledger, [0, 1]), ResultCollector(ledger) as results:
        opened = [
            OpenAccountRequest(_id(), a, "EUR", 10**15 if a == "issuer" else 0)
            for a in ("issuer", a0, b0, c1)
        ]
        await results.send_account_commands(opened)
        await results.wait_for([c.command_id for c in opened])
        assert await _send(results, [TransferFunds(_id(), "issuer", a0, 10_000, "EUR")], final=True)

        same = TransferFunds(_id(), a0, b0, 3_000, "EUR", pending_timeout_ms=600_000)
        cross = TransferFunds(_id(), a0, c1, 2_000, "EUR", pending_timeout_ms=600_000)
        short = TransferFunds(_id(), a0, c1, 500, "EUR", pending_timeout_ms=1_500)
        too_much = TransferFunds(_id(), a0, b0, 9_000, "EUR", pending_timeout_ms=600_000)
        held = await _send(results, [same, cross, short], final=False)
        assert set(held.values()) == {("pending", None)}
        refused = await _send(results, [too_much], final=False)
        assert refused == {too_much.transfer_id: ("rejected", "insufficient_funds")}  # 5,500 held
        assert (await _pending_balances(ledger, 0))[a0] == (10_000, 5_500, 0)
        assert (await _pending_balances(ledger, 0))[b0] == (0, 0, 3_000)
        assert (await _pending_balances(ledger, 1))[c1] == (0, 0, 2_500)

        post = PostPendingTransfer(_id(), same.transfer_id, 1_200)
        void = VoidPendingTransfer(_id(), cross.transfer_id)
        resolved = await _send(results, [post, void], final=True)
        assert resolved == {post.transfer_id: ("completed", None), void.transfer_id: ("voided", None)}
        finals = await results.wait_for([same.transfer_id, cross.transfer_id, short.transfer_id], final=True)
        assert {k: v["state"] for k, v in finals.items()} == {
            same.transfer_id: "completed",
            cross.transfer_id: "voided",
            short.transfer_id: "expired",  # nobody posted it within 1.5 s
        }
        assert results.final(post.transfer_id)["pending_id"] == same.transfer_id  # type: ignore[index]
        assert results.final(post.transfer_id)["amount"] == 1_200  # type: ignore[index]

        losers: list[TransferCommand] = [
            PostPendingTransfer(_id(), same.transfer_id),  # posted already
            PostPendingTransfer(_id(), cross.transfer_id),  # voided already
            VoidPendingTransfer(_id(), short.transfer_id),  # expired
            PostPendingTransfer(_id(), _id()),  # no such transfer
            VoidPendingTransfer(_id(), too_much.transfer_id),  # its hold was never placed
            PostPendingTransfer(_id(), post.transfer_id),  # a post is not a pending transfer
        ]
        assert list((await _send(results, losers, final=True)).values()) == [
            ("rejected", "pending_transfer_already_posted"),
            ("rejected", "pending_transfer_already_voided"),
            ("rejected", "pending_transfer_expired"),
            ("rejected", "pending_transfer_not_found"),
            ("rejected", "pending_transfer_not_pending"),
            ("rejected", "pending_transfer_not_pending"),
        ]
        # the same post again is the same request: its first result again, nothing moves twice
        await results.send_transfers([post])
        assert results.final(post.transfer_id)["state"] == "completed"  # type: ignore[index]

        bad = TransferFunds(_id(), a0, b0, 100, "EUR", pending_timeout_ms=600_000)
        await _send(results, [bad], final=False)
        bad_ones: list[TransferCommand] = [
            PostPendingTransfer(_id(), bad.transfer_id, 101),
            PostPendingTransfer(_id(), bad.transfer_id, 50, debit_account=b0),
            VoidPendingTransfer(_id(), bad.transfer_id, credit_account=c1),
        ]
        assert list((await _send(results, bad_ones, final=True)).values()) == [
            ("rejected", "amount_exceeds_pending"),
            ("rejected", "pending_account_mismatch"),
            ("rejected", "pending_account_mismatch"),
        ]
        last = VoidPendingTransfer(_id(), bad.transfer_id, debit_account=a0, credit_account=b0)
        assert await _send(results, [last], final=True) == {last.transfer_id: ("voided", None)}

    shard0, shard1 = await _pending_balances(ledger, 0), await _pending_balances(ledger, 1)
    assert shard0[a0] == (10_000 - 1_200, 0, 0)  # posted for less: the rest of the hold released
    assert shard0[b0] == (1_200, 0, 0)
    assert shard1[c1] == (0, 0, 0)  # voided and expired: nothing moved, no pending credit left
    sagas, views, _ = await read_views(ledger, [0, 1])
    assert reconcile(sagas, views) == []


async def test_the_cli_holds_posts_voids_and_says_expired(ledger: LedgerConfig) -> None:
    pmap = await init_ledger(ledger, 2)
    (a0,) = accounts_on(pmap, 0, 1, prefix="cli")
    (c1,) = accounts_on(pmap, 1, 1, prefix="cli")
    async with running_ledger(ledger, [0, 1]), ResultCollector(ledger) as results:
        opened = [
            OpenAccountRequest(_id(), a, "EUR", 10**15 if a == "issuer" else 0) for a in ("issuer", a0, c1)
        ]
        await results.send_account_commands(opened)
        await results.wait_for([c.command_id for c in opened])
        await _send(results, [TransferFunds(_id(), "issuer", a0, 5_000, "EUR")], final=True)

        code, held = await ledger_cli(ledger, "transfer", "--from", a0, "--to", c1, "--amount", "3000",
                                "--currency", "EUR", "--pending", "10m", "--wait")  # fmt: skip
        assert (code, held["state"]) == (0, "pending"), held
        code, balance = await ledger_cli(ledger, "balance", c1)
        assert (code, balance["posted"], balance["pending_credits"], balance["available"]) == (0, 0, 3_000, 0)
        code, balance = await ledger_cli(ledger, "balance", a0)
        assert (balance["posted"], balance["pending_debits"], balance["available"]) == (5_000, 3_000, 2_000)

        code, posted = await ledger_cli(ledger, "post", held["transfer_id"], "--amount", "2500", "--wait")
        assert (code, posted["state"], posted["amount"], posted["pending_id"]) == (
            0,
            "completed",
            2_500,
            held["transfer_id"],
        )
        code, again = await ledger_cli(ledger, "void", held["transfer_id"], "--wait")
        assert (code, again["state"], again["reason"]) == (3, "rejected", "pending_transfer_already_posted")
        code, status = await ledger_cli(ledger, "status", held["transfer_id"])
        assert (status["state"], status["resolution"], status["post_amount"]) == ("completed", "post", 2_500)

        code, short = await ledger_cli(ledger, "transfer", "--from", a0, "--to", c1, "--amount", "100",
                                 "--currency", "EUR", "--pending", "1s", "--wait")  # fmt: skip
        assert (code, short["state"]) == (0, "pending"), short
        await results.wait_for([short["transfer_id"]], final=True)  # the expiry's result
        code, late = await ledger_cli(ledger, "post", short["transfer_id"], "--wait")
        assert (code, late["reason"]) == (5, "pending_transfer_expired")
        code, usage = await ledger_cli(ledger, "transfer", "--from", a0, "--to", c1, "--amount", "1",
                                 "--currency", "EUR", "--pending", "31d")  # fmt: skip
        assert code == 2, usage
    shard1 = await _pending_balances(ledger, 1)
    assert shard1[c1] == (2_500, 0, 0)
