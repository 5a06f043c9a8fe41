"""PostgreSQL roles of one deployment: each process may touch only what its work needs.

- `<prefix>ledger_shard_NN`: reads and writes its own shard schema (the journal: INSERT and SELECT
  only), reads the partition map, and publishes its own shard's chain heads (a row-level policy
  refuses another shard's number).
- `<prefix>ledger_coordinator`: reads and writes the coordinator's schema, reads the partition map.
- `<prefix>ledger_reader`: SELECT on every ledger schema (status API, reconcile, verify, replay),
  and its sessions are read-only by default.

No role owns anything or may create anything: the admin role that ran the migrations stays the
owner of every schema and table. Applied by `ledger init` after the migrations, so a table a new
migration adds gets its grants in the same run. Idempotent: each role's table rights are revoked
and granted again in one transaction, which ends in the same state however often it runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from infra.config import LedgerConfig
from infra.postgres_migrations import quoted_schema
from schemas.errors import ConfigurationError
from schemas.topics import Namespace

_DML = "SELECT, INSERT, UPDATE, DELETE"
_MIGRATIONS_TABLE = "schema_migrations"  # only the admin role (migrations) reads or writes it
_SHARD_TABLE_RIGHTS = {
    # Append-only: its triggers refuse the rest to everyone, and these roles lack the rights too.
    "journal": "SELECT, INSERT",
    # One row each, made by the migration: updated, never added or removed.
    "worker_state": "SELECT, UPDATE",
    "relay_state": "SELECT, UPDATE",
}
_PARTITION_MAP = ("partition_maps", "partition_assignments")
_CHECKPOINTS = "chain_checkpoints"
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
_SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


@dataclass(frozen=True)
class LedgerRoles:
    """The names of one deployment's database roles."""

    namespace: Namespace
    shard_count: int

    def shard(self, shard: int) -> str:
        return f"{self.namespace.prefix}ledger_shard_{shard:02d}"

    @property
    def coordinator(self) -> str:
        return f"{self.namespace.prefix}ledger_coordinator"

    @property
    def reader(self) -> str:
        return f"{self.namespace.prefix}ledger_reader"

    def names(self) -> list[str]:
        return [*(self.shard(s) for s in range(self.shard_count)), self.coordinator, self.reader]


def generate_passwords(roles: LedgerRoles) -> dict[str, str]:
    """A fresh random password per role (the local stack's; a real cluster's come from its vault)."""
    return {name: secrets.token_urlsafe(24) for name in roles.names()}


def write_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    """Write `{role: password}` readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dict(passwords), out, indent=2)
    path.chmod(0o600)  # O_CREAT's mode does not apply to a file that already existed


def read_passwords(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigurationError(f"cannot read the database role passwords in {path}: {e}") from None
    return parse_passwords(text, str(path))


def parse_passwords(text: str, where: str = "LEDGER_DB_ROLES") -> dict[str, str]:
    """`{"role": "password", ...}` from a file or a variable (never echoed in an error)."""
    try:
        loaded = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{where} is not JSON") from None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in loaded.items()
    ):
        raise ConfigurationError(f"{where} must hold a JSON object of role name -> password")
    return loaded


def role_dsn(dsn: str, role: str, password: str) -> str:
    """`dsn` (the admin's) with `role`'s credentials instead: same server, same database."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}"))


def scram_verifier(password: str, salt: bytes, iterations: int = _SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677). Sending this instead of
    the password keeps the password out of the server's statement logs."""
    if not (password.isascii() and password.isprintable()):
        # SASLprep is the identity on printable ASCII only; anything else could differ from the server's.
        raise ConfigurationError("database role passwords must be printable ASCII")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def _same_password(stored: str | None, password: str) -> bool:
    """Whether a stored SCRAM verifier is of `password` (readable by superusers only)."""
    try:
        head, keys = (stored or "").split("$", 2)[1:]
        iterations, salt = head.split(":")
        expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected.split("$", 2)[2], keys)


def _ident(name: str) -> str:
    return quoted_schema(name)  # role and table names obey the same rule as schema names


