"""Real engines for tests, in one line: `kafka_bootstrap`, `database_url`, `new_topic`, `db_schema`.

Kafka authenticates (SASL/SCRAM) and authorizes: `kafka_args` connects as the super user (tests'
own setup), `kafka_principal("client")` gives another role's credentials.

The backend is chosen from the environment, read here (the test session is an entry point):
- KAFKA_BOOTSTRAP_SERVERS / LEDGER_DATABASE_URL: use those servers, start nothing;
- LEDGER_TEST_BACKEND=docker: testcontainers, without authentication (tests of it are skipped);
  skipped, with the reason, when no Docker engine answers;
- otherwise: engines started by the project once per session and stopped when it ends.
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import pytest

from deploy.kafka_admin import TopicSpec, create_topics
from deploy.kafka_local import LocalKafka, fetch_kafka, kafka_version
from deploy.kafka_principals import ADMIN, KafkaCredentials
from deploy.stack import LocalStack, StackSettings
from infra.config import KafkaSecurity

REPO = Path(__file__).resolve().parent.parent
_STACKS: list[LocalStack] = []  # every stack this session started, for the leak check at the end


@dataclass
class SessionKafka:
    """Who may connect to the session's Kafka: every role's credentials when it was started here,
    the given (LEDGER_KAFKA_*) ones for an existing cluster, none for a testcontainer."""

    credentials: KafkaCredentials | None = None
    given: KafkaSecurity | None = None

    def security(self, principal: str = ADMIN) -> KafkaSecurity:
        if self.credentials is not None:
            return self.credentials.security(principal)
        return self.given or KafkaSecurity()


SESSION_KAFKA = SessionKafka()
"""Set by the `kafka_bootstrap` fixture; tests/ledger_harness.fresh_config connects with it."""


def selected_backend() -> str:
    return os.environ.get("LEDGER_TEST_BACKEND", "local")


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers a ping; otherwise why not."""
    try:
        import docker  # noqa: PLC0415 - only where the docker backend is asked for

        docker.from_env(timeout=5).ping()
    except Exception as e:  # noqa: BLE001 - any failure means "no engine here", said in the skip
        return f"no Docker engine is reachable ({type(e).__name__}: {e})"
    return None


def _skip_unless_docker() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"LEDGER_TEST_BACKEND=docker needs testcontainers: {reason}")


def stack_settings(**overrides: object) -> StackSettings:
    env = {**os.environ}
    env.setdefault("LEDGER_CACHE_DIR", str(REPO / ".ledger" / "cache"))
    return StackSettings.from_env(env, **overrides)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # pytest unwinds a KeyboardInterrupt through fixture teardown; SIGTERM's default would not.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = [p for stack in _STACKS for p in stack.processes if p.alive()]
    if leaked:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in leaked)
        print(f"\nLEAK: engine processes still running after the session: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """The session's own engines, each started on first use and stopped at the end."""
    stack = LocalStack(stack_settings(), tie_to_owner=True)
    _STACKS.append(stack)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: LocalStack) -> Iterator[str]:
    """Bootstrap servers of a real Kafka cluster."""
    if external := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        SESSION_KAFKA.given = KafkaSecurity.from_env(os.environ)
        yield external
    elif selected_backend() == "docker":
        _skip_unless_docker()
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - needs Docker

        with KafkaContainer(f"apache/kafka:{kafka_version()}").with_kraft() as container:
            yield str(container.get_bootstrap_server())
    else:
        bootstrap = local_stack.start_kafka()
        assert local_stack.kafka is not None
        SESSION_KAFKA.credentials = local_stack.kafka.credentials
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_security(kafka_bootstrap: str) -> KafkaSecurity:
    """The super user's credentials on the session's Kafka (PLAINTEXT when it has none)."""
    return SESSION_KAFKA.security()


@pytest.fixture(scope="session")
def kafka_args(kafka_bootstrap: str, kafka_security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client of a test: where, and as the super user."""
    return {"bootstrap_servers": kafka_bootstrap, **kafka_security.client_args()}


@pytest.fixture(scope="session")
def kafka_principal(kafka_bootstrap: str) -> Callable[[str], KafkaSecurity]:
    """`kafka_principal("client")`: that role's credentials. Skips where Kafka has no per-role
    credentials (a testcontainer, or an existing cluster given by KAFKA_BOOTSTRAP_SERVERS)."""
    credentials = SESSION_KAFKA.credentials
    if credentials is None:
        pytest.skip("needs the local Kafka with a principal per role (LEDGER_TEST_BACKEND=local)")
    return credentials.security


@pytest.fixture(scope="session")
def database_url(local_stack: LocalStack) -> Iterator[str]:
    """DSN of a real PostgreSQL database."""
    if external := os.environ.get("LEDGER_DATABASE_URL"):
        yield external
    elif selected_backend() == "docker":
        _skip_unless_docker()
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - needs Docker

        with PostgresContainer("postgres:15", driver=None) as container:
            yield str(container.get_connection_url())
    else:
        yield local_stack.start_postgres()


@pytest.fixture
def new_topic(kafka_args: dict[str, Any]) -> Callable[..., Awaitable[str]]:
    """`await new_topic(partitions=3)`: a topic with a unique name, created on purpose."""

    async def make(partitions: int = 1, replication_factor: int = 1, **configs: str) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        await create_topics(kafka_args, [TopicSpec(name, partitions, replication_factor, configs)])
        return name

    return make


@pytest.fixture
async def db_schema(database_url: str) -> AsyncIterator[str]:
    """A fresh schema with a unique name, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def kafka_cluster3() -> Iterator[LocalKafka]:
    """A private 3-node cluster (RF=3, min ISR 2) that a test may crash and restart."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or selected_backend() == "docker":
        pytest.skip("broker-crash tests need brokers this process starts (LEDGER_TEST_BACKEND=local)")
    settings = stack_settings()
    root = Path(tempfile.mkdtemp(prefix="ledger-kafka3-"))
    cluster = LocalKafka(root, fetch_kafka(settings.cache_dir or settings.home / "cache"), brokers=3)
    stack = LocalStack(settings, kafka=cluster, root=root, owns_root=True)
    _STACKS.append(stack)
    try:
        cluster.start()
        yield cluster
    finally:
        stack.stop()
