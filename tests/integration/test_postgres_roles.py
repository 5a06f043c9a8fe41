"""Least privilege in PostgreSQL: each process's role can do its work and nothing more."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from coordinator.adapters.postgres_reconcile import read_views
from coordinator.saga.reconciliation import reconcile
from deploy.ledger_init import init_ledger
from deploy.postgres_roles import LedgerRoles, drop_roles, generate_passwords, role_configs, role_dsn
from infra.config import LedgerConfig
from infra.postgres_control import PostgresControl
from infra.postgres_pool import open_pool
from schemas.public import OpenAccountRequest, TransferFunds, encode_public
from shards.service.audit import verify_chain
from tests.ledger_harness import (
    ResultCollector,
    accounts_on,
    balances,
    fresh_config,
    produce_raw,
    running_ledger,
)

DENIED = (asyncpg.InsufficientPrivilegeError,)


@dataclass
class Provisioned:
    config: LedgerConfig
    roles: LedgerRoles
    passwords: dict[str, str]

    def dsn(self, role: str) -> str:
        return role_dsn(self.config.database_url, role, self.passwords[role])


@pytest.fixture
async def provisioned(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Provisioned]:
    config = fresh_config(kafka_bootstrap, database_url)
    roles = LedgerRoles(config.namespace, 2)
    passwords = generate_passwords(roles)
    await init_ledger(config, 2, db_role_passwords=passwords)
    yield Provisioned(config, roles, passwords)
    conn = await asyncpg.connect(database_url)
    try:
        await drop_roles(conn, roles)
    finally:
        await conn.close()


async def _refused(dsn: str, statement: str, *, why: str = "permission denied") -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # The reader's sessions are read-only by default, but any session may turn that off: the
        # refusal must come from the missing privilege.
        await conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(statement)
        assert why in str(caught.value), f"{statement!r}: {caught.value}"
    finally:
        await conn.close()


async def _allowed(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(statement)
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    pass


def _account_insert(schema: str) -> str:
    return (
        f'INSERT INTO "{schema}".accounts (account_id, currency, status, overdraft_limit)'
        " VALUES ('planted', 'EUR', 'active', 0)"
    )


async def test_a_shard_role_writes_only_its_own_schema(provisioned: Provisioned) -> None:
    ns, roles = provisioned.config.namespace, provisioned.roles
    shard0 = provisioned.dsn(roles.shard(0))
    own, other = ns.shard_schema(0), ns.shard_schema(1)
    await _allowed(shard0, _account_insert(own))
    await _refused(shard0, _account_insert(other))
    await _refused(shard0, f'SELECT * FROM "{other}".journal')
    await _refused(shard0, f'DELETE FROM "{ns.coordinator_schema}".transfers')
    await _refused(shard0, f'DELETE FROM "{ns.control_schema}".partition_assignments')
    await _refused(
        shard0, f'INSERT INTO "{ns.control_schema}".partition_maps (version, shard_count) VALUES (9, 1)'
    )
    await _refused(shard0, f"INSERT INTO \"{own}\".schema_migrations (version) VALUES ('9999')")


async def test_a_shard_role_cannot_rewrite_its_journal_or_create_anything(provisioned: Provisioned) -> None:
    ns, roles = provisioned.config.namespace, provisioned.roles
    shard0, own = provisioned.dsn(roles.shard(0)), ns.shard_schema(0)
    # "permission denied for table", not the append-only trigger: the role lacks the right itself.
    await _refused(
        shard0, f'UPDATE "{own}".journal SET amount = 1', why="permission denied for table journal"
    )
    await _refused(shard0, f'DELETE FROM "{own}".journal', why="permission denied for table journal")
    await _refused(shard0, f'TRUNCATE "{own}".journal', why="permission denied for table journal")
    await _refused(shard0, f'DELETE FROM "{own}".worker_state')
    await _refused(shard0, f'CREATE TABLE "{own}".mine (x int)', why="permission denied for schema")
    await _refused(shard0, "CREATE TABLE public.mine (x int)", why="permission denied for schema public")
    await _refused(shard0, "CREATE SCHEMA mine", why="permission denied for database")
    await _refused(shard0, "CREATE TEMPORARY TABLE mine (x int)", why="permission denied")
    await _refused(shard0, f'DROP TABLE "{own}".accounts', why="must be owner")
    await _refused(shard0, f'ALTER TABLE "{own}".journal DISABLE TRIGGER ALL', why="must be owner")


async def test_a_shard_role_publishes_only_its_own_chain_heads(provisioned: Provisioned) -> None:
    ns, roles = provisioned.config.namespace, provisioned.roles
    shard0, table = provisioned.dsn(roles.shard(0)), f'"{ns.control_schema}".chain_checkpoints'
    await _allowed(shard0, f"INSERT INTO {table} (shard, seq, hash) VALUES (0, 1, '\\x00')")
    await _refused(
        shard0, f"INSERT INTO {table} (shard, seq, hash) VALUES (1, 1, '\\x00')", why="row-level security"
    )


async def test_the_coordinator_role_writes_only_its_own_schema(provisioned: Provisioned) -> None:
    ns, roles = provisioned.config.namespace, provisioned.roles
    coordinator = provisioned.dsn(roles.coordinator)
    await _allowed(coordinator, f'DELETE FROM "{ns.coordinator_schema}".transfers')
    for shard in (0, 1):
        await _refused(coordinator, _account_insert(ns.shard_schema(shard)))
        await _refused(coordinator, f'SELECT * FROM "{ns.shard_schema(shard)}".journal')
    await _refused(coordinator, f'DELETE FROM "{ns.control_schema}".partition_assignments')
    await _refused(
        coordinator, f"INSERT INTO \"{ns.control_schema}\".chain_checkpoints VALUES (0, 9, '\\x00')"
    )
    await _refused(coordinator, f'CREATE TABLE "{ns.coordinator_schema}".mine (x int)')


async def test_the_reader_reads_everything_and_writes_nothing(provisioned: Provisioned) -> None:
    ns, roles = provisioned.config.namespace, provisioned.roles
    reader = provisioned.dsn(roles.reader)
    schemas = [ns.control_schema, ns.coordinator_schema, ns.shard_schema(0), ns.shard_schema(1)]
    admin = await asyncpg.connect(provisioned.config.database_url)
    try:
        tables = [
            (r[0], r[1])
            for r in await admin.fetch(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[])", schemas
            )
        ]
    finally:
        await admin.close()
    assert len(tables) > 10
    for schema, table in tables:
        if table != "schema_migrations":
            await _allowed(reader, f'SELECT * FROM "{schema}"."{table}" LIMIT 1')
        # DELETE needs no column values, so it tries every table alike.
        await _refused(reader, f'DELETE FROM "{schema}"."{table}"')
    await _refused(reader, f'CREATE TABLE "{ns.coordinator_schema}".mine (x int)')


async def _grants(database_url: str, config: LedgerConfig, roles: LedgerRoles) -> object:
    ns = config.namespace
    schemas = [ns.control_schema, ns.coordinator_schema, ns.shard_schema(0), ns.shard_schema(1)]
    conn = await asyncpg.connect(database_url)
    try:
        return (
            await conn.fetch(
                "SELECT n.nspname, c.relname, c.relacl::text, c.relrowsecurity FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1::text[])"
                " ORDER BY 1, 2",
                schemas,
            ),
            await conn.fetch(
                "SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = ANY($1::text[]) ORDER BY 1",
                schemas,
            ),
            await conn.fetch(
                "SELECT policyname, roles::text, cmd, qual, with_check FROM pg_policies"
                " WHERE schemaname = $1 ORDER BY 1",
                ns.control_schema,
            ),
            await conn.fetch(
                "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolconfig::text"
                " FROM pg_roles WHERE rolname = ANY($1::text[]) ORDER BY 1",
                roles.names(),
            ),
            await conn.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[]) ORDER BY 1",
                roles.names(),
            ),
        )
    finally:
        await conn.close()


async def test_applying_twice_changes_nothing(provisioned: Provisioned) -> None:
    config, roles = provisioned.config, provisioned.roles
    before = await _grants(config.database_url, config, roles)
    await init_ledger(config, 2, db_role_passwords=provisioned.passwords)
    await init_ledger(config, 2)  # without the passwords: the roles are kept and re-granted
    assert await _grants(config.database_url, config, roles) == before
    # Rotation: a new password works, the old one no longer does.
    rotated = provisioned.passwords | {roles.reader: "rotated-" + uuid.uuid4().hex}
    await init_ledger(config, 2, db_role_passwords=rotated)
    conn = await asyncpg.connect(role_dsn(config.database_url, roles.reader, rotated[roles.reader]))
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(provisioned.dsn(roles.reader))


async def test_workers_and_coordinator_do_their_work_as_their_roles(provisioned: Provisioned) -> None:
    config, roles, passwords = provisioned.config, provisioned.roles, provisioned.passwords
    pmap = await init_ledger(config, 2)
    a0, b0 = accounts_on(pmap, 0, 2, prefix="cust")
    (c1,) = accounts_on(pmap, 1, 1, prefix="cust")
    by_role = role_configs(config, roles, passwords)
    async with running_ledger(config, [0, 1], roles=by_role), ResultCollector(config) as results:
        opens = [OpenAccountRequest(str(uuid.uuid4()), a, "EUR", 0, {}) for a in ("issuer", a0, b0, c1)]
        opens[0] = OpenAccountRequest(opens[0].command_id, "issuer", "EUR", 10**12, {})
        await produce_raw(
            config,
            config.namespace.account_commands,
            [(o.account_id.encode(), encode_public(o)) for o in opens],
        )
        got = await results.wait_for([o.command_id for o in opens])
        assert all(r["outcome"] == "done" for r in got.values()), got
        fund = TransferFunds(str(uuid.uuid4()), "issuer", a0, 10_000, "EUR")
        await produce_raw(
            config, config.namespace.transfers, [(fund.transfer_id.encode(), encode_public(fund))]
        )
        await results.wait_for([fund.transfer_id])
        moves = [
            TransferFunds(str(uuid.uuid4()), a0, b0, 1_000, "EUR"),
            TransferFunds(str(uuid.uuid4()), a0, c1, 2_000, "EUR"),
        ]
        await produce_raw(
            config, config.namespace.transfers, [(t.transfer_id.encode(), encode_public(t)) for t in moves]
        )
        done = await results.wait_for([t.transfer_id for t in moves])
    assert [done[t.transfer_id]["state"] for t in moves] == ["completed", "completed"]
    assert (await balances(config, 0))[a0] == (7_000, 0)
    assert (await balances(config, 1))[c1] == (2_000, 0)
    # The audits, as the reader: they see everything, and find it consistent.
    reader = by_role.reader
    sagas, views, _ = await read_views(reader, [0, 1])
    assert reconcile(sagas, views) == []
    control = await open_pool(reader.database_url, config.namespace.control_schema, max_size=1)
    try:
        heads = await PostgresControl(control).checkpoints(0)
    finally:
        await control.close()
    assert heads, "shard 0 published its chain head as its own role"
    pool = await open_pool(reader.database_url, config.namespace.shard_schema(0), max_size=1)
    try:
        assert (await verify_chain(pool, 0, heads)).ok
    finally:
        await pool.close()
