"""A local stack: Kafka and PostgreSQL started here, or servers given from outside, and its state.

Tests and the demo own their stack (engines die with them). `ledger dev up` starts a detached one
and records it in a JSON file so that `ledger dev status` and `ledger dev down` can find it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.kafka_local import LocalKafka, fetch_kafka
from deploy.kafka_principals import (
    ADMIN,
    COORDINATOR,
    MONITOR,
    PROVISIONED_SHARDS,
    KafkaCredentials,
    shard_principal,
)
from deploy.ledger_init import init_ledger
from deploy.postgres_local import LocalPostgres, find_pg_bin
from deploy.postgres_roles import LedgerRoles, generate_passwords, read_passwords, role_dsn, write_passwords
from deploy.processes import EngineError, ProcessRecord, spawn, unprivileged_user
from deploy.stack_env import read_state
from infra.config import KafkaSecurity, LedgerConfig, parse_message_keys
from schemas.topics import Namespace

ISSUERS = {"EUR": "issuer-eur", "USD": "issuer-usd"}
"""A local stack's issuance accounts, one per currency: where the demo brings money into the
ledger (only an issuance account may be opened with an overdraft)."""
ISSUER = "issuer"
"""Also an issuance account of a local stack (EUR by use): where the benchmark and the chaos
workload bring money in, and scripts written before there was one per currency."""
ISSUANCE = (ISSUER, *ISSUERS.values())
"""What a local stack's coordinators are started with (`--issuance-account`, each)."""


@dataclass(frozen=True)
class StackSettings:
    """What a local stack is made of. Built at an entry point (CLI, test session), never on import."""

    brokers: int = 1
    """Kafka nodes: 1, or 3 (RF=3, min.insync.replicas=2) for fault tests."""
    shards: int = 4
    """Shard workers the stack is meant for (recorded for the commands that start them)."""
    home: Path = Path(".ledger")
    """Where `ledger dev up` writes its state file (and, by default, the download cache)."""
    cache_dir: Path | None = None
    """Where Kafka's jars are kept once fetched; HOME/cache when None."""
    data_dir: Path | None = None
    """Engine data and logs; a fresh temporary directory when None."""
    kafka_heap_mb: int = 384
    kafka_bootstrap_servers: str | None = None
    """An existing Kafka cluster to use instead of starting one."""
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """How every process of the stack connects to that existing cluster (LEDGER_KAFKA_*); a cluster
    started here has a principal per role instead, generated into its data folder."""
    database_url: str | None = None
    """An existing PostgreSQL database to use instead of starting one."""
    pg_bin: str | None = None
    """PostgreSQL server binaries; the newest under /usr/lib/postgresql when None."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> StackSettings:
        """Read KAFKA_BOOTSTRAP_SERVERS, LEDGER_KAFKA_*, LEDGER_DATABASE_URL, LEDGER_HOME,
        LEDGER_CACHE_DIR, LEDGER_PG_BIN."""
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            "kafka_security": KafkaSecurity.from_env(env),
            "database_url": env.get("LEDGER_DATABASE_URL") or None,
            "home": Path(env.get("LEDGER_HOME", ".ledger")),
            "cache_dir": Path(env["LEDGER_CACHE_DIR"]) if env.get("LEDGER_CACHE_DIR") else None,
            "pg_bin": env.get("LEDGER_PG_BIN") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Endpoints:
    """Where a running stack answers. Written to the state file and printed by `ledger dev`."""

    kafka_bootstrap_servers: str
    database_url: str
    brokers: int
    shards: int
    status_api_url: str | None = None
    status_api_token_file: str | None = None
    """The bearer token clients send the API (`Authorization: Bearer <token>`), owner-only."""
    database_roles_file: str | None = None
    """Each process's PostgreSQL role and its password (deploy/postgres_roles.py), owner-only."""


