"""What the load is driven against: the ledger through its public Kafka topics, or the baseline.

Both answer `submit(move)` with a future that resolves to the transfer's terminal outcome, so one
load loop (open or closed) drives either, and their reports compare like with like. A two-phase
move is a hold and then, as soon as the hold is in place, its post (in full or for half) or void:
its outcome is worded `pending post completed`, `pending post half completed`, `pending void
voided`, or `pending hold rejected (REASON)` when the hold itself is refused. A linked batch is
one TransferBatch (one transaction for the baseline): `linked completed`, `linked rejected (REASON)`
or, when the ledger had to undo legs already applied, `linked compensated (REASON)`.
"""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType

import asyncpg

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.bench import baseline
from deploy.bench.workload import Move, Resolution
from deploy.ledger_client import LedgerClient, Result
from deploy.stack import ISSUER
from infra.config import LedgerConfig
from infra.postgres_migrations import quoted_schema
from schemas.public import (
    BatchLeg,
    OpenAccountRequest,
    PostPendingTransfer,
    TransferBatch,
    TransferCommand,
    TransferFunds,
    VoidPendingTransfer,
    encode_public,
)

HOLD_TIMEOUT_MS = 60_000
"""How long a benchmark hold lasts: far beyond the post that follows it at once."""


def two_phase_outcome(resolution: Resolution, outcome: str) -> str:
    """`pending post half completed`: the two-phase path, the way both targets word it."""
    return f"pending {resolution.replace('_', ' ')} {outcome}"


def outcome_of(result: dict[str, object]) -> str:
    """`completed`, `compensated (account_frozen)`, ...: the state, and the reason when there is one."""
    state = result.get("state", result.get("outcome"))
    return f"{state} ({result['reason']})" if result.get("reason") else str(state)


class LedgerTarget:
    """Transfers produced onto `ledger.transfers`; outcomes read from `ledger.results`, both through
    the LedgerClient (duplicate results dropped by message_id)."""

    name = "ledger"

    def __init__(self, config: LedgerConfig, shards: list[int], accounts: list[str], funding: int) -> None:
        self.config = config
        self.shards = shards
        self.accounts = accounts
        self.funding = funding
        self.pending: dict[str, asyncio.Future[str]] = {}
        """Awaiting an id's first result."""
        self.finals: dict[str, asyncio.Future[str]] = {}
        """Awaiting a hold's final result (its first one says `pending`)."""
        # The load generator is a client like any other: idempotent, acks from all replicas.
        self.client = LedgerClient(
            config.kafka_args(), config.namespace, since="now",
            producer_options={"max_batch_size": 512 * 1024},
            consumer_options={"fetch_max_bytes": 16 * 1024 * 1024},
        )  # fmt: skip
        self.client.on_result = self._resolve
        self._collector: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LedgerTarget:
        await self.client.__aenter__()
        self._collector = asyncio.create_task(self._collect())
        try:
            await self._prepare()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._collector is not None:
            self._collector.cancel()
        await self.client.__aexit__(exc_type, exc, tb)

    async def submit(self, move: Move) -> asyncio.Future[str]:
        transfer_id = str(uuid.uuid4())
        if move.linked:
            legs = tuple(BatchLeg(str(uuid.uuid4()), m.debit, m.credit, m.amount, "EUR") for m in move.legs)
            batch = TransferBatch(transfer_id, legs, True)
            return asyncio.ensure_future(self._linked(batch, await self._send(batch)))
        if move.pending is None:
            return await self._send(TransferFunds(transfer_id, move.debit, move.credit, move.amount, "EUR"))
        held = await self._send(
            TransferFunds(
                transfer_id, move.debit, move.credit, move.amount, "EUR", pending_timeout_ms=HOLD_TIMEOUT_MS
            )
        )
        return asyncio.ensure_future(self._settle(move, move.pending, transfer_id, held))

    async def _settle(
        self, move: Move, resolution: Resolution, hold_id: str, held: asyncio.Future[str]
    ) -> str:
        """Once the hold is in place, post or void it; the outcome is the post's or void's, read
        after the hold's own final result (which must agree with it) has been read too."""
        if (first := await held) != "pending":
            return f"pending hold {first}"
        hold_ended = self._final(hold_id)
        command: PostPendingTransfer | VoidPendingTransfer
        if resolution == "void":
            command = VoidPendingTransfer(str(uuid.uuid4()), hold_id)
        else:
            amount = move.post_amount if resolution == "post_half" else None
            command = PostPendingTransfer(str(uuid.uuid4()), hold_id, amount)
        outcome = await (await self._send(command))
        ended = await hold_ended
        if outcome in ("completed", "voided") and ended != outcome:
            raise RuntimeError(f"hold {hold_id} ended {ended!r} after its {resolution} was {outcome!r}")
        return two_phase_outcome(resolution, outcome)

    async def _linked(self, batch: TransferBatch, answered: asyncio.Future[str]) -> str:
        """A batch's one result, which must list every leg, each ending as the batch did (a leg
        that moved while its batch failed, or the reverse, fails the run)."""
        outcome = await answered
        result = self.client.result(batch.batch_id) or {}
        state = result.get("state")
        sent = [leg.transfer_id for leg in batch.transfers]
        legs = result.get("legs")
        said = [(leg.get("transfer_id"), leg.get("state")) for leg in legs] if isinstance(legs, list) else []
        if [leg_id for leg_id, _ in said] != sent or {leg_state for _, leg_state in said} - {state}:
            raise RuntimeError(f"batch {batch.batch_id} {state} but its legs say {said}")
        return f"linked {outcome}"

    def _final(self, key: str) -> asyncio.Future[str]:
        """A future for a hold's final result, which may have been read already."""
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if (result := self.client.final(key)) is not None:
            ended.set_result(outcome_of(result))
        else:
            self.finals[key] = ended
        return ended

    async def _send(self, command: TransferCommand | OpenAccountRequest) -> asyncio.Future[str]:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if isinstance(command, OpenAccountRequest):
            key, topic = command.command_id, self.config.namespace.account_commands
        else:
            key, topic = command.transfer_id, self.config.namespace.transfers
        self.pending[key] = done
        await self.client.enqueue(topic, key, encode_public(command))
        return done

    async def _collect(self) -> None:
        while True:
            await self.client.poll(timeout_ms=100)

    def _resolve(self, key: str, result: Result) -> None:
        waiting = self.pending.pop(key, None)
        if waiting is None and result.get("state") != "pending":
            waiting = self.finals.pop(key, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(outcome_of(result))

    async def _prepare(self, within_s: float = 300) -> None:
        """Open the issuer and every account, then fund them, through the public topics. On a
        long-lived ledger the issuer (or a reused account prefix) may exist already: that is fine."""
        opens = [
            OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 10**17 if a == ISSUER else 0, {})
            for a in [ISSUER, *self.accounts]
        ]
        await _all_succeed(
            [await self._send(o) for o in opens], ("done", "rejected (account_exists)"), within_s
        )
        funds = [TransferFunds(str(uuid.uuid4()), ISSUER, a, self.funding, "EUR") for a in self.accounts]
        await _all_succeed([await self._send(t) for t in funds], ("completed",), within_s)

    async def resends(self) -> int:
        """Saga commands sent more than once so far (the sweeper's retries of unanswered steps)."""
        conn = await asyncpg.connect(self.config.database_url)
        try:
            schema = quoted_schema(self.config.namespace.coordinator_schema)
            found = await conn.fetchval(f"SELECT coalesce(sum(sends - 1), 0) FROM {schema}.saga_steps")  # noqa: S608
        finally:
            await conn.close()
        return int(found)

    async def violations(self) -> list[str]:
        """The reconciliation's findings over every shard and every saga (empty when correct)."""
        sagas, views, _ = await read_views(self.config, self.shards)
        return [f"{v.check}: {v.subject}: {v.detail}" for v in reconcile(sagas, views)]


