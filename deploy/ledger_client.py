"""`LedgerClient`, the one client of the public topics: the CLI, the demo, the benchmark, the chaos
workload and the tests send commands and await results through it, each result once.

It lives in deploy/ (the top floor: entry points and tools) so that no service on the money path
can import it (tests/unit/test_domain_purity.py holds that); it needs only schemas/ and aiokafka.

The results contract a client can rely on: AT LEAST one result per transfer (and per account
command). A result can arrive more than once: the coordinator publishes through an outbox, and a
process or broker that fails after a send but before recording it sends it again. A duplicate is
identical and carries the same `message_id`, so it is dropped here by that id. A second result
with another `message_id` is another answer: a command sent again with the same transfer id but
another body is refused as `transfer_id_reused`, and the original result stands.

Results are read without a consumer group (every partition assigned, no offsets committed), so a
client needs only read access to the results topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.public import AccountCommand, TransferCommand, encode_public
from schemas.topics import Namespace

log = logging.getLogger(__name__)

Result = dict[str, Any]
"""A TransferResult or AccountResult as read from the results topic (transfer-result.json)."""


class LedgerClient:
    """`async with LedgerClient(config.kafka_args(), config.namespace) as client:` then
    `await client.send_transfers([...])` and `await client.wait_for(ids)`.

    `since="start"` reads the results topic from its beginning (a fresh ledger, a test);
    `since="now"` only results published after the client started (a CLI command): its position
    is pinned before anything is sent, so no answer to what it sends can be missed; `since=None`
    reads no results (send only).
    """

    def __init__(
        self,
        kafka_args: Mapping[str, Any],
        namespace: Namespace,
        *,
        since: Literal["start", "now"] | None = "start",
        producer_options: Mapping[str, Any] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.ns = namespace
        self.since = since
        self._producer = AIOKafkaProducer(
            **kafka_args, enable_idempotence=True, acks="all", linger_ms=5, **(producer_options or {})
        )
        self._consumer = None if since is None else AIOKafkaConsumer(
            namespace.results, **kafka_args, enable_auto_commit=False,
            auto_offset_reset="earliest" if since == "start" else "latest", **(consumer_options or {}),
        )  # fmt: skip
        self.on_result: Callable[[str, Result], None] | None = None
        """Called with the id and the result for each new (not duplicate) result, as it is read."""
        self.by_id: dict[str, list[Result]] = {}
        """Distinct results (by message_id) per transfer id or command id, in arrival order."""
        self.arrived: dict[str, float] = {}
        """time.monotonic() when an id's first result was read."""
        self.deliveries: Counter[str] = Counter()
        """How often each message_id was read: more than once is a duplicate, dropped."""
        self.unreadable = 0
        """Records on the results topic that are not a result (not JSON, no id): skipped."""

    async def __aenter__(self) -> Self:
        await self._producer.start()
        try:
            if self._consumer is not None:
                await self._consumer.start()
            if self._consumer is not None and self.since == "now":
                await self._pin_positions(self._consumer)
        except BaseException:
            await self._producer.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._producer.stop()
        finally:
            if self._consumer is not None:
                await self._consumer.stop()

    async def _pin_positions(self, consumer: AIOKafkaConsumer, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while not consumer.assignment():  # assigned once the topic's metadata is in
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {self.ns.results} after {within_s:.0f}s")
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)

    # --- sending ------------------------------------------------------------------------------

    async def send_transfers(self, transfers: Iterable[TransferCommand]) -> list[str]:
        """Produce each (keyed by its transfer id; posts and voids of pending transfers too) and
        wait until the broker has them all."""
        items = [(t.transfer_id.encode(), encode_public(t)) for t in transfers]
        await self.send_raw(self.ns.transfers, items)
        return [key.decode() for key, _ in items]

    async def send_account_commands(self, commands: Iterable[AccountCommand]) -> list[str]:
        """Produce each (keyed by its account id); return the command ids their results will carry."""
        listed = list(commands)
        await self.send_raw(
            self.ns.account_commands, [(c.account_id.encode(), encode_public(c)) for c in listed]
        )
        return [c.command_id for c in listed]

    async def send_until_acknowledged(
        self, command: TransferCommand | AccountCommand, *, retry_s: float = 0.5
    ) -> None:
        """Send one command, keyed as above, again after each failure (of the send or of the
        broker's acknowledgement) until the broker has it: for a workload that runs through broker
        faults (the chaos suite), where a fault may hold a send up but must not end the workload.
        A send that failed after the broker wrote it is written twice: the ledger takes the second
        as a duplicate (same id, same body). Cancel the caller to give up."""
        if isinstance(command, AccountCommand):
            topic, key = self.ns.account_commands, command.account_id
        else:
            topic, key = self.ns.transfers, command.transfer_id
        value = encode_public(command)
        while True:
            try:
                await (await self._producer.send(topic, value, key=key.encode()))
                return
            except KafkaError as e:
                log.info("send to %s failed (%s); retrying in %.1fs", topic, e, retry_s)
                await asyncio.sleep(retry_s)

    async def send_raw(self, topic: str, items: Iterable[tuple[bytes | None, bytes]]) -> None:
        """Records as they are (tests send malformed ones on purpose)."""
        futures = [await self._producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)

    async def enqueue(self, topic: str, key: str, value: bytes) -> None:
        """Hand one record to the producer without awaiting the broker's acknowledgement (a load
        generator's pace); a record the producer cannot deliver has no result, which is how the
        caller finds out."""
        await self._producer.send(topic, value, key=key.encode())

    # --- results ------------------------------------------------------------------------------

    async def poll(self, timeout_ms: int = 200) -> int:
        """Read what arrives within `timeout_ms`; return how many new (not duplicate) results."""
        if self._consumer is None:
            raise RuntimeError("this LedgerClient reads no results (since=None)")
        new = 0
        for records in (await self._consumer.getmany(timeout_ms=timeout_ms)).values():
            for r in records:
                new += self._record(r.value or b"")
        return new

    def _record(self, raw: bytes) -> int:
        try:
            result = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return 0
        if not isinstance(result, dict):
            self.unreadable += 1
            return 0
        key, message_id = result.get("transfer_id") or result.get("command_id"), result.get("message_id")
        if not isinstance(key, str) or not isinstance(message_id, str):
            self.unreadable += 1
            return 0
        self.deliveries[message_id] += 1
        if self.deliveries[message_id] > 1:
            return 0
        self.by_id.setdefault(key, []).append(result)
        self.arrived.setdefault(key, time.monotonic())
        if self.on_result is not None:
            self.on_result(key, result)
        return 1

    def result(self, id_: str) -> Result | None:
        """The first result for a transfer id or command id, if one has arrived."""
        results = self.by_id.get(id_)
        return results[0] if results else None

    def final(self, id_: str) -> Result | None:
        """The first final result of an id: a pending transfer's `pending` result is not final."""
        return next((r for r in self.by_id.get(id_, []) if r.get("state") != "pending"), None)

    async def wait_for(
        self, ids: Sequence[str], within_s: float = 60.0, *, final: bool = False
    ) -> dict[str, Result]:
        """The first result of each id (with `final`: the first final one); TimeoutError naming
        how many are missing after `within_s`."""
        pick = self.final if final else self.result
        deadline = time.monotonic() + within_s
        while missing := [i for i in ids if pick(i) is None]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} results missing after {within_s:.0f}s: {missing[:3]}")
            await self.poll()
        return {i: r for i in ids if (r := pick(i)) is not None}

    async def wait_one(self, id_: str, within_s: float, *, final: bool = False) -> Result | None:
        """The first (or first final) result for one id, or None when none came within `within_s`."""
        try:
            return (await self.wait_for([id_], within_s, final=final))[id_]
        except TimeoutError:
            return None