@dataclass
class LocalStack:
    """Start, expose and stop the engines of one stack. Use it as a context manager."""

    settings: StackSettings
    tie_to_owner: bool = True
    kafka: LocalKafka | None = None
    postgres: LocalPostgres | None = None
    root: Path | None = None
    owns_root: bool = False
    api_url: str | None = None
    api_token: str | None = None
    extra_processes: list[ProcessRecord] = field(default_factory=list)
    _commands: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def start(self) -> Endpoints:
        """Start whatever is not given from outside. On failure, stop what started and re-raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        if self.settings.database_url is None:
            self.start_postgres(wait=False)  # it starts while Kafka formats its storage
        if self.settings.kafka_bootstrap_servers is None:
            self.start_kafka()
        if self.postgres is not None:
            self.start_postgres()
        return self.endpoints

    def start_postgres(self, *, wait: bool = True) -> str:
        """Start the private PostgreSQL (once) and return its DSN; with `wait`, when it serves."""
        if self.postgres is None:
            self.postgres = LocalPostgres(
                self._root() / "postgres",
                find_pg_bin(self.settings.pg_bin),
                unprivileged_user(),
                self.tie_to_owner,
            )
            self.postgres.init()
            self.postgres.spawn()
        if wait:
            self.postgres.wait_healthy()
            self.postgres.create_database()
        return self.postgres.dsn

    def start_kafka(self) -> str:
        """Start the local Kafka cluster (once) and return its bootstrap servers."""
        if self.kafka is None:
            s = self.settings
            jars = fetch_kafka(s.cache_dir or s.home / "cache")
            self.kafka = LocalKafka(
                self._root(), jars, s.brokers, s.kafka_heap_mb, self.tie_to_owner,
                shard_principals=max(s.shards, PROVISIONED_SHARDS),
            )  # fmt: skip
            self.kafka.start()
        return self.kafka.bootstrap_servers

    def start_ledger(
        self, *, api_port: int | None = None, issuance: tuple[str, ...] = ISSUANCE, coordinators: int = 1,
        separate_relays: int = 0, monitor: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        """Create the ledger's schemas and topics, then start one `ledger shard run` per shard,
        `coordinators` coordinators (one consumer group) and, with `api_port`, the status API,
        each as its own process."""
        plan = self.prepare_ledger(
            api_port=api_port, issuance=issuance, coordinators=coordinators, separate_relays=separate_relays,
            monitor=monitor,
        )  # fmt: skip
        for name, args in plan:
            self._start_process(name, *args)

    def prepare_ledger(
        self, *, api_port: int | None = None, issuance: tuple[str, ...] = ISSUANCE, coordinators: int = 1,
        separate_relays: int = 0, monitor: tuple[str, ...] | None = None,
    ) -> list[tuple[str, tuple[str, ...]]]:  # fmt: skip
        """Create the ledger's schemas and topics (again: it is idempotent) and return the processes
        `start_ledger` starts, as (name, `ledger` arguments), without starting them (`ledger dev
        up`'s supervisor does). Shards 0 .. `separate_relays` - 1 publish their outbox from a relay
        process of their own; the others from the worker's process, sending each batch from memory."""
        asyncio.run(init_ledger(self.ledger_config(), self.settings.shards, self.db_role_passwords()))
        plan: list[tuple[str, tuple[str, ...]]] = []
        for shard in range(self.settings.shards):
            if shard < separate_relays:  # its own process (the chaos suite kills relays alone)
                plan.append((f"shard-{shard}", ("shard", "run", "--shard", str(shard), "--no-relay")))
                plan.append((f"relay-{shard}", ("shard", "relay", "--shard", str(shard))))
            else:
                plan.append((f"shard-{shard}", ("shard", "run", "--shard", str(shard))))
        for n in range(coordinators):
            name = "coordinator" if coordinators == 1 else f"coordinator-{n}"
            issuers = (f"--issuance-account={a}" for a in issuance)
            plan.append((name, ("coordinator", "run", f"--instance-id={name}", *issuers)))
        if monitor is not None:  # alerts and breakers: `ledger monitor run` with these arguments
            plan.append(("monitor", ("monitor", "run", *monitor)))
        if api_port is not None:
            self.api_token = self._new_api_token()
            plan.append(("status-api", ("api", "run", "--port", str(api_port))))
            self.api_url = f"http://127.0.0.1:{api_port}"
        return plan

    def _new_api_token(self) -> str:
        """A random token for this stack's status API, kept in its data folder (owner-only)."""
        token = secrets.token_urlsafe(32)
        fd = os.open(self._api_token_path(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token

    def message_keys(self) -> tuple[tuple[str, bytes], ...]:
        """The HMAC key coordinators and shards share (schemas/message_auth.py): generated once into
        the data folder (owner-only, never committed), so restarted processes keep the same one."""
        path = self._root() / "message-keys"
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"local:{secrets.token_hex(32)}\n")
        return parse_message_keys(path.read_text().strip())

    def db_role_passwords(self) -> dict[str, str]:
        """A password per PostgreSQL role of the ledger, generated once into the data folder
        (owner-only, never committed), so restarted processes and `ledger init` agree."""
        path = self._db_roles_path()
        if not path.exists():
            write_passwords(path, generate_passwords(LedgerRoles(Namespace(), self.settings.shards)))
        return read_passwords(path)

    def database_url_for(self, name: str) -> str:
        """Process `name`'s own PostgreSQL role: shard-N and relay-N that shard's, coordinators
        the coordinators', the status API the read-only reader."""
        roles = LedgerRoles(Namespace(), self.settings.shards)
        kind, _, number = name.rpartition("-")
        if kind in ("shard", "relay") and number.isdigit():
            role = roles.shard(int(number))
        elif name.startswith("coordinator"):
            role = roles.coordinator
        elif name in ("status-api", "monitor"):  # the monitor reads every schema to audit the ledger
            role = roles.reader
        else:
            raise EngineError(f"no database role for a stack process named {name!r}")
        return role_dsn(self.endpoints.database_url, role, self.db_role_passwords()[role])

    def _db_roles_path(self) -> Path:
        return self._root() / "postgres-roles.json"

    def _api_token_path(self) -> Path:
        return self._root() / "api-token"

    def ledger_config(self, principal: str = ADMIN) -> LedgerConfig:
        """The ledger as `principal` sees it (deploy/kafka_principals.py): admin creates it,
        workloads connect as the operator, each process as its role (`process_env`)."""
        e = self.endpoints
        # Three brokers are for fault tests: every topic then has three replicas (min ISR 2).
        return LedgerConfig(
            e.database_url, e.kafka_bootstrap_servers, replication_factor=3 if e.brokers >= 3 else 1,
            kafka_security=self.kafka_security(principal),
        )  # fmt: skip

    def kafka_security(self, principal: str) -> KafkaSecurity:
        """A principal's credentials on the Kafka started here; the given ones on an existing cluster."""
        if self.kafka is None or self.kafka.credentials is None:
            return self.settings.kafka_security
        return self.kafka.credentials.security(principal)

    def process_env(self, name: str) -> dict[str, str]:
        """The environment of the stack's process `name`, with its role's credentials only:
        shard-N / relay-N as shard-NN, coordinators as coordinator, the monitor as monitor, the
        status API (PostgreSQL only) with no Kafka credentials."""
        role, _, number = name.rpartition("-")
        if role in ("shard", "relay") and number.isdigit():
            config = self.ledger_config(shard_principal(int(number)))
        elif name.startswith("coordinator"):
            config = self.ledger_config(COORDINATOR)
        elif name == "monitor":
            config = self.ledger_config(MONITOR)
        elif name == "status-api":
            config = replace(self.ledger_config(), kafka_security=KafkaSecurity())
        else:
            raise EngineError(f"no role for a stack process named {name!r}")
        config = replace(config, database_url=self.database_url_for(name))
        if name != "status-api":  # coordinators and shards authenticate what they send each other
            config = replace(config, message_keys=self.message_keys())
        env = {**os.environ, **config.as_env()}
        if name == "status-api" and self.api_token:  # the environment, not arguments: those show in `ps`
            env["LEDGER_API_TOKENS"] = self.api_token
        return env

    def _start_process(self, name: str, *args: str) -> None:
        env = self.process_env(name)
        ledger = str(Path(sys.executable).with_name("ledger"))
        log = self.logs_dir / f"{name}.log"
        self.extra_processes.append(
            spawn(name, [ledger, *args], log, tie_to_owner=self.tie_to_owner, env=env)
        )
        self._commands[name] = args

    def start_process(self, name: str, *args: str) -> None:
        """Start one more `ledger ARGS` process of this stack (tests and the chaos suite)."""
        self._start_process(name, *args)

    def restart_process(self, name: str) -> None:
        """Start again a process of this stack that was stopped or killed, with the same command."""
        self.extra_processes = [p for p in self.extra_processes if p.name != name or p.alive()]
        if any(p.name == name for p in self.extra_processes):
            raise EngineError(f"{name} is still running")
        self._start_process(name, *self._commands[name])

    def process(self, name: str) -> ProcessRecord:
        """The running (or last started) process of that name."""
        return next(p for p in reversed(self.extra_processes) if p.name == name)

    @property
    def endpoints(self) -> Endpoints:
        s = self.settings
        kafka = s.kafka_bootstrap_servers or (self.kafka.bootstrap_servers if self.kafka else None)
        database = s.database_url or (self.postgres.dsn if self.postgres else None)
        if kafka is None or database is None:
            raise EngineError("the stack is not started")
        token_file = str(self._api_token_path()) if self.api_token else None
        roles = self._db_roles_path() if self.root is not None else None
        roles_file = str(roles) if roles is not None and roles.exists() else None
        return Endpoints(kafka, database, s.brokers, s.shards, self.api_url, token_file, roles_file)

    @property
    def processes(self) -> list[ProcessRecord]:
        """In start order: the database, the brokers, then what runs on them."""
        found = []
        if self.postgres is not None and self.postgres.process is not None:
            found.append(self.postgres.process)
        if self.kafka is not None:
            found += self.kafka.processes
        return found + self.extra_processes

    def stop(self) -> None:
        """Stop everything this stack started and delete its temporary data. Idempotent."""
        for proc in reversed(self.extra_processes):
            proc.stop(timeout=60)  # SIGTERM: a worker finishes its batch first
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop("fast")
        if self.owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def logs_dir(self) -> Path:
        """Where the stack's processes (and a run's own log) write."""
        return self._root() / "logs"

    def _root(self) -> Path:
        if self.root is not None:
            return self.root
        if self.settings.data_dir is not None:
            self.root = self.settings.data_dir.resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.root = Path(tempfile.mkdtemp(prefix="ledger-stack-"))
            self.owns_root = True
        # PostgreSQL runs as an unprivileged account when we are root; it must traverse here.
        self.root.chmod(0o711)
        return self.root


# --- the state file of a detached stack (`ledger dev up` / `status` / `down`) ------------------


def state_path(home: Path) -> Path:
    return home / "stack.json"


def save_state(home: Path, stack: LocalStack) -> Path:
    return write_state(home, stack_state(stack))


def stack_state(stack: LocalStack) -> dict[str, Any]:
    """What the state file records of a stack: its endpoints, processes and data folder."""
    return {
        "endpoints": asdict(stack.endpoints),
        "processes": [p.to_json() for p in stack.processes],
        "data_dir": str(stack.root) if stack.root else None,
        "kafka_credentials": str(stack.kafka.credentials_path) if stack.kafka else None,
        "owns_data_dir": stack.owns_root,
        "started_at": time.time(),
    }


def write_state(home: Path, state: Mapping[str, Any]) -> Path:
    """Replace the state file at once (temp file + rename): a reader never sees half of one."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # The DSN holds the private cluster's password: readable by its owner only.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2)
    temp.replace(path)
    return path


load_state = read_state  # one reader of the state file (deploy/stack_env.py: light to import)


def recorded_kafka_security(state: Mapping[str, Any], principal: str = ADMIN) -> KafkaSecurity:
    """How a later command connects, as `principal`, to the Kafka a state file records."""
    path = state.get("kafka_credentials")
    return KafkaCredentials.load(Path(path)).security(principal) if path else KafkaSecurity()


def stop_recorded(home: Path, *, purge: bool = False) -> list[str]:
    """Stop every process a state file records and delete it. Returns what was stopped.

    The supervisor of `ledger dev up` goes first, so that it restarts nothing; the processes are
    then read again, since it records each one it (re)starts. `purge` also deletes a data folder
    that was given (`--data-dir`), not made for the stack.
    """
    state = load_state(home)
    if state is None:
        return []
    stopped = []
    if state.get("supervisor"):
        supervisor = ProcessRecord.from_json(state["supervisor"])
        if supervisor.alive():
            supervisor.stop(timeout=15)
            stopped.append(supervisor.name)
        state = load_state(home) or state
    # Recorded in start order; stop the last started first (workers before brokers, brokers
    # before the database they do not need).
    for raw in reversed(state.get("processes", [])):
        record = ProcessRecord.from_json(raw)
        if record.alive():
            record.stop()
            stopped.append(record.name)
    if (purge or state.get("owns_data_dir")) and state.get("data_dir"):
        shutil.rmtree(state["data_dir"], ignore_errors=True)
    state_path(home).unlink(missing_ok=True)
    return stopped