async def _all_succeed(futures: list[asyncio.Future[str]], wanted: tuple[str, ...], within_s: float) -> None:
    """Set-up commands must all succeed, or the run fails before it starts."""
    done, missing = await asyncio.wait(futures, timeout=within_s)
    if missing:
        raise TimeoutError(f"{len(missing)} set-up results missing after {within_s:.0f}s")
    failed = [f.result() for f in done if f.result() not in wanted]
    if failed:
        raise RuntimeError(f"{len(failed)} set-up commands failed, e.g. {failed[0]}")


class BaselineTarget:
    """The naive single-PostgreSQL ledger, with N connections (see baseline.py)."""

    def __init__(self, dsn: str, accounts: list[str], funding: int, connections: int) -> None:
        self.name = f"baseline ({connections} connections)"
        self.dsn = dsn
        self.accounts = accounts
        self.funding = funding
        self.connections = connections
        self.schema = "bench_baseline"
        self.pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> BaselineTarget:
        await baseline.create_baseline(self.dsn, self.schema, self.accounts, self.funding)
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.connections, max_size=self.connections,
            server_settings={"search_path": self.schema},
        )  # fmt: skip
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def submit(self, move: Move) -> asyncio.Future[str]:
        return asyncio.ensure_future(self._transfer(move))

    async def _transfer(self, move: Move) -> str:
        assert self.pool is not None, "used outside `async with`"
        if move.linked:
            async with self.pool.acquire() as conn:
                return f"linked {await baseline.batch(conn, move.legs)}"
        if move.pending is None:
            async with self.pool.acquire() as conn:
                return await baseline.transfer(conn, move)
        async with self.pool.acquire() as conn:  # the hold and its post: two requests, as a client makes
            held, hold_id = await baseline.hold(conn, move)
        if held != "pending":
            return f"pending hold {held}"
        amount = {"void": 0, "post_half": move.post_amount, "post": None}[move.pending]
        async with self.pool.acquire() as conn:
            return two_phase_outcome(move.pending, await baseline.settle(conn, hold_id, amount))

    async def resends(self) -> int:
        return 0  # one transaction per transfer: nothing to retry

    async def violations(self) -> list[str]:
        expected = self.funding * len(self.accounts)
        money, reserved = await baseline.total(self.dsn, self.schema)
        found = [f"baseline holds {money}, funded {expected}"] if money != expected else []
        return found + ([f"baseline still reserves {reserved} after the run"] if reserved else [])
