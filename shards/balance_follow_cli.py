"""`ledger balance ID --follow`: the balance now, then each change the account's shard publishes
on ledger.balances. A command module of its own, so that the read-only commands of
shards/audit_cli.py load no Kafka client (tests/unit/test_cli_imports.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.partitioner import DefaultPartitioner

from deploy.exit_codes import NOT_FOUND
from infra.config import LedgerConfig
from schemas.balances import decode_balance

BalanceNow = Callable[[LedgerConfig, str, Any, Any], Awaitable[dict[str, Any] | None]]


async def follow_balance(
    config: LedgerConfig, account_id: str, changes: int | None, balance_now: BalanceNow
) -> None:
    """The balance now, then each BalanceChanged of the account. The consumer is placed at the end
    of the account's partition BEFORE the balance is read, so no change falls between the two."""
    topic, key = config.namespace.balances, account_id.encode()
    # Subscribed first: start() then waits for the topic's metadata, which partitions_for_topic reads.
    consumer = AIOKafkaConsumer(topic, **config.kafka_args(), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
    except UnknownTopicOrPartitionError:
        raise click.ClickException(f"no topic {topic}: run `ledger init`") from None
    try:
        consumer.unsubscribe()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise click.ClickException(f"no topic {topic}: run `ledger init`")
        mine = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
        consumer.assign([mine])
        await consumer.seek_to_end(mine)
        await consumer.position(mine)
        found = await balance_now(config, account_id, None, None)
        if found is None:
            click.echo(f"no account {account_id} (account_not_found)", err=True)
            sys.exit(NOT_FOUND)
        click.echo(json.dumps(found), nl=True)
        seen = 0
        while changes is None or seen < changes:
            for records in (await consumer.getmany(mine, timeout_ms=1000)).values():
                for r in records:
                    if r.key == key and (changes is None or seen < changes):
                        click.echo(json.dumps(asdict(decode_balance(r.value or b""))))
                        seen += 1
    finally:
        await consumer.stop()
