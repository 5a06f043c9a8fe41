"""A private PostgreSQL cluster: initdb into a directory, start on a free loopback port, stop.

Durable settings are kept (fsync, synchronous_commit, full_page_writes on): the benchmark must
measure the ledger as a bank would run it. A random password guards the port from other users.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from deploy.processes import EngineError, ProcessRecord, free_port, run_checked, spawn

DATABASE = "ledger"
USER = "ledger"

# How `pg_ctl stop -m MODE` signals the postmaster; chaos tests use all three.
STOP_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


def find_pg_bin(explicit: str | None = None) -> Path:
    """The newest installed server binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    candidates = [Path(explicit)] if explicit else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise EngineError(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
        "apt-get install postgresql-15 (or set LEDGER_PG_BIN to a bin directory)"
    )


@dataclass
class LocalPostgres:
    """One private cluster under `root` (data, socket and log live there)."""

    root: Path
    bindir: Path
    user: str | None = None  # OS account to run as; PostgreSQL refuses root
    tie_to_owner: bool = True
    port: int = 0
    password: str = ""
    process: ProcessRecord | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.password = self.password or secrets.token_urlsafe(18)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_dsn(self) -> str:
        # The `postgres` database exists from initdb on, before ours is created.
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """initdb with a password-protected superuser and durable settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            # The engine runs unprivileged: it must own its directory, and every parent must be
            # searchable by it (LocalStack makes its root 0711 for this).
            shutil.chown(self.root, self.user)
            shutil.chown(pwfile, self.user)
        run_checked(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", USER, "-E", "UTF8",
             "--locale=C", "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions"],
            "initdb", user=self.user,
        )  # fmt: skip
        pwfile.unlink()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "max_connections": "300",
            "shared_buffers": "256MB",
            # Where the database's time goes, per statement (the benchmark reports the top ones).
            "shared_preload_libraries": "'pg_stat_statements'",
            # Queue tables (the coordinator's outbox) need vacuum within seconds, not a minute.
            "autovacuum_naptime": "'5s'",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] '",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# ledger: private local cluster\n")
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self, timeout: float = 60.0) -> None:
        """Start the postmaster (foreground, own process group) and wait until it serves."""
        self.spawn()
        self.wait_healthy(timeout)
        self.create_database()

    def spawn(self) -> None:
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        self.process = spawn(
            "postgres", argv, self.log_path, tie_to_owner=self.tie_to_owner, user=self.user,
            env={**os.environ, "LC_ALL": "C"},
        )  # fmt: skip

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop as `pg_ctl -m MODE` would; SIGKILL after `timeout`. Idempotent."""
        if self.process is not None:
            self.process.stop(STOP_SIGNALS[mode], timeout=timeout)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.spawn()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until the server answers; from async code, await `wait_ready` instead."""
        asyncio.run(self.wait_ready(within_s=timeout))

    async def wait_ready(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is None or not self.process.alive():
                raise EngineError(f"PostgreSQL exited; see {self.log_path}:\n{self._log_tail()}")
            try:
                await _ping(self.admin_dsn)
                return
            except (TimeoutError, OSError, asyncpg.PostgresError) as e:
                last_error = f"{type(e).__name__}: {e}"
            await asyncio.sleep(0.2)
        raise EngineError(
            f"PostgreSQL not healthy after {within_s:.0f}s ({last_error}); see {self.log_path}:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return self.process.log_tail() if self.process else ""

    def create_database(self) -> None:
        """Create the ledger's database if it does not exist yet."""
        asyncio.run(self._create_database())

    async def _create_database(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()


async def _ping(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
