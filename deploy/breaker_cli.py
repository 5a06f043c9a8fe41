"""`ledger breaker open|close|status --shard N`: an operator's hand on a shard's circuit breaker.

Open and close are SetBreaker commands onto the monitor's command topic, as the operator principal:
the monitor is the one writer of the control topic (so every change gets the next seq), applies
them, and publishes the BreakerState that coordinators follow. An operator's open is latched: the
monitor will not close it by itself. Status reads the control topic from its start.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import sys
import time
import uuid
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnknownTopicOrPartitionError

from deploy.exit_codes import TEMPFAIL
from deploy.ledger_client import LedgerClient
from deploy.stack_env import ledger_config
from infra.config import LedgerConfig
from schemas.breaker import BreakerState, SetBreaker, closed, decode_breaker_state, encode_breaker

_OPERATOR = re.compile(r"[^A-Za-z0-9_.@-]")


async def read_breakers(config: LedgerConfig, within_s: float = 10.0) -> dict[int, BreakerState]:
    """Each shard's latest BreakerState on the control topic (read to its end, or for `within_s`)."""
    topic = config.namespace.control
    # Subscribed first: start() then waits for the topic's metadata, which partitions_for_topic reads.
    consumer = AIOKafkaConsumer(topic, **config.kafka_args(), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
    except UnknownTopicOrPartitionError:
        raise click.ClickException(f"no topic {topic}: run `ledger init`") from None
    latest: dict[int, BreakerState] = {}
    try:
        consumer.unsubscribe()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions) if partitions else {}
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and await _behind(consumer, ends):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    state = decode_breaker_state(r.value or b"")
                    if state.newer_than(latest.get(state.shard)):
                        latest[state.shard] = state
    finally:
        await consumer.stop()
    return latest


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    return any([await consumer.position(tp) < end for tp, end in ends.items()])


def _show(state: BreakerState) -> dict[str, Any]:
    return {
        "shard": state.shard, "state": state.state, "latched": state.latched, "reason": state.reason,
        "changed_by": state.changed_by, "seq": state.seq, "since_ms": state.since_ms,
    }  # fmt: skip


async def _set(config: LedgerConfig, command: SetBreaker, wait_s: float) -> BreakerState | None:
    before = (await read_breakers(config)).get(command.shard, closed(command.shard))
    async with LedgerClient(config.kafka_args(), config.namespace, since=None) as client:
        await client.send_raw(
            config.namespace.monitor_commands, [(str(command.shard).encode(), encode_breaker(command))]
        )
    want = "open" if command.action == "open" else "closed"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        now = (await read_breakers(config)).get(command.shard)
        if now is not None and now.seq > before.seq and now.state == want:
            return now
        await asyncio.sleep(0.5)
    return None


@click.group("breaker")
def breaker_group() -> None:
    """Shards' circuit breakers: see them, open one, close one."""


@breaker_group.command("status")
@click.option("--shard", type=click.IntRange(0, 1023), default=None, help="One shard; default: all.")
def status_command(shard: int | None) -> None:
    """Each shard's breaker (a shard never changed is closed), as JSON."""
    config = ledger_config("operator", os.environ)
    latest = asyncio.run(read_breakers(config))
    shards = [shard] if shard is not None else sorted(latest)
    click.echo(json.dumps([_show(latest.get(s, closed(s))) for s in shards], indent=2))


def _action(action: str, shard: int, reason: str, wait: float) -> None:
    config = ledger_config("operator", os.environ)
    operator = _OPERATOR.sub("-", getpass.getuser())[:64] or "operator"
    command = SetBreaker(str(uuid.uuid4()), shard, action, reason, operator)
    state = asyncio.run(_set(config, command, wait))
    if state is None:
        click.echo(
            f"shard {shard}: the monitor has not applied it within {wait:.0f}s (is `ledger monitor run`"
            " running?); it will when it reads its commands",
            err=True,
        )
        sys.exit(TEMPFAIL)
    click.echo(json.dumps(_show(state), indent=2))


_SHARD = click.option("--shard", type=click.IntRange(0, 1023), required=True)
_REASON = click.option("--reason", required=True, help="Why, for the record (at most 200 characters).")
_WAIT = click.option("--wait", type=float, default=30.0, show_default=True, help="Seconds to wait for it.")


@breaker_group.command("open")
@_SHARD
@_REASON
@_WAIT
def open_command(shard: int, reason: str, wait: float) -> None:
    """Open a shard's breaker, latched: new transfers touching it are refused until it is closed."""
    _action("open", shard, reason, wait)


@breaker_group.command("close")
@_SHARD
@_REASON
@_WAIT
def close_command(shard: int, reason: str, wait: float) -> None:
    """Close a shard's breaker (the only way out of a latched one): check the shard first."""
    _action("close", shard, reason, wait)
