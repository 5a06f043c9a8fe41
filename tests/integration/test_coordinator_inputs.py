"""Bad input never hurts: each gets a precise rejection or a dead letter, changes nothing, and the
consumer goes on. Idempotency: a repeat gets the original result; a reused id is refused."""

from __future__ import annotations

import uuid

import orjson
from aiokafka import AIOKafkaConsumer

from deploy.ledger_init import init_ledger
from infra.config import LedgerConfig
from schemas.public import CloseAccount, FreezeAccount, OpenAccountRequest, TransferFunds, encode_public
from schemas.shard_messages import ShardReply, encode
from tests.bad_inputs import (
    BAD_TRANSFERS,
    CREDIT_ACCOUNT,
    DEBIT_ACCOUNT,
    VALID_TRANSFER,
    VALID_TRANSFER_WITH_SQL_METADATA,
    transfer_id_for,
)
from tests.ledger_harness import ResultCollector, fresh_config, produce_raw, running_ledger
from tests.ledger_harness import balances as shard_balances


def _id() -> str:
    return str(uuid.uuid4())


async def _all_balances(config: LedgerConfig) -> dict[str, tuple[int, int]]:
    return {**await shard_balances(config, 0), **await shard_balances(config, 1)}


async def _setup(config: LedgerConfig, results: ResultCollector, extra: dict[str, str]) -> None:
    opens = [
        OpenAccountRequest(_id(), a, "EUR", 10**15 if a == "issuer" else 0, {})
        for a in ("issuer", DEBIT_ACCOUNT, CREDIT_ACCOUNT, *extra)
    ]
    await produce_raw(
        config, config.namespace.account_commands, [(o.account_id.encode(), encode_public(o)) for o in opens]
    )
    await results.wait_for([o.command_id for o in opens])
    kinds: dict[str, type[FreezeAccount] | type[CloseAccount]] = {
        "frozen": FreezeAccount,
        "closed": CloseAccount,
    }
    changes = [kinds[status](_id(), a) for a, status in extra.items()]
    if changes:
        await produce_raw(
            config,
            config.namespace.account_commands,
            [(c.account_id.encode(), encode_public(c)) for c in changes],
        )
        await results.wait_for([c.command_id for c in changes])
    fund = TransferFunds(_id(), "issuer", DEBIT_ACCOUNT, 1_000_000, "EUR")
    await produce_raw(config, config.namespace.transfers, [(None, encode_public(fund))])
    assert (await results.wait_for([fund.transfer_id]))[fund.transfer_id]["state"] == "completed"


async def test_every_bad_input_is_rejected_precisely_and_changes_nothing(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        await _setup(config, results, {"frozen-one": "frozen", "closed-one": "closed"})
        before = await _all_balances(config)
        await produce_raw(config, config.namespace.transfers, [(None, bad.raw) for bad in BAD_TRANSFERS])
        business = {
            "unknown account": TransferFunds(_id(), DEBIT_ACCOUNT, "nobody-here", 10, "EUR"),
            "frozen account": TransferFunds(_id(), DEBIT_ACCOUNT, "frozen-one", 10, "EUR"),
            "closed account": TransferFunds(_id(), DEBIT_ACCOUNT, "closed-one", 10, "EUR"),
            "currency mismatch": TransferFunds(_id(), DEBIT_ACCOUNT, CREDIT_ACCOUNT, 10, "USD"),
        }
        await produce_raw(
            config, config.namespace.transfers, [(None, encode_public(t)) for t in business.values()]
        )
        readable = [b for b in BAD_TRANSFERS if b.readable_id]
        got = await results.wait_for([b.readable_id for b in readable if b.readable_id], within_s=120)
        answered = await results.wait_for([t.transfer_id for t in business.values()], within_s=120)
        after_bad = await _all_balances(config)
        # A shard reply for a saga nobody started is ignored (no result, no effect). Signed as a shard
        # would: an unsigned one would be dead-lettered before it reached this check.
        stray = ShardReply(_id(), _id(), "CreditFunds", 0, CREDIT_ACCOUNT, _id(), "funds_credited")
        await produce_raw(config, config.namespace.shard_replies, [(None, encode(stray))], signed=True)
        # The consumer is still healthy: valid commands after the bad ones complete.
        await produce_raw(
            config,
            config.namespace.transfers,
            [(None, VALID_TRANSFER), (None, VALID_TRANSFER_WITH_SQL_METADATA)],
        )
        ok_ids = [
            transfer_id_for("valid transfer"),
            orjson.loads(VALID_TRANSFER_WITH_SQL_METADATA)["transfer_id"],
        ]
        finals = await results.wait_for(ok_ids)
    verdicts = {
        b.name: (got[b.readable_id]["state"], got[b.readable_id]["reason"]) for b in readable if b.readable_id
    }
    wrong = {
        b.name: (verdicts[b.name], b.reason) for b in readable if verdicts[b.name] != ("rejected", b.reason)
    }
    assert not wrong, wrong
    assert all(len(results.by_id[b.readable_id]) == 1 for b in readable if b.readable_id), "one result per id"
    assert {n: answered[t.transfer_id]["reason"] for n, t in business.items()} == {
        "unknown account": "account_not_found",
        "frozen account": "account_frozen",
        "closed account": "account_closed",
        "currency mismatch": "currency_mismatch",
    }
    assert after_bad == before, "bad input changed balances"
    assert all(f["state"] == "completed" for f in finals.values()), finals
    assert stray.transfer_id not in results.by_id, "a reply for an unknown saga produced a result"

    unreadable = [b for b in BAD_TRANSFERS if not b.readable_id]
    consumer = AIOKafkaConsumer(
        config.namespace.dead_letters,
        **config.kafka_args(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        letters: list[bytes] = []
        for _ in range(20):
            letters += [
                r.value or b"" for rs in (await consumer.getmany(timeout_ms=500)).values() for r in rs
            ]
            if len(letters) >= len(unreadable):
                break
    finally:
        await consumer.stop()
    assert len(letters) == len(unreadable)


async def test_a_repeat_gets_the_original_result_and_a_reused_id_is_refused(
    kafka_bootstrap: str, database_url: str
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        await _setup(config, results, {})
        original = TransferFunds(_id(), DEBIT_ACCOUNT, CREDIT_ACCOUNT, 700, "EUR")
        await produce_raw(config, config.namespace.transfers, [(None, encode_public(original))])
        first = (await results.wait_for([original.transfer_id]))[original.transfer_id]
        before = await _all_balances(config)
        reused = TransferFunds(original.transfer_id, DEBIT_ACCOUNT, CREDIT_ACCOUNT, 999_999, "EUR")
        await produce_raw(
            config,
            config.namespace.transfers,
            [(None, encode_public(original)), (None, encode_public(reused))],
        )
        # The repeat's result is the first one again (same message_id: the client drops it as a
        # duplicate and counts it); the reused id's refusal is a result of its own.
        while len(results.by_id[original.transfer_id]) < 2 or results.deliveries[first["message_id"]] < 2:
            await results.poll()
        after = await _all_balances(config)
    assert first["state"] == "completed"
    assert results.by_id[original.transfer_id][0] == first
    (refusal,) = results.by_id[original.transfer_id][1:]
    assert refusal["request_fingerprint"] != first["request_fingerprint"]
    assert after == before, "neither the repeat nor the reused id moved money"
