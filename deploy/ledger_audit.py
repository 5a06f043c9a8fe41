"""The monitor's Auditor on PostgreSQL: what `ledger verify` and `ledger reconcile` do, read
only, as one report (monitor/domain/audit.py). deploy/ holds it because it reads what shards/ and
coordinator/ own, and the monitor may import neither; `ledger monitor run` hands it in.

Each audit opens its connections and closes them again: one every `--audit-every` seconds (30 by
default) costs a few milliseconds, and no idle connection is held between audits. The whole audit
is bounded by `timeout_s`, so a server gone silent cannot wedge the audit loop.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from infra.config import LedgerConfig
from infra.postgres_pool import TRANSIENT_ERRORS
from monitor.domain.audit import AuditReport, ChainVerdict, Finding
from schemas.errors import LedgerError
from shards.adapters.postgres_audit import verify_ledger


class AuditUnavailable(LedgerError):
    """The ledger's databases could not be read this time (a connection, a timeout): the next audit
    tries again."""

    retriable = True


class AuditRefused(LedgerError):
    """PostgreSQL refused the audit's reads for a reason retrying cannot fix (a missing grant, a
    schema that is not there): the monitor's role or configuration is wrong."""

    retriable = False


class PostgresAuditor:
    def __init__(self, config: LedgerConfig, timeout_s: float = 300.0) -> None:
        self._config = config
        self._timeout_s = timeout_s

    async def audit(self) -> AuditReport:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._audit()
        except TRANSIENT_ERRORS as e:
            raise AuditUnavailable(f"audit: {type(e).__name__}: {e}") from e
        except asyncpg.PostgresError as e:
            raise AuditRefused(f"audit: {type(e).__name__}: {e}") from e

    async def _audit(self) -> AuditReport:
        config = self._config
        started = time.perf_counter()
        reports = await verify_ledger(config)
        shards = [r.shard for r in reports]
        chains = [ChainVerdict(r.shard, r.entries, r.first_broken_seq, r.problem) for r in reports]
        chained = time.perf_counter()
        sagas, views, one_snapshot = await read_views(config, shards)
        violations = reconcile(sagas, views)
        findings = tuple(Finding(v.check, v.subject, v.detail) for v in violations)
        return AuditReport(
            tuple(chains),
            findings,
            len(sagas),
            one_snapshot,
            chained - started,
            time.perf_counter() - chained,
        )
