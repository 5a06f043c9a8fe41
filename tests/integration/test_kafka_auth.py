"""Issue 12, item 3: nobody outside the ledger can write its internal topics. A forged CreditFunds on
a shard's command topic and a forged shard reply are refused by the broker, both to a producer
without credentials and to one with the payment clients' credentials; balances stay as they were."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from deploy.kafka_acls import apply_acls, describe_acls, ledger_acls
from deploy.ledger_init import init_ledger
from infra.config import KafkaSecurity, LedgerConfig
from infra.outbox_relay import idempotent_producer
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from schemas.shard_messages import CreditFunds, ShardReply, encode
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    balances,
    fresh_config,
    produce_raw,
    running_ledger,
)


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class Ledger:
    config: LedgerConfig
    account: str
    """On shard 0, holding 1,000 from the issuer."""
    results: ResultCollector


@pytest.fixture
async def ledger(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Ledger]:
    config = fresh_config(kafka_bootstrap, database_url)
    pmap = await init_ledger(config, 2)
    (account,) = accounts_on(pmap, 0, 1, prefix="victim")
    async with running_ledger(config, [0, 1]), ResultCollector(config) as results:
        opens = [
            OpenAccountRequest(_id(), a, "EUR", 10**12 if a == "issuer" else 0, {})
            for a in ("issuer", account)
        ]
        await produce_raw(
            config,
            config.namespace.account_commands,
            [(o.account_id.encode(), encode_public(o)) for o in opens],
        )
        await results.wait_for([o.command_id for o in opens])
        fund = TransferFunds(_id(), "issuer", account, 1_000, "EUR")
        await produce_raw(config, config.namespace.transfers, [(None, encode_public(fund))])
        assert (await results.wait_for([fund.transfer_id]))[fund.transfer_id]["state"] == "completed"
        yield Ledger(config, account, results)


def _forgeries(ledger: Ledger) -> list[tuple[str, bytes]]:
    ns = ledger.config.namespace
    credit = CreditFunds(_id(), _id(), ledger.account, 5_000_000, "EUR")
    reply = ShardReply(_id(), _id(), "CreditFunds", 0, ledger.account, _id(), "funds_credited")
    return [(ns.shard_commands(0), encode(credit)), (ns.shard_replies, encode(reply))]


async def _forge(args: dict[str, Any], topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**args, acks="all", request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _still_untouched(ledger: Ledger) -> None:
    """The ledger goes on (a real transfer after the forgeries completes) and only that moved money."""
    extra = TransferFunds(_id(), "issuer", ledger.account, 1, "EUR")
    await produce_raw(ledger.config, ledger.config.namespace.transfers, [(None, encode_public(extra))])
    assert (await ledger.results.wait_for([extra.transfer_id]))[extra.transfer_id]["state"] == "completed"
    assert (await balances(ledger.config, 0))[ledger.account] == (1_001, 0)


async def test_an_outside_producer_without_credentials_cannot_forge_internal_messages(
    ledger: Ledger, kafka_principal: Any
) -> None:
    """(kafka_principal: skipped where the session's Kafka has no authentication at all.)"""
    for topic, value in _forgeries(ledger):
        with pytest.raises((KafkaConnectionError, KafkaError)):
            await _forge({"bootstrap_servers": ledger.config.kafka_bootstrap_servers}, topic, value)
    await _still_untouched(ledger)


async def test_payment_client_credentials_cannot_forge_internal_messages(
    ledger: Ledger, kafka_principal: Any
) -> None:
    client: KafkaSecurity = kafka_principal("client")
    args = {"bootstrap_servers": ledger.config.kafka_bootstrap_servers, **client.client_args()}
    for topic, value in _forgeries(ledger):
        with pytest.raises(TopicAuthorizationFailedError):
            await _forge(args, topic, value)
    await _still_untouched(ledger)


def _expected_rules(p: str) -> set[tuple[str, str, str, str, str]]:
    """The README's table for a 2-shard ledger with prefix `p`, written out by hand."""
    t, g, lit, pre = "TOPIC", "GROUP", "LITERAL", "PREFIXED"
    rules = {
        ("client", "WRITE", t, f"{p}ledger.transfers", lit),
        ("client", "READ", t, f"{p}ledger.results", lit),
        ("client", "READ", t, f"{p}ledger.balances", lit),
        ("client", "READ", g, f"{p}ledger.client.", pre),
        ("operator", "WRITE", t, f"{p}ledger.account-commands", lit),
        ("operator", "WRITE", t, f"{p}ledger.transfers", lit),
        ("operator", "READ", t, f"{p}ledger.results", lit),
        ("operator", "READ", t, f"{p}ledger.balances", lit),
        ("operator", "READ", g, f"{p}ledger.operator.", pre),
        ("operator", "WRITE", t, f"{p}ledger.monitor-commands", lit),
        ("operator", "READ", t, f"{p}ledger.alerts", lit),
        ("operator", "READ", t, f"{p}ledger.control", lit),
        ("coordinator", "READ", t, f"{p}ledger.transfers", lit),
        ("coordinator", "READ", t, f"{p}ledger.account-commands", lit),
        ("coordinator", "READ", t, f"{p}ledger.shard-replies", lit),
        ("coordinator", "WRITE", t, f"{p}ledger.shard.", pre),
        ("coordinator", "WRITE", t, f"{p}ledger.results", lit),
        ("coordinator", "WRITE", t, f"{p}ledger.dead-letters", lit),
        ("coordinator", "READ", g, f"{p}ledger.coordinator", lit),
        ("coordinator", "READ", t, f"{p}ledger.control", lit),
        ("coordinator", "WRITE", t, f"{p}ledger.telemetry", lit),
        ("monitor", "READ", t, f"{p}ledger.balances", lit),
        ("monitor", "READ", t, f"{p}ledger.results", lit),
        ("monitor", "READ", t, f"{p}ledger.telemetry", lit),
        ("monitor", "READ", t, f"{p}ledger.monitor-commands", lit),
        ("monitor", "READ", t, f"{p}ledger.alerts", lit),
        ("monitor", "READ", t, f"{p}ledger.control", lit),
        ("monitor", "WRITE", t, f"{p}ledger.alerts", lit),
        ("monitor", "WRITE", t, f"{p}ledger.control", lit),
        ("monitor", "WRITE", t, f"{p}ledger.telemetry", lit),
        ("monitor", "READ", g, f"{p}ledger.monitor", lit),
    }
    for n in ("00", "01"):
        rules |= {
            (f"shard-{n}", "READ", t, f"{p}ledger.shard.{n}.commands", lit),
            (f"shard-{n}", "READ", g, f"{p}ledger.shard.{n}", lit),
            (f"shard-{n}", "WRITE", t, f"{p}ledger.shard-replies", lit),
            (f"shard-{n}", "WRITE", t, f"{p}ledger.balances", lit),
            (f"shard-{n}", "WRITE", t, f"{p}ledger.dead-letters", lit),
            (f"shard-{n}", "WRITE", t, f"{p}ledger.telemetry", lit),
        }
    return rules


async def test_init_applies_exactly_the_specified_acls_and_again_changes_nothing(
    kafka_bootstrap: str, database_url: str, kafka_args: dict[str, Any], kafka_principal: Any
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    prefix = config.namespace.prefix

    async def rules() -> set[tuple[str, str, str, str, str]]:
        held = await describe_acls(kafka_args)
        assert held is not None, "the session's Kafka runs no authorizer"
        return {
            (a.principal, a.operation, a.resource, a.name, a.pattern)
            for a in held
            if a.name.startswith(prefix)
        }

    await init_ledger(config, 2)
    first = await rules()
    assert first == _expected_rules(prefix)
    await init_ledger(config, 2)
    assert await apply_acls(kafka_args, ledger_acls(config.namespace, 2)) == []
    assert await rules() == first


async def test_a_shard_principal_cannot_read_another_shards_commands(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any
) -> None:
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 2)
    shard0: KafkaSecurity = kafka_principal("shard-00")
    consumer = AIOKafkaConsumer(
        config.namespace.shard_commands(1), bootstrap_servers=kafka_bootstrap, **shard0.client_args(),
        auto_offset_reset="earliest", enable_auto_commit=False,
    )  # fmt: skip
    with pytest.raises(TopicAuthorizationFailedError):
        await _read_once(consumer)


async def _read_once(consumer: AIOKafkaConsumer) -> None:
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()


async def test_a_refused_write_reaches_the_relay_as_a_non_retriable_authorization_error(
    kafka_bootstrap: str, database_url: str, kafka_principal: Any
) -> None:
    """The outbox relay's producer sees the broker's refusal as TopicAuthorizationFailedError, not
    retriable and not a timeout, so the relay can park the row instead of retrying it forever."""
    config = fresh_config(kafka_bootstrap, database_url)
    await init_ledger(config, 1)
    client: KafkaSecurity = kafka_principal("client")
    producer = idempotent_producer({"bootstrap_servers": kafka_bootstrap, **client.client_args()})
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError) as refused:
            await producer.send_and_wait(config.namespace.shard_commands(0), b"{}")
    finally:
        await producer.stop()
    assert not refused.value.retriable
