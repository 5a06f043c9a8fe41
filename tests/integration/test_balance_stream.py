"""The balance change stream on real Kafka (issue 16, item 1): a transfer between two shards puts
both accounts' balances on the compacted `ledger.balances` topic, keyed by account id, and
`ledger balance ID --follow` prints the balance, then each change."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from deploy.ledger_init import init_ledger
from schemas.balances import decode_balance
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from tests.integration.test_topic_limits import _configs
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    fresh_config,
    produce_raw,
    read_topic,
    running_ledger,
)


def _id() -> str:
    return str(uuid.uuid4())


async def test_a_cross_shard_transfer_publishes_both_balances_on_the_compacted_topic(
    kafka_bootstrap: str, database_url: str, kafka_args: dict[str, Any]
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    ns = config.namespace
    assert (await _configs(kafka_args, [ns.balances]))[ns.balances]["cleanup.policy"] == "compact"
    payer = "issuer"  # the one account the ledger lets go into overdraft: no funding needed
    (payee,) = accounts_on(pmap, 1 - pmap.shard_for(payer), 1, prefix="payee")
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        opens = [
            OpenAccountRequest(_id(), payer, "EUR", 500, {}),
            OpenAccountRequest(_id(), payee, "EUR", 0, {}),
        ]
        await produce_raw(
            config, ns.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
        )
        opened = await results.wait_for([o.command_id for o in opens])
        assert [(r["outcome"], r["reason"]) for r in opened.values()] == [("done", None)] * 2
        move = TransferFunds(_id(), payer, payee, 120, "EUR")
        await produce_raw(config, ns.transfers, [(None, encode_public(move))])
        result = (await results.wait_for([move.transfer_id]))[move.transfer_id]
        assert result["state"] == "completed", result.get("reason")
        follow = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("ledger")), "balance", payee, "--follow", "--changes", "1",
            env={**os.environ, **config.as_env()}, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert follow.stdout is not None
        now = json.loads(await asyncio.wait_for(follow.stdout.readline(), 60))
        assert now["posted"] == 120, "the balance now, read after the follower took its place"
        again = TransferFunds(_id(), payer, payee, 5, "EUR")
        await produce_raw(config, ns.transfers, [(None, encode_public(again))])
        out, _ = await asyncio.wait_for(follow.communicate(), 60)
        assert follow.returncode == 0
        (change,) = [json.loads(line) for line in out.splitlines()]
        assert (change["account_id"], change["posted"], change["available"]) == (payee, 125, 125)
        # Opening (2), the reserve, the commit on the payer's shard, the credit on the payee's: at
        # least one record per account per batch that changed it; the latest is what counts.
        records = await read_topic(config, ns.balances, want=6, within_s=30)

    latest: dict[str, Any] = {}
    for r in records:
        balance = decode_balance(r.value or b"")
        assert r.key == balance.account_id.encode()
        if balance.account_id not in latest or balance.journal_seq >= latest[balance.account_id].journal_seq:
            latest[balance.account_id] = balance
    assert set(latest) == {payer, payee}, "transit accounts are the ledger's own: not published"
    assert (latest[payer].posted, latest[payer].pending_debits, latest[payer].available) == (-125, 0, 375)
    assert (latest[payee].posted, latest[payee].available) == (125, 125)
    assert latest[payee].shard != latest[payer].shard