async def apply_roles(
    conn: asyncpg.Connection, roles: LedgerRoles, passwords: Mapping[str, str]
) -> list[str]:
    """Create or update the roles named in `passwords` (a role not named there is left alone if it
    does not exist, and re-granted if it does) and grant each exactly its rights on the schemas
    of this server. Returns the roles whose grants were applied."""
    unknown = set(passwords) - set(roles.names())
    if unknown:
        raise ConfigurationError(f"passwords given for roles this ledger does not have: {sorted(unknown)}")
    async with conn.transaction():
        # GRANT on shared catalogs (the database, roles) by two sessions at once fails with
        # "tuple concurrently updated": every deployment's roles are applied one at a time.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledger database roles'))")
        present = await _ensure_roles(conn, roles, passwords)
        if not present:  # this deployment does not use them (tests of single parts): nothing to do
            return []
        await _lock_down_database(conn, present)
        ns = roles.namespace
        schemas = {r[0] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
        for shard in range(roles.shard_count):
            role = roles.shard(shard)
            if role not in present:
                continue
            if ns.shard_schema(shard) in schemas:
                await _grant_schema(conn, role, ns.shard_schema(shard), _DML, _SHARD_TABLE_RIGHTS)
            if ns.control_schema in schemas:
                await _grant_control(conn, role, ns.control_schema, publishes_shard=shard)
        if roles.coordinator in present:
            if ns.coordinator_schema in schemas:
                await _grant_schema(conn, roles.coordinator, ns.coordinator_schema, _DML, {})
            if ns.control_schema in schemas:
                await _grant_control(conn, roles.coordinator, ns.control_schema, publishes_shard=None)
        if roles.reader in present:
            ledger_schemas = [ns.control_schema, ns.coordinator_schema]
            ledger_schemas += [ns.shard_schema(s) for s in range(roles.shard_count)]
            for schema in (s for s in ledger_schemas if s in schemas):
                await _grant_schema(conn, roles.reader, schema, "SELECT", {_MIGRATIONS_TABLE: "SELECT"})
    return [name for name in roles.names() if name in present]


async def _ensure_roles(
    conn: asyncpg.Connection, roles: LedgerRoles, passwords: Mapping[str, str]
) -> set[str]:
    present = set()
    for name in roles.names():
        row = await conn.fetchrow("SELECT rolname FROM pg_roles WHERE rolname = $1", name)
        password = passwords.get(name)
        if password is None:
            if row is not None:
                present.add(name)
            continue
        if row is None:
            verifier = scram_verifier(password, secrets.token_bytes(16))
            await conn.execute(f"CREATE ROLE {_ident(name)} {_ROLE_ATTRIBUTES} PASSWORD '{verifier}'")
        else:
            await conn.execute(f"ALTER ROLE {_ident(name)} {_ROLE_ATTRIBUTES}")
            if not _same_password(await _stored_password(conn, name), password):
                verifier = scram_verifier(password, secrets.token_bytes(16))
                await conn.execute(f"ALTER ROLE {_ident(name)} PASSWORD '{verifier}'")
        present.add(name)
    if roles.reader in present:
        # Defence in depth: even a statement the grants would allow runs in a read-only transaction.
        await conn.execute(f"ALTER ROLE {_ident(roles.reader)} SET default_transaction_read_only = on")
    return present


async def _stored_password(conn: asyncpg.Connection, name: str) -> str | None:
    """The stored verifier when this session may read it (a superuser); None otherwise."""
    if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        return None
    found: str | None = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", name)
    return found


async def _lock_down_database(conn: asyncpg.Connection, roles: set[str]) -> None:
    """Nobody but the admin creates schemas, temporary tables or objects in `public`."""
    database = _ident(await conn.fetchval("SELECT current_database()"))
    await conn.execute(f"REVOKE CREATE, TEMPORARY ON DATABASE {database} FROM PUBLIC")
    await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for role in sorted(roles):
        await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {_ident(role)}")


async def _grant_schema(
    conn: asyncpg.Connection, role: str, schema: str, default: str, per_table: Mapping[str, str]
) -> None:
    """USAGE on `schema` (never CREATE), then exactly `per_table[t]` (else `default`) on each table;
    nothing on the migrations table unless `per_table` names it."""
    name, who = quoted_schema(schema), _ident(role)
    await conn.execute(f"GRANT USAGE ON SCHEMA {name} TO {who}")
    await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {name} FROM {who}")
    await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {name} FROM {who}")
    rights = {_MIGRATIONS_TABLE: ""} | dict(per_table)
    for table in await _tables(conn, schema):
        granted = rights.get(table, default)
        if granted:
            await conn.execute(f"GRANT {granted} ON {name}.{_ident(table)} TO {who}")
    if "INSERT" in default:  # bigserial ids (the coordinator's outbox) need nextval
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {name} TO {who}")


async def _grant_control(
    conn: asyncpg.Connection, role: str, schema: str, *, publishes_shard: int | None
) -> None:
    """Read the partition map; a shard also publishes its own chain heads, and no other's."""
    name, who = quoted_schema(schema), _ident(role)
    await conn.execute(f"GRANT USAGE ON SCHEMA {name} TO {who}")
    await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {name} FROM {who}")
    for table in _PARTITION_MAP:
        await conn.execute(f"GRANT SELECT ON {name}.{_ident(table)} TO {who}")
    if publishes_shard is None:
        return
    table = f"{name}.{_ident(_CHECKPOINTS)}"
    await conn.execute(f"GRANT INSERT ON {table} TO {who}")
    # Row-level security binds the non-owner roles only: the admin (owner) and readers see all rows.
    await conn.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    await _policy(
        conn, schema, "anyone_reads", f"CREATE POLICY anyone_reads ON {table} FOR SELECT USING (true)"
    )
    # Named for the shard, not the role: a policy name is per table (this namespace's) and the
    # prefixed role name could pass PostgreSQL's 63-byte limit once suffixed.
    policy = f"shard_{publishes_shard:02d}_publishes"
    check = f"WITH CHECK (shard = {publishes_shard:d})"
    await _policy(
        conn, schema, policy, f"CREATE POLICY {_ident(policy)} ON {table} FOR INSERT TO {who} {check}"
    )


async def _policy(conn: asyncpg.Connection, schema: str, name: str, create: str) -> None:
    exists = await conn.fetchval(
        "SELECT 1 FROM pg_policies WHERE schemaname = $1 AND tablename = $2 AND policyname = $3",
        schema, _CHECKPOINTS, name,
    )  # fmt: skip
    if not exists:
        await conn.execute(create)


async def _tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
    )
    return [r[0] for r in rows]


