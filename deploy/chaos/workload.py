"""The chaos workload: transfers between a fixed set of accounts with a known total, some of them
two-phase (held, then posted, posted for less, voided or left to expire: pending_workload.py), some
linked batches of 2-5 legs (linked_workload.py), duplicates of some commands (identical, and the
same id with another body) and balance reads, every one of them recorded into the History the
checker judges.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from deploy.bench.workload import Move, Workload, WorkloadSettings
from deploy.chaos.checker import BalanceRead, History, Observed, Sent
from deploy.chaos.linked_checker import LegOutcome
from deploy.chaos.linked_workload import LinkedSettings, plan_batch
from deploy.chaos.pending_workload import PendingSettings, hold_then_resolve, plan, sent_record
from deploy.ledger_client import LedgerClient, Result
from deploy.stack import ISSUER
from infra.config import LedgerConfig
from infra.postgres_migrations import quoted_schema
from schemas.partitioning import PartitionMap
from schemas.public import (
    FreezeAccount,
    OpenAccountRequest,
    TransferBatch,
    TransferCommand,
    TransferFunds,
    UnfreezeAccount,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosWorkloadSettings:
    accounts: int = 40
    zipf_s: float = 1.0
    cross_fraction: float = 0.5
    funding: int = 5_000_000
    """What each account receives from the issuer before the run: the known total."""
    max_amount: int = 5_000
    reject_fraction: float = 0.12
    """Sized beyond any balance; Zipf-hot accounts running dry add more rejections."""
    duplicate_fraction: float = 0.05
    reuse_fraction: float = 0.02
    freeze_every_s: float = 2.0
    """One account at a time is frozen, another every this many seconds: a cross-shard credit to
    it is refused after its debit was reserved, so the saga compensates (0: never)."""
    pending: PendingSettings = field(default_factory=PendingSettings)
    """Two-phase transfers: their share of the moves, timeouts, and how they are resolved."""
    linked: LinkedSettings = field(default_factory=LinkedSettings)
    """Linked batches: their share of the moves, their size, how many are doomed or sent twice."""
    seed: int = 1


class ChaosClient:
    """Produces the workload onto the public topics and records everything into a History, both
    through a LedgerClient: its sends retried until the broker has them, its results read from the
    start of the results topic, each distinct result (by message_id) once."""

    def __init__(self, config: LedgerConfig, pmap: PartitionMap, settings: ChaosWorkloadSettings) -> None:
        self.config = config
        self.settings = settings
        self.moves = Workload(
            WorkloadSettings(
                accounts=settings.accounts, cross_fraction=settings.cross_fraction, zipf_s=settings.zipf_s,
                max_amount=settings.max_amount, reject_fraction=settings.reject_fraction,
                funding=settings.funding, seed=settings.seed, prefix="chaos", balanced=True,
            ),
            pmap,
        )  # fmt: skip
        self.rng = random.Random(settings.seed + 1)  # noqa: S311 - a workload, not a secret
        self.sent: list[Sent] = []
        self.pending_ids: set[str] = set()
        """The pending transfers sent: settled only by a final (not `pending`) result."""
        self.results: list[Observed] = []
        self.reads: list[BalanceRead] = []
        self.issued = 0
        self.ledger = LedgerClient(config.kafka_args(), config.namespace, since="start")
        self.ledger.on_result = self._observe
        self._collector: asyncio.Task[None] | None = None
        self.sent_at: dict[str, float] = {}
        """Transfer id -> when it was first sent (monotonic); answered_at: its first result."""
        self.answered_at: dict[str, float] = {}
        self.shards_of: dict[str, frozenset[int]] = {}
        """Transfer id -> the shards it touches (a post or void: its hold's)."""
        self._pmap = pmap
        self.completed_at: list[float] = []
        """When each distinct completed result arrived (monotonic): recovery is to the first new one."""
        self.frozen: str | None = None
        self.dooms: dict[str, str | None] = {}
        """Batch id -> how it was doomed on purpose (too_large, to_frozen) or None."""
        self.freezes = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._reading: asyncio.Task[None] | None = None
        self._rotating: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChaosClient:
        await self.ledger.__aenter__()
        self._collector = asyncio.create_task(self._collect())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in [*self._pending, *([self._collector] if self._collector else [])]:
            task.cancel()
        await self.ledger.__aexit__(exc_type, exc, tb)

    def history(self) -> History:
        return History(
            {"EUR": self.issued}, frozenset({ISSUER}), list(self.sent), list(self.results), list(self.reads)
        )

    async def prepare(self, within_s: float = 120) -> None:
        """Open the issuer and every account and fund each: `issued` is the known total."""
        opens = [OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**15 if a == ISSUER else 0, {})
                 for a in [ISSUER, *self.moves.accounts]]  # fmt: skip
        for request in opens:
            await self.ledger.send_until_acknowledged(request)
        await self._wait_for(lambda: all(o.command_id in self.ledger.by_id for o in opens), within_s)
        funds = [
            TransferFunds(str(uuid.uuid4()), ISSUER, a, self.settings.funding, "EUR")
            for a in self.moves.accounts
        ]
        for command in funds:
            await self.send(command)
        ids = {f.transfer_id for f in funds}
        await self._wait_for(lambda: all(t in self.ledger.by_id for t in ids), within_s)
        completed = {r.transfer_id for r in self.results if r.transfer_id in ids and r.state == "completed"}
        self.issued = self.settings.funding * len(completed)

    def start_next(self) -> None:
        """Draw the next transfer, sometimes with a duplicate or a reused id after it, and send
        them in the background, in that order: a send held up by a fault holds up no other."""
        move = self.moves.next()
        draw = self.rng.random()
        if draw < self.settings.pending.share:
            pending = plan(move, self.rng, self.settings.pending)
            self.pending_ids.add(pending.hold.transfer_id)
            self._background(hold_then_resolve(pending, self.send, lambda t: t in self.ledger.by_id))
            return
        if draw < self.settings.pending.share + self.settings.linked.share:
            self._start_batch(move)
            return
        command = TransferFunds(str(uuid.uuid4()), move.debit, move.credit, move.amount, "EUR")
        batch = [(command, "original")]
        draw = self.rng.random()
        if draw < self.settings.duplicate_fraction:
            batch.append((command, "duplicate"))
        elif draw < self.settings.duplicate_fraction + self.settings.reuse_fraction:
            other = TransferFunds(command.transfer_id, move.debit, move.credit, move.amount + 1, "EUR")
            batch.append((other, "reused"))
        self._background(self._send_in_order(batch))

    def _start_batch(self, first: Move) -> None:
        """A linked batch of `first` and more moves, maybe doomed, maybe sent twice."""
        s = self.settings
        p = plan_batch(
            first, self.moves.next, self.moves.shard_of, self.rng, s.linked,
            max_amount=s.max_amount, too_large=s.funding * 10, frozen=self.frozen,
        )  # fmt: skip
        self.dooms[p.batch.batch_id] = p.doom
        batch = [(p.batch, "original"), *([(p.batch, "duplicate")] if p.duplicate else [])]
        self._background(self._send_in_order(batch))

    def start_reads(self) -> None:
        """Read a few balances in the background, unless the last reads are still under way."""
        if self._reading is None or self._reading.done():
            self._reading = self._background(self.read_balances())

    def start_freeze_rotation(self) -> None:
        """Unfreeze the frozen account, if any, and freeze another, in the background (unless the
        last rotation is still being sent: freezes and unfreezes of one account stay in order)."""
        if self._rotating is None or self._rotating.done():
            self._rotating = self._background(self.rotate_freeze())

    async def drain(self) -> None:
        """Wait until everything started has been sent."""
        while self._pending:
            await asyncio.gather(*self._pending)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _send_in_order(self, batch: Sequence[tuple[TransferCommand, str]]) -> None:
        for command, kind in batch:
            await self.send(command, kind)

    async def rotate_freeze(self) -> None:
        """Unfreeze the frozen account, if any, and freeze another. Both go on one partition (keyed
        by account), so the shard applies them in order; their results are not awaited."""
        await self.unfreeze()
        self.frozen = self.rng.choice(self.moves.accounts)
        await self._account_command(FreezeAccount(str(uuid.uuid4()), self.frozen))
        self.freezes += 1

    async def unfreeze(self) -> None:
        if self.frozen is not None:
            await self._account_command(UnfreezeAccount(str(uuid.uuid4()), self.frozen))
            self.frozen = None

    async def _account_command(self, command: FreezeAccount | UnfreezeAccount) -> None:
        await self.ledger.send_until_acknowledged(command)

    async def send(self, command: TransferCommand, kind: str = "original") -> None:
        self.sent.append(sent_record(command, kind))
        self.sent_at.setdefault(command.transfer_id, time.monotonic())
        self.shards_of.setdefault(command.transfer_id, self._touched(command))
        await self.ledger.send_until_acknowledged(command)

    def _touched(self, command: TransferCommand) -> frozenset[int]:
        accounts: tuple[str, ...]
        if isinstance(command, TransferFunds):
            accounts = (command.debit_account, command.credit_account)
        elif isinstance(command, TransferBatch):
            accounts = tuple(a for leg in command.transfers for a in (leg.debit_account, leg.credit_account))
        else:
            return self.shards_of.get(command.pending_id, frozenset())
        return frozenset(self._pmap.shard_for(a) for a in accounts)

    async def read_balances(self, count: int = 3) -> None:
        """Read a few accounts' available balance and limit from their shards (a failed read, as
        when PostgreSQL is restarting, is skipped: it proves nothing either way)."""
        for account in self.rng.sample(self.moves.accounts, min(count, len(self.moves.accounts))):
            shard = self.moves.shard_of[account]
            schema = quoted_schema(self.config.namespace.shard_schema(shard))
            try:
                conn = await asyncpg.connect(self.config.shard_database_url(shard), timeout=2)
                try:
                    row = await conn.fetchrow(
                        f"SELECT b.posted - b.reserved, a.overdraft_limit FROM {schema}.accounts a"  # noqa: S608
                        f" JOIN {schema}.balances b USING (account_id) WHERE account_id = $1",
                        account,
                    )
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.info("balance read of %s skipped: %s", account, e)
                continue
            if row is not None:
                self.reads.append(BalanceRead(account, row[0], -row[1]))

    async def _collect(self) -> None:
        """Read results until cancelled; a read failed by a fault is tried again."""
        while True:
            try:
                await self.ledger.poll()
            except KafkaError as e:
                log.info("reading results failed (%s); retrying", e)
                await asyncio.sleep(0.5)

    def _observe(self, key: str, result: Result) -> None:
        """Record a new result (the LedgerClient calls this once per message_id, as it is read)."""
        if "transfer_id" not in result:
            return  # an account command's result: the LedgerClient keeps it (ledger.result)
        now = time.monotonic()
        self.answered_at.setdefault(key, now)
        if result["state"] == "completed":
            self.completed_at.append(now)
        legs = result.get("legs")
        self.results.append(
            Observed(
                key, str(result["message_id"]), str(result["state"]), result.get("reason"),
                str(result.get("request_fingerprint")), result.get("amount"), result.get("pending_id"),
                None if legs is None else tuple(
                    LegOutcome(leg["transfer_id"], leg["state"], leg.get("reason")) for leg in legs
                ),
                result.get("failed_leg"),
            )
        )  # fmt: skip

    async def wait_settled(self, within_s: float) -> bool:
        """Wait until every transfer sent has a result (a pending transfer: its final one, so that
        every hold has been resolved); False when the bound ran out."""
        wanted = {s.transfer_id for s in self.sent}
        try:
            await self._wait_for(lambda: all(self._settled(t) for t in wanted), within_s)
        except TimeoutError:
            return False
        return True

    def _settled(self, transfer_id: str) -> bool:
        if transfer_id in self.pending_ids:
            return self.ledger.final(transfer_id) is not None
        return transfer_id in self.ledger.by_id

    async def _wait_for(self, done: Callable[[], bool], within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while not done():  # noqa: ASYNC110 - the condition reads what the collector task appends
                await asyncio.sleep(0.1)