async def drop_roles(conn: asyncpg.Connection, roles: LedgerRoles) -> None:
    """Remove a deployment's roles and their grants in this database (tests clean up with this)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledger database roles'))")
        for name in roles.names():
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                await conn.execute(f"DROP OWNED BY {_ident(name)}")
                await conn.execute(f"DROP ROLE {_ident(name)}")


@dataclass(frozen=True)
class RoleConfigs:
    """Each process's configuration: the admin's, with its own role's credentials."""

    shards: Mapping[int, LedgerConfig]
    coordinator: LedgerConfig
    reader: LedgerConfig


def role_configs(config: LedgerConfig, roles: LedgerRoles, passwords: Mapping[str, str]) -> RoleConfigs:
    def as_role(role: str, shards: range | tuple[int, ...]) -> LedgerConfig:
        own = {s: role_dsn(config.shard_database_urls[s], role, passwords[role]) for s in shards
               if s in config.shard_database_urls}  # fmt: skip
        dsn = role_dsn(config.database_url, role, passwords[role])
        return replace(config, database_url=dsn, shard_database_urls=own)

    return RoleConfigs(
        shards={s: as_role(roles.shard(s), (s,)) for s in range(roles.shard_count)},
        coordinator=as_role(roles.coordinator, ()),
        reader=as_role(roles.reader, range(roles.shard_count)),
    )


async def apply_database_roles(
    config: LedgerConfig, shard_count: int, passwords: Mapping[str, str]
) -> list[str]:
    """`apply_roles` on every server the ledger's schemas live on (roles belong to a server)."""
    roles = LedgerRoles(config.namespace, shard_count)
    servers = dict.fromkeys(
        [config.database_url, *(config.shard_database_url(s) for s in range(shard_count))]
    )
    applied: dict[str, None] = {}
    for dsn in servers:
        conn = await asyncpg.connect(dsn)
        try:
            applied |= dict.fromkeys(await apply_roles(conn, roles, passwords))
        finally:
            await conn.close()
    return list(applied)
